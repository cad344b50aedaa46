"""Streaming assembly: header links reuse the app's trace, timing links are honest about doubt,
the window lets late spans join, and limits hold."""

from __future__ import annotations

from typing import Any

import pytest

from wiretide.tracer.assemble import Assembler, AssemblyConfig
from wiretide.tracer.rules import RuleError, parse_rules
from wiretide.tracer.spans import KIND_CLIENT, KIND_SERVER, Span

from .chains import build, peer, score

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
TRACE = "0af7651916cd43dd8448eb211c80319c"


def call(eid: str, src: str | None, dst: str, start_ms: float, end_ms: float, **over: Any) -> dict[str, Any]:
    return {
        "id": eid,
        "node": over.pop("node", "node-a"),
        "timestamp": T0 + int(start_ms * MS),
        "elapsed_us": int((end_ms - start_ms) * 1000),
        "protocol": "http",
        "transport": "tcp",
        "method": "GET",
        "path": f"/{dst}",
        "status": 200,
        "src": peer(src, 0, "10.0.0.9", 40000) if src else {"ip": "192.168.1.1", "port": 50000},
        "dst": peer(dst, 0, "10.0.1.1", 8080),
        "request": {"headers": over.pop("headers", {})},
        **over,
    }


def run(entries: list[dict[str, Any]], **cfg: Any) -> tuple[Assembler, list[Span]]:
    a = Assembler(AssemblyConfig(**cfg))
    a.add_many(entries)
    a.flush()
    return a, a.drain()


def by_entry(spans: list[Span]) -> dict[tuple[str, int], Span]:
    return {(s.entry_id, s.kind): s for s in spans}


def three_hops(headers: bool) -> list[dict[str, Any]]:
    def h(span: str) -> dict[str, str]:
        return {"traceparent": f"00-{TRACE}-{span}-01"} if headers else {}

    return [  # in response order, as dissectors publish them
        call("c", "api", "backend", 3, 8, headers=h("00000000000000c1")),
        call("b", "frontend", "api", 2, 10, headers=h("00000000000000b1")),
        call("a", None, "frontend", 0, 12, headers=h("00000000000000a1")),
    ]


def test_propagated_traceparent_links_the_chain_into_the_applications_trace() -> None:
    _, spans = run(three_hops(headers=True))
    assert len(spans) == 6 and {s.trace_id.hex() for s in spans} == {TRACE}
    s = by_entry(spans)
    # The outside caller's call is the root (the app's span that sent it becomes a span link).
    assert s[("a", KIND_CLIENT)].parent_span_id == b"" and s[("a", KIND_CLIENT)].link == "header"
    assert s[("a", KIND_SERVER)].parent_span_id == s[("a", KIND_CLIENT)].span_id
    assert s[("b", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
    assert s[("c", KIND_CLIENT)].parent_span_id == s[("b", KIND_SERVER)].span_id
    assert all(x.confidence == 1.0 for x in spans)
    assert s[("b", KIND_CLIENT)].link == "header" and s[("b", KIND_SERVER)].link == "entry"


def test_without_headers_timing_links_the_chain_with_confidence_below_one() -> None:
    _, spans = run(three_hops(headers=False))
    assert len({x.trace_id for x in spans}) == 1
    s = by_entry(spans)
    assert s[("b", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
    assert s[("c", KIND_CLIENT)].parent_span_id == s[("b", KIND_SERVER)].span_id
    for key in (("b", KIND_CLIENT), ("c", KIND_CLIENT)):
        assert s[key].link == "timing" and 0 < s[key].confidence < 1
    assert s[("a", KIND_CLIENT)].link == "root" and s[("a", KIND_CLIENT)].parent_span_id == b""


def test_concurrent_requests_lower_the_confidence_of_a_timing_link() -> None:
    alone = run([call("b", "frontend", "api", 2, 10), call("a", None, "frontend", 0, 12)])[1]
    crowded = run(
        [
            call("b", "frontend", "api", 2, 10),
            call("a", None, "frontend", 0, 12),
            call("x", None, "frontend", 1, 11),  # another request open around the same call
        ]
    )[1]
    c_alone = by_entry(alone)[("b", KIND_CLIENT)].confidence
    c_crowded = by_entry(crowded)[("b", KIND_CLIENT)].confidence
    assert 0 < c_crowded < c_alone < 1


def test_a_call_outside_every_request_of_its_pod_is_a_root() -> None:
    _, spans = run([call("b", "frontend", "api", 20, 30), call("a", None, "frontend", 0, 12)])
    client = by_entry(spans)[("b", KIND_CLIENT)]
    assert client.link == "root" and client.parent_span_id == b""


def test_a_late_parent_within_the_window_still_joins_and_one_beyond_it_does_not() -> None:
    a = Assembler(AssemblyConfig(window_ns=100 * MS))
    a.add(call("b", "frontend", "api", 2, 10))
    a.advance(T0 + 60 * MS)  # 50 ms after the call ended: still inside the window
    a.add(call("a", None, "frontend", 0, 12))
    a.advance(T0 + 500 * MS)
    s = by_entry(a.drain())
    assert s[("b", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id

    a = Assembler(AssemblyConfig(window_ns=100 * MS))
    a.add(call("b", "frontend", "api", 2, 10))
    a.advance(T0 + 200 * MS)  # window closed: the call was decided without a parent
    a.add(call("a", None, "frontend", 0, 12))
    a.flush()
    s = by_entry(a.drain())
    assert s[("b", KIND_CLIENT)].link == "root"


def test_spans_are_held_back_until_their_window_closes_and_the_trace_id_is_final() -> None:
    a = Assembler(AssemblyConfig(window_ns=100 * MS))
    a.add(call("b", "frontend", "api", 2, 10))
    assert a.drain() == [] and a.pending == 1
    a.add(call("a", None, "frontend", 0, 12))
    # The request's server span waits for its caller's call, which waits for its window.
    assert a.drain() == [] and a.pending == 2
    a.advance(T0 + 111 * MS)  # the call is decided, but its ancestors are not: held back
    assert a.drain() == [] and a.pending == 1
    a.advance(T0 + 112 * MS)  # the caller's window closed: the root, and with it the whole trace
    spans = a.drain()
    assert len(spans) == 4 and len({x.trace_id for x in spans}) == 1


def test_clock_skew_between_nodes_is_tolerated_up_to_the_bound_only() -> None:
    skewed = [call("b", "frontend", "api", -1, 10, node="node-b"), call("a", None, "frontend", 0, 12)]
    s = by_entry(run(skewed, clock_skew_ns=2 * MS)[1])
    assert s[("b", KIND_CLIENT)].link == "timing"
    s = by_entry(run(skewed, clock_skew_ns=0)[1])
    assert s[("b", KIND_CLIENT)].link == "root"
    same_node = [call("b", "frontend", "api", -1, 10), call("a", None, "frontend", 0, 12)]
    assert by_entry(run(same_node, clock_skew_ns=2 * MS)[1])[("b", KIND_CLIENT)].link == "root"


def test_a_huge_fan_out_trace_is_capped_and_the_rest_counted() -> None:
    entries = [call(f"f{i}", "frontend", "api", 1 + i * 0.001, 2 + i * 0.001) for i in range(300)]
    entries.append(call("root", None, "frontend", 0, 50))
    a, spans = run(entries, max_spans_per_trace=100)
    assert len(spans) == 100
    assert a.stats["dropped_fanout"] == 2 * 301 - 100


def test_span_rules_rename_and_drop_by_kfl() -> None:
    rules = parse_rules(
        '[{"match": "http && path.startsWith(\\"/api\\")", "name": "checkout"},'
        ' {"match": "path == \\"/frontend\\"", "drop": true}]'
    )
    a = Assembler(rules=rules)
    a.add_many(three_hops(headers=False))
    a.flush()
    spans = a.drain()
    assert {s.entry_id for s in spans} == {"b", "c"}
    assert {s.name for s in spans if s.entry_id == "b"} == {"checkout"}
    assert a.stats["dropped_by_rule"] == 1


@pytest.mark.parametrize(
    "text", ["{}", "[1]", '[{"match": "http &&"}]', '[{"match": "http &&", "name": "x"}]', "not json"]
)
def test_bad_span_rules_are_refused_with_the_rule_named(text: str) -> None:
    with pytest.raises(RuleError):
        parse_rules(text)


def test_the_causality_seam_links_by_syscall_when_it_knows() -> None:
    class Kernel:
        def cause_of(self, entry: dict[str, Any]) -> str | None:
            return "x" if entry["id"] == "b" else None

    entries = [
        call("b", "frontend", "api", 2, 10),
        call("a", None, "frontend", 0, 12),
        call("x", None, "frontend", 1, 11),
    ]
    a = Assembler(causality=Kernel())
    a.add_many(entries)
    a.flush()
    s = by_entry(a.drain())
    assert s[("b", KIND_CLIENT)].parent_span_id == s[("x", KIND_SERVER)].span_id
    assert s[("b", KIND_CLIENT)].link == "syscall" and s[("b", KIND_CLIENT)].confidence == 1.0


def test_headers_give_perfect_links_under_concurrency() -> None:
    chains = build(400, 10, seed=3, propagate=True)
    _, spans = run(chains.entries)
    assert score(chains, spans) == (1.0, 1.0)
    assert len({s.trace_id for s in spans}) == 400


@pytest.mark.parametrize("concurrency", [1, 4])
def test_timing_alone_meets_the_accuracy_targets_up_to_four_concurrent(concurrency: int) -> None:
    chains = build(600, concurrency, seed=5)
    _, spans = run(chains.entries)
    precision, recall = score(chains, spans)
    assert precision >= 0.95 and recall >= 0.90, (precision, recall)


def test_overlapping_requests_get_their_own_calls_in_the_order_the_server_took_them() -> None:
    # Two requests taken in turn (a, then b), each making one call, in the same order, a little later.
    # Alone, the first call fits b more tightly; jointly, order-keeping wins for both calls.
    entries = [
        call("c1", "frontend", "api", 6, 15),
        call("c2", "frontend", "api", 7, 16),
        call("a", None, "frontend", 0, 17),
        call("b", None, "frontend", 2, 18),
    ]
    s = by_entry(run(entries)[1])
    assert s[("c1", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
    assert s[("c2", KIND_CLIENT)].parent_span_id == s[("b", KIND_SERVER)].span_id
    for key in (("c1", KIND_CLIENT), ("c2", KIND_CLIENT)):
        assert s[key].link == "timing" and 0 < s[key].confidence < 0.9


def test_a_request_with_its_call_already_linked_is_not_given_a_second_one_of_the_same_kind() -> None:
    entries = [
        call("c1", "frontend", "api", 1, 5),
        call("c2", "frontend", "api", 12, 16),
        call("a", None, "frontend", 0, 6),
        call("b", None, "frontend", 0.5, 30),
    ]
    s = by_entry(run(entries)[1])
    assert s[("c1", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
    assert s[("c2", KIND_CLIENT)].parent_span_id == s[("b", KIND_SERVER)].span_id


def test_timing_alone_keeps_high_accuracy_at_ten_concurrent() -> None:
    chains = build(600, 10, seed=5)
    _, spans = run(chains.entries)
    precision, recall = score(chains, spans)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_a_timeline_keeps_its_spans_by_start_whatever_order_they_arrive_in() -> None:
    import random

    from wiretide.tracer.assemble import Timeline
    from wiretide.tracer.spans import SpanIds, spans_from_entry

    rnd = random.Random(4)
    entries = build(60, 4, seed=9).entries
    spans = [s for e in entries for s in spans_from_entry(e, SpanIds(1)) if s.kind == KIND_SERVER]
    arrival = sorted(spans, key=lambda s: s.start_ns)[:40] + rnd.sample(
        spans, len(spans)
    )  # in order, then not
    timeline = Timeline(cap=50)
    evicted = sum(timeline.add(s) for s in arrival)
    assert evicted == len(arrival) - 50 and len(timeline.spans) == 50
    assert timeline.starts == sorted(timeline.starts) == [s.start_ns for s in timeline.spans]
    longest = max(s.end_ns - s.start_ns for s in timeline.spans)
    assert longest <= timeline.max_duration < 2 * longest


def test_a_timeline_answers_as_a_plain_sorted_list_would_through_evictions_and_prunes() -> None:
    import bisect
    import random

    from wiretide.tracer.assemble import PRUNE_EVERY_NS, Timeline
    from wiretide.tracer.spans import SpanIds, spans_from_entry

    entry = build(1, 1, seed=3).entries[0]
    (template,) = [s for s in spans_from_entry(entry, SpanIds(1)) if s.kind == KIND_SERVER]
    w = template.workload
    rnd = random.Random(11)
    for cap in (1, 7, 300, 2_000):
        timeline, model, last = Timeline(cap=cap), list[Span](), 0
        start = T0
        for i in range(3_000):
            start += rnd.randrange(0, 300_000)
            begin = start - rnd.randrange(0, 3_000_000) if i % 5 == 0 else start  # now and then late
            end = begin + rnd.randrange(0, 5_000_000)
            s = Span(b"\0" * 8, "GET /", KIND_SERVER, w, w, begin, end, {}, {}, "", {})
            model.insert(bisect.bisect_right([m.start_ns for m in model], begin), s)
            evicted = max(len(model) - cap, 0)
            del model[:evicted]
            assert timeline.add(s) == evicted
            if i % 13 == 0:
                horizon = start - 4_000_000
                if horizon - last >= PRUNE_EVERY_NS:
                    last = horizon
                    while model and model[0].end_ns < horizon:
                        model.pop(0)
                timeline.prune(horizon)
            assert timeline.spans == model
            a, b = start - rnd.randrange(0, 6_000_000), start
            assert timeline.within(a, b) == [m for m in model if a <= m.start_ns <= b and m.end_ns <= b]
            floor = b - timeline.max_duration - 1_000
            assert timeline.open_during(a, b, 1_000) == [
                m for m in model if floor <= m.start_ns <= a + 1_000 and m.end_ns >= b - 1_000
            ]


def test_a_timeline_bounds_its_longest_span_within_twice_it_as_spans_come_and_go() -> None:
    import random

    from wiretide.tracer.assemble import Timeline
    from wiretide.tracer.spans import SpanIds, spans_from_entry

    entry = build(1, 1, seed=3).entries[0]
    (template,) = [s for s in spans_from_entry(entry, SpanIds(1)) if s.kind == KIND_SERVER]

    def span_between(start: int, end: int) -> Span:
        w = template.workload
        return Span(b"\0" * 8, "GET /", KIND_SERVER, w, w, start, end, {}, {}, "", {})

    rnd = random.Random(7)
    timeline = Timeline(cap=64)
    start = T0
    for i in range(5_000):
        start += rnd.randrange(0, 200_000)
        # Mostly alike (a burst of one call), now and then a long one that later leaves the timeline.
        duration = 1_000_000 if i % 500 else rnd.randrange(50_000_000, 900_000_000)
        s = span_between(start, start + duration)
        timeline.add(s)
        if i % 97 == 0:
            timeline.prune(start - 100_000_000)
        held = [x.end_ns - x.start_ns for x in timeline.spans]
        longest = max(held, default=0)
        assert longest <= timeline.max_duration and (not held or timeline.max_duration < 2 * longest + 2)
    # The long ones left: the bound came back down to the calls' own length.
    assert timeline.max_duration < 2 * 1_000_000

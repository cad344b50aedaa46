"""Tracer replicas (partition.py): N replicas, each reading every entry and keeping its share, telling
each other trace ids, export together exactly the traces one tracer would — every span once, the same
parents, the same trees, the same links and confidences — named or anonymous, with propagated context
or by timing alone. And what goes wrong on the way (a replica that never answers, a bad facts message)
is bounded, counted and said."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import pytest

from wiretide.tracer.assemble import AssemblyConfig
from wiretide.tracer.engine import Engine
from wiretide.tracer.partition import (
    FACT_TIMEOUT_NS,
    ROLE_CALLEE,
    FactError,
    Partition,
    decode_facts,
    encode_facts,
    key_of,
    partition_of_key,
    replica_index,
    span_id_of,
)
from wiretide.tracer.spans import KIND_SERVER, Span, SpanIds, spans_from_entry

from .chains import build, score
from .test_trees import three_hops

Key = tuple[str, bool]  # (entry id, server side)


def key(span: Span) -> Key:
    return span.entry_id, span.kind == KIND_SERVER


Shape = tuple[dict[Key, Key | None], set[frozenset[Key]], dict[Key, tuple[str, float]]]


def shape(spans: list[Span], whole: bool = True) -> Shape:
    """What a set of exported spans says, free of ids: each span's parent, the traces, each link."""
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans), "a span id exported twice"
    keys = [key(s) for s in spans]
    assert len(set(keys)) == len(keys), "a span exported twice"
    parent: dict[Key, Key | None] = {}
    traces: dict[bytes, set[Key]] = defaultdict(set)
    for s in spans:
        found = by_id.get(s.parent_span_id)
        parent[key(s)] = key(found) if found is not None else None
        traces[s.trace_id].add(key(s))
        if found is not None and whole:
            assert found.trace_id == s.trace_id, "a parent in another trace"
    links = {key(s): (s.link, s.confidence) for s in spans}
    return parent, {frozenset(t) for t in traces.values()}, links


def one(entries: list[dict[str, Any]], batch: int, **cfg: Any) -> list[Span]:
    engine = Engine(AssemblyConfig(**cfg))
    out: list[Span] = []
    for i in range(0, len(entries), batch):
        out += engine.ingest(copy.deepcopy(entries[i : i + batch]))
    return out + engine.flush()


def replicas(
    entries: list[dict[str, Any]],
    n: int,
    batch: int,
    deliver: bool = True,
    spy: list[tuple[int, str, bytes]] | None = None,
    **cfg: Any,
) -> tuple[list[list[Span]], list[Engine]]:
    """Each replica reads every batch; facts go between them after each batch, until none is left
    (each one also put in `spy` when given)."""
    engines = [Engine(AssemblyConfig(**cfg), partition=Partition(i, n)) for i in range(n)]
    out: list[list[Span]] = [[] for _ in range(n)]

    def exchange() -> None:
        while deliver:
            moved = False
            for engine in engines:
                for replica, facts in engine.take_facts().items():
                    assert replica != engine.partition.index  # type: ignore[union-attr]
                    if spy is not None:
                        spy.extend((replica, e, t) for e, t in facts)
                    out[replica] += engines[replica].told(facts)
                    moved = True
            if not moved:
                return

    for i in range(0, len(entries), batch):
        for r, engine in enumerate(engines):
            out[r] += engine.ingest(copy.deepcopy(entries[i : i + batch]))
        exchange()
    for r, engine in enumerate(engines):  # the others may still tell: only the last flush gives up
        out[r] += engine.flush(awaiting=False)
    exchange()
    for r, engine in enumerate(engines):
        out[r] += engine.flush()
    return out, engines


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("propagate", [False, True])
def test_replicas_export_together_what_one_tracer_exports(n: int, propagate: bool) -> None:
    chains = build(300, 6, pods=3, tiers=("frontend", "api", "backend", "db"), propagate=propagate, seed=5)
    alone = one(chains.entries, 40)
    parts, engines = replicas(chains.entries, n, 40)
    together = [s for part in parts for s in part]
    assert all(part for part in parts), "a replica exported nothing: the split is not a split"
    assert sum(e.other_replicas for e in engines) > 0  # entries were left to other replicas
    assert shape(together) == shape(alone)
    assert score(chains, together) == score(chains, alone)
    assert sum(e.assembler.stats.get("facts_missing", 0) for e in engines) == 0
    assert all(e.assembler.awaiting == 0 for e in engines)


@pytest.mark.parametrize("named", [False, True])
def test_three_hops_split_over_three_replicas_are_one_tree(named: bool) -> None:
    entries = sorted(three_hops(named, headers=False), key=lambda e: e["timestamp"] + e["elapsed_us"] * 1000)
    alone = one(entries, 1)
    for n in (2, 3, 5):
        parts, _ = replicas(entries, n, 1)
        together = [s for part in parts for s in part]
        parent, traces, _ = shape(together)
        assert len(traces) == 1 and len(together) == 6
        assert shape(together) == shape(alone)


def test_the_map_counts_every_call_once_over_the_replicas() -> None:
    chains = build(200, 4, pods=2, seed=9)
    alone = Engine(AssemblyConfig())
    alone.ingest(copy.deepcopy(chains.entries))
    alone.flush()
    _, engines = replicas(chains.entries, 3, 50)
    window = 10**15

    def requests(engine: Engine) -> dict[tuple[str, str], int]:
        _, edges, _ = engine.service_map(window)
        return {(e.source, e.destination): e.requests for e in edges}

    merged: dict[tuple[str, str], int] = defaultdict(int)
    for engine in engines:
        for edge, count in requests(engine).items():
            merged[edge] += count
    assert dict(merged) == requests(alone)


def ordered(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: e["timestamp"] + e["elapsed_us"] * 1000)


def copies_at(engine: Engine, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries `engine` holds a copy of (callee here, caller elsewhere)."""
    return [e for e in entries if engine.assembler.role_of(e)[0] == ROLE_CALLEE]


def test_a_replica_that_never_tells_leaves_copies_decided_here_counted_and_the_trees_broken() -> None:
    chains = build(60, 3, pods=2, tiers=("frontend", "api", "backend", "db"), seed=3)
    alone = one(chains.entries, 20)
    parts, engines = replicas(chains.entries, 3, 20, deliver=False)
    together = [s for part in parts for s in part]
    held = sum(len(copies_at(e, chains.entries)) for e in engines)
    assert held > 0
    assert sum(e.assembler.stats.get("facts_missing", 0) for e in engines) == held
    assert all(e.assembler.awaiting == 0 for e in engines)
    broken = shape(together, whole=False)[1]
    assert len(broken) > len(shape(alone)[1])  # the trees come apart where no word came

    # Without a flush, packet time passing FACT_TIMEOUT_NS decides the copies (none waits forever).
    engine = next(
        Engine(AssemblyConfig(), partition=Partition(i, 3))
        for i in range(3)
        if copies_at(engines[i], chains.entries)
    )
    waiting = copies_at(engine, chains.entries)
    engine.ingest(copy.deepcopy(chains.entries))
    assert engine.assembler.awaiting == len(waiting)
    last = max(e["timestamp"] + e["elapsed_us"] * 1000 for e in chains.entries)
    engine.assembler.advance(last + FACT_TIMEOUT_NS - 10**9)
    assert engine.assembler.awaiting == len(waiting)  # not yet
    engine.assembler.advance(last + FACT_TIMEOUT_NS + 1)
    assert engine.assembler.awaiting == 0
    assert engine.assembler.stats["facts_missing"] == len(waiting)


def test_facts_that_come_before_their_entry_are_kept_and_used() -> None:
    chains = build(60, 3, pods=2, tiers=("frontend", "api", "backend"), seed=4)
    # replicas enough that frontend and api (which calls backend) are on different ones
    n = next(
        n for n in range(2, 9) if partition_of_key("shop/frontend", n) != partition_of_key("shop/api", n)
    )
    r = partition_of_key("shop/api", n)
    spy: list[tuple[int, str, bytes]] = []
    replicas(chains.entries, n, 20, spy=spy)
    told_r = [(e, t) for to, e, t in spy if to == r]
    fresh = Engine(AssemblyConfig(), partition=Partition(r, n))
    assert told_r and copies_at(fresh, chains.entries)
    fresh.told(told_r)  # all of them before a single entry came (this replica reads behind the others)
    out = fresh.ingest(copy.deepcopy(chains.entries)) + fresh.flush()
    assert fresh.assembler.awaiting == 0
    assert fresh.assembler.stats.get("facts_missing", 0) == 0
    traces = {trace for _, trace in told_r}
    copy_ids = {span_id_of(e["id"], b"s") for e in copies_at(fresh, chains.entries)}
    under_copies = [s for s in out if s.parent_span_id in copy_ids]  # api's calls under its requests
    assert under_copies and all(s.trace_id in traces for s in under_copies)


def test_span_ids_are_the_same_on_every_replica_and_never_zero() -> None:
    assert span_id_of("01HX", b"c") == span_id_of("01HX", b"c")
    assert span_id_of("01HX", b"c") != span_id_of("01HX", b"s")
    assert len(span_id_of("x", b"s")) == 8
    assert partition_of_key("shop/api-1", 7) == partition_of_key("shop/api-1", 7)


def test_replica_numbers_from_settings_and_hostnames() -> None:
    assert replica_index("2", 3) == 2
    assert replica_index("auto", 3, hostname="tracer-1") == 1
    for bad, why in [("3", "not one of 0..2"), ("x", "replica number or auto"), ("-1", "not one of")]:
        with pytest.raises(ValueError, match=why):
            replica_index(bad, 3)
    with pytest.raises(ValueError, match="ordinal"):
        replica_index("auto", 3, hostname="tracer")


def test_facts_round_trip_and_bad_messages_are_refused_with_a_reason() -> None:
    facts = [("01HXA", bytes(range(1, 17))), ("e" * 64, b"\xff" * 16)]
    assert decode_facts(encode_facts(1, facts)) == facts
    bad = [
        (b"", "does not parse"),
        (b"[]", "not a JSON object"),
        (b'{"v": 9, "facts": []}', "version 9"),
        (b'{"v": 1}', "no list"),
        (b'{"v": 1, "facts": [["a"]]}', "not \\[entry id"),
        (b'{"v": 1, "facts": [["a", "00"]]}', "wrong length"),
        (b'{"v": 1, "facts": [["", "' + b"1" * 32 + b'"]]}', "wrong length"),
        (b'{"v": 1, "facts": [["a", "' + b"z" * 32 + b'"]]}', "not hex"),
        (b'{"v": 1, "facts": [["a", "' + b"0" * 32 + b'"]]}', "all zero"),
    ]
    for data, why in bad:
        with pytest.raises(FactError, match=why):
            decode_facts(data)


def test_the_key_is_shared_by_both_sides_of_an_anonymous_instance_and_by_all_pods_of_a_workload() -> None:
    hops = three_hops(False, headers=False)
    _, server_a = spans_from_entry(hops[0], SpanIds())  # a ends at 10.0.0.1:8080 (listening)
    client_b, _ = spans_from_entry(hops[1], SpanIds())  # b leaves 10.0.0.1 (calling)
    assert key_of(server_a.workload) == key_of(client_b.workload) == "10.0.0.1"
    pods = build(10, 2, pods=3, seed=2).entries
    keys = {key_of(spans_from_entry(e, SpanIds())[1].workload) for e in pods}
    assert keys == {"shop/frontend", "shop/api", "shop/backend"}

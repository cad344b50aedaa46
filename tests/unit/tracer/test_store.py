"""The trace store is bounded by bytes, not only by traces: calls with large bodies evict the oldest
traces once the estimate of what they hold passes the bound, each eviction counted, and the estimate
follows what the held objects really cost (measured with tracemalloc)."""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.unit.tracer.chains import build
from wiretide.tracer.engine import Engine
from wiretide.tracer.spans import Span
from wiretide.tracer.store import (
    DEFAULT_MAX_BYTES,
    SPAN_BASE,
    TEXT_BASE,
    TraceStore,
    entry_bytes,
    value_bytes,
)

BODY = 20_000  # characters of response body per call


def entries(calls: int, body: int = BODY, seed: int = 1) -> list[bytes]:
    """Calls as the tracer receives them: JSON, decoded per batch (orjson, as the bus readers do)."""
    out = []
    for e in build(calls, 4, seed=seed).entries:
        e["response"]["body"] = {"size": body, "mime": "text/plain", "content": "x" * body}
        out.append(orjson.dumps(e))
    return out


def spans_of(engine: Engine, docs: list[bytes]) -> list[Span]:
    got: list[Span] = []
    for i in range(0, len(docs), 200):
        got += engine.ingest([orjson.loads(d) for d in docs[i : i + 200]], 0)
    return got + engine.flush()


def test_calls_with_large_bodies_evict_the_oldest_traces_by_bytes_and_count_each() -> None:
    engine = Engine(max_traces=1_000_000)  # the count bound far away: bytes must bind
    store = engine.store
    store.max_bytes = 4 << 20
    spans = spans_of(engine, entries(1_000))
    assert store.held_bytes <= store.max_bytes
    assert store.evicted > 0
    assert len(store.traces) + store.evicted == len({s.trace_id for s in spans})
    assert store.held_bytes == sum(store.sizes.values())
    # What is held is the newest: the last trace is answered, the first is not.
    assert store.get(spans[-1].trace_id.hex())
    assert not store.get(spans[0].trace_id.hex())


def test_the_count_bound_still_holds_for_small_calls() -> None:
    engine = Engine(max_traces=50)
    spans_of(engine, entries(300, body=0))
    assert len(engine.store.traces) == 50
    assert engine.store.evicted > 0


def test_a_single_trace_larger_than_the_bound_is_forgotten_too_and_counted() -> None:
    engine = Engine()
    store = engine.store
    store.max_bytes = 10_000  # less than one call with its body
    spans_of(engine, entries(5))
    assert store.held_bytes <= store.max_bytes
    assert store.evicted >= 1


def test_the_estimate_follows_what_the_held_spans_and_entries_really_cost() -> None:
    docs = entries(1_500)
    gc.collect()
    tracemalloc.start()
    try:
        objs: list[dict[str, Any]] = [orjson.loads(d) for d in docs]
        real = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    estimate = sum(value_bytes(o) for o in objs)
    # Never far below what they cost (the bound would not bind), never wildly above (it would evict
    # for nothing).
    assert 0.8 * real <= estimate <= 1.5 * real


def test_the_default_bound_keeps_the_store_far_within_the_tracers_memory_budget() -> None:
    assert DEFAULT_MAX_BYTES <= 300 * 1_000_000 // 4
    with pytest.raises(ValueError):
        TraceStore(max_bytes=0)


def test_deeply_nested_values_are_estimated_without_walking_them_all() -> None:
    deep: Any = "x"
    for _ in range(5_000):  # deeper than the recursion limit: the walk must stop early
        deep = [deep]
    assert value_bytes({"body": deep}) > 0


@pytest.mark.parametrize("body", [BODY, 0, 300])
def test_the_estimate_from_the_json_text_follows_what_decoded_entries_really_cost(body: int) -> None:
    docs = entries(1_500, body=body)
    gc.collect()
    tracemalloc.start()
    try:
        objs: list[dict[str, Any]] = [orjson.loads(d) for d in docs]
        real = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    estimate = sum(entry_bytes(o) for o in objs)
    assert 0.8 * real <= estimate <= 1.5 * real, (estimate, real)
    # The JSON as received gives the same estimate as the entry encoded again.
    assert [entry_bytes(o, d) for o, d in zip(objs, docs, strict=True)] == [entry_bytes(o) for o in objs]


def test_wide_characters_and_what_json_cannot_hold_are_walked_instead() -> None:
    wide = {"body": "\U0001f600" + "x" * 10_000}  # one emoji: 4 bytes for every character
    assert entry_bytes(wide) == entry_bytes(wide, orjson.dumps(wide)) == value_bytes(wide) > 40_000
    deep: Any = "x"
    for _ in range(1_000):  # beyond what orjson encodes
        deep = [deep]
    assert entry_bytes({"body": deep}) == value_bytes({"body": deep}) > 0
    assert entry_bytes({"n": 1 << 70}) == value_bytes({"n": 1 << 70})


def test_spans_are_charged_the_size_the_assembler_set_once_per_call() -> None:
    engine = Engine()
    spans = spans_of(engine, entries(20))
    client, server = spans[0], spans[0].partner
    assert server is not None and client.size > server.size > 0
    assert engine.store.held_bytes == sum(s.size for s in spans)


def ingest_as_the_service_does(engine: Engine, docs: list[bytes]) -> list[Span]:
    """Each batch decoded, with the JSON as received beside it (the tracer service's consumer)."""
    got: list[Span] = []
    for i in range(0, len(docs), 200):
        chunk = docs[i : i + 200]
        got += engine.ingest([orjson.loads(d) for d in chunk], 0, chunk)
    return got + engine.flush()


def test_decided_calls_are_held_as_their_json_and_queries_read_them_as_before() -> None:
    docs = entries(300, body=300)
    with_text, with_docs = Engine(), Engine()
    ingest_as_the_service_does(with_text, docs)
    spans_of(with_docs, docs)
    held = with_text.store.spans()
    assert held and all(s.text and len(s.entry) <= 1 for s in held)  # no decoded document kept
    # What is kept of the entry (its flow id) is one object per call, shared by both sides.
    assert len({id(s.entry) for s in held}) == len({id(s.text) for s in held}) == len(held) // 2
    assert all(len(s.entry) > 1 for s in with_docs.store.spans())  # (without the JSON: kept)
    counts = []
    for predicate in (
        lambda e: e["method"] == "GET" and e["status"] == 200,
        lambda e: e["path"].startswith("/api/") and e["elapsed_us"] > 2_000,
        lambda e: e["response"]["body"]["size"] == 300,
        lambda e: False,
    ):
        found = [replace(t, trace_id="") for t in with_text.store.find(predicate, limit=1_000)]
        assert found == [replace(t, trace_id="") for t in with_docs.store.find(predicate, limit=1_000)]
        drawn = with_text.service_map(10**12, predicate)[:2]
        assert drawn == with_docs.service_map(10**12, predicate)[:2]
        counts.append((len(found), len(drawn[1])))
    assert all(n and edges for n, edges in counts[:3]) and counts[3] == (0, 0), counts
    some = orjson.loads(docs[42])
    found = with_text.store.find(lambda e: e["id"] == some["id"])
    assert len(found) == 1
    assert any(s.entry_id == some["id"] for s in with_text.store.get(found[0].trace_id))


def test_a_call_held_as_its_json_is_charged_its_length_once_and_costs_less_than_its_document() -> None:
    docs = entries(400, body=2_000)
    engine = Engine(max_traces=1_000_000)
    spans = ingest_as_the_service_does(engine, docs)
    store = engine.store
    assert store.evicted == 0
    assert store.held_bytes == sum(store.sizes.values())
    # One side of each call is charged its JSON, the other its own objects.
    calls = {s.entry_id for s in spans}
    text_bytes = sum(len(d) for d in docs)
    assert store.held_bytes == len(spans) * SPAN_BASE + len(calls) * TEXT_BASE + text_bytes
    gc.collect()
    tracemalloc.start()
    try:
        as_docs = [orjson.loads(d) for d in docs]
        decoded = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(as_docs) == len(docs) and text_bytes + len(docs) * TEXT_BASE < decoded / 2


def test_evicting_calls_held_as_json_counts_each_call_once_and_lets_the_json_go() -> None:
    engine = Engine(max_traces=20)
    spans = ingest_as_the_service_does(engine, entries(100, body=0))
    store = engine.store
    assert store.evicted > 0
    held = {id(s) for s in store.spans()}
    gone = [s for s in spans if id(s) not in held]
    assert gone and all(not s.text and len(s.entry) <= 1 for s in gone)
    calls_gone = {s.entry_id for s in gone if s.trace_id not in store.traces}
    assert store.evicted_calls == len(calls_gone)

"""The tracer's memory per call, measured (tracemalloc): the service map keeps only what it aggregates
(no entry, no span), the assembler holds its waiting calls within a byte bound, and what the trace
store evicts is let go by every part (the assembler keeps spans for linking, not their entries)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from tests.unit.tracer.chains import build
from wiretide.tracer.assemble import AssemblyConfig
from wiretide.tracer.engine import Engine

BODY = 20_000  # characters of response body per call, for the byte bounds


def documents(requests: int, body: int = 0) -> list[bytes]:
    """Calls as the tracer receives them (JSON, decoded per batch as the bus readers do)."""
    out = []
    for e in build(requests, 4, seed=3).entries:
        if body:
            e["response"]["body"] = {"size": body, "mime": "text/plain", "content": "x" * body}
        out.append(orjson.dumps(e))
    return out


def feed(engine: Engine, docs: list[bytes]) -> None:
    for i in range(0, len(docs), 200):
        engine.ingest([orjson.loads(d) for d in docs[i : i + 200]], 0)


@contextmanager
def traced() -> Iterator[None]:
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def held() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_the_service_map_holds_a_fraction_of_a_kilobyte_per_call_not_its_entry() -> None:
    docs = documents(2_000)  # 6,000 calls
    with traced():
        engine = Engine()
        feed(engine, docs)
        engine.flush()
        engine.store.traces.clear()  # what the store held: gone, so only the map can keep entries
        before = held()
        calls = len(engine.map.records)
        engine.map.records.clear()
        per_call = (before - held()) / calls
    assert calls == len(docs)
    # A record (a tuple of times, shared ends, protocol, flags) is ~0.2 KB; an entry is several.
    assert 40 < per_call < 300, per_call


def test_the_assembler_holds_its_waiting_calls_within_its_byte_bound() -> None:
    docs = documents(500, body=BODY)  # 1,500 calls of ~20 KB each, all within one window
    bound = 2 << 20
    with traced():
        base = held()
        engine = Engine(AssemblyConfig(max_pending_bytes=bound), max_traces=1_000_000)
        engine.store.max_bytes = 1  # the store lets every trace go: only the assembler can hold entries
        feed(engine, docs)
        assembler = engine.assembler
        assert assembler.pending_bytes <= bound
        total = held() - base
    assert assembler.stats.get("decided_early_pressure", 0) > 0
    per_call = total / len(docs)
    # Without the bound every call's 20 KB body stays until its window closes (~26 KB a call held);
    # with it, the bound's worth of waiting calls and, for linking, each call's two spans with their
    # attributes (~3 KB: all 1,500 calls are within one window here).
    assert per_call < 6_000, per_call


def test_spans_the_store_evicts_keep_only_the_flow_id_their_linking_reads() -> None:
    engine = Engine(max_traces=5)
    docs = documents(30)
    for d in docs:
        entry = orjson.loads(d)
        entry["flow_id"] = "f1"
        engine.ingest([entry], 0)
    spans = engine.flush()
    assert engine.store.evicted > 0
    held_ids = {id(s) for t in engine.store.traces.values() for s in t}
    gone = [s for s in engine.assembler._inbound["frontend-0"].spans if id(s) not in held_ids]
    assert gone and all(s.entry == {"flow_id": "f1"} for s in gone)
    assert spans  # the spans were emitted whole before the store let their entries go

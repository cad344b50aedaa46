"""The tracer lets a decoded entry go as soon as its spans are made, when the entry came with its JSON
(as the service reads it): the spans keep the flow id, the ends and the call's outcome, queries decode
the JSON again. Everything the tracer answers is the same as when it kept the documents."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from tests.unit.tracer.chains import build
from wiretide.tracer.causality import KernelCausality
from wiretide.tracer.engine import Engine
from wiretide.tracer.spans import Span, entry_of
from wiretide.tracer.store import SPAN_BASE, TEXT_BASE


def traffic(propagate: bool) -> list[bytes]:
    """Chains with failures and anonymous callers mixed in (their calls reach the map late)."""
    rnd = random.Random(7)
    out = []
    for e in build(400, 6, seed=3, pods=2, propagate=propagate).entries:
        if rnd.random() < 0.15:
            e["status"] = e["response"]["status"] = rnd.choice((404, 500, 503))
        if rnd.random() < 0.2:
            e["error"] = {"type": "timeout", "message": "no response seen"}
            e["status"] = e["response"] = None
        if e["src"].get("name") == "frontend" and rnd.random() < 0.5:
            e["src"] = {"ip": e["src"]["ip"], "port": e["src"]["port"]}  # an anonymous caller
        out.append(orjson.dumps(e))
    return out


def run(docs: list[bytes], with_text: bool, kernel: bool = False) -> tuple[Engine, list[Span]]:
    engine = Engine()
    if kernel:
        engine.use_kernel_causality(KernelCausality())
    spans: list[Span] = []
    for i in range(0, len(docs), 150):
        chunk = docs[i : i + 150]
        spans += engine.ingest([orjson.loads(d) for d in chunk], 0, chunk if with_text else None)
    return engine, spans + engine.flush()


def shape(spans: list[Span]) -> list[tuple[Any, ...]]:
    """What was exported, trace and span ids aside (random per engine)."""
    by_id = {s.span_id: s for s in spans}
    out = []
    for s in spans:
        parent = by_id.get(s.parent_span_id)
        out.append(
            (
                s.entry_id, s.kind, s.name, sorted(s.attributes.items()), s.error, s.status_message,
                s.link, s.confidence, parent.entry_id if parent else None, parent.kind if parent else None,
            )
        )  # fmt: skip
    return sorted(out, key=repr)


def red(engine: Engine) -> dict[tuple[str, str, str], dict[str, int]]:
    return {
        series.labels: {k: calls for k, (calls, _) in series.requests.items()}
        for series in engine.map._children.values()
    }


@pytest.mark.parametrize("propagate", [False, True])
def test_everything_answered_is_the_same_as_with_the_documents_kept(propagate: bool) -> None:
    docs = traffic(propagate)
    light, light_spans = run(docs, with_text=True)
    full, full_spans = run(docs, with_text=False)
    assert shape(light_spans) == shape(full_spans)
    assert red(light) == red(full)
    outcomes = {cls for classes in red(light).values() for cls in classes}
    assert {"2xx", "4xx", "5xx", "error"} <= outcomes  # the outcomes were worked out, not defaulted
    assert light.service_map(0)[:2] == full.service_map(0)[:2]
    for predicate in (lambda e: e["status"] == 503, lambda e: e["error"] is not None):
        found = [(t.root_name, t.span_count, t.error) for t in light.store.find(predicate, limit=10_000)]
        assert found and found == [
            (t.root_name, t.span_count, t.error) for t in full.store.find(predicate, limit=10_000)
        ]
        assert light.service_map(0, predicate)[:2] == full.service_map(0, predicate)[:2]


def test_a_call_waiting_for_its_window_holds_its_json_not_the_decoded_entry() -> None:
    docs = traffic(False)
    engine = Engine()
    chunk = docs[:300]
    decided = engine.ingest([orjson.loads(d) for d in chunk], 0, chunk)
    waiting = [span for _, _, span in engine.assembler._pending]
    assert waiting  # calls wait for their window
    made = decided + waiting + [s.partner for s in waiting if s.partner is not None]
    for span in made:
        assert set(span.entry) <= {"flow_id", "src", "dst"}
        assert span.text in chunk and entry_of(span) == orjson.loads(span.text)
    # The pending bound weighs what a waiting call holds: its JSON.
    client = next(s for s in made if s.size > SPAN_BASE)
    assert client.size == SPAN_BASE + TEXT_BASE + len(client.text)


def test_with_kernel_causality_the_entry_is_kept_for_the_decision() -> None:
    docs = traffic(False)[:200]
    engine = Engine()
    engine.use_kernel_causality(KernelCausality())
    engine.ingest([orjson.loads(d) for d in docs], 0, docs)
    waiting = [span for _, _, span in engine.assembler._pending]
    assert waiting and all(len(s.entry) > 3 and s.entry == orjson.loads(s.text) for s in waiting)

"""Recent traces, kept in memory for `GetTrace` and `FindTraces`.

Rule: bounded by trace count — the trace touched longest ago is forgotten first, and every eviction
is counted; the store answers only from what it still holds (long-term storage is the OTLP backend's).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from wiretide.tracer.spans import Span

EVICTED = Counter("wiretide_tracer_store_evicted_traces_total", "Traces forgotten by the in-memory store")
HELD = Gauge("wiretide_tracer_store_traces", "Traces held by the in-memory store")


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    root_name: str
    root_service: str
    start_ns: int
    duration_ns: int
    span_count: int
    error: bool
    min_confidence: float


def summarize(trace_id: bytes, spans: list[Span]) -> TraceSummary:
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids]
    root = min(roots or spans, key=lambda s: (s.start_ns, s.kind != 2))
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    return TraceSummary(
        trace_id=trace_id.hex(),
        root_name=root.name,
        root_service=root.workload.service_name,
        start_ns=start,
        duration_ns=end - start,
        span_count=len(spans),
        error=any(s.error for s in spans),
        min_confidence=min(s.confidence for s in spans),
    )


class TraceStore:
    def __init__(self, max_traces: int = 50_000) -> None:
        self.max_traces = max_traces
        self.traces: OrderedDict[bytes, list[Span]] = OrderedDict()
        self.evicted = 0

    def add(self, spans: list[Span]) -> None:
        traces = self.traces
        for span in spans:
            bucket = traces.get(span.trace_id)
            if bucket is None:
                bucket = traces[span.trace_id] = []
                if len(traces) > self.max_traces:
                    traces.popitem(last=False)
                    self.evicted += 1
                    EVICTED.inc()
            else:
                traces.move_to_end(span.trace_id)
            bucket.append(span)
        HELD.set(len(traces))

    def get(self, trace_id_hex: str) -> list[Span]:
        try:
            key = bytes.fromhex(trace_id_hex)
        except ValueError:
            return []
        return sorted(self.traces.get(key, []), key=lambda s: (s.start_ns, s.kind != 2))

    def find(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None,
        start_ns: int = 0,
        end_ns: int = 0,
        limit: int = 100,
    ) -> list[TraceSummary]:
        out = []
        for trace_id in reversed(self.traces):
            spans = self.traces[trace_id]
            first = min(s.start_ns for s in spans)
            if start_ns and first < start_ns:
                continue
            if end_ns and first > end_ns:
                continue
            if predicate is not None and not any(predicate(s.entry) for s in spans):
                continue
            out.append(summarize(trace_id, spans))
            if len(out) >= limit:
                break
        return out

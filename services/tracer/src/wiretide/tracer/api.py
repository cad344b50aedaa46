"""`TracerService` over gRPC: GetTrace, FindTraces (KFL; or the summaries of given traces),
GetServiceMap (KFL, window).

Rule: a query that does not parse is INVALID_ARGUMENT with KFL's message (position included), never
an internal error; answers say how complete they are (evictions so far).
"""

from __future__ import annotations

import grpc
import orjson

from wiretide.common.kfl import KflError, compile_predicate
from wiretide.proto.v1 import tracer_pb2, tracer_pb2_grpc
from wiretide.tracer.engine import Engine
from wiretide.tracer.spans import Span
from wiretide.tracer.store import TraceSummary, summarize

# Upper bound on one FindTraces answer; a larger limit is clamped.
MAX_FIND_LIMIT = 1_000
DEFAULT_FIND_LIMIT = 100
# Longest query text accepted.
MAX_QUERY_CHARS = 8_192
# Most trace ids one FindTraces may name (a client merging replicas names what all of them found).
MAX_TRACE_IDS = 32 * MAX_FIND_LIMIT


def _is_trace_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def summary_message(t: TraceSummary) -> tracer_pb2.TraceSummary:
    return tracer_pb2.TraceSummary(
        trace_id=t.trace_id,
        root_name=t.root_name,
        root_service=t.root_service,
        start_ns=t.start_ns,
        duration_ns=t.duration_ns,
        span_count=t.span_count,
        error=t.error,
        min_confidence=t.min_confidence,
    )


def span_message(span: Span) -> tracer_pb2.Span:
    return tracer_pb2.Span(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind_name,
        service_name=span.workload.service_name,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        link=span.link,
        confidence=span.confidence,
        entry_id=span.entry_id,
        attributes_json=orjson.dumps(span.attributes),
        error=span.error,
    )


class TracerApi(tracer_pb2_grpc.TracerServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    async def _predicate(query: str, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        if not query.strip():
            return None
        if len(query) > MAX_QUERY_CHARS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"query longer than {MAX_QUERY_CHARS}")
        try:
            return compile_predicate(query)
        except KflError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def GetTrace(
        self, request: tracer_pb2.GetTraceRequest, context: grpc.aio.ServicerContext
    ) -> tracer_pb2.GetTraceResponse:
        trace_id = request.trace_id.strip().lower()
        if not _is_trace_id(trace_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "trace_id must be 32 hex characters")
        spans = self.engine.store.get(trace_id)
        if not spans:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"trace {trace_id} not held")
        return tracer_pb2.GetTraceResponse(spans=[span_message(s) for s in spans])

    async def FindTraces(
        self, request: tracer_pb2.FindTracesRequest, context: grpc.aio.ServicerContext
    ) -> tracer_pb2.FindTracesResponse:
        if request.trace_ids:
            return await self._summaries(request, context)
        predicate = await self._predicate(request.query, context)
        limit = min(request.limit or DEFAULT_FIND_LIMIT, MAX_FIND_LIMIT)
        found = self.engine.store.find(predicate, request.start_ns, request.end_ns, limit)
        return tracer_pb2.FindTracesResponse(
            traces=[summary_message(t) for t in found], traces_evicted=self.engine.store.evicted
        )

    async def _summaries(
        self, request: tracer_pb2.FindTracesRequest, context: grpc.aio.ServicerContext
    ) -> tracer_pb2.FindTracesResponse:
        """The summaries of the traces `request.trace_ids` names that this tracer holds, in that order
        (each once); the query, time range and limit do not apply."""
        if len(request.trace_ids) > MAX_TRACE_IDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"more than {MAX_TRACE_IDS} trace_ids")
        wanted = list(dict.fromkeys(t.strip().lower() for t in request.trace_ids))
        if not all(_is_trace_id(t) for t in wanted):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "trace_ids must be 32 hex characters each")
        traces = []
        for trace_id in wanted:
            spans = self.engine.store.get(trace_id)
            if spans:
                traces.append(summary_message(summarize(bytes.fromhex(trace_id), spans)))
        return tracer_pb2.FindTracesResponse(traces=traces, traces_evicted=self.engine.store.evicted)

    async def GetServiceMap(
        self, request: tracer_pb2.GetServiceMapRequest, context: grpc.aio.ServicerContext
    ) -> tracer_pb2.GetServiceMapResponse:
        predicate = await self._predicate(request.query, context)
        if request.window_ns < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "window_ns must not be negative")
        nodes, edges, evicted = self.engine.service_map(request.window_ns, predicate)
        end = self.engine.map.latest_ns
        return tracer_pb2.GetServiceMapResponse(
            nodes=[
                tracer_pb2.ServiceNode(id=n.id, name=n.name, namespace=n.namespace, kind=n.kind)
                for n in nodes
            ],
            edges=[
                tracer_pb2.ServiceEdge(
                    source=e.source,
                    destination=e.destination,
                    protocol=e.protocol,
                    request_rate=e.request_rate,
                    error_rate=e.error_rate,
                    p50_ms=e.p50_ms,
                    p95_ms=e.p95_ms,
                    p99_ms=e.p99_ms,
                    bytes=e.bytes,
                    requests=e.requests,
                )
                for e in edges
            ],
            start_ns=end - request.window_ns if request.window_ns else 0,
            end_ns=end,
            records_evicted=evicted,
        )

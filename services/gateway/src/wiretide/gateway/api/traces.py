"""REST routes for traces and the service map: `/api/traces/{id}`, `/api/traces?q=`,
`/api/servicemap?q=&window=`. Each one calls the tracer over gRPC (`gw.settings.tracer_grpc`).

Rule: the handlers only translate — HTTP parameters to a tracer request and the answer back to JSON;
a bad parameter or a query the tracer refuses is a 400 with the tracer's message, a tracer that cannot
be reached is a 503, never a 500.
"""

from __future__ import annotations

import re
from typing import Any, Final, Protocol

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wiretide.proto.v1 import tracer_pb2, tracer_pb2_grpc

MAX_QUERY_CHARS: Final = 8_192  # longer filters are refused, not sent
MAX_LIMIT: Final = 1_000
DEFAULT_WINDOW_NS: Final = 15 * 60 * 10**9  # the service map covers the last 15 minutes unless told
RPC_TIMEOUT_S: Final = 10.0
_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$")
_UNIT_NS: Final = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_TRACE_ID: Final = re.compile(r"^[0-9a-f]{32}$")


class _Settings(Protocol):
    tracer_grpc: str


class _Gateway(Protocol):
    @property
    def settings(self) -> _Settings: ...


class BadRequest(ValueError):
    pass


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def parse_window(raw: str | None) -> int:
    """`window` as a duration (`90s`, `5m`, `1h`, `250ms`) or plain nanoseconds."""
    if raw is None or raw == "":
        return DEFAULT_WINDOW_NS
    text = raw.strip()
    if text.isdigit() and len(text) <= 19:
        return int(text)
    match = _DURATION.match(text)
    if not match:
        raise BadRequest(f"window must be a duration like 5m, 30s, 250ms or nanoseconds, got {raw[:40]!r}")
    return int(float(match.group(1)) * _UNIT_NS[match.group(2)])


def _int(request: Request, name: str, default: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 19:
        raise BadRequest(f"{name} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def _query(request: Request) -> str:
    q = request.query_params.get("q", "")
    if len(q) > MAX_QUERY_CHARS:
        raise BadRequest(f"query longer than {MAX_QUERY_CHARS} characters")
    return q


def _span(s: tracer_pb2.Span) -> dict[str, Any]:
    try:
        attributes = orjson.loads(s.attributes_json) if s.attributes_json else {}
    except orjson.JSONDecodeError:
        attributes = {}
    return {
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id or None,
        "name": s.name,
        "kind": s.kind,
        "service": s.service_name,
        "start_ns": s.start_ns,
        "end_ns": s.end_ns,
        "duration_us": (s.end_ns - s.start_ns) // 1000,
        "link": s.link,
        "confidence": s.confidence,
        "entry_id": s.entry_id,
        "error": s.error,
        "attributes": attributes,
    }


def routes(gw: _Gateway) -> list[Route]:
    """The trace routes, bound to `gw` (whose `settings.tracer_grpc` is the tracer's address)."""
    state: dict[str, Any] = {}

    def stub() -> tracer_pb2_grpc.TracerServiceStub:
        if "stub" not in state:
            state["channel"] = grpc.aio.insecure_channel(gw.settings.tracer_grpc)
            state["stub"] = tracer_pb2_grpc.TracerServiceStub(state["channel"])
        return state["stub"]  # type: ignore[no-any-return]

    async def call(method: str, message: Any) -> Any:
        try:
            return await getattr(stub(), method)(message, timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise BadRequest(exc.details() or "invalid request") from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise LookupError(exc.details() or "not found") from None
            raise ConnectionError(f"tracer unavailable: {code.name}") from None

    async def guarded(handler: Any, request: Request) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        except LookupError as exc:
            return _json({"error": str(exc)}, 404)
        except ConnectionError as exc:
            return _json({"error": str(exc)}, 503)

    async def get_trace(request: Request) -> Response:
        trace_id = str(request.path_params["trace_id"]).lower()
        if not _TRACE_ID.match(trace_id):
            raise BadRequest("trace id must be 32 hex characters")
        answer = await call("GetTrace", tracer_pb2.GetTraceRequest(trace_id=trace_id))
        return _json({"trace_id": trace_id, "spans": [_span(s) for s in answer.spans]})

    async def find_traces(request: Request) -> Response:
        message = tracer_pb2.FindTracesRequest(
            query=_query(request),
            start_ns=_int(request, "start"),
            end_ns=_int(request, "end"),
            limit=min(_int(request, "limit", 100), MAX_LIMIT),
        )
        answer = await call("FindTraces", message)
        traces = [
            {
                "trace_id": t.trace_id,
                "root_name": t.root_name,
                "root_service": t.root_service,
                "start_ns": t.start_ns,
                "duration_us": t.duration_ns // 1000,
                "span_count": t.span_count,
                "error": t.error,
                "min_confidence": t.min_confidence,
            }
            for t in answer.traces
        ]
        return _json({"traces": traces, "completeness": {"traces_evicted": answer.traces_evicted}})

    async def service_map(request: Request) -> Response:
        message = tracer_pb2.GetServiceMapRequest(
            query=_query(request), window_ns=parse_window(request.query_params.get("window"))
        )
        answer = await call("GetServiceMap", message)
        return _json(
            {
                "nodes": [
                    {"id": n.id, "name": n.name, "namespace": n.namespace, "kind": n.kind}
                    for n in answer.nodes
                ],
                "edges": [
                    {
                        "source": e.source,
                        "destination": e.destination,
                        "protocol": e.protocol,
                        "requests": e.requests,
                        "request_rate": e.request_rate,
                        "error_rate": e.error_rate,
                        "p50_ms": e.p50_ms,
                        "p95_ms": e.p95_ms,
                        "p99_ms": e.p99_ms,
                        "bytes": e.bytes,
                    }
                    for e in answer.edges
                ],
                "window": {"start_ns": answer.start_ns, "end_ns": answer.end_ns},
                "completeness": {"records_evicted": answer.records_evicted},
            }
        )

    async def trace_route(request: Request) -> Response:
        return await guarded(get_trace, request)

    async def traces_route(request: Request) -> Response:
        return await guarded(find_traces, request)

    async def map_route(request: Request) -> Response:
        return await guarded(service_map, request)

    return [
        Route("/api/traces/{trace_id}", trace_route, methods=["GET"]),
        Route("/api/traces", traces_route, methods=["GET"]),
        Route("/api/servicemap", map_route, methods=["GET"]),
    ]

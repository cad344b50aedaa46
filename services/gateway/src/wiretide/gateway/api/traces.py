"""REST routes for traces and the service map: `/api/traces/{id}`,
`/api/traces?q=&service=&min_duration=&max_duration=&error=&start=&end=&limit=`,
`/api/servicemap?q=&window=`. Each one calls the tracer over gRPC (`gw.settings.tracer_grpc`: every
replica's address, asked and merged by `Tracers`, common/tracers.py).
A trace search's `service` becomes a KFL clause on either end of a call (a workload's, a service's
or an end's name; `namespace/name`; an anonymous workload's `ip` or `ip:port`); its duration and error
filters are applied to the tracer's summaries.

Rule: the handlers only translate — HTTP parameters to a tracer request and the answer back to JSON;
a bad parameter or a query the tracer refuses is a 400 with the tracer's message, a tracer that cannot
be reached is a 503, never a 500; when some tracer replicas answer and others do not, the answer is
what those that answered hold, with `"partial"` naming the others. The tracer answers across every
namespace, so a scoped caller's query is narrowed to its scope before it is sent, and a scoped caller
sees only the spans of entries it may see (`visible_spans`: each looked up in the store, through the
same scope) — a trace, and a trace search's summaries, which are computed again from those spans
alone (`summarize`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, Final, Protocol

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wiretide.common.auth import NamespaceScope, check_restricted, principal_of
from wiretide.common.kfl import KflError
from wiretide.common.tls import Transport
from wiretide.common.tracers import Tracers
from wiretide.proto.v1 import tracer_pb2

MAX_QUERY_CHARS: Final = 8_192  # longer filters are refused, not sent
MAX_LIMIT: Final = 1_000
DEFAULT_WINDOW_NS: Final = 15 * 60 * 10**9  # the service map covers the last 15 minutes unless told
RPC_TIMEOUT_S: Final = 10.0
_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$")
_UNIT_NS: Final = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_TRACE_ID: Final = re.compile(r"^[0-9a-f]{32}$")
# An anonymous workload's name: an IPv4 address or [IPv6], with the listening port when it has one.
_ANONYMOUS: Final = re.compile(
    r"^(?:(\d{1,3}(?:\.\d{1,3}){3})|\[([0-9a-fA-F:.]+)\])(?::(\d{1,5}))?$|^([0-9a-fA-F]*:[0-9a-fA-F:.]+)$"
)
MAX_SERVICE_CHARS: Final = 256
# GetTrace calls in flight at once while a scoped caller's trace search is summarised again.
SCOPED_SUMMARY_CONCURRENCY: Final = 8


class _Settings(Protocol):
    tracer_grpc: str

    @property
    def transport(self) -> Transport: ...


class _Auth(Protocol):
    def call_metadata(self) -> tuple[tuple[str, str], ...]: ...


class _Queries(Protocol):
    async def get(self, entry_id: str, scope: NamespaceScope) -> dict[str, Any] | None: ...


class _Gateway(Protocol):
    @property
    def settings(self) -> _Settings: ...

    @property
    def auth(self) -> _Auth: ...

    @property
    def queries(self) -> _Queries: ...


class BadRequest(ValueError):
    pass


def _noted(body: dict[str, Any], partial: list[str]) -> dict[str, Any]:
    """`body` with `"partial"` naming the tracer replicas that did not answer, when some did not."""
    if partial:
        body["partial"] = partial
    return body


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


def _kfl_string(value: str) -> str:
    return orjson.dumps(value).decode()


def service_clause(service: str) -> str:
    """A KFL clause matching the calls that `service` (a trace view's service name) made or served."""
    text = service.strip()
    if not text or len(text) > MAX_SERVICE_CHARS or not text.isprintable():
        raise BadRequest(f"service must be a name of up to {MAX_SERVICE_CHARS} characters")
    anonymous = _ANONYMOUS.match(text)
    if anonymous:
        ip = anonymous.group(1) or anonymous.group(2) or anonymous.group(4)
        port = anonymous.group(3)
        if port:
            return f"(dst.ip == {_kfl_string(ip)} && dst.port == {int(port)})"
        return f"(src.ip == {_kfl_string(ip)} || dst.ip == {_kfl_string(ip)})"
    namespace, _, name = text.rpartition("/")
    sides = []
    for side in ("src", "dst"):
        n = _kfl_string(name)
        named = f"({side}.workload.name == {n} || {side}.service.name == {n} || {side}.name == {n})"
        if namespace:
            named = f"({named} && {side}.namespace == {_kfl_string(namespace)})"
        sides.append(named)
    return f"({sides[0]} || {sides[1]})"


def _duration_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return 0
    try:
        return parse_window(raw)
    except BadRequest:
        raise BadRequest(
            f"{name} must be a duration like 250ms, 2s or nanoseconds, got {raw[:40]!r}"
        ) from None


def _query(request: Request) -> str:
    """The `q` parameter (and `service`, as a clause) narrowed to the caller's namespace scope."""
    q = request.query_params.get("q", "")
    service = request.query_params.get("service", "")
    if service:
        clause = service_clause(service)
        q = f"({q}) && {clause}" if q.strip() else clause
    if len(q) > MAX_QUERY_CHARS:
        raise BadRequest(f"query longer than {MAX_QUERY_CHARS} characters")
    scope = principal_of(request.scope).scope
    if scope.unrestricted:
        return q
    try:
        check_restricted(scope, q)
    except (ValueError, KflError) as exc:
        raise BadRequest(str(exc)) from None
    return scope.restrict(q)


def span_json(s: tracer_pb2.Span) -> dict[str, Any]:
    """A tracer span as the API shows it."""
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


async def visible_spans(
    spans: Sequence[dict[str, Any]], scope: NamespaceScope, queries: _Queries
) -> list[dict[str, Any]]:
    """The spans (`span_json`) a caller with `scope` may see: those of entries the store gives it
    through that scope. A span without an entry belongs to no namespace anyone was given."""
    if scope.unrestricted:
        return list(spans)
    visible = {
        entry_id
        for entry_id in {s["entry_id"] for s in spans if s["entry_id"]}
        if await queries.get(entry_id, scope) is not None
    }
    return [s for s in spans if s["entry_id"] in visible]


def summarize(trace_id: str, spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A trace search's summary of `spans` (non-empty), as the tracer makes it: the root is the earliest
    span whose parent is not among them (a server span first at a tie)."""
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s["parent_span_id"] or s["parent_span_id"] not in ids]
    root = min(roots or spans, key=lambda s: (s["start_ns"], s["kind"] != "server"))
    start = min(s["start_ns"] for s in spans)
    return {
        "trace_id": trace_id,
        "root_name": root["name"],
        "root_service": root["service"],
        "start_ns": start,
        "duration_us": (max(s["end_ns"] for s in spans) - start) // 1000,
        "span_count": len(spans),
        "error": any(s["error"] for s in spans),
        "min_confidence": min(s["confidence"] for s in spans),
    }


def map_json(answer: Any, digits: bool = False) -> dict[str, Any]:
    """The service map's nodes and edges as JSON (`digits`: rates and latencies rounded, for a reader
    that does not need every digit, such as the LLM console's tools)."""

    def r(value: float, places: int) -> float:
        return round(value, places) if digits else value

    return {
        "nodes": [
            {"id": n.id, "name": n.name, "namespace": n.namespace, "kind": n.kind} for n in answer.nodes
        ],
        "edges": [
            {
                "source": e.source,
                "destination": e.destination,
                "protocol": e.protocol,
                "requests": e.requests,
                "request_rate": r(e.request_rate, 3),
                "error_rate": r(e.error_rate, 4),
                "p50_ms": r(e.p50_ms, 3),
                "p95_ms": r(e.p95_ms, 3),
                "p99_ms": r(e.p99_ms, 3),
                **({} if digits else {"bytes": e.bytes}),
            }
            for e in answer.edges
        ],
    }


def routes(gw: _Gateway) -> list[Route]:
    """The trace routes, bound to `gw` (whose `settings.tracer_grpc` lists the tracer replicas)."""
    state: dict[str, Tracers] = {}

    def tracers() -> Tracers:
        if "tracers" not in state:
            state["tracers"] = Tracers(gw.settings.tracer_grpc, gw.settings.transport, peer="tracer")
        return state["tracers"]

    async def call(method: str, message: Any, partial: list[str]) -> Any:
        """The tracer's answer (merged over its replicas; those that failed are added to `partial`)."""
        try:
            return await getattr(tracers(), method)(
                message, timeout=RPC_TIMEOUT_S, metadata=gw.auth.call_metadata(), partial=partial
            )
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
        partial: list[str] = []
        answer = await call("GetTrace", tracer_pb2.GetTraceRequest(trace_id=trace_id), partial)
        spans = [span_json(s) for s in answer.spans]
        scope = principal_of(request.scope).scope
        if not scope.unrestricted:
            spans = await visible_spans(spans, scope, gw.queries)
            if not spans:
                raise LookupError(f"trace {trace_id} not found")
        return _json(_noted({"trace_id": trace_id, "spans": spans}, partial))

    async def scoped_summary(
        trace_id: str, scope: NamespaceScope, gate: asyncio.Semaphore, partial: list[str]
    ) -> dict[str, Any] | None:
        """The summary of what `scope` may see of a trace (None: nothing, or the trace is gone)."""
        async with gate:
            try:
                answer = await call("GetTrace", tracer_pb2.GetTraceRequest(trace_id=trace_id), partial)
            except LookupError:
                return None
        spans = await visible_spans([span_json(s) for s in answer.spans], scope, gw.queries)
        return summarize(trace_id, spans) if spans else None

    async def find_traces(request: Request) -> Response:
        limit = min(_int(request, "limit", 100), MAX_LIMIT)
        shortest, longest = _duration_param(request, "min_duration"), _duration_param(request, "max_duration")
        errors = request.query_params.get("error", "")
        if errors not in ("", "true", "false"):
            raise BadRequest(f"error must be true or false, got {errors[:40]!r}")
        filtered = bool(shortest or longest or errors)
        message = tracer_pb2.FindTracesRequest(
            query=_query(request),
            start_ns=_int(request, "start"),
            end_ns=_int(request, "end"),
            # Filters on the summaries: ask for as many as one answer may hold, keep `limit` of them.
            limit=MAX_LIMIT if filtered else limit,
        )
        partial: list[str] = []
        answer = await call("FindTraces", message, partial)
        if filtered:
            kept = [
                t
                for t in answer.traces
                if t.duration_ns >= shortest
                and (not longest or t.duration_ns <= longest)
                and (not errors or t.error == (errors == "true"))
            ][:limit]
            del answer.traces[:]
            answer.traces.extend(kept)
        scope = principal_of(request.scope).scope
        if not scope.unrestricted:
            # The tracer's summaries speak for every span; a scoped caller's are made from its own.
            gate = asyncio.Semaphore(SCOPED_SUMMARY_CONCURRENCY)
            found = await asyncio.gather(
                *(scoped_summary(t.trace_id, scope, gate, partial) for t in answer.traces)
            )
            scoped = [t for t in found if t is not None]
            return _json(
                _noted({"traces": scoped, "completeness": {"traces_evicted": answer.traces_evicted}}, partial)
            )
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
        return _json(
            _noted({"traces": traces, "completeness": {"traces_evicted": answer.traces_evicted}}, partial)
        )

    async def service_map(request: Request) -> Response:
        message = tracer_pb2.GetServiceMapRequest(
            query=_query(request), window_ns=parse_window(request.query_params.get("window"))
        )
        partial: list[str] = []
        answer = await call("GetServiceMap", message, partial)
        body = map_json(answer)
        body["window"] = {"start_ns": answer.start_ns, "end_ns": answer.end_ns}
        body["completeness"] = {"records_evicted": answer.records_evicted}
        return _json(_noted(body, partial))

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

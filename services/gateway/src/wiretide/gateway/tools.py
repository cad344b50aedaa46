"""The tools over stored and live data — one set, served to the console's model by function calling,
to MCP clients by the MCP server, and over REST: `query_entries`, `get_entry`, `stats`, `service_map`,
`get_trace`, `list_agents`.

Rule: every tool answers through the same layer as the API — the caller's Principal decides what it
may see (role, namespace scope), entries come from `QueryService` as the UI's do (redacted at the
source) — and every answer is bounded (entries, groups, spans, string lengths, total bytes) and says
how complete it is. A bad argument, an unknown tool or an unreachable service is an answer with an
`error` the model can read and act on, never an exception out of `Tools.call`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import grpc
import orjson

from wiretide.common.auth import Principal, Role
from wiretide.common.auth.principal import PermissionDenied
from wiretide.common.rpc import channel
from wiretide.common.settings import CommonSettings
from wiretide.common.tracers import Tracers, TracersUnavailable
from wiretide.gateway.api.traces import BadRequest, map_json, parse_window, span_json, visible_spans
from wiretide.gateway.query import GROUP_KEYS, QueryError, QueryService
from wiretide.gateway.store import StoreError
from wiretide.proto.v1 import agents_pb2, agents_pb2_grpc, tracer_pb2

DEFAULT_ENTRIES: Final = 20
MAX_ENTRIES: Final = 50  # entries per answer: a model reads a page, then narrows the query
MAX_GROUPS: Final = 30
MAX_EDGES: Final = 100
MAX_SPANS: Final = 100
MAX_AGENTS: Final = 100
MAX_QUERY_CHARS: Final = 8_192  # as the REST API
MAX_STRING_CHARS: Final = 4_096  # a body or header longer than this is cut inside a tool answer
# A tool answer is at most this much JSON (a model's context is the scarce resource): beyond it strings
# are cut shorter, then list items dropped, and the answer says so.
MAX_RESULT_BYTES: Final = 32 * 1024
RPC_TIMEOUT_S: Final = 10.0
_TRACE_ID: Final = re.compile(r"^[0-9a-f]{32}$")


class ToolError(ValueError):
    """A call the tool refuses; the message is for the model (and the user)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object

    def openai(self) -> dict[str, Any]:
        """The chat-completions `tools` item."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.parameters}


@dataclass(frozen=True, slots=True)
class ToolResult:
    name: str
    content: dict[str, Any]
    ok: bool = True
    cited: tuple[str, ...] = ()  # ids of the entries the answer shows (the console links them)

    def text(self) -> str:
        return orjson.dumps(self.content, option=orjson.OPT_NON_STR_KEYS).decode()


def _schema(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


KFL_PARAM: Final = {
    "type": "string",
    "maxLength": MAX_QUERY_CHARS,
    "description": "a KFL filter (CEL with Kubeshark's names), e.g. 'http && status_code >= 500', "
    "'dst.namespace == \"shop\"', 'elapsed_time > duration(\"250ms\")'; empty = everything",
}

TOOLS: Final[tuple[ToolSpec, ...]] = (
    ToolSpec(
        "query_entries",
        "Captured API calls (entries) matching a KFL filter, newest first, one line of fields each "
        "(id, time, protocol, source, destination, method, path, status, latency, error, trace id). "
        "Use get_entry for headers and bodies.",
        _schema(
            {
                "kfl": KFL_PARAM,
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_ENTRIES,
                    "default": DEFAULT_ENTRIES,
                },
            }
        ),
    ),
    ToolSpec(
        "get_entry",
        "One entry by id, with its request and response (headers, bodies cut to a few KiB).",
        _schema({"id": {"type": "string", "maxLength": 64, "description": "the entry id"}}, ["id"]),
    ),
    ToolSpec(
        "stats",
        "Counts, errors, error rate, rate and p50/p95/p99 latency of the entries matching a KFL filter, "
        "grouped by one key.",
        _schema(
            {
                "kfl": KFL_PARAM,
                "group_by": {"type": "string", "enum": list(GROUP_KEYS), "default": "protocol"},
            }
        ),
    ),
    ToolSpec(
        "service_map",
        "Who calls whom over a recent window: nodes (workloads, services, pods, addresses) and edges "
        "with request counts, error rates and latency percentiles.",
        _schema(
            {
                "window": {
                    "type": "string",
                    "default": "15m",
                    "description": "how far back: a duration such as 30s, 5m, 1h",
                },
                "kfl": KFL_PARAM,
            }
        ),
    ),
    ToolSpec(
        "get_trace",
        "The spans of one distributed trace (32 hex digits), with how each was linked and its entry id.",
        _schema({"id": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}}, ["id"]),
    ),
    ToolSpec(
        "list_agents",
        "The network agents (JavaScript automations on the traffic): name, enabled, state, last error, "
        "invocation and failure counts.",
        _schema({}),
    ),
)
TOOL_NAMES: Final = frozenset(t.name for t in TOOLS)


# -- bounding answers ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Cut:
    strings: int = 0
    items: int = 0


def _cut(value: Any, max_chars: int, max_items: int, cut: _Cut) -> Any:
    if isinstance(value, str):
        if len(value) > max_chars:
            cut.strings += 1
            return value[:max_chars] + f"… [cut: {len(value)} chars]"
        return value
    if isinstance(value, dict):
        keys = list(value)
        if len(keys) > max_items:
            cut.items += len(keys) - max_items
            out = {k: _cut(value[k], max_chars, max_items, cut) for k in keys[:max_items]}
            out["…"] = f"{len(keys) - max_items} more keys cut"
            return out
        return {k: _cut(v, max_chars, max_items, cut) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > max_items:
            cut.items += len(value) - max_items
            value = value[:max_items]
        return [_cut(v, max_chars, max_items, cut) for v in value]
    return value


# Ever tighter (string length, items per list or object) until an answer fits MAX_RESULT_BYTES.
_SQUEEZE: Final = ((MAX_STRING_CHARS, 1_000), (1_024, 200), (256, 50), (64, 20))


def _size(doc: dict[str, Any]) -> int:
    return len(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))


def bound(content: dict[str, Any], list_key: str | None = None) -> dict[str, Any]:
    """`content` within MAX_RESULT_BYTES: strings, lists and objects cut ever shorter, then items of
    `list_key` dropped from the end; `completeness.cut_for_size` says what was cut."""
    cut = _Cut()
    completeness = content.get("completeness")
    doc: dict[str, Any] = content
    for max_chars, max_items in _SQUEEZE:
        cut = _Cut()  # what the last (the kept) pass cut
        body = {k: v for k, v in content.items() if k != "completeness"}
        doc = {**_cut(body, max_chars, max_items, cut), "completeness": completeness}
        if _size(doc) <= MAX_RESULT_BYTES:
            break
    dropped = 0
    items = doc.get(list_key) if list_key else None
    while _size(doc) > MAX_RESULT_BYTES and isinstance(items, list) and len(items) > 1:
        half = max(1, len(items) // 2)
        dropped += len(items) - half
        items = doc[list_key] = items[:half]  # type: ignore[index]
    if _size(doc) > MAX_RESULT_BYTES:
        doc = {"error": "the answer is too large to show; narrow the request", "completeness": completeness}
    if cut.strings or cut.items or dropped:
        report = dict(completeness) if isinstance(completeness, dict) else {}
        report["cut_for_size"] = {
            "strings_cut": cut.strings,
            "items_cut": cut.items,
            f"{list_key or 'items'}_dropped": dropped,
            "max_bytes": MAX_RESULT_BYTES,
        }
        doc["completeness"] = report
    return doc


# -- shapes -------------------------------------------------------------------------------------


def _end(end: Any) -> str:
    if not isinstance(end, dict):
        return "?"
    name = end.get("name") or end.get("ip") or "?"
    ns = end.get("namespace")
    port = end.get("port")
    text = f"{ns}/{name}" if ns else str(name)
    return f"{text}:{port}" if port and not end.get("name") else text


def _iso(ts: Any) -> str | None:
    if not isinstance(ts, int):
        return None
    return dt.datetime.fromtimestamp(ts / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


def line(e: dict[str, Any]) -> dict[str, Any]:
    """An entry as one line of fields (what `query_entries` answers)."""
    trace = e.get("trace") if isinstance(e.get("trace"), dict) else {}
    error = e.get("error") if isinstance(e.get("error"), dict) else None
    return {
        "id": e.get("id"),
        "time": _iso(e.get("timestamp")),
        "protocol": e.get("protocol"),
        "src": _end(e.get("src")),
        "dst": _end(e.get("dst")),
        "method": e.get("method"),
        "path": e.get("path"),
        "status": e.get("status"),
        "elapsed_ms": round(e["elapsed_us"] / 1000, 3) if isinstance(e.get("elapsed_us"), int) else None,
        "summary": e.get("summary"),
        "error": f"{error.get('type')}: {error.get('message')}" if error else None,
        "trace_id": (trace or {}).get("trace_id") or None,
    }


# -- the other services -------------------------------------------------------------------------


class Upstreams(Protocol):
    """What the tools ask other services (the tracer, the agents service)."""

    async def trace(self, trace_id: str) -> list[dict[str, Any]]: ...

    async def service_map(self, query: str, window_ns: int) -> dict[str, Any]: ...

    async def agents(self) -> list[dict[str, Any]]: ...


class UpstreamUnavailable(ConnectionError):
    pass


Metadata = Callable[[], Sequence[tuple[str, str]]]


class GrpcUpstreams:
    """The tracer and the agents service over gRPC, with the transport (mTLS) and the credentials this
    gateway presents to its peers (`metadata`)."""

    def __init__(self, settings: CommonSettings, metadata: Metadata = lambda: ()) -> None:
        self.settings = settings
        self.metadata = metadata

    @staticmethod
    def _refused(service: str, exc: grpc.aio.AioRpcError) -> Exception:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return LookupError(exc.details() or "not found")
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return ToolError(exc.details() or "invalid argument")
        return UpstreamUnavailable(f"the {service} service is unavailable: {exc.code().name}")

    async def _call(
        self, service: str, address: str, make: Callable[[grpc.aio.Channel], Awaitable[Any]]
    ) -> Any:
        try:
            async with channel(address, self.settings.transport, peer=service) as ch:
                return await make(ch)
        except grpc.aio.AioRpcError as exc:
            raise self._refused(service, exc) from None

    async def _tracer(self, make: Callable[[Tracers], Awaitable[Any]]) -> Any:
        """`make`'s answer from every tracer replica (common/tracers.py), merged."""
        try:
            async with Tracers(self.settings.tracer_grpc, self.settings.transport, peer="tracer") as tracers:
                return await make(tracers)
        except grpc.aio.AioRpcError as exc:
            raise self._refused("tracer", exc) from None
        except TracersUnavailable as exc:
            raise UpstreamUnavailable(f"the tracer service is unavailable: {exc}") from None

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        answer = await self._tracer(
            lambda tracers: tracers.GetTrace(
                tracer_pb2.GetTraceRequest(trace_id=trace_id),
                timeout=RPC_TIMEOUT_S,
                metadata=tuple(self.metadata()),
            ),
        )
        return [span_json(s) for s in answer.spans]

    async def service_map(self, query: str, window_ns: int) -> dict[str, Any]:
        partial: list[str] = []
        answer = await self._tracer(
            lambda tracers: tracers.GetServiceMap(
                tracer_pb2.GetServiceMapRequest(query=query, window_ns=window_ns),
                timeout=RPC_TIMEOUT_S,
                metadata=tuple(self.metadata()),
                partial=partial,
            ),
        )
        doc = map_json(answer, digits=True)
        doc["window"] = {"start": _iso(answer.start_ns), "end": _iso(answer.end_ns)}
        doc["records_evicted"] = answer.records_evicted
        if partial:  # tracer replicas that did not answer: their calls are missing
            doc["partial"] = partial
        return doc

    async def agents(self) -> list[dict[str, Any]]:
        answer = await self._call(
            "agents",
            self.settings.agents_grpc,
            lambda ch: agents_pb2_grpc.AgentsServiceStub(ch).ListAgents(
                agents_pb2.ListAgentsRequest(without_source=True),
                timeout=RPC_TIMEOUT_S,
                metadata=tuple(self.metadata()),
            ),
        )
        out = []
        for a in answer.agents:
            doc: dict[str, Any] = {
                "name": a.name,
                "enabled": a.enabled,
                "state": a.state,
                "last_error": a.last_error or None,
                "error_line": a.error_line or None,
                "invocations": a.invocations,
                "failures": a.failures,
            }
            if len(a.replicas) > 1:  # each replica runs its own copy: say which one failed
                doc["replicas"] = [
                    {
                        "replica": r.replica,
                        "state": "stale" if r.stale else r.state,
                        "last_error": r.last_error or None,
                    }
                    for r in a.replicas
                ]
            out.append(doc)
        return out


# -- the tools ----------------------------------------------------------------------------------


def _arguments(raw: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ToolError(
                f'the arguments are not JSON ({exc}); send an object like {{"kfl": "http"}}'
            ) from None
    else:
        doc = dict(raw)
    if not isinstance(doc, dict):
        raise ToolError("the arguments must be a JSON object")
    return doc


def _check(spec: ToolSpec, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments against the tool's schema (the subset the tools use), defaults filled in."""
    props: dict[str, Any] = spec.parameters["properties"]
    unknown = sorted(set(args) - set(props))
    if unknown:
        raise ToolError(
            f"{spec.name} takes {', '.join(props) or 'no arguments'}; unknown: {', '.join(unknown)}"
        )
    out: dict[str, Any] = {}
    for name, schema in props.items():
        if name not in args or args[name] is None:
            if name in spec.parameters["required"]:
                raise ToolError(f"{spec.name} needs '{name}'")
            if "default" in schema:
                out[name] = schema["default"]
            continue
        value = args[name]
        kind = schema["type"]
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise ToolError(f"'{name}' must be an integer, got {str(value)[:40]!r}")
            value = int(value)
            if value < schema.get("minimum", value):
                raise ToolError(f"'{name}' must be at least {schema['minimum']}")
        elif kind == "string":
            if not isinstance(value, str):
                raise ToolError(f"'{name}' must be a string, got {type(value).__name__}")
            if len(value) > schema.get("maxLength", len(value)):
                raise ToolError(f"'{name}' is longer than {schema['maxLength']} characters")
            if "enum" in schema and value not in schema["enum"]:
                raise ToolError(f"'{name}' must be one of {', '.join(schema['enum'])}, got {value[:40]!r}")
        out[name] = value
    return out


@dataclass
class Tools:
    """The tool set over one gateway's query layer and its peers."""

    queries: QueryService
    upstreams: Upstreams
    specs: tuple[ToolSpec, ...] = field(default=TOOLS)

    async def call(
        self, name: str, arguments: str | Mapping[str, Any] | None, principal: Principal
    ) -> ToolResult:
        """Run one tool for `principal`. Never raises for anything the caller or the model sent."""
        spec = next((s for s in self.specs if s.name == name), None)
        if spec is None:
            known = ", ".join(s.name for s in self.specs)
            return ToolResult(
                str(name)[:80], {"error": f"unknown tool {str(name)[:80]!r}; the tools are {known}"}, ok=False
            )
        try:
            principal.require(Role.VIEWER)
            args = _check(spec, _arguments(arguments))
            content, cited, list_key = await getattr(self, f"_{name}")(principal, **args)
        except (ToolError, QueryError, BadRequest, PermissionDenied) as exc:
            doc: dict[str, Any] = {"error": str(exc)}
            if isinstance(exc, QueryError):
                doc = exc.to_dict()
            return ToolResult(name, doc, ok=False)
        except LookupError as exc:
            return ToolResult(name, {"error": str(exc).strip("'\"")}, ok=False)
        except (UpstreamUnavailable, StoreError) as exc:
            return ToolResult(name, {"error": str(exc)}, ok=False)
        result = ToolResult(name, bound(content, list_key), True, cited)
        if cited:  # only the entries still shown after bounding are cited
            text = result.text()
            result = ToolResult(name, result.content, True, tuple(i for i in cited if f'"{i}"' in text))
        return result

    # Each returns (content, cited entry ids, the key of the list that may be shortened for size).

    async def _query_entries(self, principal: Principal, kfl: str = "", limit: int = DEFAULT_ENTRIES) -> Any:
        n = min(limit, MAX_ENTRIES)
        result = await self.queries.query(kfl, n, scope=principal.scope)
        rows = [line(e) for e in result.entries]
        completeness = {
            **result.completeness,
            "returned": len(rows),
            "more": result.next is not None,
            "limit_capped": limit > MAX_ENTRIES,
            "max_entries": MAX_ENTRIES,
        }
        if not principal.scope.unrestricted:
            completeness["namespaces"] = principal.scope.to_list()
        return {"entries": rows, "completeness": completeness}, tuple(str(r["id"]) for r in rows), "entries"

    async def _get_entry(self, principal: Principal, id: str) -> Any:
        doc = await self.queries.get(id.strip(), principal.scope)
        if doc is None:
            raise LookupError(f"no entry {id[:64]!r} (or not in your namespaces)")
        return {"entry": doc, "completeness": {"complete": True}}, (str(doc.get("id")),), None

    async def _stats(self, principal: Principal, kfl: str = "", group_by: str = "protocol") -> Any:
        stats = await self.queries.stats(kfl, group_by, principal.scope)
        groups = stats["groups"]
        completeness = {
            **stats["completeness"],
            "groups_total": len(groups),
            "groups_shown": min(len(groups), MAX_GROUPS),
        }
        return (
            {
                "by": stats["by"],
                "total": stats["total"],
                "groups": groups[:MAX_GROUPS],
                "completeness": completeness,
            },
            (),
            "groups",
        )

    async def _service_map(self, principal: Principal, window: str = "15m", kfl: str = "") -> Any:
        window_ns = parse_window(window)
        doc = await self.upstreams.service_map(QueryService.scoped(kfl, principal.scope), window_ns)
        scope = principal.scope
        nodes = doc["nodes"]
        if not scope.unrestricted:
            allowed = scope.namespaces or frozenset()
            inside = {n["id"] for n in nodes if n.get("namespace") in allowed}
            doc["edges"] = [e for e in doc["edges"] if e["source"] in inside or e["destination"] in inside]
            ends = {x for e in doc["edges"] for x in (e["source"], e["destination"])}
            nodes = [n for n in nodes if n["id"] in ends or n["id"] in inside]
        edges = sorted(doc["edges"], key=lambda e: -e["requests"])
        completeness = {
            "records_evicted": doc.get("records_evicted", 0),
            "edges_total": len(edges),
            "edges_shown": min(len(edges), MAX_EDGES),
        }
        if doc.get("partial"):
            completeness["tracers_not_answering"] = doc["partial"]
        shown = edges[:MAX_EDGES]
        ends = {x for e in shown for x in (e["source"], e["destination"])}
        content = {
            "window": doc.get("window"),
            "nodes": [n for n in nodes if n["id"] in ends][: 2 * MAX_EDGES],
            "edges": shown,
            "completeness": completeness,
        }
        return content, (), "edges"

    async def _get_trace(self, principal: Principal, id: str) -> Any:
        trace_id = id.strip().lower()
        if not _TRACE_ID.match(trace_id):
            raise ToolError("a trace id is 32 hex digits")
        spans = await self.upstreams.trace(trace_id)
        hidden = 0
        scope = principal.scope
        if not scope.unrestricted:
            kept = await visible_spans(spans, scope, self.queries)  # the rule /api/traces keeps
            hidden, spans = len(spans) - len(kept), kept
        if not spans:
            raise LookupError(f"no trace {trace_id} (or none of its spans is in your namespaces)")
        spans.sort(key=lambda s: s["start_ns"])
        rows = [
            {
                "span_id": s["span_id"],
                "parent_span_id": s["parent_span_id"],
                "service": s["service"],
                "name": s["name"],
                "kind": s["kind"],
                "start": _iso(s["start_ns"]),
                "duration_ms": round(s["duration_us"] / 1000, 3),
                "error": s["error"],
                "link": s["link"],
                "confidence": s["confidence"],
                "entry_id": s["entry_id"] or None,
            }
            for s in spans[:MAX_SPANS]
        ]
        completeness = {
            "spans_total": len(spans),
            "spans_shown": len(rows),
            "spans_outside_your_namespaces": hidden,
        }
        cited = tuple(str(r["entry_id"]) for r in rows if r["entry_id"])
        return {"trace_id": trace_id, "spans": rows, "completeness": completeness}, cited, "spans"

    async def _list_agents(self, principal: Principal) -> Any:
        agents = await self.upstreams.agents()
        completeness = {"agents_total": len(agents), "agents_shown": min(len(agents), MAX_AGENTS)}
        return {"agents": agents[:MAX_AGENTS], "completeness": completeness}, (), "agents"

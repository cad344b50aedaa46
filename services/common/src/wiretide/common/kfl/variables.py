"""The KFL vocabulary: every variable a filter can name, what it reads from the Entry, its type.

Rule: a variable is either a path into the entry document (optionally only defined for some
protocols, optionally converted to a timestamp or duration) or a small pure function of the entry;
anything not listed here is read as a path into the document from one of its top-level fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from wiretide.common.kfl.ast import PathKey
from wiretide.common.kfl.values import ERROR, Duration, Timestamp

Kind = str  # "bool" "int" "double" "string" "bytes" "list" "map" "timestamp" "duration" "null_type" "dyn"

# Which entry protocols each flag selects (DESIGN.md §3 lists the protocols).
FLAGS: Final[Mapping[str, frozenset[str]]] = {
    "http": frozenset({"http", "http2", "grpc", "graphql"}),
    "http2": frozenset({"http2", "grpc"}),
    "grpc": frozenset({"grpc"}),
    "ws": frozenset({"ws"}),
    "gql": frozenset({"graphql"}),
    "dns": frozenset({"dns"}),
    "tcp": frozenset({"tcp"}),
    "udp": frozenset({"udp"}),
    "sctp": frozenset({"sctp"}),
    "icmp": frozenset({"icmp"}),
    "redis": frozenset({"redis"}),
    "kafka": frozenset({"kafka"}),
    "amqp": frozenset({"amqp"}),
    "ldap": frozenset({"ldap"}),
    "radius": frozenset({"radius"}),
    "diameter": frozenset({"diameter"}),
    "tls": frozenset({"tls"}),  # also true when the entry carries a `tls` object (see TLS_FLAG)
}
TLS_FLAG: Final = "tls"

# Top-level fields of the entry document; a dotted name starting with one of these reads the document.
ENTRY_FIELDS: Final = frozenset(
    {
        "id", "node", "timestamp", "elapsed_us", "protocol", "version", "transport", "src", "dst", "method",
        "path", "status", "summary", "request", "response", "error", "size", "tls", "capture", "flow_id",
        "stream", "trace",
    }
)  # fmt: skip

_PEER_SCALARS: Final = {
    "ip": "string", "port": "int", "name": "string", "namespace": "string", "node": "string",
    "pod.name": "string", "pod.namespace": "string", "service.name": "string", "service.namespace": "string",
    "workload.kind": "string", "workload.name": "string", "process.pid": "int", "process.name": "string",
    "process.container_id": "string", "resolution": "string",
}  # fmt: skip

# Document paths that hold one scalar in a well-formed entry, with their type.
SCALAR_PATHS: Final[Mapping[str, Kind]] = {
    "id": "string", "node": "string", "timestamp": "int", "elapsed_us": "int", "protocol": "string",
    "version": "string", "transport": "string", "method": "string", "path": "string", "status": "int",
    "summary": "string", "flow_id": "dyn", "stream": "dyn",
    "error.type": "string", "error.message": "string", "size.request": "int", "size.response": "int",
    "tls.sni": "string", "tls.version": "string", "tls.cipher": "string", "tls.ja3": "string",
    "tls.ja4": "string", "tls.decrypted": "bool", "capture.source": "string", "capture.interface": "string",
    "trace.trace_id": "string", "trace.span_id": "string", "trace.parent_span_id": "string",
    "trace.link": "string", "trace.confidence": "double",
    "request.method": "string", "request.url": "string", "request.path": "string",
    "request.query_string": "string", "request.http_version": "string", "request.service": "string",
    "request.operation_name": "string", "request.operation_type": "string", "request.id": "int",
    "response.status": "int", "response.reason": "string", "response.grpc_status": "int",
    "response.grpc_message": "string", "response.rcode": "dyn",
    **{f"{side}.{field}": kind for side in ("src", "dst") for field, kind in _PEER_SCALARS.items()},
}  # fmt: skip

# Maps from names to strings: any one key below them is a scalar string path too.
STRING_MAPS: Final = frozenset(
    {
        "request.headers", "response.headers", "request.cookies", "response.cookies",
        "src.pod.labels", "dst.pod.labels",
    }
)  # fmt: skip

MAP_PATHS: Final = STRING_MAPS | {"request.query", "request.body", "response.body", "src", "dst", "request",
                                  "response", "size", "tls", "capture", "trace", "error"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Variable:
    """One KFL variable: where its value comes from, its type, and its documentation."""

    name: str
    kind: Kind
    description: str
    example: str
    path: tuple[PathKey, ...] = ()
    protocols: frozenset[str] | None = None  # defined only for entries of these protocols
    convert: str | None = None  # "timestamp" (int ns) or "duration_us" (int µs)
    compute: Callable[[dict[str, Any]], Any] | None = None
    flag: frozenset[str] | None = None


def fetch(doc: Any, path: tuple[PathKey, ...]) -> Any:
    """The value at `path`, or ERROR when any step is missing, null or of the wrong shape."""
    cur = doc
    for key in path:
        if type(key) is str:
            if type(cur) is not dict:
                return ERROR
            cur = cur.get(key)
            if cur is None:
                return ERROR
        else:
            if type(cur) is not list or not 0 <= key < len(cur):  # type: ignore[operator]
                return ERROR
            cur = cur[key]  # type: ignore[index]
            if cur is None:
                return ERROR
    return cur


def _strings(doc: dict[str, Any], path: tuple[str, ...], field: str) -> Any:
    items = fetch(doc, path)
    if type(items) is not list:
        return ERROR
    return [item[field] for item in items if type(item) is dict and type(item.get(field)) is str]


def _query_string(doc: dict[str, Any]) -> Any:
    query = fetch(doc, ("request", "query"))
    if type(query) is not dict:
        return ERROR
    result: dict[str, Any] = {}
    for name, values in query.items():
        if type(values) is list:
            if values and type(values[0]) is str:
                result[name] = values[0]
        elif type(values) is str:
            result[name] = values
    return result


def _peers(*paths: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    def collect(doc: dict[str, Any]) -> Any:
        seen: dict[str, None] = {}
        for side in ("src", "dst"):
            for path in paths:
                value = fetch(doc, (side, *path))
                if type(value) is str and value:
                    seen[value] = None
        return list(seen)

    return collect


def _total_size(doc: dict[str, Any]) -> Any:
    request, response = fetch(doc, ("size", "request")), fetch(doc, ("size", "response"))
    if type(request) is not int and type(response) is not int:
        return ERROR
    return (request if type(request) is int else 0) + (response if type(response) is int else 0)


def _flag(name: str, protocols: frozenset[str], description: str) -> Variable:
    example = name if name != "http" else "http && status_code >= 500"
    return Variable(name, "bool", description, example, flag=protocols)


_FLAG_DOCS: Final = {
    "http": "HTTP/1.x or HTTP/2, including gRPC and GraphQL calls",
    "http2": "HTTP/2, including gRPC",
    "grpc": "a gRPC call",
    "ws": "a WebSocket message",
    "gql": "a GraphQL operation",
    "dns": "a DNS query and answer",
    "tcp": "a raw TCP exchange no protocol claimed",
    "udp": "a raw UDP exchange no protocol claimed",
    "sctp": "an SCTP exchange",
    "icmp": "an ICMP message",
    "redis": "a Redis command",
    "kafka": "a Kafka request",
    "amqp": "an AMQP method",
    "ldap": "an LDAP operation",
    "radius": "a RADIUS exchange",
    "diameter": "a Diameter exchange",
    "tls": 'a TLS session (protocol "tls"), or any call that travelled over TLS (has a `tls` object)',
}

_VARIABLES: Final = (
    *(_flag(name, protocols, _FLAG_DOCS[name]) for name, protocols in FLAGS.items()),
    Variable(
        "status_code",
        "int",
        "status, normalised across protocols (HTTP status; 0 for Kafka; DNS rcode)",
        "status_code >= 500",
        ("status",),
    ),
    Variable(
        "timestamp",
        "timestamp",
        "when the request started",
        'timestamp > now() - duration("5m")',
        ("timestamp",),
        convert="timestamp",
    ),
    Variable(
        "elapsed_time",
        "duration",
        "response end minus request start; an int compares as µs",
        'elapsed_time > duration("250ms")',
        ("elapsed_us",),
        convert="duration_us",
    ),
    Variable(
        "url",
        "string",
        "the request URL (path and query string)",
        'url.contains("?debug=")',
        ("request", "url"),
    ),
    Variable(
        "query_string",
        "map",
        "query parameters, first value of each",
        'query_string["id"] == "7"',
        compute=_query_string,
    ),
    Variable(
        "http_version",
        "string",
        "HTTP version of the request",
        'http_version == "HTTP/2"',
        ("request", "http_version"),
    ),
    Variable("node_name", "string", "the capture node", 'node_name == "worker-1"', ("node",)),
    Variable(
        "grpc_method",
        "string",
        "the gRPC method name",
        'grpc_method == "SayHello"',
        ("request", "method"),
        protocols=frozenset({"grpc"}),
    ),
    Variable(
        "grpc_service",
        "string",
        "the gRPC service",
        'grpc_service == "helloworld.Greeter"',
        ("request", "service"),
        protocols=frozenset({"grpc"}),
    ),
    Variable(
        "grpc_status",
        "int",
        "the gRPC status code (0 = OK)",
        "grpc && grpc_status != 0",
        ("response", "grpc_status"),
        protocols=frozenset({"grpc"}),
    ),
    Variable(
        "gql_operation",
        "string",
        "the GraphQL operation name",
        'gql_operation == "GetUser"',
        ("request", "operation_name"),
        protocols=frozenset({"graphql"}),
    ),
    Variable(
        "gql_type",
        "string",
        "the GraphQL operation type",
        'gql_type == "mutation"',
        ("request", "operation_type"),
        protocols=frozenset({"graphql"}),
    ),
    Variable(
        "dns_questions",
        "list",
        "names asked in a DNS query",
        'dns && "example.com" in dns_questions',
        compute=lambda doc: _strings(doc, ("request", "questions"), "name"),
    ),
    Variable(
        "dns_question_types",
        "list",
        "record types asked",
        '"AAAA" in dns_question_types',
        compute=lambda doc: _strings(doc, ("request", "questions"), "type"),
    ),
    Variable(
        "dns_answers",
        "list",
        "the data of each DNS answer (addresses, names)",
        '"10.0.0.7" in dns_answers',
        compute=lambda doc: _strings(doc, ("response", "answers"), "data"),
    ),
    Variable(
        "dns_rcode",
        "dyn",
        "the DNS response code",
        "dns && dns_rcode != 0",
        ("response", "rcode"),
        protocols=frozenset({"dns"}),
    ),
    Variable(
        "tlsx_sni",
        "string",
        "TLS server name indication",
        'tlsx_sni.endsWith(".example.com")',
        ("tls", "sni"),
    ),
    Variable("tls_version", "string", "negotiated TLS version", 'tls_version == "1.3"', ("tls", "version")),
    Variable(
        "request_size", "int", "request bytes on the wire", "request_size > 1048576", ("size", "request")
    ),
    Variable(
        "response_size", "int", "response bytes on the wire", "response_size > 1048576", ("size", "response")
    ),
    Variable("total_size", "int", "request plus response bytes", "total_size > 1048576", compute=_total_size),
    Variable(
        "capture_source",
        "string",
        "af_packet, ebpf_tls or pcap",
        'capture_source == "ebpf_tls"',
        ("capture", "source"),
    ),
    Variable(
        "trace_id",
        "string",
        "the distributed trace this call belongs to",
        'trace_id == "4bf92f3577b3"',
        ("trace", "trace_id"),
    ),
    Variable(
        "namespaces",
        "list",
        "every namespace of either end (peer, pod, service)",
        '"payments" in namespaces',
        compute=_peers(("namespace",), ("pod", "namespace"), ("service", "namespace")),
    ),
    Variable(
        "pods",
        "list",
        "pod names of both ends",
        '"api-0" in pods',
        compute=_peers(
            ("pod", "name"),
        ),
    ),
    Variable(
        "services",
        "list",
        "service names of both ends",
        '"checkout" in services',
        compute=_peers(
            ("service", "name"),
        ),
    ),
    # KFL v1 spellings of the normalised fields.
    Variable("request.path", "string", "KFL v1 spelling of `path`", 'request.path == r"/api/.*"', ("path",)),
    Variable(
        "request.method", "string", "KFL v1 spelling of `method`", 'request.method == "GET"', ("method",)
    ),
    Variable(
        "response.status", "int", "KFL v1 spelling of `status_code`", "response.status == 500", ("status",)
    ),
)

VARIABLES: Final[Mapping[str, Variable]] = {v.name: v for v in _VARIABLES}

# KFL v1 aliases: pushdown treats them as the variable they spell.
ALIASES: Final[Mapping[str, str]] = {
    "request.path": "path",
    "request.method": "method",
    "response.status": "status_code",
}


def doc_kind(path: tuple[PathKey, ...]) -> Kind:
    """The type a well-formed entry holds at a document path ("dyn" when unknown)."""
    dotted = dotted_path(path)
    if dotted in SCALAR_PATHS:
        return SCALAR_PATHS[dotted]
    if len(path) >= 1 and dotted_path(path[:-1]) in STRING_MAPS and type(path[-1]) is str:
        return "string"
    if dotted in MAP_PATHS:
        return "map"
    return "dyn"


def is_scalar_path(path: tuple[PathKey, ...]) -> bool:
    """True where a well-formed entry holds a single scalar (never a list) — MongoDB can match it exactly."""
    if any(type(key) is not str for key in path):
        return False
    dotted = dotted_path(path)
    if dotted in SCALAR_PATHS:
        return True
    key = path[-1] if path else ""
    return (
        len(path) >= 2 and dotted_path(path[:-1]) in STRING_MAPS and isinstance(key, str) and key != ""
        and "." not in key and not key.startswith("$")
    )  # fmt: skip


def dotted_path(path: tuple[PathKey, ...]) -> str:
    return ".".join(str(key) for key in path)


def convert(value: Any, how: str | None) -> Any:
    if how is None or value is ERROR:
        return value
    if type(value) is not int:
        return ERROR
    if how == "timestamp":
        return Timestamp(value)
    return Duration(value * 1_000)

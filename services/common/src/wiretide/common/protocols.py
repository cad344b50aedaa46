"""The protocol table: per Entry `protocol`, its family, status reading, error rule, KFL vocabulary and
span naming — read by the gateway (`/api/stats`, `/api/protocols`), the tracer (spans, service map,
RED metrics), KFL and the UI (served as JSON).

Rule: what a protocol *means* to a consumer is decided here and only here. A consumer never tests
`protocol == "grpc"` for an error, a status text or a family; it asks this table. Adding a protocol is
one row (and its dissector module); an unknown name reads as a generic transport row, never an error.

The error rules follow the OpenTelemetry semantic conventions (http-spans.md#status, rpc/grpc.md): an
HTTP status >= 400 is the caller's error and >= 500 the server's; a gRPC call is judged by its
`grpc_status` whatever the HTTP status under it; an Entry whose `error` is set is an error for both sides.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

Family = Literal[
    "http", "rpc", "messaging", "database", "dns", "directory", "aaa", "tls", "transport", "network"
]  # fmt: skip
SpanNaming = Literal["http", "rpc", "dns", "messaging", "database", "summary"]

# Longest span name kept; beyond it names are cut (tracing backends index them).
MAX_NAME_CHARS: Final = 200
# Paths whose route (`route_of`) is remembered: paths repeat, and folding them is per entry.
MAX_ROUTES: Final = 8_192
# Unknown protocol names whose generic row is remembered (plugins emit a handful; more is hostile).
MAX_UNKNOWN: Final = 256
# Path segments that look like identifiers are folded in span names to keep their cardinality low.
_ID_SEGMENT: Final = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36})$")
_ID_START: Final = frozenset("0123456789abcdefABCDEF-")
# `http.request.method` values the semconv registry knows; any other is `_OTHER` (http-spans.md).
HTTP_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)


@dataclass(frozen=True, slots=True)
class Codes:
    """A set of status codes: the listed ones plus inclusive ranges (None = unbounded on that side)."""

    codes: frozenset[int] = frozenset()
    ranges: tuple[tuple[int | None, int | None], ...] = ()

    def __contains__(self, code: object) -> bool:
        if not isinstance(code, int):
            return False
        if code in self.codes:
            return True
        for lo, hi in self.ranges:  # noqa: SIM110 - a loop, not any(<generator>): this runs per entry, twice
            if (lo is None or code >= lo) and (hi is None or code <= hi):
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {"codes": sorted(self.codes), "ranges": [list(r) for r in self.ranges]}


NONE: Final = Codes()
NONZERO: Final = Codes(ranges=((None, -1), (1, None)))


@dataclass(frozen=True, slots=True)
class StatusRule:
    """Where a protocol's status code is read, how it is shown, and which codes are errors.

    A row has one or more rules; the first whose `path` holds an integer decides (gRPC: the
    `grpc_status` trailer, and only without one the HTTP status under it).
    """

    path: tuple[str, ...]  # into the Entry document
    client_errors: Codes = NONE  # codes that are an error for the caller
    server_errors: Codes = NONE  # codes that are the server's fault
    names: Mapping[int, str] = field(default_factory=dict)  # code → name ("UNAVAILABLE", "NXDOMAIN")
    text: str = "{code}"  # status text: "{code}", "{name}", "{name} ({code})"; no name → "{code}"
    error_type: str = "{code}"  # the `error.type` of an error code
    classes: bool = False  # the codes read as HTTP classes ("2xx" ... "5xx")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": list(self.path),
            "client_errors": self.client_errors.to_json(),
            "server_errors": self.server_errors.to_json(),
            "names": {str(k): v for k, v in sorted(self.names.items())},
            "text": self.text,
            "error_type": self.error_type,
            "classes": self.classes,
        }


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    """One row: what an Entry with `protocol == name` means to every consumer."""

    name: str  # the Entry's `protocol` value
    title: str  # display name
    family: Family
    transports: tuple[str, ...]
    description: str  # what an entry of it is; also the documentation of its KFL flag
    kfl_flags: tuple[str, ...]  # KFL flags true for its entries, its own first (`http` && `grpc`)
    kfl_fields: tuple[str, ...] = ()  # KFL variables defined only for entries of this protocol
    status: tuple[StatusRule, ...] = ()  # the first rule whose path holds a code decides
    span_naming: SpanNaming = "summary"
    system: str = ""  # the OpenTelemetry `rpc.system` / `db.system` / `messaging.system` value

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "family": self.family,
            "transports": list(self.transports),
            "description": self.description,
            "kfl_flags": list(self.kfl_flags),
            "kfl_fields": list(self.kfl_fields),
            "status": [rule.to_json() for rule in self.status],
            "span_naming": self.span_naming,
            "system": self.system,
        }


# gRPC status codes (grpc/doc/statuscodes.md).
GRPC_CODES: Final[Mapping[int, str]] = MappingProxyType({
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
})  # fmt: skip
# gRPC codes that make a *server* span an error (semconv rpc/grpc.md: UNKNOWN, DEADLINE_EXCEEDED,
# UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); every non-zero code is an error for the caller.
GRPC_SERVER_ERRORS: Final = frozenset({2, 4, 12, 13, 14, 15})
# DNS RCODEs (RFC 1035 §4.1.1, RFC 2136 §2.2).
DNS_RCODES: Final[Mapping[int, str]] = MappingProxyType({
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
    7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
})  # fmt: skip
# DNS RCODEs that mean the resolver failed rather than answered (SERVFAIL, REFUSED); NXDOMAIN is an answer.
DNS_ERROR_RCODES: Final = frozenset({2, 5})

_HTTP_CLIENT: Final = Codes(ranges=((400, None),))
_HTTP_SERVER: Final = Codes(ranges=((500, None),))
_HTTP_RULES: Final = (
    StatusRule(("status",), _HTTP_CLIENT, _HTTP_SERVER, classes=True),
    StatusRule(("response", "status"), _HTTP_CLIENT, _HTTP_SERVER, classes=True),
)
_GRPC_RULES: Final = (
    StatusRule(
        ("response", "grpc_status"),
        client_errors=Codes(ranges=((1, None),)),
        server_errors=Codes(GRPC_SERVER_ERRORS),
        names=GRPC_CODES,
        text="{name} ({code})",
        error_type="{name}",  # semconv rpc/grpc.md: `error.type` is the status code's name
    ),
    *_HTTP_RULES,  # no grpc-status trailer (a proxy answered): the HTTP status under it decides
)
_DNS_RULES: Final = tuple(
    StatusRule(
        path,
        client_errors=Codes(DNS_ERROR_RCODES),
        server_errors=Codes(DNS_ERROR_RCODES),
        names=DNS_RCODES,
        text="{name}",
        error_type="rcode_{code}",
    )
    for path in (("status",), ("response", "rcode"))
)
_PLAIN: Final = (StatusRule(("status",)),)
_MESSAGING: Final = (StatusRule(("status",), NONZERO, NONZERO),)
# Stores report a failed command as a negative status.
_NEGATIVE: Final = Codes(ranges=((None, -1),))
_DATABASE: Final = (StatusRule(("status",), _NEGATIVE, _NEGATIVE, error_type="db_error"),)


def _row_of(
    name: str,
    title: str,
    family: Family,
    transports: tuple[str, ...],
    description: str,
    *,
    kfl_flags: tuple[str, ...] = (),
    kfl_fields: tuple[str, ...] = (),
    status: tuple[StatusRule, ...] = _PLAIN,
    span_naming: SpanNaming = "summary",
    system: str = "",
) -> ProtocolInfo:
    """A row whose own KFL flag is its name unless `kfl_flags` says otherwise."""
    flags = kfl_flags or (name,)
    return ProtocolInfo(
        name, title, family, transports, description, flags, kfl_fields, status, span_naming, system
    )


# In the order KFL lists its flags.
_TABLE: Final = (
    _row_of(
        "http", "HTTP/1", "http", ("tcp",), "HTTP/1.x or HTTP/2, including gRPC and GraphQL calls",
        status=_HTTP_RULES, span_naming="http",
    ),
    _row_of(
        "http2", "HTTP/2", "http", ("tcp",), "HTTP/2, including gRPC",
        kfl_flags=("http2", "http"), status=_HTTP_RULES, span_naming="http",
    ),
    _row_of(
        "grpc", "gRPC", "rpc", ("tcp",), "a gRPC call",
        kfl_flags=("grpc", "http2", "http"), kfl_fields=("grpc_method", "grpc_service", "grpc_status"),
        status=_GRPC_RULES, span_naming="rpc", system="grpc",
    ),
    _row_of(
        "ws", "WebSocket", "http", ("tcp",), "a WebSocket message", status=_HTTP_RULES, span_naming="http"
    ),
    _row_of(
        "graphql", "GraphQL", "http", ("tcp",), "a GraphQL operation",
        kfl_flags=("gql", "http"), kfl_fields=("gql_operation", "gql_type"),
        status=_HTTP_RULES, span_naming="http",
    ),
    _row_of(
        "dns", "DNS", "dns", ("udp", "tcp"), "a DNS query and answer",
        kfl_fields=("dns_questions", "dns_question_types", "dns_answers", "dns_rcode"),
        status=_DNS_RULES, span_naming="dns",
    ),
    _row_of("tcp", "TCP", "transport", ("tcp",), "a raw TCP exchange no protocol claimed"),
    _row_of("udp", "UDP", "transport", ("udp",), "a raw UDP exchange no protocol claimed"),
    _row_of("sctp", "SCTP", "transport", ("sctp",), "an SCTP exchange"),
    _row_of("icmp", "ICMP", "network", ("icmp",), "an ICMP message"),
    _row_of(
        "redis", "Redis", "database", ("tcp",), "a Redis command",
        status=_DATABASE, span_naming="database", system="redis",
    ),
    _row_of(
        "kafka", "Kafka", "messaging", ("tcp",), "a Kafka request",
        status=_MESSAGING, span_naming="messaging", system="kafka",
    ),
    _row_of(
        "amqp", "AMQP", "messaging", ("tcp",), "an AMQP method",
        status=_MESSAGING, span_naming="messaging", system="rabbitmq",
    ),
    _row_of("ldap", "LDAP", "directory", ("tcp", "udp"), "an LDAP operation"),
    _row_of("radius", "RADIUS", "aaa", ("udp",), "a RADIUS exchange"),
    _row_of("diameter", "Diameter", "aaa", ("tcp", "sctp"), "a Diameter exchange"),
    _row_of(
        "tls", "TLS", "tls", ("tcp",),
        'a TLS session (protocol "tls"), or any call that travelled over TLS (has a `tls` object)',
    ),
)  # fmt: skip

PROTOCOLS: Final[Mapping[str, ProtocolInfo]] = MappingProxyType({row.name: row for row in _TABLE})
FAMILIES: Final[tuple[Family, ...]] = (
    "http", "rpc", "messaging", "database", "dns", "directory", "aaa", "tls", "transport", "network"
)  # fmt: skip
_unknown: dict[str, ProtocolInfo] = {}
_CLASSES: Final = {n: f"{n}xx" for n in range(1, 6)}


def _generic(protocol: str) -> ProtocolInfo:
    return ProtocolInfo(protocol, protocol, "transport", (), f"a {protocol} exchange", (), status=_PLAIN)


def info(protocol: str) -> ProtocolInfo:
    """The row of `protocol`; an unknown name (a plugin's, a typo) gets a generic transport row."""
    row = PROTOCOLS.get(protocol)
    if row is not None:
        return row
    row = _unknown.get(protocol)
    if row is None:
        if len(_unknown) >= MAX_UNKNOWN:
            return _generic(protocol)
        row = _unknown[protocol] = _generic(protocol)
    return row


def _row(entry: Mapping[str, Any]) -> ProtocolInfo:
    protocol = entry.get("protocol")
    if type(protocol) is not str or not protocol:
        return PROTOCOLS["tcp"]
    return PROTOCOLS.get(protocol) or info(protocol)


def _code(entry: Mapping[str, Any], row: ProtocolInfo) -> tuple[StatusRule, int] | None:
    """The first rule of the row whose path holds an integer code, and that code."""
    for rule in row.status:
        value: Any = entry
        for key in rule.path:
            if type(value) is not dict:
                value = None
                break
            value = value.get(key)
        if type(value) is int:
            return rule, value
    return None


def _error_type(entry: Mapping[str, Any]) -> str:
    err = entry.get("error")
    if not err:
        return ""
    kind = err.get("type") if type(err) is dict else None
    return kind if type(kind) is str and kind else "error"


def _judge(entry: Mapping[str, Any], server: bool) -> str:
    found = _code(entry, _row(entry))
    if found is not None:
        rule, code = found
        if code in (rule.server_errors if server else rule.client_errors):
            return rule.error_type.format(code=code, name=rule.names.get(code, str(code)))
    return _error_type(entry)


def client_error(entry: Mapping[str, Any]) -> str:
    """The `error.type` the call failed with for its caller; "" when it did not fail for it."""
    return _judge(entry, False)


def server_error(entry: Mapping[str, Any]) -> str:
    """The `error.type` the call failed with through the server's fault; "" when it did not."""
    return _judge(entry, True)


def is_error(entry: Mapping[str, Any]) -> bool:
    """The one answer to "is this entry an error": the server's view (`server_error`). What
    `/api/stats`, the service map, RED metrics and the UI count."""
    return _judge(entry, True) != ""


def status_text(entry: Mapping[str, Any]) -> str:
    """The status as people read it: "200", "UNAVAILABLE (14)", "NXDOMAIN"; else the error type or ""."""
    found = _code(entry, _row(entry))
    if found is None:
        return _error_type(entry)
    rule, code = found
    name = rule.names.get(code)
    if name is None:
        return str(code)
    return rule.text.format(code=code, name=name)


def status_class(entry: Mapping[str, Any], error: bool | None = None) -> str:
    """A bounded label for the outcome: "1xx"…"5xx" where the status reads as an HTTP class, else
    "error" or "ok" (the RED metrics' `status_class`). `error`, when the caller already knows
    `is_error(entry)`, saves working it out again."""
    found = _code(entry, _row(entry))
    if found is not None:
        rule, code = found
        if rule.classes and 100 <= code < 600:
            return _CLASSES[code // 100]
    if error is None:
        error = is_error(entry)
    return "error" if error else "ok"


def family(protocol: str) -> Family:
    return info(protocol).family


@functools.lru_cache(maxsize=MAX_ROUTES)  # a pure function of the path; paths repeat
def route_of(path: str) -> str:
    """The path without its query, with identifier-like segments folded to `{id}`."""
    path = path.split("?", 1)[0] or "/"
    parts = path.split("/")
    # Only segments that start like an id can be one (most are words): the regex runs on those alone.
    return "/".join("{id}" if p and p[0] in _ID_START and _ID_SEGMENT.match(p) else p for p in parts)


def _str(value: Any) -> str:
    return value if type(value) is str else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


def span_name(entry: Mapping[str, Any]) -> str:
    """The span name of a call (semconv): "GET /users/{id}", "pkg.Svc/Method", "DNS A example.com"."""
    row = _row(entry)
    protocol = row.name
    method, path = _str(entry.get("method")), _str(entry.get("path"))
    request = _dict(entry.get("request"))
    naming = row.span_naming
    if naming == "rpc":
        full = path.lstrip("/")
        service, _, rpc_method = full.rpartition("/")
        service = _str(request.get("service")) or service
        rpc_method = _str(request.get("method")) or rpc_method
        name = f"{service}/{rpc_method}" if service else (full or protocol)
    elif naming == "http":
        method = method or _str(request.get("method"))
        full_path = path or _str(request.get("path")) or _str(request.get("url"))
        url_path = full_path.partition("?")[0]
        if method and method not in HTTP_METHODS:
            method = "HTTP"  # semconv http-spans.md#name: an unknown method never names a span
        name = f"{method} {route_of(url_path)}" if method else (url_path or protocol)
    elif naming == "database":
        name = method.upper() if method else protocol
    elif naming == "messaging":
        name = f"{method} {path}".strip() or protocol
    elif naming == "dns":
        questions = request.get("questions")
        qname, qtype = path, ""
        if type(questions) is list and questions and type(questions[0]) is dict:
            qname = qname or _str(questions[0].get("name"))
            qtype = _str(questions[0].get("type"))
        name = f"DNS {qtype} {qname}".replace("  ", " ").strip()
    else:
        name = _str(entry.get("summary")) or protocol
    return name[:MAX_NAME_CHARS]


def table_json() -> dict[str, Any]:
    """The table as JSON (GET /api/protocols): the UI reads statuses, errors and families from it."""
    return {
        "protocols": {name: row.to_json() for name, row in PROTOCOLS.items()},
        "default": _generic("unknown").to_json(),
        "families": list(FAMILIES),
    }


__all__ = [
    "DNS_ERROR_RCODES",
    "DNS_RCODES",
    "FAMILIES",
    "GRPC_CODES",
    "GRPC_SERVER_ERRORS",
    "PROTOCOLS",
    "Codes",
    "Family",
    "ProtocolInfo",
    "SpanNaming",
    "StatusRule",
    "client_error",
    "family",
    "info",
    "is_error",
    "route_of",
    "server_error",
    "span_name",
    "status_class",
    "status_text",
    "table_json",
]

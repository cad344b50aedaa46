"""The KFL vocabulary: every variable a filter can name, what it reads from the Entry, its type.

Rule: a variable is either a path into the entry document (optionally only defined for some
protocols, optionally converted to a timestamp or duration) or a small pure function of the entry;
anything not listed here is read as a path into the document from one of its top-level fields.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Union

from wiretide.common import protocols
from wiretide.common.entry import Entry
from wiretide.common.kfl.ast import PathKey
from wiretide.common.kfl.values import ERROR, Duration, Timestamp

Kind = str  # "bool" "int" "double" "string" "bytes" "list" "map" "timestamp" "duration" "null_type" "dyn"

# Which entry protocols each flag selects: a row of the protocol table names the flags its entries
# answer true to (a gRPC call is `grpc`, `http2` and `http`), its own first.
FLAGS: Final[Mapping[str, frozenset[str]]] = {
    flag: frozenset(row.name for row in protocols.PROTOCOLS.values() if flag in row.kfl_flags)
    for flag in dict.fromkeys(f for row in protocols.PROTOCOLS.values() for f in row.kfl_flags)
}
TLS_FLAG: Final = "tls"  # also true when the entry carries a `tls` object
# What each flag means: the description of the row whose own flag it is.
_FLAG_DOCS: Final = {
    row.kfl_flags[0]: row.description for row in protocols.PROTOCOLS.values() if row.kfl_flags
}
# Variables defined only for some protocols: the rows that list them as their KFL fields.
_DEFINED_FOR: Final = {
    name: frozenset(row.name for row in protocols.PROTOCOLS.values() if name in row.kfl_fields)
    for row in protocols.PROTOCOLS.values()
    for name in row.kfl_fields
}

_KINDS: Final[Mapping[Any, Kind]] = {str: "string", int: "int", bool: "bool", float: "double"}


def _kind(tp: Any) -> Kind | None:
    """The KFL kind of a scalar annotation (`str | None` is a string); None for maps and lists."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    kinds = {_KINDS.get(arg, "dyn") for arg in args if arg is not type(None)}
    if any(typing.get_origin(arg) in (dict, list) or typing.is_typeddict(arg) for arg in args):
        return None
    return kinds.pop() if len(kinds) == 1 else "dyn"


def _shape(td: Any, prefix: str = "") -> tuple[dict[str, Kind], set[str], set[str]]:
    """The scalar paths (with kinds), object paths and string maps of a TypedDict, recursively."""
    scalars: dict[str, Kind] = {}
    maps: set[str] = set()
    string_maps: set[str] = set()
    for name, tp in typing.get_type_hints(td).items():
        path = f"{prefix}{name}"
        nested = [a for a in (*typing.get_args(tp), tp) if typing.is_typeddict(a)]
        if nested:
            maps.add(path)
            sub = _shape(nested[0], f"{path}.")
            scalars.update(sub[0])
            maps.update(sub[1])
            string_maps.update(sub[2])
        elif (kind := _kind(tp)) is not None:
            scalars[path] = kind
        elif any(typing.get_origin(a) is dict for a in (*typing.get_args(tp), tp)):
            maps.add(path)
            if any(typing.get_args(a) == (str, str) for a in (*typing.get_args(tp), tp)):
                string_maps.add(path)
    return scalars, maps, string_maps


_ENTRY_SCALARS, _ENTRY_MAPS, _ENTRY_STRING_MAPS = _shape(Entry)

# Top-level fields of the entry document; a dotted name starting with one of these reads the document.
ENTRY_FIELDS: Final = frozenset(typing.get_type_hints(Entry))

# Scalar paths inside `request` and `response`, whose objects are each protocol's own (docs/protocols.md).
_MESSAGE_SCALARS: Final[Mapping[str, Kind]] = {
    "request.method": "string", "request.url": "string", "request.path": "string",
    "request.query_string": "string", "request.http_version": "string", "request.service": "string",
    "request.operation_name": "string", "request.operation_type": "string", "request.id": "int",
    "response.status": "int", "response.reason": "string", "response.grpc_status": "int",
    "response.grpc_message": "string", "response.rcode": "dyn",
}  # fmt: skip

# Document paths that hold one scalar in a well-formed entry, with their type. (`tls.alpn` may be a
# list, so it is not one.)
SCALAR_PATHS: Final[Mapping[str, Kind]] = {**_ENTRY_SCALARS, **_MESSAGE_SCALARS}

# Maps from names to strings: any one key below them is a scalar string path too.
STRING_MAPS: Final = frozenset(
    {"request.headers", "response.headers", "request.cookies", "response.cookies", *_ENTRY_STRING_MAPS}
)

MAP_PATHS: Final = (
    STRING_MAPS
    | {"request.query", "request.body", "response.body", "request", "response"}
    | {path for path in _ENTRY_MAPS if "." not in path}
)


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


def _kafka_topics(doc: dict[str, Any]) -> list[str]:
    """The topics a Kafka entry names: its request's, else its response's (`topics[].topic`)."""
    for side in ("request", "response"):
        items = fetch(doc, (side, "topics"))
        if type(items) is list:
            names = [t["topic"] for t in items if type(t) is dict and type(t.get("topic")) is str]
            if names:
                return names
    return []


def _either(field: str) -> Callable[[dict[str, Any]], Any]:
    """A field of the request, else of the response (a Diameter answer whose request was not captured)."""

    def get(doc: dict[str, Any]) -> Any:
        value = fetch(doc, ("request", field))
        return fetch(doc, ("response", field)) if value is ERROR else value

    return get


def _diameter_result(doc: dict[str, Any]) -> Any:
    """A Diameter answer's Result-Code, else its Experimental-Result-Code."""
    code = fetch(doc, ("response", "result_code"))
    return fetch(doc, ("response", "experimental_result_code")) if code is ERROR else code


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


def _redacted(doc: dict[str, Any]) -> Any:
    places = doc.get("redacted")
    return [p for p in places if type(p) is str] if type(places) is list else []


def _flag(name: str, protocols: frozenset[str], description: str) -> Variable:
    example = name if name != "http" else "http && status_code >= 500"
    return Variable(name, "bool", description, example, flag=protocols)


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
    ),
    Variable(
        "grpc_service",
        "string",
        "the gRPC service",
        'grpc_service == "helloworld.Greeter"',
        ("request", "service"),
    ),
    Variable(
        "grpc_status",
        "int",
        "the gRPC status code (0 = OK)",
        "grpc && grpc_status != 0",
        ("response", "grpc_status"),
    ),
    Variable(
        "gql_operation",
        "string",
        "the GraphQL operation name",
        'gql_operation == "GetUser"',
        ("request", "operation_name"),
    ),
    Variable(
        "gql_type",
        "string",
        "the GraphQL operation type",
        'gql_type == "mutation"',
        ("request", "operation_type"),
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
    ),
    Variable(
        "redis_command",
        "string",
        "the Redis command, upper-case (`CLIENT SETNAME` for a subcommand)",
        'redis && redis_command == "GET"',
        ("request", "command"),
    ),
    Variable(
        "redis_key",
        "string",
        "the key a Redis command names (the channel for pub/sub)",
        'redis_key.startsWith("user:")',
        ("request", "key"),
    ),
    Variable(
        "pg_query",
        "string",
        "the SQL of a PostgreSQL query or prepared-statement execution",
        'postgresql && pg_query.contains("FROM orders")',
        ("request", "query"),
    ),
    Variable(
        "pg_sqlstate",
        "string",
        "the SQLSTATE of a PostgreSQL ErrorResponse",
        'pg_sqlstate.startsWith("23")',
        ("response", "error", "code"),
    ),
    Variable(
        "mysql_command",
        "string",
        "the MySQL command (`COM_QUERY`, `COM_STMT_EXECUTE`, `COM_PING`, `CONNECT` for the login)",
        'mysql && mysql_command == "COM_STMT_EXECUTE"',
        ("request", "command"),
    ),
    Variable(
        "mysql_query",
        "string",
        "the SQL of a MySQL query, or of the prepared statement a COM_STMT_* command runs",
        'mysql_query.contains("FROM orders")',
        ("request", "query"),
    ),
    Variable(
        "mysql_sqlstate",
        "string",
        "the SQLSTATE of a MySQL ERR packet (its error code is the entry's `status`)",
        'mysql_sqlstate == "42000"',
        ("response", "error", "sqlstate"),
    ),
    Variable(
        "mongodb_command",
        "string",
        "the MongoDB command (the first key of its body: `find`, `insert`, `aggregate`, `hello` …)",
        'mongodb && mongodb_command == "aggregate"',
        ("request", "command"),
    ),
    Variable(
        "mongodb_database",
        "string",
        "the database a MongoDB command runs in (`$db`)",
        'mongodb_database == "shop"',
        ("request", "database"),
    ),
    Variable(
        "mongodb_collection",
        "string",
        "the collection a MongoDB command names",
        'mongodb_collection == "orders"',
        ("request", "collection"),
    ),
    Variable(
        "kafka_topic",
        "string",
        "the (first) topic a Kafka request names",
        'kafka && kafka_topic == "orders"',
        compute=lambda doc: next(iter(_kafka_topics(doc)), ERROR),
    ),
    Variable(
        "kafka_topics",
        "list",
        "every topic a Kafka request (or its response) names",
        '"orders" in kafka_topics',
        compute=_kafka_topics,
    ),
    Variable(
        "kafka_api_key",
        "int",
        "the Kafka API key (0 Produce, 1 Fetch, 3 Metadata ...); `method` holds its name",
        "kafka && kafka_api_key == 0",
        ("request", "api_key"),
    ),
    Variable(
        "kafka_client_id",
        "string",
        "the client id a Kafka request carries",
        'kafka_client_id.startsWith("rdkafka")',
        ("request", "client_id"),
    ),
    Variable(
        "amqp_exchange",
        "string",
        "the exchange an AMQP method names (publish, deliver, exchange.declare, queue.bind ...)",
        'amqp && amqp_exchange == "amq.direct"',
        ("request", "arguments", "exchange"),
    ),
    Variable(
        "amqp_routing_key",
        "string",
        "the routing key of an AMQP publish, delivery or binding",
        'amqp_routing_key.startsWith("orders.")',
        ("request", "arguments", "routing_key"),
    ),
    Variable(
        "amqp_queue",
        "string",
        "the queue an AMQP method names (queue.*, basic.consume, basic.get)",
        'amqp && amqp_queue == "orders"',
        ("request", "arguments", "queue"),
    ),
    Variable(
        "radius_code",
        "int",
        "the RADIUS request's packet code (1 Access-Request, 4 Accounting-Request, 43 CoA-Request ...); "
        "`method` holds its name, `status_code` the answer's",
        "radius && radius_code == 1",
        ("request", "code"),
    ),
    Variable(
        "radius_user_name",
        "string",
        "the User-Name a RADIUS request carries",
        'radius_user_name == "alice"',
        ("request", "attributes", "User-Name"),
    ),
    Variable(
        "radius_nas_identifier",
        "string",
        "the NAS-Identifier a RADIUS request carries",
        'radius_nas_identifier.startsWith("ap-")',
        ("request", "attributes", "NAS-Identifier"),
    ),
    Variable(
        "radius_calling_station_id",
        "string",
        "the Calling-Station-Id (usually the device's MAC address) a RADIUS request carries",
        'radius_calling_station_id == "00-11-22-33-44-55"',
        ("request", "attributes", "Calling-Station-Id"),
    ),
    Variable(
        "radius_acct_status_type",
        "dyn",
        "the Acct-Status-Type of a RADIUS accounting request by name (`Start`, `Stop`, `Interim-Update` ...)",
        'radius_acct_status_type == "Stop"',
        ("request", "attributes", "Acct-Status-Type"),
    ),
    Variable(
        "radius_eap_type",
        "string",
        "the EAP method a RADIUS request carries (`Identity`, `PEAP`, `EAP-TLS` ...)",
        'radius_eap_type == "PEAP"',
        ("request", "eap", "type_name"),
    ),
    Variable(
        "ldap.operation",
        "string",
        "the LDAP operation: `bind`, `search`, `modify`, `add`, `delete`, `modDN`, `compare`, `extended` …",
        'ldap && ldap.operation == "search"',
        ("request", "operation"),
    ),
    Variable(
        "ldap.messageID",
        "int",
        "the LDAP messageID pairing a request with its response",
        "ldap.messageID == 2",
        ("request", "message_id"),
    ),
    Variable(
        "ldap.dn",
        "string",
        "the DN an LDAP operation names (the bind name, a search's base, the entry changed)",
        'ldap.dn.endsWith("dc=example,dc=com")',
        ("request", "dn"),
    ),
    Variable(
        "ldap.filter",
        "string",
        "an LDAP search's filter as RFC 4515 text",
        'ldap.filter.contains("(uid=")',
        ("request", "filter"),
    ),
    Variable(
        "ldap.scope",
        "string",
        "an LDAP search's scope: `baseObject`, `singleLevel` or `wholeSubtree`",
        'ldap.scope == "wholeSubtree"',
        ("request", "scope"),
    ),
    Variable(
        "ldap.resultCode",
        "int",
        "the LDAP resultCode (0 success, 32 noSuchObject, 49 invalidCredentials …)",
        "ldap && ldap.resultCode == 49",
        ("response", "result_code"),
    ),
    Variable(
        "ldap.entries",
        "int",
        "the SearchResultEntry messages an LDAP search returned",
        "ldap.entries > 100",
        ("response", "entries"),
    ),
    Variable(
        "ldap.oid",
        "string",
        "the OID of an LDAP extended operation (StartTLS is 1.3.6.1.4.1.1466.20037)",
        'ldap.oid == "1.3.6.1.4.1.1466.20037"',
        ("request", "oid"),
    ),
    Variable(
        "smtp.req.command",
        "string",
        "the SMTP command, upper-case (`EHLO`, `MAIL`, `RCPT`, `DATA`, `AUTH`, `STARTTLS` …)",
        'smtp && smtp.req.command == "RCPT"',
        ("request", "command"),
    ),
    Variable(
        "smtp.response.code",
        "int",
        "the SMTP reply code (the entry's `status`)",
        "smtp.response.code >= 500",
        ("response", "code"),
    ),
    Variable(
        "imap.request.command",
        "string",
        "the IMAP command, upper-case (`LOGIN`, `SELECT`, `FETCH`, `UID FETCH` …)",
        'imap && imap.request.command == "SELECT"',
        ("request", "command"),
    ),
    Variable(
        "imap.response.status",
        "string",
        "the IMAP completion: `OK`, `NO` or `BAD`",
        'imap.response.status == "NO"',
        ("response", "completion"),
    ),
    Variable(
        "pop.request.command",
        "string",
        "the POP3 command, upper-case (`USER`, `RETR`, `STLS` …)",
        'pop3 && pop.request.command == "RETR"',
        ("request", "command"),
    ),
    Variable(
        "pop.response.indicator",
        "string",
        "the POP3 status indicator: `+OK` or `-ERR`",
        'pop.response.indicator == "-ERR"',
        ("response", "indicator"),
    ),
    Variable(
        "diameter_command_code",
        "int",
        "the Diameter command code (272 Credit-Control, 316 Update-Location …); `method` holds its name",
        "diameter && diameter_command_code == 272",
        compute=_either("command_code"),
    ),
    Variable(
        "diameter_application_id",
        "int",
        "the Diameter application id (4 credit control, 16777238 Gx, 16777251 S6a …)",
        "diameter_application_id == 16777238",
        compute=_either("application_id"),
    ),
    Variable(
        "diameter_session_id",
        "string",
        "the Session-Id AVP of a Diameter request (else of its answer)",
        'diameter_session_id.startsWith("pgw.example.com;")',
        compute=_either("session_id"),
    ),
    Variable(
        "diameter_origin_host",
        "string",
        "the Origin-Host AVP of a Diameter request (the peer that sent it)",
        'diameter_origin_host == "mme.example.com"',
        compute=_either("origin_host"),
    ),
    Variable(
        "diameter_result_code",
        "int",
        "a Diameter answer's Result-Code, else its 3GPP Experimental-Result-Code (2001 success)",
        "diameter && diameter_result_code >= 3000",
        compute=_diameter_result,
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
    Variable(
        "redacted",
        "list",
        "where redaction replaced a value (empty when nothing was)",
        '"request.headers.authorization" in redacted',
        compute=_redacted,
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

VARIABLES: Final[Mapping[str, Variable]] = {
    v.name: replace(v, protocols=_DEFINED_FOR[v.name]) if v.name in _DEFINED_FOR else v for v in _VARIABLES
}

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

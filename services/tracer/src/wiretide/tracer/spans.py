"""Spans from entries: one observed API call becomes a client span (at the caller) and/or a server span
(at the callee), named and attributed by the OpenTelemetry semantic conventions, release `SEMCONV_VERSION`.

Rule: this module only describes what one entry says — it never links spans to each other (that is
`assemble.py`) and never reads a clock: every timestamp comes from the entry, i.e. from the packets.
What a protocol *means* (its family, error rule, status names, span name) is read from the protocol
table (`wiretide.common.protocols`); this module only spells it in semantic-convention attributes.

Attributes (https://opentelemetry.io/docs/specs/semconv/, registry of the release below): HTTP
(`http.request.method`, `url.*`, `http.response.status_code`, `user_agent.original`), RPC
(`rpc.system.name`, fully-qualified `rpc.method`, `rpc.response.status_code`), database
(`db.system.name`, `db.operation.name`, `db.query.text`), messaging (`messaging.*`), DNS
(`dns.question.name`), general network (`client.*`, `server.*`, `network.peer.*`, `network.protocol.*`,
`network.transport`, `network.type`), TLS (`tls.*`), `service.peer.*`, `error.type`, and the
k8s/process/container resource conventions. What the registry has no name for stays under `wiretide.*`.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from wiretide.common.protocols import (
    DNS_RCODES,
    GRPC_CODES,
    HTTP_METHODS,
    PROTOCOLS,
    Family,
    client_error,
    info,
    route_of,
    server_error,
    span_name,
)
from wiretide.tracer.names import TABLE_EVICTIONS, SpanNames
from wiretide.tracer.propagation import Context

AttrValue = str | int | float | bool
Attributes = dict[str, AttrValue]

# The semantic conventions release every attribute name here was checked against, and the schema URL
# that says so on each exported ResourceSpans/ScopeSpans (a backend translates older names by it).
SEMCONV_VERSION: Final = "1.44.0"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# OTLP SpanKind numbers (opentelemetry/proto/trace/v1/trace.proto, enum SpanKind).
KIND_INTERNAL: Final = 1
KIND_SERVER: Final = 2
KIND_CLIENT: Final = 3
KIND_PRODUCER: Final = 4
KIND_CONSUMER: Final = 5
KIND_NAMES: Final = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

# How a span's parent was chosen (`wiretide.link`), strongest first. "entry" joins the two sides of one
# observed call (certain); "root" means no parent was found within the window.
LINK_HEADER: Final = "header"
LINK_SYSCALL: Final = "syscall"
LINK_TIMING: Final = "timing"
LINK_ENTRY: Final = "entry"
LINK_ROOT: Final = "root"

# Protocols whose table view (`protocol_view`) is remembered: the built-ins and a few plugins'.
MAX_PROTOCOLS: Final = 256
# Distinct workload identities remembered by `Workloads` (all forgotten at once beyond it).
MAX_WORKLOADS: Final = 10_000
# Authorities (`Host`, `:authority`) whose split is remembered: a cluster calls a few hosts, often.
MAX_AUTHORITIES: Final = 4_096
# A host name longer than a DNS name can be (RFC 1035 §2.3.4: 255 octets) is not a host: ignored.
MAX_HOST_CHARS: Final = 255
# Longest `db.query.text` / `wiretide.error.message` kept (they are for reading, not indexing).
MAX_QUERY_TEXT: Final = 1024
MAX_ERROR_MESSAGE: Final = 512
# Distinct HTTP call shapes remembered by `Descriptions` (all forgotten at once beyond it): the ends,
# routes and statuses a cluster's calls take are few; an id in a path is folded out of its route.
MAX_SHAPES: Final = 8_192
_EMPTY: Final[dict[str, Any]] = {}

# The resolver's identity mechanisms (an entry end's `resolution`): names from these are pods,
# services, nodes and processes. Any other named end (a name learned from a DNS answer) is `learned`.
RESOLVER_MECHANISMS: Final = frozenset({"ip", "ip-and-port", "process", "container"})

OTHER_VALUE: Final = "_OTHER"
# Default port of each `url.scheme` (RFC 9110 §4.2): the `server.port` of an authority without one.
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Query keys whose values are replaced by REDACTED in `url.query`/`url.full` (semconv url registry).
_SENSITIVE_QUERY: Final = re.compile(
    r"(^|&)(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|sig|X-Goog-Signature)=[^&#]*"
)
# The gRPC status that says the server does not know the method (so `rpc.method` is `_OTHER`).
GRPC_UNIMPLEMENTED: Final = 12
# Families whose entries are not an application-layer exchange: no `network.protocol.name`.
_NOT_APPLICATION: Final = frozenset({"tls", "transport", "network"})
# `network.protocol.name` (and the version when the entry has none) of the protocols whose wire protocol
# is not the Entry's protocol name: gRPC and GraphQL travel as HTTP (gRPC as HTTP/2, grpc/doc/
# PROTOCOL-HTTP2.md); a WebSocket message is not an HTTP request.
_WIRE_PROTOCOL: Final = {
    "http2": ("http", "2"),
    "grpc": ("http", "2"),
    "graphql": ("http", ""),
    "ws": ("websocket", ""),
}

K8S_WORKLOAD_ATTR: Final = {
    "deployment": "k8s.deployment.name",
    "statefulset": "k8s.statefulset.name",
    "daemonset": "k8s.daemonset.name",
    "replicaset": "k8s.replicaset.name",
    "job": "k8s.job.name",
    "cronjob": "k8s.cronjob.name",
}


@dataclass(frozen=True, slots=True)
class Workload:
    """Who one end of a call is: the OTel resource that its spans are reported under."""

    service_name: str
    namespace: str = ""
    pod: str = ""
    node: str = ""
    workload_kind: str = ""
    workload_name: str = ""
    pid: int = 0
    process_name: str = ""
    container_id: str = ""
    known: bool = True  # False when only an address identifies this end (an anonymous workload)
    # True when the name was learned from traffic (a DNS answer), not from the resolver's identities:
    # such names are as many as the hosts called, so they never become a metric label.
    learned: bool = False
    # The IP of an anonymous workload (`known=False`): its calling side is named by the IP, its
    # listening side by ip:port, and the assembler relates the two through it.
    address: str = ""

    # Written out, not generated: the dataclass's own would run interpreted even in the compiled
    # build, and workloads are compared and hashed per entry (RED series, delay model, the map's
    # holders, the exporter's resources). One object stands for each identity (`Workloads`): the
    # identity test answers most comparisons. Same fields, same answers as the generated ones.
    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not Workload:
            return NotImplemented
        return (
            self.service_name == other.service_name and self.namespace == other.namespace
            and self.pod == other.pod and self.node == other.node
            and self.workload_kind == other.workload_kind and self.workload_name == other.workload_name
            and self.pid == other.pid and self.process_name == other.process_name
            and self.container_id == other.container_id and self.known == other.known
            and self.learned == other.learned and self.address == other.address
        )  # fmt: skip

    def __hash__(self) -> int:
        return hash(
            (
                self.service_name, self.namespace, self.pod, self.node, self.workload_kind,
                self.workload_name, self.pid, self.process_name, self.container_id, self.known,
                self.learned, self.address,
            )
        )  # fmt: skip

    @property
    def instance(self) -> str:
        """The running instance whose inbound and outbound calls can be causally related."""
        return self.pod or self.service_name

    def resource_attributes(self) -> Attributes:
        attrs: Attributes = {"service.name": self.service_name, "telemetry.sdk.name": "wiretide"}
        if self.namespace:
            attrs["service.namespace"] = self.namespace
            attrs["k8s.namespace.name"] = self.namespace
        if self.pod:
            attrs["k8s.pod.name"] = self.pod
            attrs["service.instance.id"] = self.pod
        if self.node:
            attrs["k8s.node.name"] = self.node
        key = K8S_WORKLOAD_ATTR.get(self.workload_kind.lower())
        if key and self.workload_name:
            attrs[key] = self.workload_name
        if self.pid:
            attrs["process.pid"] = self.pid
        if self.process_name:
            attrs["process.executable.name"] = self.process_name
        if self.container_id:
            attrs["container.id"] = self.container_id
        return attrs


class TraceTally:
    """How many spans of one trace were emitted (the fan-out cap, `AssemblyConfig.max_spans_per_trace`):
    one object per trace that its spans share, so the count goes when they do."""

    __slots__ = ("spans",)

    def __init__(self) -> None:
        self.spans = 0


@dataclass(slots=True)
class Span:
    """One span. Mutable on purpose: assembly fills in trace id, parent, link and confidence later."""

    span_id: bytes
    name: str
    kind: int
    workload: Workload
    peer: Workload
    start_ns: int
    end_ns: int
    shared: Attributes  # what the entry says, the same object for both sides of one call
    own: Attributes  # this side's view: peer address, peer.service, error.type
    entry_id: str
    entry: dict[str, Any] = field(repr=False)
    node: str = ""  # the capture node that saw the call (whose clock the timestamps are on)
    context: Context | None = None
    error: bool = False
    status_message: str = ""
    trace_id: bytes = b""
    parent_span_id: bytes = b""
    link: str = LINK_ROOT
    confidence: float = 1.0
    partner: Span | None = field(default=None, repr=False)  # the other side of the same call
    signature: str = ""  # what the call was (peer + name), for telling concurrent siblings apart
    # Assembly state (see assemble.py).
    parent: Span | None = field(default=None, repr=False)
    decided: bool = False  # its parent is chosen
    emitted: bool = False  # handed to the sinks, trace id final
    exported: bool = False  # encoded for export at least once (see export/otlp.py)
    waiting: list[Span] | None = field(default=None, repr=False)  # decided children awaiting this span
    claimed: set[str] | None = field(default=None, repr=False)  # signatures of calls linked to it
    # A group solution's proposal for this call's parent: (parent, margin, ids of the group's requests).
    hint: tuple[Span, float, frozenset[int]] | None = field(default=None, repr=False)
    # Estimated bytes this span holds (store.py), set once per call by the assembler: the entry is
    # charged to the client side, the server side holds its own objects. 0: not estimated yet.
    size: int = 0
    # Tracer replicas (partition.py): a copy held for the callee's replica, its trace id told by the
    # call's owner, never exported; and on the owner, the replica to tell the trace id to (-1: none).
    remote: bool = False
    fact_to: int = -1
    # The entry's JSON as received (both sides share it), when the consumer had it: what the trace
    # store keeps instead of the decoded document once the call is decided (`entry_of`).
    text: bytes = b""
    # The call's outcome on the service map ("2xx", "error"…), worked out from the entry when the
    # assembler let the decoded entry go (server side; "" otherwise: worked out from `entry`).
    status_class: str = ""
    # The count of its trace's emitted spans, shared with them (set when the span is emitted).
    tally: TraceTally | None = field(default=None, repr=False)

    # Written out, not generated: the dataclass's own `__init__` would run interpreted even in the
    # compiled build, for the two spans of every entry. The same parameters, in field order.
    def __init__(
        self, span_id: bytes, name: str, kind: int, workload: Workload, peer: Workload, start_ns: int,
        end_ns: int, shared: Attributes, own: Attributes, entry_id: str, entry: dict[str, Any],
        node: str = "", context: Context | None = None, error: bool = False, status_message: str = "",
        trace_id: bytes = b"", parent_span_id: bytes = b"", link: str = LINK_ROOT, confidence: float = 1.0,
        partner: Span | None = None, signature: str = "", parent: Span | None = None, decided: bool = False,
        emitted: bool = False, exported: bool = False, waiting: list[Span] | None = None,
        claimed: set[str] | None = None, hint: tuple[Span, float, frozenset[int]] | None = None,
        size: int = 0, remote: bool = False, fact_to: int = -1, text: bytes = b"", status_class: str = "",
        tally: TraceTally | None = None,
    ) -> None:  # fmt: skip
        self.span_id = span_id
        self.name = name
        self.kind = kind
        self.workload = workload
        self.peer = peer
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.shared = shared
        self.own = own
        self.entry_id = entry_id
        self.entry = entry
        self.node = node
        self.context = context
        self.error = error
        self.status_message = status_message
        self.trace_id = trace_id
        self.parent_span_id = parent_span_id
        self.link = link
        self.confidence = confidence
        self.partner = partner
        self.signature = signature
        self.parent = parent
        self.decided = decided
        self.emitted = emitted
        self.exported = exported
        self.waiting = waiting
        self.claimed = claimed
        self.hint = hint
        self.size = size
        self.remote = remote
        self.fact_to = fact_to
        self.text = text
        self.status_class = status_class
        self.tally = tally

    @property
    def attributes(self) -> Attributes:
        return {**self.shared, **self.own}

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, "internal")


def entry_of(span: Span) -> dict[str, Any]:
    """The entry a span was built from, as a document: decoded again from its JSON when the span has
    it (the assembler and the trace store keep only that: `Assembler.add`, `TraceStore.add`); a span
    without its JSON keeps the document itself."""
    text = span.text
    if text:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return span.entry
        if isinstance(doc, dict):
            return doc
    return span.entry


class SpanIds:
    """Random span ids (W3C Trace Context §3.2.2.4: 8 random bytes, not all zero)."""

    __slots__ = ("_rnd",)

    def __init__(self, seed: int | None = None) -> None:
        self._rnd = random.Random(seed)

    def span_id(self) -> bytes:
        while True:
            value = self._rnd.getrandbits(64)
            if value:
                return value.to_bytes(8, "big")

    def trace_id(self) -> bytes:
        while True:
            value = self._rnd.getrandbits(128)
            if value:
                return value.to_bytes(16, "big")


# semconv messaging-spans.md `messaging.operation.type` of the Kafka calls that move records.
_KAFKA_OPERATION_TYPES: Final = {"Produce": "send", "Fetch": "receive"}
# messaging/rabbitmq.md: the AMQP methods that move or settle messages, by `messaging.operation.type`.
_AMQP_OPERATION_TYPES: Final = {
    "basic.publish": "send", "basic.deliver": "receive", "basic.get": "receive", "basic.ack": "settle",
    "basic.nack": "settle", "basic.reject": "settle",
}  # fmt: skip
# database-spans.md: systems whose entry `path` is the table a statement works on (db.collection.name);
# for Redis it is a key, which is no collection.
_PATH_IS_TABLE: Final = frozenset({"postgresql", "mysql", "mariadb"})


def _str(value: Any) -> str:
    return value if type(value) is str else ""


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def anonymous_name(ip: str, port: int | None) -> str:
    """The name of an end nobody named: its IP, or, for the listening end, ip:port (several servers
    may share an IP — a host, host-network pods, one loopback address — and a listening port tells
    them apart); IPv6 in brackets (RFC 3986 §3.2.2)."""
    if port is None:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def workload_of(end: dict[str, Any], node: str, listening: bool = False) -> Workload:
    """The identity of one end of an entry; an end known only by address is an anonymous workload
    (`known=False`): named by its IP, or by ip:port when it is the `listening` (server) end."""
    pod = _dict(end.get("pod"))
    svc = _dict(end.get("service"))
    wl = _dict(end.get("workload"))
    proc = _dict(end.get("process"))
    namespace = _str(end.get("namespace")) or _str(pod.get("namespace")) or _str(svc.get("namespace"))
    name = _str(wl.get("name")) or _str(svc.get("name")) or _str(end.get("name")) or _str(pod.get("name"))
    known = bool(name)
    address = ""
    if not name:
        address = _str(end.get("ip"))
        port = _int(end.get("port")) if listening else None
        name = anonymous_name(address, port) if address else "unknown"
    resolution = end.get("resolution")
    learned = known and type(resolution) is str and resolution not in RESOLVER_MECHANISMS and resolution != ""
    return Workload(
        service_name=name,
        namespace=namespace,
        pod=_str(pod.get("name")),
        node=_str(end.get("node")) or (node if known else ""),
        workload_kind=_str(wl.get("kind")),
        workload_name=_str(wl.get("name")),
        pid=_int(proc.get("pid")) or 0,
        process_name=_str(proc.get("name")),
        container_id=_str(proc.get("container_id")),
        known=known,
        learned=learned,
        address=address,
    )


class Workloads:
    """`workload_of` with memory: the ends of most entries name the same few workloads, so one
    `Workload` is made per distinct identity and shared by all its spans (cheap to group and hash).

    The memo key is every field `workload_of` reads, so a hit returns exactly what it would make.
    """

    __slots__ = ("_bare", "_known", "limit")

    def __init__(self, limit: int = MAX_WORKLOADS) -> None:
        self._known: dict[tuple[Any, ...], Workload] = {}
        # Ends that hold an address and nothing else (a client nobody named, as most callers from
        # outside the cluster are): keyed by the three values `workload_of` reads of them.
        self._bare: dict[tuple[str, str, int | None], Workload] = {}
        self.limit = limit

    def of(self, end: dict[str, Any], node: str, listening: bool = False) -> Workload:
        get = end.get
        n = len(end)
        if n <= 2 and n == ("ip" in end) + ("port" in end):
            ip, port = get("ip"), get("port")
            bare = (node, ip if type(ip) is str else "", port if listening and type(port) is int else None)
            found = self._bare.get(bare)
            if found is None:
                found = workload_of(end, node, listening)
                if len(self._bare) >= self.limit:
                    TABLE_EVICTIONS.labels("workloads").inc(len(self._bare))
                    self._bare.clear()
                self._bare[bare] = found
            return found
        pod, svc, wl, proc = get("pod"), get("service"), get("workload"), get("process")
        pod = pod if isinstance(pod, dict) else _EMPTY
        svc = svc if isinstance(svc, dict) else _EMPTY
        wl = wl if isinstance(wl, dict) else _EMPTY
        proc = proc if isinstance(proc, dict) else _EMPTY
        key = (
            node, get("name"), get("namespace"), get("node"), get("ip"),
            pod.get("name"), pod.get("namespace"), svc.get("name"), svc.get("namespace"),
            wl.get("name"), wl.get("kind"), proc.get("pid"), proc.get("name"), proc.get("container_id"),
            get("resolution"), get("port") if listening else None,
        )  # fmt: skip
        try:
            found = self._known.get(key)
        except TypeError:  # an unhashable value where a string belongs: not worth remembering
            return workload_of(end, node, listening)
        if found is None:
            found = workload_of(end, node, listening)
            if len(self._known) >= self.limit:
                TABLE_EVICTIONS.labels("workloads").inc(len(self._known))
                self._known.clear()
            self._known[key] = found
        return found


@functools.lru_cache(maxsize=MAX_AUTHORITIES)  # a pure function of the text; a cluster calls few hosts
def split_authority(authority: str) -> tuple[str, int]:
    """`[userinfo@]host[:port]` (RFC 3986 §3.2) → (host, port); port 0 when absent, ("", 0) when the
    text is not a usable host (empty, too long, a bracket left open, characters no host has)."""
    authority = authority.rpartition("@")[2].strip()
    if not authority or len(authority) > MAX_HOST_CHARS:
        return "", 0
    if authority[0] == "[":  # an IPv6 literal (RFC 3986 §3.2.2)
        close = authority.find("]")
        rest = authority[close + 1 :]
        if close < 0 or (rest and rest[0] != ":"):
            return "", 0
        host, port_text = authority[1:close], rest[1:]
    elif authority.count(":") > 1:  # an IPv6 address without brackets: no port can be told apart
        host, port_text = authority, ""
    else:
        host, _, port_text = authority.partition(":")
    if not host or not host.isprintable() or any(c in host for c in " /?#\\"):
        return "", 0
    port = int(port_text) if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 else 0
    return host, port if port < 65_536 else 0


def _authority(request: dict[str, Any]) -> str:
    """The authority a request was sent to: the target URL's (HTTP/2 `:authority`, an absolute-form
    HTTP/1 target — both win over `Host`, RFC 9113 §8.3.1 and RFC 9112 §3.2.2), else the `Host` header."""
    url = request.get("url")
    if type(url) is str:
        start = url.find("://")
        if start >= 0:
            start += 3
            stop = url.find("/", start)
            found = url[start:stop] if stop >= 0 else url[start:]
            if found:
                return found
    headers = request.get("headers")
    if type(headers) is dict:
        host = headers.get("host")
        if type(host) is str:
            return host
    return ""


def redact_query(query: str) -> str:
    """The query with the values of well-known signing keys replaced by REDACTED (semconv url.query)."""
    if "=" not in query:
        return query
    return _SENSITIVE_QUERY.sub(r"\1\2=REDACTED", query)


@functools.lru_cache(maxsize=64)  # a handful of version strings
def tls_protocol(version: str) -> tuple[str, str]:
    """`tls.protocol.name` and `.version` of a negotiated version as dissected ("1.3", "TLSv1.2",
    "SSLv3"): the lower-case protocol and the numeric part."""
    text = version.strip()
    lower = text.lower()
    name = "ssl" if lower.startswith("ssl") else "tls"
    if lower.startswith(("ssl", "tls")):
        text = text[3:]
    return name, text.lstrip("vV ").strip()


@functools.lru_cache(maxsize=MAX_PROTOCOLS)  # a pure function of the protocol table; protocols are few
def protocol_view(protocol: str) -> tuple[Family, str, str, str]:
    """What the spans of `protocol` say about it, from its table row: its family, its OTel system name
    (`rpc.system.name`, `db.system.name`, `messaging.system`), its `network.protocol.name` — empty for
    what is not an application-layer exchange (TLS without its content, raw transport) — and the
    `network.protocol.version` to give when the entry names none."""
    row = info(protocol)
    if row.family in _NOT_APPLICATION and protocol in PROTOCOLS:  # (an unknown name is a plugin's)
        return row.family, row.system or protocol, "", ""
    wire, version = _WIRE_PROTOCOL.get(protocol, (protocol, ""))
    return row.family, row.system or protocol, wire, version


def _network(entry: dict[str, Any], src: dict[str, Any], dst: dict[str, Any]) -> Attributes:
    """Both ends as the transport saw them, and the TLS session. `server.address` is the server's IP,
    or the TLS SNI when there is one; `describe` replaces it by the request's authority."""
    attrs: Attributes = {}
    # `type(x) is` rather than isinstance: this runs per entry, and a bool is no port.
    src_ip, dst_ip, src_port, dst_port = src.get("ip"), dst.get("ip"), src.get("port"), dst.get("port")
    src_ip = src_ip if type(src_ip) is str else ""
    dst_ip = dst_ip if type(dst_ip) is str else ""
    if src_ip:
        attrs["client.address"] = src_ip
    if type(src_port) is int:
        attrs["client.port"] = src_port
    tls = entry.get("tls")
    tls = tls if type(tls) is dict and tls else _EMPTY
    sni = tls.get("sni") if tls else None
    if type(sni) is str and sni:  # the retired `tls.client.server_name` is `server.address` now
        attrs["server.address"] = sni
    elif dst_ip:
        attrs["server.address"] = dst_ip
    if type(dst_port) is int:
        attrs["server.port"] = dst_port
    transport = entry.get("transport")
    if transport and type(transport) is str:
        attrs["network.transport"] = transport
    ip = dst_ip or src_ip
    if ip:
        attrs["network.type"] = "ipv6" if ":" in ip else "ipv4"
    if tls:  # semconv registry/attributes/tls.md
        version = _str(tls.get("version"))
        if version:
            attrs["tls.protocol.name"], attrs["tls.protocol.version"] = tls_protocol(version)
        alpn = tls.get("alpn")
        if isinstance(alpn, str) and alpn:
            attrs["tls.next_protocol"] = alpn
        elif isinstance(alpn, list) and alpn and isinstance(alpn[0], str):
            attrs["tls.next_protocol"] = alpn[0]
        if _str(tls.get("cipher")):
            attrs["tls.cipher"] = tls["cipher"]
        if _str(tls.get("ja3")):
            attrs["tls.client.ja3"] = tls["ja3"]
        if isinstance(tls.get("decrypted"), bool):
            attrs["wiretide.tls.decrypted"] = tls["decrypted"]
    return attrs


class Described(NamedTuple):
    """What the entry says: span name, the attributes both spans share, those of the client span
    alone, and the error of each side. (Immutable, and a tuple rather than a frozen dataclass: one is
    made per entry, and a tuple is cheaper to make.)"""

    name: str
    attributes: Attributes
    client_error: str  # non-empty: the client span is an error, with this `error.type`
    server_error: str
    url_full: str  # the caller's view only (`url.full` of an HTTP client span); "" for none
    kind_client: int = KIND_CLIENT
    kind_server: int = KIND_SERVER


@functools.lru_cache(maxsize=MAX_AUTHORITIES)  # a pure function; a cluster calls few origins
def address_origin(host: str, port: int, scheme: str) -> str:
    """`scheme://host[:port]` (RFC 3986 §3), the port left out when it is the scheme's default."""
    bracketed = f"[{host}]" if ":" in host else host
    if port and port != DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{bracketed}:{port}"
    return f"{scheme}://{bracketed}"


@functools.lru_cache(maxsize=MAX_AUTHORITIES)  # a pure function; a cluster calls few origins
def authority_origin(authority: str, scheme: str) -> tuple[str, int, str]:
    """`server.address`, `server.port` (the scheme's default when the authority names none) and the
    origin of an authority; ("", 0, "") when it names no host."""
    host, port = split_authority(authority)
    if not host:
        return "", 0, ""
    return host, port or DEFAULT_PORTS.get(scheme, 0), address_origin(host, port, scheme)


def _origin(attrs: Attributes, request: dict[str, Any], scheme: str, dst: dict[str, Any]) -> str:
    """Sets `server.address`/`server.port` from the request's authority when it names a host, and
    returns the origin the request went to (for `url.full`); "" when nothing names one."""
    authority = _authority(request) if request else ""
    if authority:
        host, port, origin = authority_origin(authority, scheme)
        if host:
            attrs["server.address"] = host
            attrs["server.port"] = port
            return origin
    # No authority: the origin is what the transport saw (the SNI, else the server's address).
    known, dst_port = attrs.get("server.address"), dst.get("port")
    if type(known) is not str:
        return ""
    return address_origin(known, dst_port if type(dst_port) is int else 0, scheme)


def describe(entry: dict[str, Any]) -> Described:
    """The span name, attributes and errors of one entry (the same for every span made from it)."""
    return _describe(entry)[0]


def _describe(entry: dict[str, Any]) -> tuple[Described, str]:
    """`describe`, and the origin its `url.full` starts with ("" for none)."""
    get = entry.get
    protocol, method, path, status = get("protocol"), get("method"), get("path"), get("status")
    protocol = protocol if type(protocol) is str and protocol else "tcp"
    method = method if type(method) is str else ""
    path = path if type(path) is str else ""
    status = status if type(status) is int else None
    request, response, src, dst = get("request"), get("response"), get("src"), get("dst")
    request = request if type(request) is dict else _EMPTY
    response = response if type(response) is dict else _EMPTY
    src = src if type(src) is dict else _EMPTY
    dst = dst if type(dst) is dict else _EMPTY
    family, system, wire, wire_version = protocol_view(protocol)
    attrs = _network(entry, src, dst)
    if wire:
        attrs["network.protocol.name"] = wire
        version = get("version")
        if version and type(version) is str:
            attrs["network.protocol.version"] = version
        elif wire_version:
            attrs["network.protocol.version"] = wire_version
    url_full = origin = ""

    if family == "rpc":
        # semconv rpc/rpc-spans.md and rpc/grpc.md
        attrs["rpc.system.name"] = system
        full = path.lstrip("/")
        service, _, rpc_method = full.rpartition("/")
        service = _str(request.get("service")) or service
        rpc_method = _str(request.get("method")) or rpc_method
        qualified = f"{service}/{rpc_method}" if service else rpc_method
        code = _int(response.get("grpc_status"))
        if qualified:
            if code == GRPC_UNIMPLEMENTED:  # the server does not know it: not a name worth a series
                attrs["rpc.method"] = OTHER_VALUE
                attrs["rpc.method_original"] = qualified
            else:
                attrs["rpc.method"] = qualified
        if code is not None:
            attrs["rpc.response.status_code"] = GRPC_CODES.get(code) or str(code)
        _origin(attrs, request, "https" if get("tls") else "http", dst)
    elif family == "http" and protocol != "ws":
        # semconv http/http-spans.md
        method = method or _str(request.get("method"))
        full_path = path or _str(request.get("path"))
        url_path, _, query = full_path.partition("?")
        query = redact_query(query or _str(request.get("query_string")))
        if method:
            if method in HTTP_METHODS:
                attrs["http.request.method"] = method
            else:
                attrs["http.request.method"] = OTHER_VALUE
                attrs["http.request.method_original"] = method
        if url_path:
            attrs["url.path"] = url_path
        if query:
            attrs["url.query"] = query
        scheme = "https" if get("tls") else "http"
        attrs["url.scheme"] = scheme
        headers = request.get("headers")
        if type(headers) is dict:
            ua = headers.get("user-agent")
            if type(ua) is str:
                attrs["user_agent.original"] = ua
        code = status if status is not None else _int(response.get("status"))
        if code is not None and code > 0:
            attrs["http.response.status_code"] = code
        if _str(request.get("operation_name")):  # a GraphQL operation (the dissector's graphql.py)
            attrs["graphql.operation.name"] = request["operation_name"]
            if _str(request.get("operation_type")):
                attrs["graphql.operation.type"] = request["operation_type"]
        origin = _origin(attrs, request, scheme, dst)
        if origin:  # url.full is the client's view (semconv http-spans.md, HTTP client span)
            url_full = f"{origin}{url_path or '/'}?{query}" if query else f"{origin}{url_path or '/'}"
    elif family == "database":
        # semconv db/database-spans.md (db/redis.md): the command as sent, not normalised; a dissector
        # that tells the product apart (MySQL's greeting: MariaDB) names it in `request.db_system`
        db_system = attrs["db.system.name"] = _str(request.get("db_system")) or system
        db_err = response.get("error")
        db_code = db_err.get("code") if type(db_err) is dict else None
        if type(db_err) is str and db_err:  # db/redis.md: the simple error's prefix (ERR, WRONGTYPE)
            db_code = db_err.partition(" ")[0]
        if (type(db_code) is int or type(db_code) is str) and db_code != "":
            # semconv: the database's own code (MySQL's ERR number, PostgreSQL's SQLSTATE)
            attrs["db.response.status_code"] = str(db_code)
        if method:
            attrs["db.operation.name"] = method
        collection = _str(request.get("collection")) or (path if db_system in _PATH_IS_TABLE else "")
        if collection:
            attrs["db.collection.name"] = collection
        if _str(request.get("database")):  # the database a command names (MongoDB's `$db`, a login's)
            attrs["db.namespace"] = request["database"]
        if _str(get("summary")):
            attrs["db.query.text"] = entry["summary"][:MAX_QUERY_TEXT]
    elif family == "messaging":
        attrs["messaging.system"] = system
        if method:
            attrs["messaging.operation.name"] = method
        args = request.get("arguments")
        if system == "rabbitmq" and type(args) is dict:
            # semconv messaging/rabbitmq.md: the destination is the exchange ("" = the default one)
            if "exchange" in args:
                path = _str(args["exchange"])
                attrs["messaging.destination.name"] = path
            if _str(args.get("routing_key")):
                attrs["messaging.rabbitmq.destination.routing_key"] = args["routing_key"]
            if type(args.get("delivery_tag")) is int:
                attrs["messaging.rabbitmq.message.delivery_tag"] = args["delivery_tag"]
            if method in _AMQP_OPERATION_TYPES:
                attrs["messaging.operation.type"] = _AMQP_OPERATION_TYPES[method]
            props = request.get("properties")
            if type(props) is dict:  # messaging-spans.md: the message's own ids
                if _str(props.get("message_id")):
                    attrs["messaging.message.id"] = props["message_id"]
                if _str(props.get("correlation_id")):
                    attrs["messaging.message.conversation_id"] = props["correlation_id"]
            body = request.get("body")
            if type(body) is dict and type(body.get("size")) is int:
                attrs["messaging.message.body.size"] = body["size"]
        elif system == "kafka":
            # semconv messaging/kafka.md: the destination is the topic; a group call names a group
            if _str(request.get("client_id")):
                attrs["messaging.client.id"] = request["client_id"]
            group = _str(request.get("group_id")) or _str(request.get("key"))
            if group:
                attrs["messaging.consumer.group.name"] = group
                if path == group:
                    path = ""
            if method in _KAFKA_OPERATION_TYPES:
                attrs["messaging.operation.type"] = _KAFKA_OPERATION_TYPES[method]
                _kafka_records(attrs, request if method == "Produce" else response)
        if path:
            attrs["messaging.destination.name"] = path
    elif family == "dns":
        # semconv registry dns.md names only the question; its type and the RCODE are Wiretide's
        questions = request.get("questions")
        qname, qtype = path, ""
        if isinstance(questions, list) and questions and isinstance(questions[0], dict):
            qname = qname or _str(questions[0].get("name"))
            qtype = _str(questions[0].get("type"))
        qtype = qtype or method  # the dissector's `method` is the first question's type
        if qname:
            attrs["dns.question.name"] = qname
        if qtype:
            attrs["wiretide.dns.question.type"] = qtype
        rcode = status if status is not None else _int(response.get("rcode"))
        if rcode is not None:
            attrs["wiretide.dns.response_code"] = DNS_RCODES.get(rcode) or str(rcode)
    else:
        if method:
            attrs["wiretide.method"] = method
        if status is not None:
            attrs["wiretide.status"] = status

    attrs["wiretide.protocol"] = protocol
    size = get("size")
    if type(size) is dict:
        req_size, resp_size = size.get("request"), size.get("response")
        if type(req_size) is int:
            attrs["wiretide.request.size"] = req_size
        if type(resp_size) is int:
            attrs["wiretide.response.size"] = resp_size
    err = get("error")
    if err and type(err) is dict and _str(err.get("message")):
        attrs["wiretide.error.message"] = err["message"][:MAX_ERROR_MESSAGE]
    # A call that failed through the server's fault failed for its caller too (every row of the table
    # keeps this; a test holds it to it), so a call fine for its caller needs no second look.
    caller_error = client_error(entry)
    described = Described(
        span_name(entry), attrs, caller_error, server_error(entry) if caller_error else "", url_full
    )
    return described, origin


def _kafka_records(attrs: Attributes, side: dict[str, Any]) -> None:
    """messaging/kafka.md: the records a Produce request or Fetch response carries — how many
    (`messaging.batch.message_count`), and the partition and first offset when they are one partition's."""
    count, partitions, offset = 0, set(), None
    for topic in side.get("topics") or ():
        for part in (topic.get("partitions") or ()) if type(topic) is dict else ():
            if type(part) is not dict:
                continue
            n = part.get("record_count")
            if type(n) is int and n > 0:
                count += n
                partitions.add(part.get("partition"))
                offset = part.get("base_offset")
    if count > 1:  # not on a span of a single message (messaging-spans.md)
        attrs["messaging.batch.message_count"] = count
    if len(partitions) == 1:
        (partition,) = partitions
        if type(partition) is int:
            attrs["messaging.destination.partition.id"] = str(partition)
        if type(offset) is int:
            attrs["messaging.kafka.offset"] = offset


class Shape(NamedTuple):
    """What every HTTP call of one shape is described as (`Descriptions`): the attributes in their
    order — the per-call ones (`client.port`, `url.path`, `url.query`, sizes, error message) holding
    the first call's values, to be overwritten — the name, the errors and the origin of `url.full`."""

    attributes: Attributes
    name: str
    client_error: str
    server_error: str
    origin: str


def _http_shaped(protocol: str) -> bool:
    """Whether `Descriptions` may describe calls of `protocol` by shape: an HTTP row (not WebSocket)
    named like HTTP whose status rules read nothing but `status` and `response.status` (what the
    shape's key holds)."""
    row = info(protocol)
    return (
        row.family == "http"
        and protocol != "ws"
        and row.span_naming == "http"
        and all(rule.path in (("status",), ("response", "status")) for rule in row.status)
    )


class Descriptions:
    """`describe` with memory, per call shape: HTTP calls between the same ends with the same method,
    route, status, headers that matter and TLS session are described alike but for a few per-call
    values (the client's port, the path and query, sizes, the error message). The shape's key holds
    every other value `describe` reads, normalised to what it uses (a bool is no port, 1.0 no status),
    so a hit gives exactly what `describe` would; anything else is described in full.
    """

    __slots__ = ("_http", "_shapes", "limit")

    def __init__(self, limit: int = MAX_SHAPES) -> None:
        self._shapes: dict[tuple[Any, ...], Shape] = {}
        self._http: dict[str, bool] = {}  # protocol -> `_http_shaped`
        self.limit = limit

    def of(self, entry: dict[str, Any]) -> Described:
        get = entry.get
        protocol, method, path = get("protocol"), get("method"), get("path")
        if type(protocol) is not str or type(method) is not str or type(path) is not str:
            return describe(entry)
        http = self._http.get(protocol)
        if http is None:
            http = _http_shaped(protocol)
            if len(self._http) < MAX_PROTOCOLS:
                self._http[protocol] = http
        if not http or not method or not path:
            return describe(entry)
        request, src, dst, tls = get("request"), get("src"), get("dst"), get("tls")
        request = request if type(request) is dict else _EMPTY
        src = src if type(src) is dict else _EMPTY
        dst = dst if type(dst) is dict else _EMPTY
        if tls:
            if type(tls) is not dict:
                return describe(entry)
            alpn = tls.get("alpn")
            listed = type(alpn) is list  # [""] names a protocol (""), "" does not
            if listed:
                alpn = alpn[0] if alpn and type(alpn[0]) is str else None
            decrypted = tls.get("decrypted")
            tls_key: tuple[Any, ...] | None = (
                _str(tls.get("sni")), _str(tls.get("version")), listed, alpn if type(alpn) is str else None,
                _str(tls.get("cipher")),
                _str(tls.get("ja3")), decrypted if type(decrypted) is bool else None,
            )  # fmt: skip
        else:
            tls_key = None
        status = get("status")
        top = type(status) is int  # which status rule reads the code
        if not top:
            response = get("response")
            status = response.get("status") if type(response) is dict else None
            status = status if type(status) is int else None
        headers = request.get("headers")
        ua = headers.get("user-agent") if type(headers) is dict else None
        ua = ua if type(ua) is str else None  # "" is a user agent (an empty one), None none
        version, transport, size, err = get("version"), get("transport"), get("size"), get("error")
        size = size if type(size) is dict else _EMPTY
        req_size, resp_size = size.get("request"), size.get("response")
        src_port, dst_port = src.get("port"), dst.get("port")
        url_path, _, query = path.partition("?")
        if not query:
            query = _str(request.get("query_string"))
        message = ""
        err_type = ""
        if err:
            kind = err.get("type") if type(err) is dict else None
            err_type = kind if type(kind) is str and kind else "error"
            message = _str(err.get("message")) if type(err) is dict else ""
        key = (
            protocol, method, route_of(url_path), top, status, _str(version), _str(transport),
            _str(src.get("ip")), type(src_port) is int, _str(dst.get("ip")),
            dst_port if type(dst_port) is int else None, tls_key, ua, _authority(request),
            _str(request.get("operation_name")), _str(request.get("operation_type")),
            bool(url_path), bool(query), type(req_size) is int, type(resp_size) is int, err_type,
            bool(message),
        )  # fmt: skip
        shape = self._shapes.get(key)
        if shape is None:
            described, origin = _describe(entry)
            if len(self._shapes) >= self.limit:
                TABLE_EVICTIONS.labels("descriptions").inc(len(self._shapes))
                self._shapes.clear()
            self._shapes[key] = Shape(
                dict(described.attributes), described.name, described.client_error,
                described.server_error, origin,
            )  # fmt: skip
            return described
        attrs = shape.attributes.copy()
        if type(src_port) is int:
            attrs["client.port"] = src_port
        if url_path:
            attrs["url.path"] = url_path
        if query:
            query = redact_query(query)
            attrs["url.query"] = query
        if type(req_size) is int:
            attrs["wiretide.request.size"] = req_size
        if type(resp_size) is int:
            attrs["wiretide.response.size"] = resp_size
        if message:
            attrs["wiretide.error.message"] = message[:MAX_ERROR_MESSAGE]
        origin = shape.origin
        url_full = ""
        if origin:
            url_full = f"{origin}{url_path or '/'}?{query}" if query else f"{origin}{url_path or '/'}"
        return Described(shape.name, attrs, shape.client_error, shape.server_error, url_full)


def _own(peer_end: dict[str, Any], error: str) -> Attributes:
    """One side's own attributes: the network peer is the other end of the entry, as this side saw it."""
    attrs: Attributes = {}
    ip = peer_end.get("ip")
    if ip:
        attrs["network.peer.address"] = ip if isinstance(ip, str) else ""
    port = peer_end.get("port")
    if type(port) is int:
        attrs["network.peer.port"] = port
    if error:
        attrs["error.type"] = error
    return attrs


def spans_from_entry(
    entry: dict[str, Any],
    ids: SpanIds,
    context: Context | None = None,
    workloads: Workloads | None = None,
    descriptions: Descriptions | None = None,
    names: SpanNames | None = None,
) -> list[Span]:
    """The client span (at the caller) and the server span (at the callee) of one entry (named within
    `names`' bounds on how many names one server's calls take, when given).

    An end known only by its address is an anonymous workload and has its spans like any other: the
    caller named by its IP, the callee by ip:port (`workload_of`).
    """
    get = entry.get
    node, src, dst = get("node"), get("src"), get("dst")
    node = node if type(node) is str else ""
    src = src if type(src) is dict else {}
    dst = dst if type(dst) is dict else {}
    if workloads is not None:
        caller, callee = workloads.of(src, node), workloads.of(dst, node, True)
    else:
        caller, callee = workload_of(src, node), workload_of(dst, node, True)
    start, elapsed = get("timestamp"), get("elapsed_us")
    start = start if type(start) is int else 0
    elapsed = elapsed if type(elapsed) is int else 0
    end = start + max(elapsed, 0) * 1000
    described = descriptions.of(entry) if descriptions is not None else describe(entry)
    base = described.attributes
    entry_id = get("id")
    entry_id = entry_id if type(entry_id) is str else ""
    base["wiretide.entry_id"] = entry_id
    if node:
        base["wiretide.node"] = node
    name = described.name
    if names is not None:
        protocol = base.get("wiretide.protocol")
        protocol = protocol if type(protocol) is str else ""
        name = names.name(callee.namespace, callee.service_name, name, protocol)
    signature = f"{callee.service_name}|{name}"
    client_error, server_error = described.client_error, described.server_error
    # Positional, in field order (the per-span path: keyword matching costs more than the rest); the
    # client's id drawn first.
    client = Span(
        ids.span_id(), name, described.kind_client, caller, callee, start, end, base,
        _own(dst, client_error), entry_id, entry, node, context, bool(client_error), client_error, b"", b"",
        LINK_ROOT, 1.0, None, signature,
    )  # fmt: skip
    own = client.own
    if described.url_full:
        own["url.full"] = described.url_full
    own["service.peer.name"] = callee.service_name  # the retired `peer.service`
    if callee.namespace:
        own["service.peer.namespace"] = callee.namespace
    server = Span(
        ids.span_id(), name, described.kind_server, callee, caller, start, end, base,
        _own(src, server_error), entry_id, entry, node, context, bool(server_error), server_error, b"", b"",
        LINK_ROOT, 1.0, None, signature,
    )  # fmt: skip
    client.partner = server
    server.partner = client
    return [client, server]

"""Spans from entries: one observed API call becomes a client span (at the caller) and/or a server span
(at the callee), named and attributed by the OpenTelemetry semantic conventions.

Rule: this module only describes what one entry says — it never links spans to each other (that is
`assemble.py`) and never reads a clock: every timestamp comes from the entry, i.e. from the packets.

Semantic conventions followed (https://opentelemetry.io/docs/specs/semconv/): HTTP spans
(`http.request.method`, `url.path`, `url.query`, `http.response.status_code`, status rules of
"http-spans.md#status"), RPC/gRPC (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`,
status rules of "grpc.md#grpc-status"), database (`db.system`), messaging (`messaging.system`), DNS
(`dns.question.name`), general network attributes (`client.*`, `server.*`, `network.peer.*`,
`network.transport`, `network.type`), TLS (`tls.*`), and the k8s/process/container resource conventions.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from wiretide.tracer.propagation import Context

AttrValue = str | int | float | bool
Attributes = dict[str, AttrValue]

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

# gRPC codes that make a *server* span an error (semconv rpc/grpc.md: UNKNOWN, DEADLINE_EXCEEDED,
# UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); every non-zero code is an error on the client side.
GRPC_SERVER_ERRORS: Final = frozenset({2, 4, 12, 13, 14, 15})
# DNS RCODEs that mean the resolver failed rather than answered (RFC 1035 §4.1.1: SERVFAIL, REFUSED).
DNS_ERROR_RCODES: Final = frozenset({2, 5})
# Path segments that look like identifiers are folded in span names to keep their cardinality low.
_ID_SEGMENT: Final = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36})$")
_ID_START: Final = frozenset("0123456789abcdefABCDEF-")
# Longest span name kept; beyond it names are cut (backends index them).
MAX_NAME_CHARS: Final = 200
# Paths whose route (`route_of`) is remembered.
MAX_ROUTES: Final = 8_192
# Distinct workload identities remembered by `Workloads` (all forgotten at once beyond it).
MAX_WORKLOADS: Final = 10_000
_EMPTY: Final[dict[str, Any]] = {}

MESSAGING_SYSTEMS: Final = {"kafka": "kafka", "amqp": "rabbitmq"}
DB_SYSTEMS: Final = {"redis": "redis"}
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
    known: bool = True  # False when only an address identifies this end

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

    @property
    def attributes(self) -> Attributes:
        return {**self.shared, **self.own}

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, "internal")


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


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def workload_of(end: dict[str, Any], node: str) -> Workload:
    """The identity of one end of an entry; an end known only by address is `known=False`."""
    pod = _dict(end.get("pod"))
    svc = _dict(end.get("service"))
    wl = _dict(end.get("workload"))
    proc = _dict(end.get("process"))
    namespace = _str(end.get("namespace")) or _str(pod.get("namespace")) or _str(svc.get("namespace"))
    name = _str(wl.get("name")) or _str(svc.get("name")) or _str(end.get("name")) or _str(pod.get("name"))
    known = bool(name)
    if not name:
        ip = _str(end.get("ip"))
        name = ip or "unknown"
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
    )


class Workloads:
    """`workload_of` with memory: the ends of most entries name the same few workloads, so one
    `Workload` is made per distinct identity and shared by all its spans (cheap to group and hash).

    The memo key is every field `workload_of` reads, so a hit returns exactly what it would make.
    """

    __slots__ = ("_known", "limit")

    def __init__(self, limit: int = MAX_WORKLOADS) -> None:
        self._known: dict[tuple[Any, ...], Workload] = {}
        self.limit = limit

    def of(self, end: dict[str, Any], node: str) -> Workload:
        get = end.get
        pod, svc, wl, proc = get("pod"), get("service"), get("workload"), get("process")
        pod = pod if isinstance(pod, dict) else _EMPTY
        svc = svc if isinstance(svc, dict) else _EMPTY
        wl = wl if isinstance(wl, dict) else _EMPTY
        proc = proc if isinstance(proc, dict) else _EMPTY
        key = (
            node, get("name"), get("namespace"), get("node"), get("ip"),
            pod.get("name"), pod.get("namespace"), svc.get("name"), svc.get("namespace"),
            wl.get("name"), wl.get("kind"), proc.get("pid"), proc.get("name"), proc.get("container_id"),
        )  # fmt: skip
        try:
            found = self._known.get(key)
        except TypeError:  # an unhashable value where a string belongs: not worth remembering
            return workload_of(end, node)
        if found is None:
            found = workload_of(end, node)
            if len(self._known) >= self.limit:
                self._known.clear()
            self._known[key] = found
        return found


@functools.lru_cache(maxsize=MAX_ROUTES)  # a pure function of the path; paths repeat
def route_of(path: str) -> str:
    """The path without its query, with identifier-like segments folded to `{id}`."""
    path = path.split("?", 1)[0] or "/"
    parts = path.split("/")
    # Only segments that start like an id can be one (most are words): the regex runs on those alone.
    return "/".join("{id}" if p and p[0] in _ID_START and _ID_SEGMENT.match(p) else p for p in parts)


def _network(entry: dict[str, Any], src: dict[str, Any], dst: dict[str, Any]) -> Attributes:
    attrs: Attributes = {}
    src_ip, dst_ip, src_port, dst_port = src.get("ip"), dst.get("ip"), src.get("port"), dst.get("port")
    if src_ip and isinstance(src_ip, str):
        attrs["client.address"] = src_ip
    if isinstance(src_port, int) and not isinstance(src_port, bool):
        attrs["client.port"] = src_port
    if dst_ip and isinstance(dst_ip, str):
        attrs["server.address"] = dst_ip
    if isinstance(dst_port, int) and not isinstance(dst_port, bool):
        attrs["server.port"] = dst_port
    transport = entry.get("transport")
    if transport and isinstance(transport, str):
        attrs["network.transport"] = transport
    ip = (dst_ip if isinstance(dst_ip, str) else "") or (src_ip if isinstance(src_ip, str) else "")
    if ip:
        attrs["network.type"] = "ipv6" if ":" in ip else "ipv4"
    tls = _dict(entry.get("tls"))
    if tls:  # semconv registry/attributes/tls.md
        if _str(tls.get("sni")):
            attrs["tls.server.name"] = tls["sni"]
        version = _str(tls.get("version"))
        if version:
            attrs["tls.protocol.name"] = "tls"
            attrs["tls.protocol.version"] = version.replace("TLS", "").replace("v", "").strip() or version
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
    """What the protocol says: span name, attributes, and the error rule for each side. (Immutable,
    and a tuple rather than a frozen dataclass: one is made per entry, and a tuple is cheaper to make.)"""

    name: str
    attributes: Attributes
    client_error: str  # non-empty: the client span is an error, with this `error.type`
    server_error: str
    kind_client: int = KIND_CLIENT
    kind_server: int = KIND_SERVER


def describe(entry: dict[str, Any]) -> Described:
    get = entry.get
    protocol, method, path, status = get("protocol"), get("method"), get("path"), get("status")
    protocol = protocol if isinstance(protocol, str) and protocol else "tcp"
    method = method if isinstance(method, str) else ""
    path = path if isinstance(path, str) else ""
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    request, response = get("request"), get("response")
    request = request if isinstance(request, dict) else _EMPTY
    response = response if isinstance(response, dict) else _EMPTY
    attrs: Attributes = {"network.protocol.name": protocol}
    version = get("version")
    if version and isinstance(version, str):
        attrs["network.protocol.version"] = version
    client_error = server_error = ""

    if protocol == "grpc":
        # semconv rpc/grpc.md
        full = path.lstrip("/")
        service, _, rpc_method = full.rpartition("/")
        service = _str(request.get("service")) or service
        rpc_method = _str(request.get("method")) or rpc_method
        attrs["rpc.system"] = "grpc"
        if service:
            attrs["rpc.service"] = service
        if rpc_method:
            attrs["rpc.method"] = rpc_method
        code = _int(response.get("grpc_status"))
        if code is not None:
            attrs["rpc.grpc.status_code"] = code
            if code != 0:
                client_error = str(code)
            if code in GRPC_SERVER_ERRORS:
                server_error = str(code)
        name = f"{service}/{rpc_method}" if service else (full or "grpc")
    elif protocol in ("http", "http2", "graphql", "ws"):
        # semconv http/http-spans.md
        method = method or _str(request.get("method"))
        full_path = path or _str(request.get("path")) or _str(request.get("url"))
        url_path, _, query = full_path.partition("?")
        query = query or _str(request.get("query_string"))
        if method:
            attrs["http.request.method"] = method
        if url_path:
            attrs["url.path"] = url_path
        if query:
            attrs["url.query"] = query
        attrs["url.scheme"] = "https" if get("tls") else "http"
        headers = request.get("headers")
        if isinstance(headers, dict):
            ua = headers.get("user-agent")
            if isinstance(ua, str):
                attrs["user_agent.original"] = ua
        code = status if status is not None else _int(response.get("status"))
        if code is not None and code > 0:
            attrs["http.response.status_code"] = code
            if code >= 400:
                client_error = str(code)
            if code >= 500:
                server_error = str(code)
        if protocol == "graphql" and _str(request.get("operation_name")):
            attrs["graphql.operation.name"] = request["operation_name"]
            if _str(request.get("operation_type")):
                attrs["graphql.operation.type"] = request["operation_type"]
        name = f"{method} {route_of(url_path)}" if method else (url_path or protocol)
    elif protocol in DB_SYSTEMS:
        attrs["db.system"] = DB_SYSTEMS[protocol]
        if method:
            attrs["db.operation.name"] = method.upper()
        if _str(entry.get("summary")):
            attrs["db.query.text"] = entry["summary"][:1024]
        if entry.get("error") or (status is not None and status < 0):
            client_error = server_error = "db_error"
        name = method.upper() if method else protocol
    elif protocol in MESSAGING_SYSTEMS:
        attrs["messaging.system"] = MESSAGING_SYSTEMS[protocol]
        if method:
            attrs["messaging.operation.name"] = method
        if path:
            attrs["messaging.destination.name"] = path
        if status:
            client_error = server_error = str(status)
        name = f"{method} {path}".strip() or protocol
    elif protocol == "dns":
        questions = request.get("questions")
        qname = path
        qtype = ""
        if isinstance(questions, list) and questions and isinstance(questions[0], dict):
            qname = qname or _str(questions[0].get("name"))
            qtype = _str(questions[0].get("type"))
        if qname:
            attrs["dns.question.name"] = qname
        if qtype:
            attrs["dns.question.type"] = qtype
        rcode = status if status is not None else _int(response.get("rcode"))
        if rcode is not None:
            attrs["dns.response_code"] = rcode
            if rcode in DNS_ERROR_RCODES:
                client_error = server_error = f"rcode_{rcode}"
        name = f"DNS {qtype} {qname}".replace("  ", " ").strip()
    else:
        name = _str(get("summary")) or protocol
        if method:
            attrs["wiretide.method"] = method
        if status is not None:
            attrs["wiretide.status"] = status

    size = get("size")
    if isinstance(size, dict):
        req_size, resp_size = size.get("request"), size.get("response")
        if isinstance(req_size, int) and not isinstance(req_size, bool):
            attrs["wiretide.request.size"] = req_size
        if isinstance(resp_size, int) and not isinstance(resp_size, bool):
            attrs["wiretide.response.size"] = resp_size
    err = get("error")
    if err and isinstance(err, dict):
        etype = _str(err.get("type")) or "error"
        client_error = client_error or etype
        server_error = server_error or etype
        if _str(err.get("message")):
            attrs["wiretide.error.message"] = err["message"][:512]
    return Described(name[:MAX_NAME_CHARS], attrs, client_error, server_error)


def spans_from_entry(
    entry: dict[str, Any], ids: SpanIds, context: Context | None = None, workloads: Workloads | None = None
) -> list[Span]:
    """The client and/or server span of one entry (both when both ends are known workloads).

    An end known only by its address gets no span of its own; when neither end is known the call
    is still reported, as a server span under the destination's address.
    """
    get = entry.get
    node, src, dst = get("node"), get("src"), get("dst")
    node = node if isinstance(node, str) else ""
    src = src if isinstance(src, dict) else {}
    dst = dst if isinstance(dst, dict) else {}
    if workloads is not None:
        caller, callee = workloads.of(src, node), workloads.of(dst, node)
    else:
        caller, callee = workload_of(src, node), workload_of(dst, node)
    start, elapsed = get("timestamp"), get("elapsed_us")
    start = (start if isinstance(start, int) and not isinstance(start, bool) else 0) or 0
    elapsed = (elapsed if isinstance(elapsed, int) and not isinstance(elapsed, bool) else 0) or 0
    end = start + max(elapsed, 0) * 1000
    described = describe(entry)
    base = _network(entry, src, dst)
    base.update(described.attributes)
    entry_id = get("id")
    entry_id = entry_id if isinstance(entry_id, str) else ""
    base["wiretide.entry_id"] = entry_id
    if node:
        base["wiretide.node"] = node
    name = described.name
    signature = f"{callee.service_name}|{name}"
    span_id = ids.span_id

    def half(peer_end: dict[str, Any], kind: int, workload: Workload, peer: Workload, error: str) -> Span:
        """One side of the call: the network peer is the other end of the entry."""
        attrs: Attributes = {}
        ip = peer_end.get("ip")
        if ip:
            attrs["network.peer.address"] = ip if isinstance(ip, str) else ""
        port = peer_end.get("port")
        if type(port) is int:
            attrs["network.peer.port"] = port
        if error:
            attrs["error.type"] = error
        # Positional, in field order (the per-span path: keyword matching costs more than the rest).
        return Span(
            span_id(), name, kind, workload, peer, start, end, base, attrs, entry_id, entry, node,
            context, bool(error), error, b"", b"", LINK_ROOT, 1.0, None, signature,
        )  # fmt: skip

    if caller.known:
        client = half(dst, described.kind_client, caller, callee, described.client_error)
        client.own["peer.service"] = callee.service_name
        if not callee.known:
            return [client]
        server = half(src, described.kind_server, callee, caller, described.server_error)
        client.partner = server
        server.partner = client
        return [client, server]
    return [half(src, described.kind_server, callee, caller, described.server_error)]

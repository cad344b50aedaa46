"""The plugin contract: what a protocol module declares and the events its parsers emit.

Rule: parsers are sans-I/O. A session gets bytes (or datagrams) plus the capture timestamp and
returns events; it never touches a socket, a clock or a logger, and it never raises — a problem is a
`Violation` event. "Need more bytes" (`Verdict.MAYBE`) and "not my protocol" (`Verdict.NO`) differ.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Transport = Literal["tcp", "udp", "sctp"]


class Verdict(enum.IntEnum):
    """A probe's answer on the first bytes of both directions."""

    NO = 0  # not this protocol
    MAYBE = 1  # need more bytes to decide
    YES = 2  # this protocol


@dataclass(slots=True)
class Message:
    """One protocol message from one direction (an HTTP request, a DNS response, a WS frame...).

    Treated as immutable but not `frozen`: it is built for every message on the per-packet path, and a
    frozen dataclass's `__init__` (one `object.__setattr__` call per field) costs about three times as
    much. Nothing assigns to a Message after it is built.
    """

    is_request: bool
    ts_first: int  # capture time of the first byte, ns
    ts_last: int  # capture time of the last byte, ns
    size: int  # bytes on the wire
    fields: dict[str, Any]  # protocol object: becomes the Entry's request/response
    key: Hashable = None  # match key (DNS id, Kafka correlation id); None = FIFO order
    standalone: bool = False  # an entry on its own, never paired (WebSocket message)
    truncated: bool = False  # a gap or a cap cut this message short


@dataclass(frozen=True, slots=True)
class Violation:
    """The bytes broke the protocol: the flow falls back to a raw TCP/UDP entry."""

    reason: str


@dataclass(frozen=True, slots=True)
class Upgrade:
    """The connection switches protocol (HTTP 101 → WebSocket); leftovers go to the new session."""

    protocol: str
    client_rest: bytes = b""
    server_rest: bytes = b""


@dataclass(frozen=True, slots=True)
class FlowMark:
    """Facts a session learned about its flow (TLS metadata) for every later entry of it."""

    key: str
    value: Any


Event = Message | Violation | Upgrade | FlowMark


class Session(Protocol):
    """Both directions of one flow for one protocol; each direction keeps its own state."""

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        """Stream bytes (TCP, in order) or one datagram (UDP)."""
        ...

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        """`size` bytes of this direction were never captured."""
        ...

    def close(self, ts: int) -> list[Event]:
        """The flow ended (FIN/RST, timeout, eviction, end of capture)."""
        ...


@dataclass(slots=True)
class Presented:
    """The normalised top-level fields of an Entry for one request/response pair.

    Not `frozen` for the reason given on `Message` (one is built per entry); nothing assigns to it.
    """

    method: str | None = None
    path: str | None = None
    status: int | None = None
    summary: str = ""
    version: str | None = None
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Limits a session is built with (from settings, passed explicitly)."""

    body_cap: int = 64 * 1024  # bytes of body kept per message and direction (DESIGN.md §3)
    schemas: Any = None  # protobuf schemas for gRPC (grpc.SchemaStore), built once from settings
    # Facts one pipeline's sessions share across flows, by protocol (Kafka: topic id -> name); each
    # protocol bounds what it keeps here. One per pipeline, so a run over the same bytes is repeatable.
    shared: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


Probe = Callable[[bytes, bytes], Verdict]
Present = Callable[[Message | None, Message | None], Presented]
# Refines a finished exchange from its request and response objects (gRPC-Web and GraphQL inside
# HTTP/1.1): the Entry fields to override — `protocol`, `method`, `path`, `status`, `summary`, `error`
# — or an empty dict for "as parsed". Must not raise (a raise is counted and the entry kept as parsed).
Classify = Callable[[dict[str, Any] | None, dict[str, Any] | None], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """One protocol, declared once at the bottom of its module.

    `probe(client_first_bytes, server_first_bytes)` must never raise; `session()` builds the
    per-flow parser; `matcher` says how requests and responses pair ("fifo" or "key").

    `name` is the dissector's own name (port overrides, `--ports 5300=dns-tcp`); `protocol` is the
    Entry `protocol` it produces and so its row in the protocol table (`wiretide.common.protocols`),
    where family, status text, error rule and KFL fields live; it defaults to `name`. `classify` may
    turn an entry into one of `classified_as` (also table rows).
    """

    name: str
    transports: tuple[Transport, ...]
    ports: tuple[int, ...]
    probe: Probe
    session: Callable[[SessionConfig], Session]
    present: Present
    matcher: Literal["fifo", "key", "none"] = "fifo"
    # Reached only through an Upgrade (WebSocket), never by detection.
    detect: bool = True
    # A pending request left unanswered at flow end is a `timeout` (DNS) rather than `unmatched`.
    unanswered_error: str = "unmatched"
    protocol: str = ""  # the Entry's `protocol` (its table row); "" = `name`
    classify: Classify | None = None
    classified_as: tuple[str, ...] = ()  # the protocols `classify` may give an entry

    def __post_init__(self) -> None:
        if not self.protocol:
            object.__setattr__(self, "protocol", self.name)

    @property
    def protocols(self) -> tuple[str, ...]:
        """Every Entry `protocol` this dissector can produce."""
        return (self.protocol, *self.classified_as)

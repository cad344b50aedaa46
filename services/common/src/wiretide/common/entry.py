"""The Entry (DESIGN.md section 3): one API call, as a plain dict in its canonical JSON shape.

Rule: the canonical JSON document is the Entry; the protobuf `Entry` only lifts a few routing
fields out of it. `validate_entry` is what every consumer runs on a document from the wire. Its shape
is the `Entry` TypedDict below (KFL derives its field list from it); its `protocol` is a row of the
protocol table (`wiretide.common.protocols`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, TypedDict

import orjson

from wiretide.common import protocols

if TYPE_CHECKING:
    from wiretide.proto.v1 import entries_pb2

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of Crockford digits, indexed by the 10 bits they encode: a ULID's 130 bits are 13 pairs,
# the time (bits 80-129) the first 5 and the random part (bits 0-79) the last 8.
_PAIRS: Final = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_RAND_MASK: Final = (1 << 80) - 1

# The protocols an Entry can name: the protocol table's rows (one place).
PROTOCOLS: Final = frozenset(protocols.PROTOCOLS)


class Pod(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]


class NamedRef(TypedDict, total=False):
    """A Kubernetes object named by name and namespace (a Service)."""

    name: str
    namespace: str


class WorkloadRef(TypedDict, total=False):
    kind: str
    name: str


class Process(TypedDict, total=False):
    pid: int
    name: str
    container_id: str


class Peer(TypedDict, total=False):
    """One end of the call: its address, and who it is when the resolver knows."""

    ip: str
    port: int
    name: str
    namespace: str
    pod: Pod
    service: NamedRef
    workload: WorkloadRef
    node: str
    process: Process
    resolution: str


class EntryError(TypedDict):
    type: str  # dissection | connection | timeout | unmatched (or a protocol's own)
    message: str


class Size(TypedDict):
    request: int  # bytes on the wire
    response: int


class Tls(TypedDict, total=False):
    sni: str
    version: str
    alpn: str | list[str]
    cipher: str
    ja3: str
    ja4: str
    decrypted: bool
    subject: str
    issuer: str


class Capture(TypedDict, total=False):
    source: str  # af_packet | ebpf_tls | pcap
    interface: str


class Trace(TypedDict, total=False):
    trace_id: str
    span_id: str
    parent_span_id: str
    link: str  # header | syscall | timing
    confidence: float


class _EntryRequired(TypedDict):
    """What every Entry has (`REQUIRED`, checked by `validate_entry`)."""

    id: str  # ULID, sortable by time
    timestamp: int  # request start, ns since the epoch
    protocol: str  # a row of the protocol table


class Entry(_EntryRequired, total=False):
    """One API call. `request` and `response` are protocol-specific objects (docs/protocols.md)."""

    node: str
    elapsed_us: int
    version: str | None
    transport: str
    src: Peer
    dst: Peer
    method: str | None
    path: str | None
    status: int | None
    summary: str
    request: dict[str, Any] | None
    response: dict[str, Any] | None
    error: EntryError | None
    size: Size
    tls: Tls | None
    capture: Capture
    flow_id: str | int | None
    stream: str | int | None
    trace: Trace | None
    # Where the dissector replaced a value by its redaction marker ("request.headers.authorization",
    # "request.body.$.password"); absent when nothing was (docs/security.md, "Redaction").
    redacted: list[str]
    # ICMP errors that quoted this call's flow before the entry was made ({id, type, code, reason,
    # from}: the ICMP entry's id and who sent it); absent when none did (docs/protocols.md, "ICMP").
    icmp_errors: list[dict[str, Any]]


REQUIRED: Final = tuple(_EntryRequired.__annotations__)  # in declaration order


class InvalidEntry(ValueError):
    """A document that is not an Entry."""


# Random bytes are read from the kernel this many at a time (64 ULIDs' worth), not 10 per millisecond:
# one getrandom() call per ULID costs more than the rest of making it when calls are >1 ms apart.
RANDOM_BLOCK: Final = 640
_forks = 0  # processes forked from this one so far, as a child counts them: a child's pool is its parent's


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class UlidGenerator:
    """ULIDs (48-bit ms time + 80 random bits, Crockford base32), monotonic within one generator.
    A forked child draws new random bytes before its first ULID (a copied pool would repeat the
    parent's)."""

    __slots__ = ("_fork", "_head", "_last_ms", "_last_rand", "_low", "_pool", "_pool_at", "_prefix")

    def __init__(self) -> None:
        self._pool = b""
        self._pool_at = RANDOM_BLOCK
        self._fork = _forks
        self._last_ms = -1
        # The random part of the last ULID but for its lowest 10 bits, which are `_low`: within a
        # millisecond most ULIDs step those alone (a small-int add instead of 80-bit arithmetic).
        self._last_rand = 0
        self._low = 0
        self._prefix = ""  # the 10 time digits of `_last_ms`, encoded once per millisecond
        self._head = ""  # the first 24 digits of the last ULID: all but its lowest 10 random bits

    def _random80(self) -> int:
        at = self._pool_at
        if at >= RANDOM_BLOCK:
            self._pool, at = os.urandom(RANDOM_BLOCK), 0
        self._pool_at = at + 10
        return int.from_bytes(self._pool[at : at + 10], "big")

    def new(self, ts_ns: int | None = None) -> str:
        ms = (time.time_ns() if ts_ns is None else ts_ns) // 1_000_000
        if self._fork != _forks:  # forked since the last ULID: nothing of the parent's state is reused
            self._fork, self._pool_at, self._last_ms = _forks, RANDOM_BLOCK, -1
        if ms <= self._last_ms:
            low = self._low + 1
            if low < 1024:  # no carry out of the last digit pair: the rest of the ULID is as it was
                self._low = low
                return self._head + _PAIRS[low]
            r = self._last_rand = ((self._last_rand | 1023) + 1) & _RAND_MASK
            p = _PAIRS
        else:
            r = self._last_rand = self._random80()
            self._last_ms = ms
            p = _PAIRS
            self._prefix = (
                p[(ms >> 40) & 1023]
                + p[(ms >> 30) & 1023]
                + p[(ms >> 20) & 1023]
                + p[(ms >> 10) & 1023]
                + p[ms & 1023]
            )
        self._head = "".join(
            (
                self._prefix,
                p[r >> 70],
                p[(r >> 60) & 1023],
                p[(r >> 50) & 1023],
                p[(r >> 40) & 1023],
                p[(r >> 30) & 1023],
                p[(r >> 20) & 1023],
                p[(r >> 10) & 1023],
            )
        )
        low = self._low = r & 1023
        return self._head + p[low]


def ulid_time_ns(ulid: str) -> int:
    """The millisecond timestamp encoded in a ULID, in ns."""
    value = 0
    for ch in ulid[:10]:
        value = value * 32 + _CROCKFORD.index(ch)
    return value * 1_000_000


def validate_entry(doc: Any) -> dict[str, Any]:
    """Check the minimum every consumer relies on; raise InvalidEntry otherwise."""
    if not isinstance(doc, dict):
        raise InvalidEntry("entry is not a JSON object")
    for key in REQUIRED:
        if key not in doc:
            raise InvalidEntry(f"entry lacks {key!r}")
    if not isinstance(doc["id"], str) or not 1 <= len(doc["id"]) <= 64:
        raise InvalidEntry("entry id must be a non-empty string of at most 64 characters")
    if not isinstance(doc["timestamp"], int) or isinstance(doc["timestamp"], bool) or doc["timestamp"] < 0:
        raise InvalidEntry("entry timestamp must be a non-negative integer (ns since epoch)")
    if not isinstance(doc["protocol"], str) or not doc["protocol"]:
        raise InvalidEntry("entry protocol must be a non-empty string")
    return doc


def to_proto(doc: dict[str, Any]) -> entries_pb2.Entry:
    from wiretide.proto.v1 import entries_pb2  # here: offline analysis never loads protobuf

    return entries_pb2.Entry(
        id=doc["id"],
        timestamp_ns=doc["timestamp"],
        protocol=doc["protocol"],
        node=doc.get("node") or "",
        json=orjson.dumps(doc),
    )


def from_proto(msg: entries_pb2.Entry) -> dict[str, Any]:
    """Decode and validate; raises InvalidEntry for a document that is not an Entry."""
    try:
        doc = orjson.loads(msg.json)
    except orjson.JSONDecodeError as exc:
        raise InvalidEntry(f"entry JSON does not parse: {exc}") from None
    return validate_entry(doc)


def encode_batch(docs: Sequence[dict[str, Any]], node: str, producer: str, seq: int) -> bytes:
    from wiretide.proto.v1 import entries_pb2

    batch = entries_pb2.EntryBatch(node=node, producer=producer, seq=seq)
    batch.entries.extend(to_proto(d) for d in docs)
    return batch.SerializeToString()

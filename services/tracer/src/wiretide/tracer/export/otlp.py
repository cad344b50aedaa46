"""Spans → OTLP protobuf bytes (`ExportTraceServiceRequest`), one resource per observed workload.

Rule: each observed workload is its own OTel resource (`service.name` and the k8s/process context of
that end); Wiretide's own identity appears only as the instrumentation scope, never as a service —
self-telemetry goes elsewhere (DESIGN.md §1). Every ResourceSpans and ScopeSpans carries the schema URL
of the semantic conventions release its attributes follow (`spans.SCHEMA_URL`).

The message is written directly in the protobuf wire format (field numbers from opentelemetry-proto
`opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto`) because building message
objects costs ~200 µs per span in Python, which would cap export far below the tracer's budget. The
tests decode every byte of it with the official `opentelemetry-proto` classes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from wiretide.tracer.spans import KIND_SERVER, SCHEMA_URL, AttrValue, Span, Workload

SCOPE_NAME: Final = "wiretide.tracer"
SCOPE_VERSION: Final = "0.1.0"
# Status.code values (trace.proto, enum StatusCode).
STATUS_UNSET: Final = 0
STATUS_ERROR: Final = 2
# Encoded attributes remembered for reuse; most (key, value) pairs repeat from span to span.
MAX_CACHED_ATTRIBUTES: Final = 50_000

# A key's values stop being cached once it has this many (it is an id, not a label).
MAX_VALUES_PER_KEY: Final = 4_096
# Keys whose values are (nearly) unique per call: never cached.
UNIQUE_KEYS: Final = frozenset({"wiretide.entry_id", "client.port"})

# Calls whose shared attributes wait, encoded, for their second span (oldest forgotten first).
MAX_SHARED: Final = 20_000

# The attribute on a span link to the application's own span (the one that sent the call, named by
# the propagated header): what the link is, for a reader of the trace.
APP_LINK_ATTRIBUTE: Final = ("wiretide.link", "application")

_FIXED64: Final = struct.Struct("<Q")
_TIMES: Final = struct.Struct("<BBBQBQ")
_DOUBLE: Final = struct.Struct("<d")


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte two's complement varints
    if value < 0x80:
        return _SMALL[value]
    if value < 0x4000:  # lengths and ports: two or three bytes, written without a loop
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL: Final = [bytes((i,)) for i in range(0x80)]
# Length-delimited field tags (wire type 2) for the field numbers used here.
_LD_TAG: Final = {f: bytes(((f << 3) | 2,)) for f in range(1, 16)}


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    n = len(payload)
    return _LD_TAG[field] + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _any_value(value: AttrValue) -> bytes:
    # common.proto AnyValue: string_value=1, bool_value=2, int_value=3, double_value=4.
    # bool before int: bool is an int in Python, and OTLP keeps them apart.
    if isinstance(value, str):
        return _ld(1, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    return _ld(1, str(value).encode())


def key_value(key: str, value: AttrValue) -> bytes:
    """A KeyValue (key=1, value=2)."""
    return _ld(1, key.encode()) + _ld(2, _any_value(value))


class _Attributes(dict[tuple[str, AttrValue], bytes]):
    """Encoded Span.attributes (field 9) entries by `(key, value)`; a miss is encoded by `__missing__`
    and kept if worth it.

    Most attribute values repeat from span to span (names, addresses, methods, status codes), so each
    is encoded once, and a span's attributes are looked up in one C-level pass over `dict.items()`. A
    key whose values keep changing (entry ids, ephemeral ports) stops being cached after
    `MAX_VALUES_PER_KEY` and is encoded each time.

    `True == 1` and `False == 0` (and hash alike), so bools and the ints 0 and 1 are never cached;
    floats are not cached either, and a key seen with a float stops caching its ints. What remains
    assumed is what the semantic conventions give every attribute: one type per key.
    """

    __slots__ = ("_heads", "_keys", "_per_key", "_uncached")

    def __init__(self) -> None:
        super().__init__()
        self._per_key: dict[str, int] = {}  # values cached per key
        self._uncached: set[str] = set(UNIQUE_KEYS)
        self._keys: dict[str, bytes] = {}  # key -> its encoded KeyValue.key field
        # (key, length) -> everything before a short string value's bytes (ids have one length).
        self._heads: dict[tuple[str, int], bytes] = {}

    def __missing__(self, item: tuple[str, AttrValue]) -> bytes:
        key, value = item
        kind = type(value)
        if type(value) is str:
            data = value.encode()
            n = len(data)
            if n < 0x7D:  # KeyValue.value, AnyValue and its length fit one-byte lengths
                head = self._heads.get((key, n))
                if head is None:
                    prefix = self._prefix(key)
                    size = len(prefix) + 4 + n
                    head = prefix + b"\x12" + _SMALL[n + 2] + b"\x0a" + _SMALL[n]
                    head = (b"\x4a" + _SMALL[size] if size < 0x80 else _LD_TAG[9] + _varint(size)) + head
                    if len(self._heads) >= MAX_CACHED_ATTRIBUTES:
                        self._heads.clear()
                    self._heads[(key, n)] = head
                encoded = head + data
            else:
                encoded = _ld(9, self._prefix(key) + _ld(2, _ld(1, data)))
        else:
            if type(value) is int and 0 <= value < 1 << 63:
                number = b"\x18" + _varint(value)
                body = self._prefix(key) + b"\x12" + _SMALL[len(number)] + number  # one-byte length
            else:
                body = self._prefix(key) + _ld(2, _any_value(value))
            n = len(body)
            encoded = (b"\x4a" + _SMALL[n] if n < 0x80 else _LD_TAG[9] + _varint(n)) + body
        if key in self._uncached:
            return encoded
        if kind is str or (kind is int and value not in (0, 1)):
            count = self._per_key.get(key, 0)
            if count >= MAX_VALUES_PER_KEY:
                self._forget(key)  # high cardinality: not worth remembering
            else:
                if len(self) >= MAX_CACHED_ATTRIBUTES:
                    self.clear()
                    self._per_key.clear()
                    self._uncached = set(UNIQUE_KEYS)
                    count = 0
                self[item] = encoded
                self._per_key[key] = count + 1
        elif kind is float:
            self._forget(key)  # 2.0 == 2: a key with floats must not find its ints
        return encoded

    def _prefix(self, key: str) -> bytes:
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = self._keys[key] = _ld(1, key.encode())
        return prefix

    def _forget(self, key: str) -> None:
        """Stop caching `key` and drop what is cached of it."""
        self._uncached.add(key)
        if self._per_key.pop(key, 0):
            for cached in [k for k in self if k[0] == key]:
                del self[cached]


class Encoder:
    """Writes ExportTraceServiceRequest bytes; remembers encoded attributes (`_Attributes`), resources,
    span names and the link attributes."""

    def __init__(self) -> None:
        self._lookup = _Attributes().__getitem__
        # Shared attributes of a call, encoded once for both of its spans.
        self._shared: dict[int, tuple[dict[str, AttrValue], bytes]] = {}
        self._resources: dict[Workload, bytes] = {}
        self._names: dict[str, bytes] = {}
        self._tails: dict[tuple[str, float], bytes] = {}
        self._scope = _ld(1, _ld(1, SCOPE_NAME.encode()) + _ld(2, SCOPE_VERSION.encode()))
        self._schema_url = _ld(3, SCHEMA_URL.encode())  # ResourceSpans.schema_url=3, ScopeSpans.schema_url=3

    def _attributes(self, attrs: dict[str, AttrValue]) -> bytes:
        """Span.attributes entries of a dict: a C-level pass over the cache; misses are encoded there."""
        return b"".join(map(self._lookup, attrs.items()))

    def _resource(self, workload: Workload) -> bytes:
        encoded = self._resources.get(workload)
        if encoded is None:
            attrs = workload.resource_attributes()
            body = b"".join(_ld(1, key_value(k, v)) for k, v in attrs.items())  # Resource.attributes=1
            encoded = _ld(1, body)  # ResourceSpans.resource=1
            if len(self._resources) >= MAX_CACHED_ATTRIBUTES:
                self._resources.clear()
            self._resources[workload] = encoded
        return encoded

    def _tail(self, link: str, confidence: float) -> bytes:
        """`wiretide.link` and `wiretide.confidence`: few distinct pairs, encoded once each."""
        key = (link, confidence)
        encoded = self._tails.get(key)
        if encoded is None:
            encoded = _ld(9, key_value("wiretide.link", link)) + _ld(
                9, key_value("wiretide.confidence", float(confidence))
            )
            if len(self._tails) >= MAX_CACHED_ATTRIBUTES:
                self._tails.clear()
            self._tails[key] = encoded
        return encoded

    def span(self, span: Span) -> bytes:
        context = span.context
        name = self._names.get(span.name)
        if name is None:
            if len(self._names) >= MAX_CACHED_ATTRIBUTES:
                self._names.clear()
            name = self._names[span.name] = _ld(5, span.name.encode())
        parts = [b"\x0a\x10", span.trace_id, b"\x12\x08", span.span_id]  # trace_id=1, span_id=2
        if context is not None and context.tracestate:
            parts.append(_ld(3, context.tracestate.encode()))
        parent = span.parent_span_id
        if parent:
            parts.append(b"\x22\x08" + parent if len(parent) == 8 else _ld(4, parent))  # parent_span_id=4
        parts.append(name)
        kind = span.kind
        if 0 <= kind < 0x80:  # kind=6, start_time_unix_nano=7 and end_time_unix_nano=8 (fixed64)
            parts.append(_TIMES.pack(0x30, kind, 0x39, span.start_ns, 0x41, span.end_ns))
        else:
            parts.append(b"\x30" + _varint(kind) + b"\x39" + _FIXED64.pack(span.start_ns))
            parts.append(b"\x41" + _FIXED64.pack(span.end_ns))
        # The two spans of a call share its attributes, encoded once: kept (by the dict's identity,
        # holding the dict so the id stays its own) from the first span until its partner's turn,
        # which may come many requests later (a client span waits for its window).
        shared = self._shared.pop(id(span.shared), None)
        if shared is None or shared[0] is not span.shared:
            shared = (span.shared, self._attributes(span.shared))
            if span.partner is not None and not span.partner.exported:
                if len(self._shared) >= MAX_SHARED:
                    del self._shared[next(iter(self._shared))]
                self._shared[id(span.shared)] = shared
        span.exported = True
        parts.append(shared[1])
        parts.append(self._attributes(span.own))
        tail = self._tails.get((span.link, span.confidence))
        parts.append(tail if tail is not None else self._tail(span.link, span.confidence))
        # The application's span that sent this call, when it is not this span's parent: a span link
        # (Span.links=13; Link: trace_id=1, span_id=2, trace_state=3, attributes=4).
        if (
            context is not None
            and context.parent_id
            and span.kind != KIND_SERVER
            and span.parent_span_id != context.parent_id
        ):
            link = b"\x0a\x10" + context.trace_id + _ld(2, context.parent_id)
            if context.tracestate:
                link += _ld(3, context.tracestate.encode())
            link += _ld(4, key_value(*APP_LINK_ATTRIBUTE))
            parts.append(_ld(13, link))
        if span.error:  # Status: message=2, code=3
            parts.append(_ld(15, _ld(2, span.status_message.encode()) + b"\x18" + _varint(STATUS_ERROR)))
        return _ld(2, b"".join(parts))  # ScopeSpans.spans=2

    def request(self, spans: Iterable[Span]) -> bytes:
        # Spans of one workload mostly share one Workload object: group by identity first, then merge
        # equal workloads (hashing a Workload is the expensive part).
        by_id: dict[int, tuple[Workload, list[bytes]]] = {}
        encode = self.span
        for span in spans:
            bucket = by_id.get(id(span.workload))
            if bucket is None:
                bucket = by_id[id(span.workload)] = (span.workload, [])
            bucket[1].append(encode(span))
        by_workload: dict[Workload, list[bytes]] = {}
        for workload, encoded in by_id.values():
            merged = by_workload.get(workload)
            if merged is None:
                by_workload[workload] = encoded
            else:
                merged.extend(encoded)
        out = []
        schema_url = self._schema_url
        for workload, encoded in by_workload.items():
            scope_spans = _ld(2, self._scope + b"".join(encoded) + schema_url)  # ResourceSpans.scope_spans=2
            out.append(
                _ld(1, self._resource(workload) + scope_spans + schema_url)
            )  # request.resource_spans=1
        return b"".join(out)


def encode_request(spans: Iterable[Span]) -> bytes:
    """One-off encoding (tests, tools); long-lived exporters keep an `Encoder`."""
    return Encoder().request(spans)

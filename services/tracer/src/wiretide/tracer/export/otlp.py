"""Spans → OTLP protobuf bytes (`ExportTraceServiceRequest`), one resource per observed workload.

Rule: each observed workload is its own OTel resource (`service.name` and the k8s/process context of
that end); Wiretide's own identity appears only as the instrumentation scope, never as a service —
self-telemetry goes elsewhere (DESIGN.md §1).

The message is written directly in the protobuf wire format (field numbers from opentelemetry-proto
`opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto`) because building message
objects costs ~200 µs per span in Python, which would cap export far below the tracer's budget. The
tests decode every byte of it with the official `opentelemetry-proto` classes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from wiretide.tracer.spans import AttrValue, Span, Workload

SCOPE_NAME: Final = "wiretide.tracer"
SCOPE_VERSION: Final = "0.1.0"
# Status.code values (trace.proto, enum StatusCode).
STATUS_UNSET: Final = 0
STATUS_ERROR: Final = 2
# Encoded attributes remembered for reuse; most (key, value) pairs repeat from span to span.
MAX_CACHED_ATTRIBUTES: Final = 50_000

_FIXED64: Final = struct.Struct("<Q")
_DOUBLE: Final = struct.Struct("<d")


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte two's complement varints
    if value < 0x80:
        return _SMALL[value]
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


class Encoder:
    """Writes ExportTraceServiceRequest bytes; remembers encoded attributes and resources."""

    def __init__(self) -> None:
        self._attrs: dict[tuple[str, str], bytes] = {}
        self._keys: dict[str, bytes] = {}
        # Shared attributes of a call, encoded once for both of its spans (within one request).
        self._shared: dict[int, tuple[dict[str, AttrValue], bytes]] = {}
        self._resources: dict[Workload, bytes] = {}
        self._scope = _ld(1, _ld(1, SCOPE_NAME.encode()) + _ld(2, SCOPE_VERSION.encode()))

    def _attribute(self, key: str, value: AttrValue) -> bytes:
        """A Span.attributes (field 9) entry. String values repeat (names, addresses, methods) and are
        cached; numbers (ports, sizes) mostly do not and are encoded each time."""
        if type(value) is str:
            cache_key = (key, value)
            encoded = self._attrs.get(cache_key)
            if encoded is None:
                encoded = _ld(9, key_value(key, value))
                if len(self._attrs) >= MAX_CACHED_ATTRIBUTES:
                    self._attrs.clear()
                self._attrs[cache_key] = encoded
            return encoded
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = self._keys[key] = _ld(1, key.encode())
        return _ld(9, prefix + _ld(2, _any_value(value)))

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

    def span(self, span: Span) -> bytes:
        attr = self._attribute
        parts = [b"\x0a\x10", span.trace_id, b"\x12\x08", span.span_id]  # trace_id=1, span_id=2
        if span.context is not None and span.context.tracestate:
            parts.append(_ld(3, span.context.tracestate.encode()))
        if span.parent_span_id:
            parts.append(_ld(4, span.parent_span_id))
        parts.append(_ld(5, span.name.encode()))
        parts.append(b"\x30" + _varint(span.kind))  # kind=6
        parts.append(b"\x39" + _FIXED64.pack(span.start_ns))  # start_time_unix_nano=7 fixed64
        parts.append(b"\x41" + _FIXED64.pack(span.end_ns))  # end_time_unix_nano=8 fixed64
        shared = self._shared.get(id(span.shared))
        if shared is None or shared[0] is not span.shared:
            shared = (span.shared, b"".join([attr(k, v) for k, v in span.shared.items()]))
            self._shared[id(span.shared)] = shared
        parts.append(shared[1])
        for key, value in span.own.items():
            parts.append(attr(key, value))
        parts.append(attr("wiretide.link", span.link))
        parts.append(_ld(9, key_value("wiretide.confidence", float(span.confidence))))
        if span.error:  # Status: message=2, code=3
            parts.append(_ld(15, _ld(2, span.status_message.encode()) + b"\x18" + _varint(STATUS_ERROR)))
        return _ld(2, b"".join(parts))  # ScopeSpans.spans=2

    def request(self, spans: Iterable[Span]) -> bytes:
        by_workload: dict[Workload, list[bytes]] = {}
        for span in spans:
            bucket = by_workload.get(span.workload)
            if bucket is None:
                bucket = by_workload[span.workload] = []
            bucket.append(self.span(span))
        self._shared.clear()
        out = []
        for workload, encoded in by_workload.items():
            scope_spans = _ld(2, self._scope + b"".join(encoded))  # ResourceSpans.scope_spans=2
            out.append(_ld(1, self._resource(workload) + scope_spans))  # request.resource_spans=1
        return b"".join(out)


def encode_request(spans: Iterable[Span]) -> bytes:
    """One-off encoding (tests, tools); long-lived exporters keep an `Encoder`."""
    return Encoder().request(spans)

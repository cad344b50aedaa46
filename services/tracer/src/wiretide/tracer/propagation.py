"""Trace context already on the wire: W3C Trace Context, B3 (single and multi), Jaeger, gRPC binary
metadata, and `x-request-id`.

Rule: a header is trusted only when it is well formed; a malformed or spoofed one (wrong length,
non-hex, all-zero ids, unknown version) is ignored and counted by header and reason, and the next
weaker format is tried — never a partial or guessed id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter

INVALID_HEADERS = Counter(
    "wiretide_tracer_invalid_trace_headers_total",
    "Trace-context headers seen on the wire but ignored because they are malformed or spoofed",
    ["header", "reason"],
)
CONTEXTS = Counter(
    "wiretide_tracer_propagated_contexts_total", "Entries whose trace context came from a header", ["header"]
)
# Bound children of CONTEXTS by header (a label lookup per entry costs more than parsing the header).
_CONTEXTS_BY_SOURCE: Final = {
    source: CONTEXTS.labels(source)
    for source in ("traceparent", "b3", "x-b3", "uber-trace-id", "grpc-trace-bin", "x-request-id")
}

_HEX: Final = frozenset("0123456789abcdef")
_HEX_ANY_CASE: Final = frozenset("0123456789abcdefABCDEF")
ZERO_TRACE: Final = bytes(16)
ZERO_SPAN: Final = bytes(8)
# tracestate is carried through verbatim up to this size (W3C Trace Context §3.3.1.1: 512 bytes is
# the minimum a vendor must propagate; more may be truncated).
MAX_TRACESTATE: Final = 512
# An x-request-id longer than this is not a request id but payload; ignored.
MAX_REQUEST_ID: Final = 200
# The longest header value looked at at all; longer values are refused before parsing.
MAX_HEADER_CHARS: Final = 1024
# The usual traceparent (version 00, lower-case hex): accepted by one match. Anything else, well formed
# or not, takes the field-by-field path that names what is wrong.
_TRACEPARENT_00: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Every header `extract` looks at.
_HEADER_NAMES: Final = frozenset(
    {"traceparent", "b3", "x-b3-traceid", "uber-trace-id", "grpc-trace-bin", "x-request-id"}
)


@dataclass(frozen=True, slots=True)
class Context:
    """A trace context found on a request: the application's trace and the caller's span."""

    trace_id: bytes  # 16 bytes, never all zero
    parent_id: bytes  # 8 bytes, or b"" when the format carries none (x-request-id)
    source: str  # the header it came from
    sampled: bool = True
    tracestate: str = ""

    # Written out, not generated: the dataclass's own `__init__` would run interpreted even in the
    # compiled build (~20 times slower), for every entry that carries a context. Frozen all the same.
    def __init__(
        self, trace_id: bytes, parent_id: bytes, source: str, sampled: bool = True, tracestate: str = ""
    ) -> None:
        object.__setattr__(self, "trace_id", trace_id)
        object.__setattr__(self, "parent_id", parent_id)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "sampled", sampled)
        object.__setattr__(self, "tracestate", tracestate)

    @property
    def trace_hex(self) -> str:
        return self.trace_id.hex()


class Invalid(ValueError):
    """A header that is present but not trustworthy; `args[0]` is the reason label."""


def _hex(text: str, sizes: tuple[int, ...], what: str, lower_only: bool = True) -> bytes:
    if len(text) not in sizes:
        raise Invalid(f"{what}_length")
    if not set(text) <= (_HEX if lower_only else _HEX_ANY_CASE):
        raise Invalid(f"{what}_not_hex")
    value = bytes.fromhex(text.rjust(max(sizes), "0") if len(text) % 2 == 0 else "0" + text)
    if not any(value):
        raise Invalid(f"{what}_zero")
    return value


def parse_traceparent(value: str, tracestate: str = "") -> Context:
    """W3C Trace Context §3.2 (https://www.w3.org/TR/trace-context/#traceparent-header):
    `version "-" trace-id "-" parent-id "-" trace-flags`, lower-case hex; version ff is invalid;
    version 00 has exactly four fields; higher versions may append fields after trace-flags."""
    usual = _TRACEPARENT_00.fullmatch(value.strip())
    if usual is not None:
        trace_hex, parent_hex, flags_hex = usual.groups()
        trace_id, parent_id = bytes.fromhex(trace_hex), bytes.fromhex(parent_hex)
        if trace_id != ZERO_TRACE and parent_id != ZERO_SPAN:
            state = tracestate.strip()[:MAX_TRACESTATE]
            return Context(trace_id, parent_id, "traceparent", bool(int(flags_hex, 16) & 1), state)
    parts = value.strip().split("-")
    if len(parts) < 4:
        raise Invalid("fields")
    version = parts[0]
    if len(version) != 2 or not set(version) <= _HEX or version == "ff":
        raise Invalid("version")
    if version == "00" and len(parts) != 4:
        raise Invalid("fields")
    trace_id = _hex(parts[1], (32,), "trace_id")
    parent_id = _hex(parts[2], (16,), "span_id")
    flags = parts[3]
    if len(flags) != 2 or not set(flags) <= _HEX:
        raise Invalid("flags")
    state = tracestate.strip()[:MAX_TRACESTATE]
    return Context(trace_id, parent_id, "traceparent", bool(int(flags, 16) & 1), state)


def _pad_trace(trace: bytes) -> bytes:
    # B3 and Jaeger allow 64-bit trace ids; they are left-padded to 128 bits (b3-propagation README,
    # "TraceId"), which is also how Zipkin and Jaeger map them to OTLP.
    return trace.rjust(16, b"\0")


def parse_b3_single(value: str) -> Context | None:
    """B3 single header (https://github.com/openzipkin/b3-propagation#single-header):
    `{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`; a lone sampling state carries no context."""
    text = value.strip()
    if text in ("0", "1", "d"):
        return None
    parts = text.split("-")
    if len(parts) < 2 or len(parts) > 4:
        raise Invalid("fields")
    trace = _pad_trace(_hex(parts[0], (16, 32), "trace_id"))
    span = _hex(parts[1], (16,), "span_id")
    sampled = True
    if len(parts) >= 3:
        if parts[2] not in ("0", "1", "d"):
            raise Invalid("sampling")
        sampled = parts[2] != "0"
    if len(parts) == 4:
        _hex(parts[3], (16,), "parent_id")
    return Context(trace, span, "b3", sampled)


def parse_b3_multi(trace_id: str, span_id: str, sampled: str = "") -> Context:
    """B3 multiple headers (b3-propagation README, "Multiple Headers"): X-B3-TraceId (16 or 32 hex),
    X-B3-SpanId (16 hex), X-B3-Sampled ("0"/"1")."""
    trace = _pad_trace(_hex(trace_id.strip(), (16, 32), "trace_id"))
    span = _hex(span_id.strip(), (16,), "span_id")
    return Context(trace, span, "x-b3", sampled.strip() != "0")


def parse_uber(value: str) -> Context:
    """Jaeger propagation (https://www.jaegertracing.io/docs/client-libraries/#propagation-format):
    `{trace-id}:{span-id}:{parent-span-id}:{flags}`; ids are 1..32 / 1..16 hex without leading zeros;
    the colons may arrive URL-encoded as %3A."""
    text = value.strip().replace("%3A", ":").replace("%3a", ":")
    parts = text.split(":")
    if len(parts) != 4:
        raise Invalid("fields")
    trace_text, span_text, _parent, flags = parts
    trace = _pad_trace(_hex(trace_text, tuple(range(1, 33)), "trace_id", lower_only=False))
    span = _hex(span_text, tuple(range(1, 17)), "span_id", lower_only=False).rjust(8, b"\0")
    if not flags or not set(flags) <= _HEX_ANY_CASE or len(flags) > 2:
        raise Invalid("flags")
    return Context(trace, span, "uber-trace-id", bool(int(flags, 16) & 1))


def parse_grpc_trace_bin(value: str) -> Context:
    """gRPC `grpc-trace-bin` metadata: base64 of the OpenCensus binary format
    (https://github.com/census-instrumentation/opencensus-specs/blob/master/encodings/BinaryEncoding.md):
    version 0, then field 0 + 16-byte trace id, field 1 + 8-byte span id, field 2 + 1-byte options."""
    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("not_base64") from None
    if len(raw) < 1 + 17 + 9 or raw[0] != 0:
        raise Invalid("version" if raw[:1] != b"\0" else "length")
    if raw[1] != 0 or raw[18] != 1:
        raise Invalid("fields")
    trace, span = raw[2:18], raw[19:27]
    if not any(trace):
        raise Invalid("trace_id_zero")
    if not any(span):
        raise Invalid("span_id_zero")
    sampled = len(raw) >= 29 and raw[27] == 2 and bool(raw[28] & 1)
    return Context(trace, span, "grpc-trace-bin", sampled)


def parse_request_id(value: str) -> Context:
    """`x-request-id` (Envoy, nginx): an opaque id copied along a request's path. It names the request,
    not a span, so it yields a trace id (a stable hash of the id) and no parent."""
    text = value.strip()
    if not text or len(text) > MAX_REQUEST_ID or not text.isprintable():
        raise Invalid("value")
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return Context(digest, b"", "x-request-id")


def _first(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    if not isinstance(value, str):
        INVALID_HEADERS.labels(name, "type").inc()
        return None
    if len(value) > MAX_HEADER_CHARS:
        INVALID_HEADERS.labels(name, "too_long").inc()
        return None
    return value


def _attempt(
    name: str, parse: Callable[[], Context | None], counts: dict[str, int] | None = None
) -> Context | None:
    try:
        ctx = parse()
    except Invalid as exc:
        INVALID_HEADERS.labels(name, str(exc.args[0])).inc()
        return None
    if ctx is not None:
        if counts is not None:
            counts[ctx.source] = counts.get(ctx.source, 0) + 1
        else:
            counter = _CONTEXTS_BY_SOURCE.get(ctx.source)
            (counter or CONTEXTS.labels(ctx.source)).inc()
    return ctx


def count_contexts(counts: dict[str, int]) -> None:
    """Hand the contexts counted in `counts` (by `extract`, per header) to the metric, and clear it."""
    for source, n in counts.items():
        counter = _CONTEXTS_BY_SOURCE.get(source)
        (counter or CONTEXTS.labels(source)).inc(n)
    counts.clear()


def extract(headers: Mapping[str, Any], counts: dict[str, int] | None = None) -> Context | None:
    """The strongest valid context in lower-cased request headers (or gRPC metadata), else None.
    The context found is counted in `wiretide_tracer_propagated_contexts_total` — or in `counts`, by
    header, when given, for the caller to hand over per batch (`count_contexts`): prometheus_client's
    locked increment costs more per entry than parsing the header."""
    if not headers or _HEADER_NAMES.isdisjoint(headers):  # most requests carry no context at all
        return None
    tp = _first(headers, "traceparent")
    if tp is not None:
        ts = _first(headers, "tracestate") or ""
        ctx = _attempt("traceparent", lambda: parse_traceparent(tp, ts), counts)
        if ctx is not None:
            return ctx
    b3 = _first(headers, "b3")
    if b3 is not None:
        ctx = _attempt("b3", lambda: parse_b3_single(b3), counts)
        if ctx is not None:
            return ctx
    b3_trace = _first(headers, "x-b3-traceid")
    if b3_trace is not None:
        b3_span = _first(headers, "x-b3-spanid") or ""
        b3_sampled = _first(headers, "x-b3-sampled") or ""
        ctx = _attempt("x-b3", lambda: parse_b3_multi(b3_trace, b3_span, b3_sampled), counts)
        if ctx is not None:
            return ctx
    uber = _first(headers, "uber-trace-id")
    if uber is not None:
        ctx = _attempt("uber-trace-id", lambda: parse_uber(uber), counts)
        if ctx is not None:
            return ctx
    gtb = _first(headers, "grpc-trace-bin")
    if gtb is not None:
        ctx = _attempt("grpc-trace-bin", lambda: parse_grpc_trace_bin(gtb), counts)
        if ctx is not None:
            return ctx
    rid = _first(headers, "x-request-id")
    if rid is not None:
        return _attempt("x-request-id", lambda: parse_request_id(rid), counts)
    return None


def extract_from_entry(entry: Mapping[str, Any], counts: dict[str, int] | None = None) -> Context | None:
    """The context on an entry's request (HTTP headers, HTTP/2 and gRPC metadata alike); counted as
    `extract` counts it."""
    request = entry.get("request")
    if not isinstance(request, dict):
        return None
    headers = request.get("headers") or request.get("metadata")
    if not isinstance(headers, dict):
        return None
    return extract(headers, counts)

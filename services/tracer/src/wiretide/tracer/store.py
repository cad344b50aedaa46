"""Recent traces, kept in memory for `GetTrace` and `FindTraces`.

Rule: bounded by trace count and by bytes — each span is charged what it holds (the span, its
attributes and the entry it was built from, whose bodies may be up to the body cap each: estimated
once per call, when the assembler makes its spans, `Span.size`), and while either bound is exceeded
the trace touched longest ago is forgotten; every eviction is counted, and the evicted spans let
their entries go (a span the assembler still holds keeps only the flow id linking reads). An entry
that came with its JSON is held as that JSON, not as the decoded document (charged its length), and
decoded again when a query reads it (`entry_of`). The store answers only from what it still holds
(long-term storage is the OTLP backend's).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from prometheus_client import Counter, Gauge

from wiretide.tracer.spans import Span, entry_of

EVICTED = Counter("wiretide_tracer_store_evicted_traces_total", "Traces forgotten by the in-memory store")
HELD = Gauge("wiretide_tracer_store_traces", "Traces held by the in-memory store")
HELD_BYTES = Gauge("wiretide_tracer_store_bytes", "Estimated bytes of the traces held by the in-memory store")

DEFAULT_MAX_TRACES: Final = 50_000
# Estimated bytes of everything the store holds: a quarter of the tracer's 300 MB budget (the
# assembler's pending spans, the service map and the export queue share the rest).
DEFAULT_MAX_BYTES: Final = 64 << 20
# What CPython spends on the objects of a decoded entry, beyond the characters of its strings
# (measured with tracemalloc on decoded entries, `sys.getsizeof` for the shapes): a dict's table per
# key, a list's slot per item, a str's header, an int.
DICT_BASE: Final = 64
DICT_ITEM: Final = 48
LIST_BASE: Final = 56
LIST_ITEM: Final = 8
STR_BASE: Final = 49
SCALAR: Final = 32
KEY_CACHED: Final = 64  # orjson decodes keys up to this length into one cached str each
# A span object with its two attribute dicts and the bookkeeping of assembly, apart from the entry.
SPAN_BASE: Final = 1_500
# Containers walked below this depth are charged a flat amount instead (entries are a few levels
# deep; a decoded protobuf or JSON body can nest further, and the walk must stay cheap and bounded).
MAX_DEPTH: Final = 12
DEEP: Final = 256
# A bytes object's header: what an entry held as its JSON costs beyond its characters.
TEXT_BASE: Final = 33


def value_bytes(value: object, depth: int = 0) -> int:
    """Estimated bytes CPython holds for a decoded JSON value (dicts, lists, str, numbers)."""
    if isinstance(value, str):
        # Wider characters take 2 or 4 bytes each, for the whole string (PEP 393): asked for those.
        return STR_BASE + len(value) if value.isascii() else sys.getsizeof(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return DEEP * (1 + len(value))
        total = DICT_BASE
        for k, v in value.items():
            total += DICT_ITEM + value_bytes(v, depth + 1)
            if len(k) > KEY_CACHED:  # shorter keys are one shared object per spelling (orjson's cache)
                total += STR_BASE + len(k)
        return total
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return DEEP * (1 + len(value))
        total = LIST_BASE
        for v in value:
            total += LIST_ITEM + value_bytes(v, depth + 1)
        return total
    if isinstance(value, bytes):
        return TEXT_BASE + len(value)
    return SCALAR


def entry_bytes(entry: dict[str, Any], text: bytes | None = None) -> int:
    """`value_bytes` of a decoded entry, estimated from its JSON `text` (as received; encoded here when
    not given) instead of a walk in Python: the text's length (every character of every string, plus
    quotes and punctuation: a little above) and the objects its tokens become, counted in C (`"`
    pairs are strings, `":` the keys among them, `{`/`[` containers, `,` the items after each
    container's first). Non-ASCII text (a string of wide characters costs up to 4 bytes a character,
    more than its UTF-8) and what orjson cannot encode are walked instead."""
    if text is None:
        try:
            text = orjson.dumps(entry)
        except (TypeError, orjson.JSONEncodeError):  # too deep, an odd key or number: walk (bounded)
            return value_bytes(entry)
    if not text.isascii():
        return value_bytes(entry)
    # One pass in C keeps the tokens; the counts then run over that short residue. A `:` inside a
    # string after a `"` in it reads as a key there: it moves one object from the strings to the
    # keys, which cost about the same (STR_BASE, DICT_ITEM).
    tokens = text.translate(None, _NOT_TOKEN)
    keys = tokens.count(b'":')
    strings = max((tokens.count(b'"') >> 1) - keys, 0)  # an escaped quote: half a string more (above)
    dicts = tokens.count(b"{")
    lists = tokens.count(b"[")
    items = tokens.count(b",") + dicts + lists  # each value in a container; one more per empty one
    scalars = max(items - strings - dicts - lists + 1, 0)  # neither a string nor a container
    return (
        len(text)  # the characters of keys too, which orjson's key cache holds once: above
        + STR_BASE * strings
        + DICT_BASE * dicts
        + DICT_ITEM * keys
        + LIST_BASE * lists
        + LIST_ITEM * max(items - keys, 0)
        + SCALAR * scalars
    )


# Every byte but the JSON tokens `entry_bytes` counts: deleted before counting.
_NOT_TOKEN: Final = bytes(b for b in range(256) if b not in b'"{[,:')


def span_bytes(span: Span, entry_counted: bool = False) -> int:
    """Estimated bytes one span holds: its `size` when the assembler set it (the call's bytes on its
    client side, its own objects on the other), else its objects plus its entry unless already
    charged to the other side of the same call."""
    if span.size:
        return span.size
    if entry_counted:
        return SPAN_BASE
    return SPAN_BASE + entry_bytes(span.entry)


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    root_name: str
    root_service: str
    start_ns: int
    duration_ns: int
    span_count: int
    error: bool
    min_confidence: float


def summarize(trace_id: bytes, spans: list[Span]) -> TraceSummary:
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids]
    root = min(roots or spans, key=lambda s: (s.start_ns, s.kind != 2))
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    return TraceSummary(
        trace_id=trace_id.hex(),
        root_name=root.name,
        root_service=root.workload.service_name,
        start_ns=start,
        duration_ns=end - start,
        span_count=len(spans),
        error=any(s.error for s in spans),
        min_confidence=min(s.confidence for s in spans),
    )


def _slim(span: Span) -> None:
    """Let the span's decoded entry go, keeping the flow id that linking reads (delays.py); the other
    side of the call, which shares the entry, is given the same (one object per call, not two)."""
    entry = span.entry
    if len(entry) > 1:
        flow = entry.get("flow_id")
        slim: dict[str, Any] = {"flow_id": flow} if flow is not None else {}
        span.entry = slim
        other = span.partner
        if other is not None and other.entry is entry:
            other.entry = slim


def _any_entry(predicate: Callable[[dict[str, Any]], bool], spans: list[Span]) -> bool:
    """Whether the entry of any of these spans matches, each entry decoded once (both sides of a
    call share it)."""
    seen: set[int] = set()
    for s in spans:
        key = id(s.text) if s.text else id(s.entry)
        if key in seen:
            continue
        seen.add(key)
        if predicate(entry_of(s)):
            return True
    return False


class TraceStore:
    def __init__(self, max_traces: int = DEFAULT_MAX_TRACES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_traces < 1 or max_bytes < 1:
            raise ValueError("the trace store needs room for at least one trace and one byte")
        self.max_traces = max_traces
        self.max_bytes = max_bytes
        self.traces: OrderedDict[bytes, list[Span]] = OrderedDict()
        self.sizes: dict[bytes, int] = {}  # estimated bytes per held trace
        self.held_bytes = 0
        self.evicted = 0
        self.evicted_calls = 0  # calls (entries) of the evicted traces: what a filtered map no longer sees

    def add(self, spans: list[Span]) -> None:
        traces = self.traces
        sizes = self.sizes
        # Both sides of a call share one entry: charge it once (by identity, within this batch) when
        # the spans came without a size (the assembler sets it, once per call).
        charged: set[int] = set()
        for span in spans:
            size = span.size
            if span.text:
                # Held as the JSON it came as, not as the decoded document: about two thirds fewer
                # bytes, and no objects for the cyclic collector to walk again and again; a query that
                # reads the entry decodes it (`entry_of`). The side the assembler charged the entry to
                # is charged the text (both sides share it).
                size = SPAN_BASE + TEXT_BASE + len(span.text) if size > SPAN_BASE else SPAN_BASE
                _slim(span)
            elif not size:
                entry_id = id(span.entry)
                size = span_bytes(span, entry_id in charged)
                charged.add(entry_id)
            key = span.trace_id
            bucket = traces.get(key)
            if bucket is None:
                bucket = traces[key] = []
                sizes[key] = 0
            else:
                traces.move_to_end(key)
            bucket.append(span)
            sizes[key] += size
            self.held_bytes += size
            while self.held_bytes > self.max_bytes or len(traces) > self.max_traces:
                self._evict_oldest()
        HELD.set(len(traces))
        HELD_BYTES.set(self.held_bytes)

    def _evict_oldest(self) -> None:
        """Forget the trace touched longest ago (the one being added too, when it alone is too big)."""
        key, spans = self.traces.popitem(last=False)
        self.held_bytes -= self.sizes.pop(key)
        self.evicted += 1
        self.evicted_calls += len({id(s.text) if s.text else id(s.entry) for s in spans})
        # The assembler may still hold these spans (its timelines, for linking later calls): what
        # linking reads of an entry is its flow id (delays.py); the rest is let go with the trace.
        for s in spans:
            _slim(s)
            s.text = b""
            # The two sides of a call point at each other: a cycle that only the cyclic collector
            # frees, and these spans have lived long enough to reach its oldest generation, collected
            # every few hundred million allocations (common/collector.py): ~2.4 KB a call kept as
            # garbage until then. Cut on the client side: once emitted, no part reads a client's
            # partner (the assembler reads it on undecided calls only; the exporter's cache is only
            # skipped without it), while the server side's is read for linking (`Assembler._learn`).
            # The server side (of any kind: a consumer too) is the one its partner is the parent of.
            other = s.partner
            if other is not None:
                (other if s.parent is other else s).partner = None
        EVICTED.inc()

    def spans(self) -> list[Span]:
        """Every span held, newest trace last (a copy: safe while spans keep arriving)."""
        return [s for spans in list(self.traces.values()) for s in spans]

    def get(self, trace_id_hex: str) -> list[Span]:
        try:
            key = bytes.fromhex(trace_id_hex)
        except ValueError:
            return []
        return sorted(self.traces.get(key, []), key=lambda s: (s.start_ns, s.kind != 2))

    def find(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None,
        start_ns: int = 0,
        end_ns: int = 0,
        limit: int = 100,
    ) -> list[TraceSummary]:
        out = []
        for trace_id in reversed(self.traces):
            spans = self.traces[trace_id]
            first = min(s.start_ns for s in spans)
            if start_ns and first < start_ns:
                continue
            if end_ns and first > end_ns:
                continue
            if predicate is not None and not _any_entry(predicate, spans):
                continue
            out.append(summarize(trace_id, spans))
            if len(out) >= limit:
                break
        return out

"""Streaming trace assembly: spans in (from entries, in any order within a window), linked spans out.

Rule: every parent link is made by the strongest evidence available and says so — the propagated
header, then kernel causality (`causality.py`), then timing — and a timing link never claims
certainty: its confidence is below 1 and falls as the number of plausible parents grows. Time is the
packets' time (the watermark), never the wall clock, so a pcap replay assembles like live traffic.

How it streams: a server span is decided on arrival (its parent is the client side of the same
call, or none). A client span waits until the watermark has passed its end by `window_ns`, so that
the inbound request it belongs to — which ends later, hence arrives later — has had the window to
arrive; then its parent is chosen. A span is emitted once it and all its ancestors are decided,
which is when its trace id is final.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter, Gauge

from wiretide.tracer.causality import CausalitySource, NoCausality
from wiretide.tracer.propagation import extract_from_entry
from wiretide.tracer.rules import SpanRule, apply
from wiretide.tracer.spans import (
    KIND_NAMES,
    KIND_SERVER,
    LINK_ENTRY,
    LINK_HEADER,
    LINK_ROOT,
    LINK_SYSCALL,
    LINK_TIMING,
    Span,
    SpanIds,
    spans_from_entry,
)

SPANS_IN = Counter("wiretide_tracer_spans_total", "Spans made from entries", ["kind"])
SPANS_DROPPED = Counter("wiretide_tracer_spans_dropped_total", "Spans not emitted, by reason", ["reason"])
_SPANS_IN_BY_KIND = {kind: SPANS_IN.labels(name) for kind, name in KIND_NAMES.items()}
LINKS = Counter("wiretide_tracer_links_total", "Parent links made, by evidence", ["link"])
_LINKS_BY_NAME = {name: LINKS.labels(name) for name in (LINK_HEADER, LINK_SYSCALL, LINK_TIMING)}
PENDING = Gauge("wiretide_tracer_pending_spans", "Client spans waiting for their window to close")

# Highest confidence a timing link can have: containment in time is evidence, not proof (the call
# may come from a background task that happened to run during the request).
TIMING_MAX_CONFIDENCE: Final = 0.9
# Slack (ns) added to every candidate's slack so that a perfect fit does not make weights infinite;
# about the scheduling jitter of a busy server between accepting a request and calling out.
SLACK_FLOOR_NS: Final = 1_000_000
# Pruning a timeline moves memory; it is done at most once per this much packet time.
PRUNE_EVERY_NS: Final = 100_000_000
# Traces we remember the span count of, for the fan-out cap (oldest forgotten first).
MAX_TRACKED_TRACES: Final = 200_000


@dataclass(frozen=True, slots=True)
class AssemblyConfig:
    window_ns: int = 2_000_000_000
    clock_skew_ns: int = 5_000_000
    max_spans_per_trace: int = 10_000
    max_pending: int = 200_000
    max_inbound_per_instance: int = 20_000


class Timeline:
    """One instance's spans of one direction, sorted by start, for "who was open at time t" queries.

    Bounded: at most `cap` spans (oldest start evicted first, counted by the caller); spans that ended
    before the horizon are pruned. `max_duration` (longest span held) bounds how far back a query looks.
    """

    __slots__ = ("cap", "last_horizon", "max_duration", "spans", "starts")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.starts: list[int] = []
        self.spans: list[Span] = []
        self.max_duration = 0
        self.last_horizon = 0

    def add(self, span: Span) -> int:
        """Insert; returns how many spans were evicted to stay within the cap."""
        i = bisect.bisect_right(self.starts, span.start_ns)
        self.starts.insert(i, span.start_ns)
        self.spans.insert(i, span)
        duration = span.end_ns - span.start_ns
        self.max_duration = max(self.max_duration, duration)
        over = len(self.spans) - self.cap
        if over > 0:
            self._cut(over)
        return max(over, 0)

    def prune(self, horizon: int) -> None:
        """Forget spans (from the earliest start on) that ended before `horizon`."""
        if horizon - self.last_horizon < PRUNE_EVERY_NS:
            return
        self.last_horizon = horizon
        spans = self.spans
        k = 0
        while k < len(spans) and spans[k].end_ns < horizon:
            k += 1
        if k:
            self._cut(k)

    def _cut(self, k: int) -> None:
        gone = self.spans[:k]
        del self.starts[:k]
        del self.spans[:k]
        if any(s.end_ns - s.start_ns >= self.max_duration for s in gone):
            self.max_duration = max((s.end_ns - s.start_ns for s in self.spans), default=0)

    def open_during(self, start: int, end: int, slack: int) -> list[Span]:
        """Spans that may enclose [start, end] (± slack): started by `start`, long enough to reach `end`."""
        lo = bisect.bisect_left(self.starts, end - self.max_duration - slack)
        hi = bisect.bisect_right(self.starts, start + slack)
        floor = end - slack
        return [s for s in self.spans[lo:hi] if s.end_ns >= floor]

    def within(self, start: int, end: int) -> list[Span]:
        """Spans that lie inside [start, end]."""
        lo = bisect.bisect_left(self.starts, start)
        hi = bisect.bisect_right(self.starts, end)
        return [s for s in self.spans[lo:hi] if s.end_ns <= end]


class Assembler:
    """Feed entries with `add`, move packet time on with `advance`/`tick`, take spans from `drain`."""

    def __init__(
        self,
        config: AssemblyConfig | None = None,
        *,
        rules: tuple[SpanRule, ...] = (),
        causality: CausalitySource | None = None,
        ids: SpanIds | None = None,
        on_emit: Callable[[list[Span]], None] | None = None,
    ) -> None:
        self.config = config or AssemblyConfig()
        self.rules = rules
        self.causality: CausalitySource = causality or NoCausality()
        self.ids = ids or SpanIds()
        self.on_emit = on_emit
        self.watermark = 0
        self._seq = itertools.count()
        self._pending: list[tuple[int, int, Span]] = []  # (ripe at, seq, client span)
        self._inbound: dict[str, Timeline] = {}  # instance -> its server spans (requests it served)
        self._outbound: dict[str, Timeline] = {}  # instance -> its client spans (calls it made)
        self._by_entry: OrderedDict[str, Span] = OrderedDict()  # entry id -> server span (for causality)
        self._trace_counts: OrderedDict[bytes, int] = OrderedDict()
        self._out: list[Span] = []
        self.stats: dict[str, int] = {}

    # ---- input ----------------------------------------------------------------------------------

    def add(self, entry: dict[str, Any]) -> list[Span]:
        """Turn one entry into spans and start linking them; returns the spans made (none if dropped)."""
        verdict = apply(self.rules, entry) if self.rules else None
        if verdict is not None and verdict.drop:
            self._count("dropped_by_rule")
            SPANS_DROPPED.labels("rule").inc()
            return []
        ctx = extract_from_entry(entry)
        spans = spans_from_entry(entry, self.ids, ctx)
        for span in spans:
            if verdict is not None and verdict.name:
                span.name = verdict.name
            _SPANS_IN_BY_KIND[span.kind].inc()
            self.watermark = max(self.watermark, span.end_ns)
        for span in spans:
            if span.kind == KIND_SERVER:
                self._add_server(span)
            else:
                self._add_client(span)
        self._ripen()
        return spans

    def add_many(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            self.add(entry)

    def advance(self, packet_time_ns: int) -> None:
        """Move packet time forward (e.g. from capture stats) and decide what has become ripe."""
        self.watermark = max(self.watermark, packet_time_ns)
        self._ripen()

    def flush(self) -> None:
        """Decide everything now (end of a pcap, shutdown): waiting client spans use what has arrived."""
        while self._pending:
            _, _, span = heapq.heappop(self._pending)
            self._decide_client(span)
        PENDING.set(0)

    def drain(self) -> list[Span]:
        out, self._out = self._out, []
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---- server spans ---------------------------------------------------------------------------

    def _add_server(self, span: Span) -> None:
        timeline = self._inbound.get(span.workload.instance)
        if timeline is None:
            timeline = self._inbound[span.workload.instance] = Timeline(self.config.max_inbound_per_instance)
        # A waiting call ends after watermark - window, so requests that ended before that (less the
        # skew allowance) can be nobody's parent any more.
        timeline.prune(self.watermark - self.config.window_ns - self.config.clock_skew_ns)
        if timeline.add(span):
            self._count("inbound_evicted")
        self._by_entry[span.entry_id] = span
        if len(self._by_entry) > self.config.max_inbound_per_instance * 4:
            self._by_entry.popitem(last=False)
        if span.partner is not None:
            span.parent = span.partner
            span.link = LINK_ENTRY
            span.confidence = 1.0
        elif span.context is not None:
            span.link = LINK_HEADER
        self._decided(span)

    # ---- client spans ---------------------------------------------------------------------------

    def _add_client(self, span: Span) -> None:
        timeline = self._outbound.get(span.workload.instance)
        if timeline is None:
            timeline = self._outbound[span.workload.instance] = Timeline(self.config.max_inbound_per_instance)
        timeline.prune(self.watermark - 2 * self.config.window_ns - self.config.clock_skew_ns)
        if timeline.add(span):
            self._count("outbound_evicted")
        if len(self._pending) >= self.config.max_pending:
            _, _, oldest = heapq.heappop(self._pending)
            self._count("decided_early_pressure")
            self._decide_client(oldest)
        ripe_at = span.end_ns + self.config.window_ns
        heapq.heappush(self._pending, (ripe_at, next(self._seq), span))

    def _ripen(self) -> None:
        pending = self._pending
        while pending and pending[0][0] <= self.watermark:
            _, _, span = heapq.heappop(pending)
            self._decide_client(span)
        PENDING.set(len(pending))

    def _candidates(self, span: Span) -> list[Span]:
        """Inbound requests of the caller's instance that enclose this call in time (± clock skew)."""
        inbound = self._inbound.get(span.workload.instance)
        if inbound is None:
            return []
        skew = self.config.clock_skew_ns
        # Calls are decided in order of their end, so a request that ended before this call (less the
        # allowances) can enclose no call still to be decided.
        inbound.prune(span.end_ns - self.config.window_ns - skew)
        partner = span.partner
        return [
            s
            for s in inbound.open_during(span.start_ns, span.end_ns, skew)
            if s is not partner and self._encloses(s, span)
        ]

    def _encloses(self, parent: Span, child: Span) -> bool:
        """Containment in time; timestamps from different capture nodes get the clock-skew allowance."""
        skew = 0 if parent.entry.get("node") == child.entry.get("node") else self.config.clock_skew_ns
        return parent.start_ns <= child.start_ns + skew and parent.end_ns >= child.end_ns - skew

    def _decide_client(self, span: Span) -> None:
        cause = self.causality.cause_of(span.entry)
        if cause is not None:
            parent = self._by_entry.get(cause)
            if parent is not None and parent.workload.instance == span.workload.instance:
                self._link(span, parent, LINK_SYSCALL, 1.0)
                return
        candidates = self._candidates(span)
        ctx = span.context
        if ctx is not None:
            same = [s for s in candidates if s.context is not None and s.context.trace_id == ctx.trace_id]
            if same:
                self._link(span, min(same, key=lambda s: self._slack(span, s)), LINK_HEADER, 1.0)
            else:
                # The application's trace enters our view here: the caller's own span is the parent.
                span.link = LINK_HEADER
                span.confidence = 1.0
                _LINKS_BY_NAME[LINK_HEADER].inc()
                self._decided(span)
            return
        # Inbound requests carrying another trace's context belong to that trace, not to this call.
        plain = [s for s in candidates if s.context is None]
        if not plain:
            span.link = LINK_ROOT
            span.confidence = 1.0
            self._decided(span)
            return
        free = [s for s in plain if s.child_signatures is None or span.signature not in s.child_signatures]
        pool = free or plain
        choice = self._match(span, pool) if len(pool) > 1 else pool[0]
        weights = [1.0 / (self._slack(span, s) + SLACK_FLOOR_NS) for s in pool]
        confidence = TIMING_MAX_CONFIDENCE * weights[pool.index(choice)] / sum(weights)
        if free and len(free) < len(plain):  # requests already served by such a call were set aside
            confidence *= len(free) / len(plain) + (1 - len(free) / len(plain)) * 0.5
        parent = choice
        if parent.child_signatures is None:
            parent.child_signatures = set()
        parent.child_signatures.add(span.signature)
        self._link(span, parent, LINK_TIMING, round(confidence, 4))

    def _match(self, span: Span, candidates: list[Span]) -> Span:
        """The parent `span` gets in a greedy tightest-fit matching of the calls that compete for the
        same requests: undecided calls of the same kind that the candidates also enclose.

        Every call a candidate encloses has arrived by now (calls end before their requests), so the
        outbound index holds all of the candidates' possible children.
        """
        skew = self.config.clock_skew_ns
        lo = min(s.start_ns for s in candidates) - skew
        hi = max(s.end_ns for s in candidates) + skew
        rivals = [span]
        outbound = self._outbound.get(span.workload.instance)
        if outbound is not None:
            outbound.prune(span.end_ns - 2 * self.config.window_ns - skew)
            rivals.extend(
                other
                for other in outbound.within(lo, hi)
                if other is not span and not other.decided and other.signature == span.signature
            )
        if len(rivals) == 1:
            return min(candidates, key=lambda s: self._slack(span, s))
        pairs = []
        for call in rivals:
            for parent in candidates:
                if self._encloses(parent, call):
                    pairs.append((self._slack(call, parent), id(call), call, parent))
        pairs.sort(key=lambda p: (p[0], p[1]))
        taken_calls: set[int] = set()
        taken_parents: set[int] = set()
        for _, call_id, call, parent in pairs:
            if call_id in taken_calls or id(parent) in taken_parents:
                continue
            if call is span:
                return parent
            taken_calls.add(call_id)
            taken_parents.add(id(parent))
        # More calls than requests (fan-out): the tightest fit.
        return min(candidates, key=lambda s: self._slack(span, s))

    @staticmethod
    def _slack(child: Span, parent: Span) -> int:
        """Time the parent spent outside the child: small when the call fits its request tightly. An
        overlap that only the clock-skew allowance permits counts double: it is less likely."""
        before = child.start_ns - parent.start_ns
        after = parent.end_ns - child.end_ns
        return (before if before >= 0 else -2 * before) + (after if after >= 0 else -2 * after)

    def _link(self, span: Span, parent: Span, link: str, confidence: float) -> None:
        span.parent = parent
        span.link = link
        span.confidence = confidence
        _LINKS_BY_NAME[link].inc()
        self._decided(span)

    # ---- emission -------------------------------------------------------------------------------

    def _decided(self, span: Span) -> None:
        span.decided = True
        parent = span.parent
        if parent is not None and not parent.emitted:
            if parent.waiting is None:
                parent.waiting = []
            parent.waiting.append(span)
            return
        stack = [span]
        while stack:
            s = stack.pop()
            self._emit(s)
            if s.waiting:
                stack.extend(c for c in s.waiting if c.decided)
                s.waiting = None

    def _emit(self, span: Span) -> None:
        parent = span.parent
        if parent is not None:
            span.trace_id = parent.trace_id
            span.parent_span_id = parent.span_id
        elif span.context is not None:
            span.trace_id = span.context.trace_id
            span.parent_span_id = span.context.parent_id
        else:
            span.trace_id = self.ids.trace_id()
        span.emitted = True
        counts = self._trace_counts
        n = counts.get(span.trace_id, 0) + 1
        counts[span.trace_id] = n
        counts.move_to_end(span.trace_id)
        if len(counts) > MAX_TRACKED_TRACES:
            counts.popitem(last=False)
        if n > self.config.max_spans_per_trace:
            self._count("dropped_fanout")
            SPANS_DROPPED.labels("fanout").inc()
            return
        self._out.append(span)
        if self.on_emit is not None and len(self._out) >= 1024:
            self.on_emit(self.drain())

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

"""Streaming trace assembly: spans in (from entries, in any order within a window), linked spans out.

Rule: every parent link is made by the strongest evidence available and says so — the propagated
header, then kernel causality (`causality.py`), then timing — and a timing link never claims
certainty: its confidence is below 1 and falls when other parents would fit about as well. Calls that
compete for the same requests are assigned jointly (one call of a kind per request, order of service
kept unless the gaps say otherwise), not each to its own tightest fit. Time is the
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
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter, Gauge

from wiretide.common.protocols import status_class
from wiretide.tracer.causality import CausalitySource, NoCausality
from wiretide.tracer.delays import DelayModel
from wiretide.tracer.names import NAMES_COLLAPSED, TABLE_EVICTIONS, SpanNames
from wiretide.tracer.partition import (
    FACT_TIMEOUT_NS,
    MAX_EARLY_FACTS,
    ROLE_BOTH,
    ROLE_OWNER,
    Partition,
    span_id_of,
)
from wiretide.tracer.propagation import count_contexts, extract_from_entry
from wiretide.tracer.rules import SpanRule, apply
from wiretide.tracer.spans import (
    KIND_NAMES,
    LINK_ENTRY,
    LINK_HEADER,
    LINK_ROOT,
    LINK_SYSCALL,
    LINK_TIMING,
    Descriptions,
    Span,
    SpanIds,
    TraceTally,
    Workload,
    Workloads,
    spans_from_entry,
)
from wiretide.tracer.store import SPAN_BASE, TEXT_BASE, entry_bytes

SPANS_IN = Counter("wiretide_tracer_spans_total", "Spans made from entries", ["kind"])
SPANS_DROPPED = Counter("wiretide_tracer_spans_dropped_total", "Spans not emitted, by reason", ["reason"])
_SPANS_IN_BY_KIND = {kind: SPANS_IN.labels(name) for kind, name in KIND_NAMES.items()}
LINKS = Counter("wiretide_tracer_links_total", "Parent links made, by evidence", ["link"])
_LINKS_BY_NAME = {name: LINKS.labels(name) for name in (LINK_HEADER, LINK_SYSCALL, LINK_TIMING)}
PENDING = Gauge("wiretide_tracer_pending_spans", "Client spans waiting for their window to close")

# Highest confidence a timing link can have: containment in time is evidence, not proof (the call
# may come from a background task that happened to run during the request).
TIMING_MAX_CONFIDENCE: Final = 0.9
# Confidence of a timing link to the only request that fits when what was learned of its endpoint
# says it seldom makes such a call (`DelayModel.rare`).
RARE_CALL_CONFIDENCE: Final = 0.1
# Pruning a timeline moves memory; it is done at most once per this much packet time.
PRUNE_EVERY_NS: Final = 100_000_000
# Spans a timeline passes over before it takes them out of its lists (`Timeline._cut`): what it holds
# beyond its cap is at most this many references.
COMPACT_EVERY: Final = 256
# Trace ids from elsewhere (headers, other replicas) whose span count is remembered for the fan-out
# cap (`Assembler._tally_of`; the least recently used forgotten first).
MAX_TRACKED_TRACES: Final = 200_000
# Joint assignment of competing calls (`Assembler._match`): the most calls and requests in one group,
# and how many times the group is grown by overlap (bounds the work per ambiguous call).
MAX_GROUP: Final = 32
MAX_GROW_ROUNDS: Final = 3
# Cost margins (ms²) beyond this add no confidence: the cost model's order assumption is itself a
# guess, so even a clear winner stays below TIMING_MAX_CONFIDENCE (logistic(3) ≈ 0.95 of it).
MARGIN_CAP: Final = 3.0
# Gap costs (`_gap_assign`) are in units of this (1 ms) squared; leaving a call out costs more than
# any real gap within the window, an impossible link more than leaving out every call.
GAP_SCALE_NS: Final = 1_000_000
# The number of possible parents at which a timing link's confidence is halved (`_crowding`).
CROWD: Final = 16.0
UNMATCHED_GAP_COST: Final = 1e9
IMPOSSIBLE_COST: Final = 1e12


# Where Wiretide's spans hang when the application propagates trace context (`AssemblyConfig.parent`):
# "wiretide" — under Wiretide's own spans, the application's span ids becoming span links, so every
# trace is one connected tree on Wiretide's spans alone; "app" — under the application's spans, for
# applications that export their own.
PARENT_WIRETIDE: Final = "wiretide"
PARENT_APP: Final = "app"
PARENT_MODES: Final = (PARENT_WIRETIDE, PARENT_APP)
# Anonymous listening instances remembered per address (beyond it the address's list starts again).
MAX_LISTENERS_PER_ADDRESS: Final = 256
MAX_ADDRESSES: Final = 50_000
# Pairs of servers remembered as seen calling, on evidence (`Assembler._unlikely`); forgotten all at
# once beyond it.
MAX_EVIDENT_PAIRS: Final = 10_000
# Estimated bytes of the client spans waiting for their window (their entries included, `Span.size`):
# beyond it the oldest is decided early, counted (`decided_early_pressure`). An eighth of the
# tracer's 300 MB budget: a call's entry can carry bodies up to the body cap, so a count alone
# (`max_pending`) bounds nothing.
DEFAULT_MAX_PENDING_BYTES: Final = 32 << 20


@dataclass(frozen=True, slots=True)
class AssemblyConfig:
    window_ns: int = 2_000_000_000
    clock_skew_ns: int = 5_000_000
    max_spans_per_trace: int = 10_000
    max_pending: int = 200_000
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    max_inbound_per_instance: int = 20_000
    parent: str = PARENT_WIRETIDE


class Timeline:
    """One instance's spans of one direction, sorted by start, for "who was open at time t" queries.

    Bounded: at most `cap` spans (oldest start evicted first, counted by the caller); spans that ended
    before the horizon are pruned. `max_duration` bounds how far back a query looks: at least the
    longest span held and less than twice it. Spans are counted by the bit length of their duration,
    so letting the longest go costs a look at 64 counts, never a pass over the spans held (at the cap
    in a burst, that pass ran on every call whose durations were alike). Spans that leave are first
    only passed over (`_head`), and taken out of the lists `COMPACT_EVERY` at a time: deleting from
    the front of a list moves all the rest (at the cap, two lists of 20,000 every call).
    """

    __slots__ = ("_by_length", "_head", "_spans", "_starts", "cap", "last_horizon", "max_duration")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._starts: list[int] = []
        self._spans: list[Span] = []
        self._head = 0  # the spans before it have left the timeline
        self.max_duration = 0
        self.last_horizon = 0
        self._by_length = [0] * 65  # spans held per bit length of their duration (ns)

    @property
    def spans(self) -> list[Span]:
        """The spans held, by start (a copy)."""
        return self._spans[self._head :]

    @property
    def starts(self) -> list[int]:
        """Their starts (a copy)."""
        return self._starts[self._head :]

    def add(self, span: Span) -> int:
        """Insert; returns how many spans were evicted to stay within the cap."""
        start = span.start_ns
        starts = self._starts
        head = self._head
        if len(starts) == head or start >= starts[-1]:  # spans mostly arrive in order of start: append
            starts.append(start)
            self._spans.append(span)
        else:
            i = bisect.bisect_right(starts, start, head)
            starts.insert(i, start)
            self._spans.insert(i, span)
        duration = span.end_ns - start
        duration = max(duration, 0)
        self._by_length[min(duration.bit_length(), 64)] += 1
        self.max_duration = max(self.max_duration, duration)
        over = len(starts) - head - self.cap
        if over > 0:
            self._cut(over)
            return over
        return 0

    def prune(self, horizon: int) -> None:
        """Forget spans (from the earliest start on) that ended before `horizon`."""
        if horizon - self.last_horizon < PRUNE_EVERY_NS:
            return
        self.last_horizon = horizon
        spans = self._spans
        head = k = self._head
        while k < len(spans) and spans[k].end_ns < horizon:
            k += 1
        if k > head:
            self._cut(k - head)

    def _cut(self, k: int) -> None:
        by_length = self._by_length
        head = self._head
        for s in self._spans[head : head + k]:
            duration = s.end_ns - s.start_ns
            by_length[min(duration.bit_length(), 64) if duration > 0 else 0] -= 1
        head += k
        if head >= COMPACT_EVERY or 2 * head >= len(self._spans):
            del self._starts[:head]
            del self._spans[:head]
            head = 0
        self._head = head
        top = min(self.max_duration.bit_length(), 64)
        if by_length[top] == 0:  # the longest spans' bucket emptied: the next one's upper bound
            while top > 0 and by_length[top] == 0:
                top -= 1
            self.max_duration = (1 << top) - 1 if top else 0

    def open_during(self, start: int, end: int, slack: int) -> list[Span]:
        """Spans that may enclose [start, end] (± slack): started by `start`, long enough to reach `end`."""
        starts, head = self._starts, self._head
        lo = bisect.bisect_left(starts, end - self.max_duration - slack, head)
        hi = bisect.bisect_right(starts, start + slack, head)
        floor = end - slack
        return [s for s in self._spans[lo:hi] if s.end_ns >= floor]

    def within(self, start: int, end: int) -> list[Span]:
        """Spans that lie inside [start, end]."""
        starts, head = self._starts, self._head
        lo = bisect.bisect_left(starts, start, head)
        hi = bisect.bisect_right(starts, end, head)
        return [s for s in self._spans[lo:hi] if s.end_ns <= end]


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
        partition: Partition | None = None,
    ) -> None:
        self.config = config or AssemblyConfig()
        # One replica of several (partition.py): which calls are this replica's, and the copies of
        # requests whose trace ids their owners tell (`told`).
        self.partition = partition
        # entry id -> (client copy, wall time it came), in arrival order
        self._awaiting: OrderedDict[str, tuple[Span, int]] = OrderedDict()
        self.wall_ns = 0  # the wall clock as the engine last read it (0: none, as offline)
        self._early: OrderedDict[str, bytes] = OrderedDict()  # entry id -> trace id told before it came
        self.facts: list[tuple[int, str, bytes]] = []  # (replica, entry id, trace id) to tell
        self.rules = rules
        self.causality: CausalitySource = causality or NoCausality()
        self._kernel = not isinstance(self.causality, NoCausality)
        self.ids = ids or SpanIds()
        self.workloads = Workloads()
        self.descriptions = Descriptions()
        self.names = SpanNames()  # how many span names one server's calls take: bounded
        self.on_emit = on_emit
        self.watermark = 0
        self._seq = itertools.count()
        self._pending: list[tuple[int, int, Span]] = []  # (ripe at, seq, client span)
        self.pending_bytes = 0  # estimated bytes of the waiting client spans (`Span.size`)
        self._inbound: dict[str, Timeline] = {}  # instance -> its server spans (requests it served)
        # address -> the listening instances (ip:port) of anonymous workloads on it: an anonymous
        # caller (named by its IP alone) may be any of them.
        self._listeners: dict[str, list[str]] = {}
        self.delays = DelayModel()
        # (server, server it calls) seen on evidence (a header, the kernel): timing links such calls
        # even where it alone would not (a server calling itself, or one that calls it: `_unlikely`).
        self._evident: set[tuple[Workload, Workload]] = set()
        self._clear = False  # the last joint assignment's winner was clear (`_match`)
        self._app_parent = self.config.parent == PARENT_APP
        self._outbound: dict[str, Timeline] = {}  # instance -> its client spans (calls it made)
        self._by_entry: OrderedDict[str, Span] = OrderedDict()  # entry id -> server span (for causality)
        # Trace ids from elsewhere -> their tallies (`_tally_of`); a trace begun here holds its own
        # on its spans, let go with them.
        self._tallies: OrderedDict[bytes, TraceTally] = OrderedDict()
        self._out: list[Span] = []
        self.stats: dict[str, int] = {}
        # Metric increments gathered per entry and handed to prometheus_client on `drain` (its per-call
        # locking costs more than the rest of a span's bookkeeping).
        self._kinds: dict[int, int] = {}
        self._links: dict[str, int] = {}
        self._contexts: dict[str, int] = {}  # propagated contexts found, by header (`extract`)
        self._published: dict[str, int] = {}  # counts already handed to prometheus_client

    # ---- input ----------------------------------------------------------------------------------

    def role_of(self, entry: dict[str, Any]) -> tuple[int, int]:
        """What this replica does with `entry` (partition.ROLE_*) and the callee's replica; every
        call is all this replica's when it is the only one."""
        part = self.partition
        if part is None:
            return ROLE_BOTH, -1
        get = entry.get
        node, src, dst = get("node"), get("src"), get("dst")
        node = node if type(node) is str else ""
        src = src if type(src) is dict else {}
        dst = dst if type(dst) is dict else {}
        workloads = self.workloads
        return part.role(workloads.of(src, node), workloads.of(dst, node, True))

    def add(
        self, entry: dict[str, Any], text: bytes | None = None, role: int = ROLE_BOTH, callee_at: int = -1
    ) -> list[Span]:
        """Turn one entry into spans and start linking them; returns the spans made (none if dropped).
        `text`, the entry's JSON as received when the caller has it, spares encoding it again to
        estimate what the call holds. `role` (`role_of`) says which sides are this replica's and
        `callee_at` the callee's replica, when there are several."""
        verdict = apply(self.rules, entry) if self.rules else None
        if verdict is not None and verdict.drop:
            self._count("dropped_by_rule")
            SPANS_DROPPED.labels("rule").inc()
            return []
        ctx = extract_from_entry(entry, self._contexts)
        spans = spans_from_entry(entry, self.ids, ctx, self.workloads, self.descriptions, self.names)
        if text and not self._kernel:
            # The decoded entry is let go now: what assembly reads of it later is the flow id (delays.py)
            # and, for the service map, the ends and the outcome (`Span.status_class`); queries decode
            # the JSON again (`entry_of`). So a call waiting for its window holds its JSON, not a tree
            # of objects for the cyclic collector to walk (kernel causality reads the entry when the
            # call is decided: it keeps it).
            client, server = spans[0], spans[-1]
            server.status_class = status_class(entry, server.error)
            kept = _kept(entry)
            for span in spans:
                span.entry = kept
                span.text = text
            client.size = SPAN_BASE + TEXT_BASE + len(text)
        else:
            # What the call holds, estimated once (the trace store charges the same): the entry on the
            # client side, whose wait for the window is what the pending bound weighs.
            spans[0].size = SPAN_BASE + entry_bytes(entry, text)
            if text:
                spans[0].text = spans[-1].text = text
        spans[-1].size = spans[-1].size or SPAN_BASE
        kinds = self._kinds
        for span in spans:
            if verdict is not None and verdict.name:
                span.name = verdict.name
            kinds[span.kind] = kinds.get(span.kind, 0) + 1
        # Both spans of an entry end together.
        self.watermark = max(self.watermark, spans[0].end_ns)
        client, server = spans[0], spans[-1]
        if self.partition is not None:
            client.span_id = span_id_of(client.entry_id, b"c")
            server.span_id = span_id_of(server.entry_id, b"s")
        if role == ROLE_BOTH:
            self._add_client(client)
            self._add_server(server)
        elif role == ROLE_OWNER:  # the callee's replica holds its request: tell it the trace id
            client.fact_to = callee_at
            self._add_client(client)
            server.parent = client
            server.link = LINK_ENTRY
            server.confidence = 1.0
            self._decided(server)
        else:  # ROLE_CALLEE: a copy, the call decided and exported by the caller's replica
            client.remote = server.remote = True
            told = self._early.pop(client.entry_id, None)
            if told is not None:
                client.trace_id = told
                self._decided(client)
            else:
                self._await(client)
            self._add_server(server)
        pending = self._pending
        if pending and pending[0][0] <= self.watermark:
            self._ripen()
        awaiting = self._awaiting
        if awaiting and next(iter(awaiting.values()))[0].end_ns + FACT_TIMEOUT_NS <= self.watermark:
            self._expire()
        return spans

    def add_many(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            self.add(entry)

    def passing(self, entry: dict[str, Any]) -> None:
        """An entry of other replicas' calls: its end moves packet time on here too, exactly as `add`
        would have, so that every replica decides each call with the same requests in view."""
        get = entry.get
        start, elapsed = get("timestamp"), get("elapsed_us")
        end = (start if type(start) is int else 0) + (
            elapsed * 1000 if type(elapsed) is int and elapsed > 0 else 0
        )
        if end > self.watermark:
            self.watermark = end
            pending = self._pending
            if pending and pending[0][0] <= end:
                self._ripen()
            awaiting = self._awaiting
            if awaiting and next(iter(awaiting.values()))[0].end_ns + FACT_TIMEOUT_NS <= end:
                self._expire()

    def advance(self, packet_time_ns: int) -> None:
        """Move packet time forward (e.g. from capture stats) and decide what has become ripe."""
        self.watermark = max(self.watermark, packet_time_ns)
        self._ripen()
        if self._awaiting:
            self._expire()

    def flush(self, awaiting: bool = True) -> None:
        """Decide everything now (end of a pcap, shutdown): waiting client spans use what has arrived,
        and (unless `awaiting` is False: other replicas may still tell) copies still waiting for their
        owners' trace ids are decided here."""
        while self._pending:
            _, _, span = heapq.heappop(self._pending)
            self.pending_bytes -= span.size
            self._decide_client(span)
        if awaiting:
            self._expire(everything=True)

    # ---- replicas (partition.py) ----------------------------------------------------------------

    def told(self, facts: list[tuple[str, bytes]]) -> None:
        """Trace ids that the owners of calls this replica holds copies of have decided."""
        awaiting, early = self._awaiting, self._early
        for entry_id, trace_id in facts:
            found = awaiting.pop(entry_id, None)
            if found is not None:
                found[0].trace_id = trace_id
                self._decided(found[0])
                continue
            if entry_id in early or len(early) < MAX_EARLY_FACTS:
                early[entry_id] = trace_id
                continue
            early.popitem(last=False)
            early[entry_id] = trace_id
            self._count("early_facts_evicted")

    def take_facts(self) -> list[tuple[int, str, bytes]]:
        """The trace ids decided since the last call that other replicas wait for: (replica, entry id,
        trace id)."""
        out, self.facts = self.facts, []
        return out

    @property
    def awaiting(self) -> int:
        return len(self._awaiting)

    def _await(self, span: Span) -> None:
        awaiting = self._awaiting
        while len(awaiting) >= self.config.max_pending:
            _, (oldest, _since) = awaiting.popitem(last=False)
            self._count("facts_not_awaited_pressure")
            self._decide_here(oldest)
        awaiting[span.entry_id] = (span, self.wall_ns)

    def _expire(self, everything: bool = False) -> None:
        """Copies whose owner never told their trace id: decided here, counted. Waited for
        `FACT_TIMEOUT_NS` of packet time and, live, as long on the wall clock — the owner is another
        process reading the same stream at its own pace: packet time that jumps here (traffic after
        a pause) says nothing of what it has decided yet."""
        awaiting, horizon = self._awaiting, self.watermark - FACT_TIMEOUT_NS
        wall = self.wall_ns
        while awaiting:
            span, since = next(iter(awaiting.values()))
            if not everything and (span.end_ns > horizon or (wall and wall - since < FACT_TIMEOUT_NS)):
                break
            awaiting.popitem(last=False)
            self._count("facts_missing")
            self._decide_here(span)

    def _decide_here(self, span: Span) -> None:
        """A copy's trace id without its owner's word: the propagated one, else a new trace."""
        span.trace_id = span.context.trace_id if span.context is not None else self.ids.trace_id()
        self._decided(span)

    def drain(self) -> list[Span]:
        out, self._out = self._out, []
        self._publish_metrics()
        return out

    def _publish_metrics(self) -> None:
        for kind, n in self._kinds.items():
            _SPANS_IN_BY_KIND[kind].inc(n)
        for link, n in self._links.items():
            _LINKS_BY_NAME[link].inc(n)
        self._kinds.clear()
        self._links.clear()
        if self._contexts:
            count_contexts(self._contexts)
        PENDING.set(len(self._pending))
        # Deltas of counts kept per call as plain numbers since the last batch.
        for key, n in self.names.stats.items():
            if n > self._published.get(key, 0):
                NAMES_COLLAPSED.labels(key).inc(n - self._published.get(key, 0))
                self._published[key] = n
        evicted = self.stats.get("trace_counts_evicted", 0)
        if evicted > self._published.get("trace_counts", 0):
            TABLE_EVICTIONS.labels("trace_span_counts").inc(evicted - self._published.get("trace_counts", 0))
            self._published["trace_counts"] = evicted

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---- server spans ---------------------------------------------------------------------------

    def _add_server(self, span: Span) -> None:
        timeline = self._inbound.get(span.workload.instance)
        if timeline is None:
            timeline = self._inbound[span.workload.instance] = Timeline(self.config.max_inbound_per_instance)
            address = span.workload.address
            if address and not span.workload.known:
                listeners = self._listeners.get(address)
                if listeners is None:
                    if len(self._listeners) >= MAX_ADDRESSES:
                        self._listeners.clear()
                    listeners = self._listeners[address] = []
                if len(listeners) >= MAX_LISTENERS_PER_ADDRESS:
                    listeners.clear()
                listeners.append(span.workload.instance)
        # A waiting call ends after watermark - window, so requests that ended before that (less the
        # skew allowance) can be nobody's parent any more.
        timeline.prune(self.watermark - self.config.window_ns - self.config.clock_skew_ns)
        if timeline.add(span):
            self._count("inbound_evicted")
        if self._kernel:  # only a causality source names inbound entries to look up
            self._by_entry[span.entry_id] = span
            if len(self._by_entry) > self.config.max_inbound_per_instance * 4:
                self._by_entry.popitem(last=False)
        self.delays.request(span)
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
        pending = self._pending
        while pending and (
            len(pending) >= self.config.max_pending
            or self.pending_bytes + span.size > self.config.max_pending_bytes
        ):
            _, _, oldest = heapq.heappop(pending)
            self.pending_bytes -= oldest.size
            self._count("decided_early_pressure")
            self._decide_client(oldest)
        ripe_at = span.end_ns + self.config.window_ns
        heapq.heappush(pending, (ripe_at, next(self._seq), span))
        self.pending_bytes += span.size

    def _ripen(self) -> None:
        pending = self._pending
        while pending and pending[0][0] <= self.watermark:
            _, _, span = heapq.heappop(pending)
            self.pending_bytes -= span.size
            self._decide_client(span)

    def _timelines(self, span: Span) -> list[Timeline]:
        """The inbound timelines a call of `span`'s caller may belong to: its own instance's, and for
        an anonymous caller (known by its IP alone) those of every anonymous server on that IP."""
        workload = span.workload
        own = self._inbound.get(workload.instance)
        listeners = self._listeners.get(workload.address) if workload.address and not workload.known else None
        if not listeners:
            return [own] if own is not None else []
        found = [self._inbound[i] for i in listeners if i in self._inbound]
        if own is not None and own not in found:
            found.append(own)
        return found

    def _candidates(self, span: Span) -> list[Span]:
        """Inbound requests of the caller's instance that enclose this call in time (± clock skew)."""
        timelines = self._timelines(span)
        if not timelines:
            return []
        skew = self.config.clock_skew_ns
        partner, start, end, node = span.partner, span.start_ns, span.end_ns, span.node
        out: list[Span] = []
        for inbound in timelines:
            # Calls are decided in order of their end, so a request that ended before this call (less
            # the allowances) can enclose no call still to be decided.
            inbound.prune(span.end_ns - self.config.window_ns - skew)
            # `_encloses`, inlined: this runs for every candidate of every call.
            out.extend(
                s
                for s in inbound.open_during(start, end, skew)
                if s is not partner
                and s.start_ns <= start + (0 if s.node == node else skew)
                and s.end_ns >= end - (0 if s.node == node else skew)
            )
        return out

    def _encloses(self, parent: Span, child: Span) -> bool:
        """Containment in time; timestamps from different capture nodes get the clock-skew allowance."""
        skew = 0 if parent.node == child.node else self.config.clock_skew_ns
        return parent.start_ns <= child.start_ns + skew and parent.end_ns >= child.end_ns - skew

    def _decide_client(self, span: Span) -> None:
        cause = self.causality.cause_of(span.entry) if self._kernel else None
        if cause is not None:
            parent = self._by_entry.get(cause)
            if parent is not None and (
                parent.workload.instance == span.workload.instance
                or (not span.workload.known and parent.workload.address == span.workload.address)
            ):
                self._learn(span, parent)
                self._seen(span, parent)
                self._link(span, parent, LINK_SYSCALL, 1.0)
                return
        candidates = self._candidates(span)
        ctx = span.context
        if ctx is not None:
            same = [s for s in candidates if s.context is not None and s.context.trace_id == ctx.trace_id]
            if same:
                parent = min(same, key=lambda s: self._slack(span, s))
                self._learn(span, parent)
                self._seen(span, parent)
                self._link(span, parent, LINK_HEADER, 1.0)
            else:
                # The application's trace enters our view here: its root (the application's span that
                # sent the call becomes a span link), or, in "app" mode, a child of that span.
                span.link = LINK_HEADER
                span.confidence = 1.0
                self._links[LINK_HEADER] = self._links.get(LINK_HEADER, 0) + 1
                self._decided(span)
            return
        # Inbound requests carrying another trace's context belong to that trace, not to this call.
        plain = [s for s in candidates if s.context is None]
        if plain:
            # A request calling the very server that serves it is rare (recursion through the network),
            # and so is one calling a server that calls its own (a cycle of services); concurrent
            # requests of one server enclosing each other's calls are not, and a client on the servers'
            # own address calls them all the time. Timing alone makes neither link (`_unlikely`).
            unlikely = self._unlikely(span.peer)
            plain = [s for s in plain if not unlikely(s.workload)]
        if not plain:
            span.link = LINK_ROOT
            span.confidence = 1.0
            self._decided(span)
            return
        if len(plain) == 1:
            parent = plain[0]
            if self.delays.rare(parent, span):
                # The only request that fits seldom makes such a call: a guess, said to be one (and
                # nothing learned from it).
                confidence = RARE_CALL_CONFIDENCE
            else:
                confidence = TIMING_MAX_CONFIDENCE
                self._learn(span, parent)
        else:
            self._clear = False
            parent, confidence = self._match(span, plain)
            if self._clear:
                self._learn(span, parent)
            confidence *= _crowding(len(plain))
        self._link(span, parent, LINK_TIMING, round(confidence, 4))

    def _match(self, span: Span, candidates: list[Span]) -> tuple[Span, float]:
        """The parent of `span` in the best joint assignment of the calls that compete for the same
        requests, and the link's confidence (from how much worse the best alternative would be).

        Servers take requests in turn (an event loop, a thread pool's queue), so the calls their
        requests make go out, and come back, in the same order. A greedy tightest fit per call breaks
        that order as soon as requests overlap; instead every undecided call of the group gets a
        distinct request, minimising a cost convex in both gaps (`_gap_assign`), which favours the
        order-keeping assignment unless the gaps clearly say otherwise. Solved exactly (Hungarian) on
        the group of calls and requests that overlap this call's candidates; calls decided earlier keep
        their parents. More calls than requests (fan-out): the extra call takes its tightest fit.

        One solution serves the whole group: the other calls keep theirs as a hint, used when their
        turn comes if nothing they depend on has changed.
        """
        hint = span.hint
        if hint is not None:
            span.hint = None
            parent, margin, group = hint
            # The group's solution still stands if this call's requests were all in it and its parent
            # has not been given to another call of its kind since.
            if (
                all(id(c) in group for c in candidates)
                and any(c is parent for c in candidates)
                and (parent.claimed is None or span.signature not in parent.claimed)
            ):
                self._clear = margin >= MARGIN_CAP
                return parent, _confidence(margin)
        signature = span.signature
        free = [c for c in candidates if c.claimed is None or signature not in c.claimed]
        if len(free) == 1 and not self.delays.penalty(free[0], span):
            # Every other request already has its call of this kind: nothing left to weigh (unless
            # what was learned speaks against the one left: then the group is weighed as a whole).
            self._clear = True
            return free[0], _confidence(MARGIN_CAP)
        calls, parents, whole = self._component(span, candidates)
        solution = _gap_assign(calls, parents, self.config.clock_skew_ns, self.delays)
        # The solution is kept as a hint for the group's other calls; of a group cut short by the
        # caps only for the earlier half of its calls, far from the edge where rivals are missing.
        horizon = max(c.end_ns for c in calls)
        if not whole and solution:
            ends = sorted(calls[i].end_ns for i in solution)
            horizon = ends[len(ends) // 2]
        group = frozenset(id(p) for p in parents)
        for i, (choice, margin) in solution.items():
            if calls[i] is not span and choice >= 0 and calls[i].end_ns <= horizon:
                calls[i].hint = (parents[choice], margin, group)
        choice, margin = solution.get(calls.index(span), (-1, 0.0))
        if choice < 0 or not self._encloses(parents[choice], span):
            parent = min(candidates, key=lambda s: self._slack(span, s))
            return parent, TIMING_MAX_CONFIDENCE / len(candidates)
        self._clear = margin >= MARGIN_CAP
        return parents[choice], _confidence(margin)

    def _component(self, span: Span, candidates: list[Span]) -> tuple[list[Span], list[Span], bool]:
        """The calls of `span`'s kind and the plain requests that could be their parents, grown from
        `span` and its candidates while they overlap (`MAX_GROW_ROUNDS`, at most `MAX_GROUP` of
        each), sorted by start; and whether the group is whole: every call of the kind that lies
        within its requests is in it, so its solution holds for each call whose requests all are."""
        skew = self.config.clock_skew_ns
        instance = span.workload.instance
        timelines = self._timelines(span)
        outbound = self._outbound.get(instance)
        signature = span.signature
        # Requests timing alone takes for no parents of these calls (`_unlikely`: the called server's
        # own, those of a server it calls) are left out: on a shared address they would fill the group
        # and crowd out the true parents.
        unlikely = self._unlikely(span.peer)
        parents: dict[int, Span] = {id(s): s for s in candidates}
        calls: dict[int, Span] = {id(span): span}
        hull = [min(s.start_ns for s in candidates), max(s.end_ns for s in candidates)]
        reach = [span.start_ns, span.end_ns]

        def more_calls() -> bool:
            grew = False
            if outbound is None:
                return grew
            for other in outbound.within(hull[0] - skew, hull[1] + skew):
                if (
                    other.signature == signature
                    and other.context is None
                    and id(other) not in calls
                    and (not other.decided or other.link == LINK_TIMING)
                ):
                    if len(calls) >= MAX_GROUP:
                        return grew
                    calls[id(other)] = other
                    reach[0] = min(reach[0], other.start_ns)
                    reach[1] = max(reach[1], other.end_ns)
                    grew = True
            return grew

        def more_parents() -> bool:
            grew = False
            # "Does some call lie within [first, last]?" for many requests: the calls by start, with
            # the earliest end among those starting at or after each one, answer it with one bisect.
            members = sorted((c.start_ns, c.end_ns) for c in calls.values())
            starts = [start for start, _ in members]
            earliest_end = [end for _, end in members]
            for k in range(len(earliest_end) - 2, -1, -1):
                earliest_end[k] = min(earliest_end[k], earliest_end[k + 1])
            around = [
                s
                for inbound in timelines
                for s in inbound.open_during(reach[0], reach[1], skew + (reach[1] - reach[0]))
            ]
            for other in around:
                if id(other) in parents or other.context is not None or unlikely(other.workload):
                    continue
                k = bisect.bisect_left(starts, other.start_ns - skew)
                if k < len(starts) and earliest_end[k] <= other.end_ns + skew:
                    if len(parents) >= MAX_GROUP:
                        return grew
                    parents[id(other)] = other
                    hull[0] = min(hull[0], other.start_ns)
                    hull[1] = max(hull[1], other.end_ns)
                    grew = True
            return grew

        for _ in range(MAX_GROW_ROUNDS):
            if not (more_calls() | more_parents()):
                break
        else:
            more_calls()  # the calls within the last requests added: their rivals, for the hints
        by_start = lambda s: (s.start_ns, s.end_ns)  # noqa: E731
        whole = len(calls) < MAX_GROUP and len(parents) < MAX_GROUP
        return sorted(calls.values(), key=by_start), sorted(parents.values(), key=by_start), whole

    @staticmethod
    def _slack(child: Span, parent: Span) -> int:
        """Time the parent spent outside the child: small when the call fits its request tightly. An
        overlap that only the clock-skew allowance permits counts double: it is less likely."""
        before = child.start_ns - parent.start_ns
        after = parent.end_ns - child.end_ns
        return (before if before >= 0 else -2 * before) + (after if after >= 0 else -2 * after)

    def _unlikely(self, peer: Workload) -> Callable[[Workload], bool]:
        """Whether a request of a server is an unlikely maker of a call to `peer`, on timing alone: it
        is `peer`'s own, or `peer` calls its server (`DelayModel.backwards`) — unless such a call was
        seen on evidence (`_seen`)."""
        evident, backwards = self._evident, self.delays.backwards

        def unlikely(server: Workload) -> bool:
            if (server, peer) in evident:
                return False
            return server == peer or backwards(server, peer)

        return unlikely

    def _seen(self, span: Span, parent: Span) -> None:
        """Remember which server was seen, on evidence, calling which (`_unlikely`)."""
        pair = (parent.workload, span.peer)
        if pair not in self._evident:
            if len(self._evident) >= MAX_EVIDENT_PAIRS:
                self._evident.clear()
                self._count("evident_pairs_evicted")
            self._evident.add(pair)

    def _learn(self, span: Span, parent: Span) -> None:
        """Teach the delay model a link made on evidence stronger than a contested timing guess."""
        if parent.partner is not span:
            self.delays.learn(parent, span)

    def _link(self, span: Span, parent: Span, link: str, confidence: float) -> None:
        span.parent = parent
        span.hint = None
        self.delays.linked(parent, span)
        if not span.workload.known and parent.workload.address == span.workload.address:
            # An anonymous caller is the anonymous server whose request it was made for.
            span.workload = parent.workload
        if parent.claimed is None:
            parent.claimed = {span.signature}
        else:
            parent.claimed.add(span.signature)
        span.link = link
        span.confidence = confidence
        self._links[link] = self._links.get(link, 0) + 1
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
        if span.waiting is None:  # nothing waits for it (the usual case): no stack needed
            self._emit(span)
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
        tally: TraceTally | None = None
        if span.remote and parent is None:
            # a copy's client side: the trace id its owner told (`told`)
            tally = self._tally_of(span.trace_id)
        elif parent is not None:
            span.trace_id = parent.trace_id
            span.parent_span_id = parent.span_id
            tally = parent.tally
        elif span.context is not None:
            span.trace_id = span.context.trace_id
            # The application's span that sent the call: the parent in "app" mode, else a span link
            # (export/otlp.py), so that Wiretide's spans form a tree on their own.
            span.parent_span_id = span.context.parent_id if self._app_parent else b""
            tally = self._tally_of(span.trace_id)
        else:
            span.trace_id = self.ids.trace_id()
            tally = TraceTally()  # a trace id of its own: only its descendants join it
        if tally is None:  # a parent emitted without one (not by `_emit`): counted by its trace id
            tally = self._tally_of(span.trace_id)
        span.tally = tally
        span.emitted = True
        if span.fact_to >= 0:
            self.facts.append((span.fact_to, span.entry_id, span.trace_id))
        if span.remote:
            return  # exported by the call's owner, not here
        n = tally.spans + 1
        tally.spans = n
        if n > self.config.max_spans_per_trace:
            self._count("dropped_fanout")
            SPANS_DROPPED.labels("fanout").inc()
            return
        self._out.append(span)
        if self.on_emit is not None and len(self._out) >= 1024:
            self.on_emit(self.drain())

    def _tally_of(self, trace_id: bytes) -> TraceTally:
        """The tally of a trace id that came from elsewhere (a propagated header, another replica):
        spans with no link between them may share it, so it is found by the id (the most recently
        used `MAX_TRACKED_TRACES` are remembered)."""
        tallies = self._tallies
        tally = tallies.get(trace_id)
        if tally is None:
            tally = tallies[trace_id] = TraceTally()
            if len(tallies) > MAX_TRACKED_TRACES:
                tallies.popitem(last=False)
                self._count("trace_counts_evicted")
        else:
            tallies.move_to_end(trace_id)
        return tally

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1


def _kept(entry: dict[str, Any]) -> dict[str, Any]:
    """What spans keep of an entry once it is decoded no more: its flow id (linking) and its ends (the
    service map learns who held an address from them)."""
    kept: dict[str, Any] = {}
    for key in ("flow_id", "src", "dst"):
        value = entry.get(key)
        if value is not None:
            kept[key] = value
    return kept


def _hungarian(cost: list[list[float]]) -> tuple[list[int], list[float], list[float]]:
    """Minimum-cost assignment of every row to a distinct column (rows <= columns): the Hungarian
    method with potentials (Kuhn–Munkres, O(rows² × columns)). Returns the column of each row and the
    row and column potentials (1-based), whose reduced costs `cost - u - v` are >= 0, 0 on the choice."""
    n, m = len(cost), len(cost[0])
    # When each row's cheapest column is its own, that is the optimum (row minima as potentials).
    # It is the common case — requests rarely compete for the same call — and costs one pass.
    best = [min(range(m), key=row.__getitem__) for row in cost]
    if len(set(best)) == n:
        return best, [0.0] + [row[j] for row, j in zip(cost, best, strict=True)], [0.0] * (m + 1)
    inf = float("inf")
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    p = [0] * (m + 1)
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = p[j0]
            row = cost[i0 - 1]
            ui0 = u[i0]
            delta = inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - ui0 - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    out = [-1] * n
    for j in range(1, m + 1):
        if p[j]:
            out[p[j] - 1] = j - 1
    return out, u, v


def _gap_assign(
    calls: list[Span], parents: list[Span], skew: int, delays: DelayModel | None = None
) -> dict[int, tuple[int, float]]:
    """The cheapest assignment of the undecided `calls` to distinct free `parents` (a call may
    stay without a parent at `UNMATCHED_GAP_COST`; calls already decided keep theirs): per
    undecided call index, its parent's index (-1: none) and the margin — a lower bound on the extra
    cost (ms²) of any assignment that gives it another parent (its smallest other reduced cost).

    The cost is convex in both gaps: of all assignments it prefers the one that keeps the order of
    starts and of ends — how servers that take requests in turn behave — unless the gaps clearly say
    otherwise. `skew` is allowed between spans seen on different capture nodes. With a `delays`
    model, each gap is measured against what the request's endpoint usually shows (delays.py)."""
    taken = {id(c.parent) for c in calls if c.decided and c.parent is not None}
    free = [j for j, p in enumerate(parents) if id(p) not in taken]
    rows = [i for i, c in enumerate(calls) if not c.decided]
    if not free:
        return {}
    matrix: list[list[float]] = []
    chosen = [(p.start_ns, p.end_ns, p.node, p) for p in (parents[j] for j in free)]
    for i in rows:
        call = calls[i]
        start, end, node, partner = call.start_ns, call.end_ns, call.node, call.partner
        line: list[float] = []
        append = line.append
        for p_start, p_end, p_node, p in chosen:
            allowance = 0 if p_node == node else skew
            if p_start <= start + allowance and p_end >= end - allowance and p is not partner:
                if delays is not None:
                    append(delays.cost(p, call))
                    continue
                # Convex in both gaps (request start → call start, call end → request end), in ms².
                before = (start - p_start) / GAP_SCALE_NS
                after = (p_end - end) / GAP_SCALE_NS
                append(before * before + after * after)
            else:
                append(IMPOSSIBLE_COST)
        matrix.append(line)
    columns: list[int] = []
    if len(rows) <= len(free):
        # Usually every call can have a request of its own: solve without the "no parent" columns
        # (same optimum then, as no real gap costs as much), and add them only if that fails.
        columns, u, v = _hungarian(matrix)
        if any(matrix[r][c] >= IMPOSSIBLE_COST for r, c in enumerate(columns)):
            columns = []
    if not columns:
        for line in matrix:
            line.extend([UNMATCHED_GAP_COST] * len(rows))
        columns, u, v = _hungarian(matrix)
    width = len(free)
    out: dict[int, tuple[int, float]] = {}
    for r, i in enumerate(rows):
        col = columns[r]
        line = matrix[r]
        if col >= width or line[col] >= IMPOSSIBLE_COST:
            out[i] = (-1, 0.0)
            continue
        ur = u[r + 1]
        margin = min(
            (line[j] - ur - v[j + 1] for j in range(width) if j != col and line[j] < IMPOSSIBLE_COST),
            default=MARGIN_CAP,
        )
        out[i] = (free[col], margin)
    return out


def _crowding(candidates: int) -> float:
    """How much a timing link's confidence is worth among this many possible parents: a margin
    measured within a crowd of requests overstates certainty (on the chains of bench/tracer.py, links
    with 18 or more candidates were right ~30% of the time whatever their margin)."""
    return 1.0 / (1.0 + (candidates / CROWD) ** 4)


def _confidence(margin: float) -> float:
    """A timing link's confidence from its margin: a logistic, 0.5 of the maximum when another
    assignment is as good, near the maximum when every other is far worse."""
    return TIMING_MAX_CONFIDENCE / (1.0 + math.exp(-min(margin, MARGIN_CAP)))

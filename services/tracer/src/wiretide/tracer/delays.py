"""What each workload's requests do, learned from the traffic and the links already made: which
inbound endpoints make which outbound calls (the call graph), which connections serve which (a thread
that serves one inbound connection and calls out on its own), and how long after a request starts its
call goes out (`before`) and how long after the call returns the request is answered (`after`).

Rule: the model only ever re-weighs timing costs — it never makes or refuses a link alone — and each
part learns from evidence fit for it: the gaps only from links not in doubt (a propagated header, the
kernel, a call with a single possible parent, a joint assignment whose winner was clear); the call
graph and connection pairs from every link, as rates, where wrong links scatter and right ones add up;
the binding of connections from the traffic alone, no link needed (`Conn`); a link of a call to its
parent's own server (made only where such calls were seen on evidence) teaches nothing. The links
between servers (`backwards`) tell a call that goes against the call graph — a client beside the
servers on one address, enclosed by the requests of a server it calls — from a real one.

The timing cost of "request r made call c" is then the squared distance of both gaps from what that
workload's endpoint usually shows, each in units of its own spread (a robust z-score: median and
median absolute deviation), instead of raw milliseconds: a service whose calls go out at a steady
point of its work but whose answers wait in a queue is weighed by the gap that is steady. Until a
(workload, endpoint, call) has `MIN_SAMPLES` links, its cost is the raw one, in milliseconds squared,
and what was learned about the call graph and the connections is scaled to it.
"""

from __future__ import annotations

import bisect
import math
from typing import Final

from wiretide.tracer.names import TABLE_EVICTIONS
from wiretide.tracer.spans import Span, Workload

# Links per (workload, endpoint, call) before their gaps are trusted to weigh a cost.
MIN_SAMPLES: Final = 8
# Gaps kept per (workload, endpoint, call) (the most recent; older ones forgotten).
MAX_SAMPLES: Final = 256
# Statistics are recomputed every this many new samples (sorting 256 floats per link costs more).
REFRESH_EVERY: Final = 16
# The narrowest spread a gap is measured in (ms): timestamps are microseconds and the machines
# that serve the calls are never that steady.
MIN_SPREAD_MS: Final = 0.05
# A spread is never less than this fraction of the gap itself.
MIN_SPREAD_FRACTION: Final = 0.1
# The (workload, endpoint, call) keys remembered (all forgotten at once beyond it).
MAX_KEYS: Final = 20_000
# The cost added when an endpoint has been seen to make calls, many times, but never this one:
# unlikely rather than impossible (a rare branch of its code), so large, not infinite.
UNSEEN_CALL_COST: Final = 25.0
# Samples of an endpoint before a call it has never made counts as unlikely.
MIN_ENDPOINT_SAMPLES: Final = 32
# Requests of an endpoint before a call it makes on fewer than `RARE_CALL_RATE` of them counts as
# unlikely for it (`RARE_CALL_COST`): timing guesses scatter over endpoints, true calls repeat.
MIN_ENDPOINT_REQUESTS: Final = 32
RARE_CALL_RATE: Final = 0.15
RARE_CALL_COST: Final = 30.0
# A connection paired with another in at least this many links and this share of its links serves
# it (a thread bound to both); a call on another connection then costs `UNPAIRED_COST` more.
MIN_PAIRINGS: Final = 3
PAIRED_SHARE: Final = 0.75
UNPAIRED_COST: Final = 12.0
MAX_FLOWS: Final = 50_000
# Connections that carry one request at a time (HTTP/1.x keep-alive, most database clients) are
# watched for binding without any link made: a thread that serves one inbound connection and calls
# out on its own keeps every call of that outbound connection inside some request of that inbound
# one, while another busy inbound connection leaves a call straddling two of its requests now and
# then. Each of the outbound connection's latest `BOUND_WINDOW` calls (within the time the inbound
# connection was seen) that no request of the candidate's inbound connection encloses costs
# `MISS_COST`, up to `MAX_MISSES` of them.
BOUND_WINDOW: Final = 16
# Connections watched so (~0.5 kB each with their requests; all forgotten at once beyond it).
MAX_CONNS: Final = 20_000
MISS_COST: Final = 15.0
MAX_MISSES: Final = 4
# A request that calls the very server it is served by: possible (recursion through the network) but
# rare, while on a shared address its concurrent requests enclose each other's calls all the time
# (a request nested in another is a tight fit for it, while before anything is learned the true
# parent's gaps cost their milliseconds squared). So it costs more than any real pair of gaps within
# the assembly window (2 × 2000² ms²) — taken only when no other request fits — and less than
# leaving the call without a parent (the assembler's 1e9). Timing weighs such a link at all only for
# a server seen calling itself on evidence (`Assembler._unlikely`).
SELF_CALL_COST: Final = 1e7
# Until an endpoint's gaps are learned, its costs are milliseconds squared and what the call graph
# and the connections learned is scaled by the cost, up to this (100 ms of gap on each side): so that
# it still counts against long gaps, and stays below `SELF_CALL_COST`.
RAW_SCALE_CAP: Final = 2e4
# Spreads (z) beyond which a gap's cost grows only logarithmically (`_robust`), squared.
TAIL_Z2: Final = 9.0
# Links of one server's requests to calls of another before the reverse — the second's requests
# calling the first — counts as going backwards along the call graph (`DelayModel.backwards`),
# unless the reverse was linked at least `CYCLE_SHARE` as often (a real cycle: A calls B, B calls A).
MIN_EDGE_LINKS: Final = 8
CYCLE_SHARE: Final = 0.5
# Median absolute deviation → standard deviation of a normal distribution.
MAD_TO_SIGMA: Final = 1.4826
NS_PER_MS: Final = 1_000_000.0


class Gaps:
    """The recent gaps of one (workload, endpoint, call), and their robust centre and spread."""

    __slots__ = (
        "after", "after_mid", "after_sorted", "after_spread", "before", "before_mid", "before_sorted",
        "before_spread", "fresh", "n",
    )  # fmt: skip

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []
        # The same gaps kept in order (one insertion per link), so that no refresh sorts them again.
        self.before_sorted: list[float] = []
        self.after_sorted: list[float] = []
        self.n = 0
        self.fresh = 0
        self.before_mid = 0.0
        self.after_mid = 0.0
        self.before_spread = 1.0
        self.after_spread = 1.0

    def add(self, before_ms: float, after_ms: float) -> None:
        if len(self.before) >= MAX_SAMPLES:
            _remove(self.before_sorted, self.before[0])
            _remove(self.after_sorted, self.after[0])
            del self.before[0]
            del self.after[0]
        self.before.append(before_ms)
        self.after.append(after_ms)
        bisect.insort(self.before_sorted, before_ms)
        bisect.insort(self.after_sorted, after_ms)
        self.n += 1
        self.fresh += 1
        if self.n == MIN_SAMPLES or self.fresh >= REFRESH_EVERY:
            self.fresh = 0
            self.before_mid, self.before_spread = _centre_of_sorted(self.before_sorted)
            self.after_mid, self.after_spread = _centre_of_sorted(self.after_sorted)

    @property
    def ready(self) -> bool:
        return self.n >= MIN_SAMPLES

    def cost(self, before_ms: float, after_ms: float) -> float:
        zb = (before_ms - self.before_mid) / self.before_spread
        za = (after_ms - self.after_mid) / self.after_spread
        return _robust(zb * zb) + _robust(za * za)


def _robust(z2: float) -> float:
    """A squared z-score with heavy tails (Cauchy): z² near the centre, growing only
    logarithmically beyond `TAIL_Z` spreads. Gaps have outliers of their own — a response held
    back ~40 ms by Nagle's algorithm against a delayed ACK, a thread descheduled — and far out in
    the tail one more spread says little, so that what the connections and the call graph learned
    decides between two requests that both fit badly."""
    return TAIL_Z2 * math.log1p(z2 / TAIL_Z2)


def _remove(ordered: list[float], value: float) -> None:
    """Take one `value` out of an ascending list."""
    del ordered[bisect.bisect_left(ordered, value)]


def _centre(values: list[float]) -> tuple[float, float]:
    """Median and robust spread (scaled MAD, floored) of `values`."""
    return _centre_of_sorted(sorted(values))


def _centre_of_sorted(ordered: list[float]) -> tuple[float, float]:
    """`_centre` of values already in ascending order."""
    n = len(ordered)
    m = n // 2
    mid = ordered[m]
    # The deviations from the median, in order, are two sorted runs merged: the values from the median
    # up (v - mid) and those below it, downwards (mid - v). The median deviation is the one at index m
    # of that merge: walked to it, with no second sort.
    up, down = m, m - 1
    deviation = 0.0
    for _ in range(m + 1):
        if down < 0 or (up < n and ordered[up] - mid <= mid - ordered[down]):
            deviation = ordered[up] - mid
            up += 1
        else:
            deviation = mid - ordered[down]
            down -= 1
    mad = deviation * MAD_TO_SIGMA
    return mid, max(mad, MIN_SPREAD_MS, abs(mid) * MIN_SPREAD_FRACTION)


class Pairing:
    """The connections one connection was linked with, and how often (`DelayModel`)."""

    __slots__ = ("best", "best_count", "counts", "total")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        self.best = ""
        self.best_count = 0

    def add(self, other: str) -> None:
        n = self.counts.get(other, 0) + 1
        if len(self.counts) < MAX_SAMPLES or n > 1:
            self.counts[other] = n
        self.total += 1
        if n > self.best_count:
            self.best, self.best_count = other, n

    def partner(self) -> str:
        """The connection this one is bound to, or "" when none is (yet, or at all)."""
        if self.best_count >= MIN_PAIRINGS and self.best_count >= PAIRED_SHARE * self.total:
            return self.best
        return ""


def _flow(span: Span) -> str:
    flow = span.entry.get("flow_id")
    return flow if type(flow) is str else ""


class DelayModel:
    """Per workload: endpoint → calls it makes, their gaps (`Gaps`), and connection pairs; per
    connection, its latest requests (`Conn`). Bounded by `max_keys` (`MAX_KEYS`), `MAX_FLOWS` and
    `max_conns` (`MAX_CONNS`) (each table forgotten at once beyond its bound)."""

    __slots__ = (
        "_bound",
        "_calls",
        "_conns",
        "_edges",
        "_endpoints",
        "_gaps",
        "_inbound_flows",
        "_outbound_flows",
        "_requests",
        "learned",
        "max_conns",
        "max_keys",
    )

    def __init__(self, max_conns: int = MAX_CONNS, max_keys: int = MAX_KEYS) -> None:
        self.max_conns = max_conns
        self.max_keys = max_keys
        self._gaps: dict[tuple[str, str, str, str], Gaps] = {}
        self._endpoints: dict[tuple[str, str, str], int] = {}  # links learned per endpoint
        self._requests: dict[tuple[str, str, str], int] = {}  # requests seen per endpoint
        self._calls: dict[tuple[str, str, str, str], int] = {}  # links made per (endpoint, call)
        self._inbound_flows: dict[str, Pairing] = {}  # inbound connection -> its calls' connections
        self._outbound_flows: dict[str, Pairing] = {}  # outbound connection -> its requests' connections
        self._conns: dict[str, Conn] = {}  # connection -> its latest requests, one at a time
        self._bound: dict[tuple[str, str], tuple[int, int, int]] = {}  # (in, out) -> versions, misses
        self._edges: dict[tuple[Workload, Workload], int] = {}  # (server, server it calls) -> links
        self.learned = 0

    def request(self, span: Span) -> None:
        """Count one inbound request (a server span) of its endpoint."""
        w = span.workload
        key = (w.namespace, w.service_name, span.name)
        requests = self._requests
        if len(requests) >= self.max_keys and key not in requests:
            TABLE_EVICTIONS.labels("delay_endpoints").inc(len(requests) + len(self._calls))
            requests.clear()
            self._calls.clear()
        requests[key] = requests.get(key, 0) + 1
        flow = _flow(span)
        if flow:
            conn = self._conns.get(flow)
            if conn is None:
                if len(self._conns) >= self.max_conns:
                    TABLE_EVICTIONS.labels("delay_connections").inc(len(self._conns))
                    self._conns.clear()
                    self._bound.clear()
                conn = self._conns[flow] = Conn()
            conn.add(span.start_ns, span.end_ns)

    def linked(self, parent: Span, call: Span) -> None:
        """Record a link made by any evidence (the call graph's rates, the connections' pairs, the
        links between servers). A request taken as the maker of a call to its own server teaches
        none of them: pairing a server's inbound connections with each other would hide the
        connections its requests do call out on."""
        w = parent.workload
        if call.peer == w:
            return
        key = (w.namespace, w.service_name, parent.name, call.signature)
        self._calls[key] = self._calls.get(key, 0) + 1
        edges, edge = self._edges, (w, call.peer)
        if len(edges) >= self.max_keys and edge not in edges:
            TABLE_EVICTIONS.labels("delay_edges").inc(len(edges))
            edges.clear()
        edges[edge] = edges.get(edge, 0) + 1
        inbound, outbound = _flow(parent), _flow(call)
        if inbound and outbound:
            for table, mine, other in (
                (self._inbound_flows, inbound, outbound),
                (self._outbound_flows, outbound, inbound),
            ):
                pairing = table.get(mine)
                if pairing is None:
                    if len(table) >= MAX_FLOWS:
                        TABLE_EVICTIONS.labels("delay_connections").inc(len(table))
                        table.clear()
                    pairing = table[mine] = Pairing()
                pairing.add(other)

    def learn(self, parent: Span, call: Span) -> None:
        """Record that `parent` (an inbound request) made `call` (an outbound call). A call to the
        parent's own server teaches nothing (see `linked`)."""
        w = parent.workload
        if call.peer == w:
            return
        key = (w.namespace, w.service_name, parent.name, call.signature)
        gaps = self._gaps.get(key)
        if gaps is None:
            if len(self._gaps) >= self.max_keys:
                TABLE_EVICTIONS.labels("delay_gaps").inc(len(self._gaps))
                self._gaps.clear()
                self._endpoints.clear()
            gaps = self._gaps[key] = Gaps()
        gaps.add((call.start_ns - parent.start_ns) / NS_PER_MS, (parent.end_ns - call.end_ns) / NS_PER_MS)
        endpoint = (w.namespace, w.service_name, parent.name)
        self._endpoints[endpoint] = self._endpoints.get(endpoint, 0) + 1
        self.learned += 1

    def cost(self, parent: Span, call: Span) -> float:
        """The timing cost of `parent` having made `call` (both gaps >= 0 are assumed by the caller)."""
        before_ms = (call.start_ns - parent.start_ns) / NS_PER_MS
        after_ms = (parent.end_ns - call.end_ns) / NS_PER_MS
        w = parent.workload
        endpoint = (w.namespace, w.service_name, parent.name)
        key = (w.namespace, w.service_name, parent.name, call.signature)
        gaps = self._gaps.get(key) if self._gaps else None
        own = SELF_CALL_COST if call.peer == w else 0.0
        if gaps is not None and gaps.ready:
            return gaps.cost(before_ms, after_ms) + own + self._evidence(parent, call)
        cost = before_ms * before_ms + after_ms * after_ms
        if gaps is None and self._endpoints.get(endpoint, 0) >= MIN_ENDPOINT_SAMPLES:
            cost += UNSEEN_CALL_COST
        # In milliseconds squared what was learned weighs little against a long gap: until the gaps
        # are learned, it scales with the cost it is added to (up to `RAW_SCALE_CAP`).
        return cost + own + self._evidence(parent, call) * min(max(1.0, cost), RAW_SCALE_CAP)

    def penalty(self, parent: Span, call: Span) -> float:
        """What a call to the parent's own server, the call graph and the connections add to the
        timing cost of `parent` having made `call` (0 when nothing speaks against it)."""
        own = SELF_CALL_COST if call.peer == parent.workload else 0.0
        return own + self._evidence(parent, call)

    def backwards(self, caller: Workload, callee: Workload) -> bool:
        """Whether `caller` calling `callee` goes backwards along the call graph learned: `callee`'s
        requests were linked, many times, to calls of `caller` — and `caller`'s to calls of `callee`
        much less often. On a shared address that is a client beside the servers (the first server's
        requests enclose the calls it makes to them) far more often than a cycle of services."""
        edges = self._edges
        if not edges:
            return False
        forward = edges.get((callee, caller), 0)
        return forward >= MIN_EDGE_LINKS and edges.get((caller, callee), 0) < CYCLE_SHARE * forward

    def rare(self, parent: Span, call: Span) -> bool:
        """Whether `parent`'s endpoint, seen many times, has rarely been linked with a call like
        `call` (`RARE_CALL_RATE`): a link of the two is possible (a rare branch of its code) but
        unlikely."""
        w = parent.workload
        requests = self._requests.get((w.namespace, w.service_name, parent.name), 0)
        if requests < MIN_ENDPOINT_REQUESTS:
            return False
        key = (w.namespace, w.service_name, parent.name, call.signature)
        return self._calls.get(key, 0) < RARE_CALL_RATE * requests

    def _evidence(self, parent: Span, call: Span) -> float:
        """What the call graph and the connections learned add (in z² units, `Gaps.cost`)."""
        w = parent.workload
        endpoint = (w.namespace, w.service_name, parent.name)
        key = (w.namespace, w.service_name, parent.name, call.signature)
        cost = 0.0
        requests = self._requests.get(endpoint, 0)
        if requests >= MIN_ENDPOINT_REQUESTS and self._calls.get(key, 0) < RARE_CALL_RATE * requests:
            cost += RARE_CALL_COST
        inbound, outbound = _flow(parent), _flow(call)
        if inbound and outbound and self._conns:
            cost += MISS_COST * max(self._misses(inbound, outbound), 0)
        if self._inbound_flows:
            mine = self._inbound_flows.get(inbound)
            bound = mine.partner() if mine is not None else ""
            if not bound:
                theirs = self._outbound_flows.get(outbound)
                bound_in = theirs.partner() if theirs is not None else ""
                if bound_in and bound_in != inbound:
                    cost += UNPAIRED_COST
            elif bound != outbound:
                cost += UNPAIRED_COST
        return cost

    def _misses(self, inbound: str, outbound: str) -> int:
        """Of the latest calls on `outbound`, how many no request on `inbound` enclosed (at most
        `MAX_MISSES`); -1 when either connection carries concurrent requests or is unknown."""
        conns = self._conns
        inb, out = conns.get(inbound), conns.get(outbound)
        if inb is None or out is None or inb.concurrent or out.concurrent:
            return -1
        key = (inbound, outbound)
        held = self._bound.get(key)
        if held is not None and held[0] == inb.version and held[1] == out.version:
            return held[2]
        misses = 0
        starts, ends = inb.starts, inb.ends
        # A request is seen when it ends: the request that made the outbound connection's latest
        # call may still be in flight (on a bound pair, only that one), so that call is not judged.
        first, last = starts[0], max(ends)
        latest = len(out.starts) - 1
        for i, (o_start, o_end) in enumerate(zip(out.starts, out.ends, strict=True)):
            if o_start < first or (i == latest and o_end > last):
                continue
            k = bisect.bisect_right(starts, o_start) - 1
            if k < 0 or ends[k] < o_end:
                misses += 1
                if misses >= MAX_MISSES:
                    break
        if len(self._bound) >= self.max_conns:
            self._bound.clear()
        self._bound[key] = (inb.version, out.version, misses)
        return misses


class Conn:
    """The latest requests of one connection, by start (`DelayModel._misses`); `concurrent` once two
    of them overlapped (a multiplexed or pipelined connection, whose requests bind to no thread)."""

    __slots__ = ("concurrent", "ends", "starts", "version")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.version = 0
        self.concurrent = False

    def add(self, start: int, end: int) -> None:
        starts, ends = self.starts, self.ends
        if starts and start < ends[-1]:
            self.concurrent = True
        if len(starts) >= BOUND_WINDOW:
            del starts[0]
            del ends[0]
        at = bisect.bisect_right(starts, start)
        starts.insert(at, start)
        ends.insert(at, end)
        self.version += 1

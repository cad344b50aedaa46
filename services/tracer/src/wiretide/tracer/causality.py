"""Kernel-observed causality (eBPF): which inbound request a process was serving, on the same thread,
when it made an outbound call.

Rule: a causality source answers only what it saw; it never guesses. When it has no answer the
assembler falls back to timing. `KernelCausality` answers from the capture nodes' edges
(`wt.causality.<node>`, see capture/sources/ebpf/causality.py): the outbound entry is found by its
connection and the time its request was written, the inbound entry by its connection and the
interval [request, response] that holds the time the request was read. Every table is bounded by
count and by packet time; what ages out unmatched or is evicted is counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from wiretide.common.bus.causality import read_causality
from wiretide.proto.v1 import causality_pb2


class CausalitySource(Protocol):
    """Answers, for an outbound call's entry, the id of the inbound entry that caused it."""

    def cause_of(self, entry: dict[str, Any]) -> str | None:
        """The entry id of the inbound request being served when this outbound call was made, or None."""
        ...


class NoCausality:
    """The default: no kernel view, every answer is "unknown"."""

    def cause_of(self, entry: dict[str, Any]) -> str | None:
        return None


# A connection, client end first: (client ip, client port, server ip, server port), as entries name it.
Key = tuple[str, int, str, int]

# Edges and inbound requests held (beyond it the oldest connection's are evicted, counted).
MAX_EDGES: Final = 100_000
MAX_INBOUND: Final = 200_000
# How long past packet time an edge or an inbound request is kept: a call is decided `window` after
# it ends, so both must outlive that; more is kept for the calls decided late under load.
DEFAULT_HORIZON_NS: Final = 30_000_000_000
# The request's first packet follows the write that sent it; this is the most it may lag (a full send
# buffer), and edges older than it for that request belong to an earlier call on the connection.
MAX_WRITE_LAG_NS: Final = 1_000_000_000
# Clock allowance between the kernel's stamps and the capture's (same node; both CLOCK_REALTIME-based).
SLACK_NS: Final = 5_000_000
# Pruning walks the tables: at most once per this much packet time.
PRUNE_EVERY_NS: Final = 1_000_000_000

# What the counters count (`KernelCausality.stats`).
STAT_NAMES: Final = (
    "edges",  # edges received
    "linked",  # calls answered from an edge
    "no_edge",  # calls on a connection no edge named (timing fallback)
    "inbound_unseen",  # an edge whose inbound request matches no entry (yet)
    "unmatched",  # edges aged out without a call: sockets no entry was made for
    "evicted",  # edges or inbound requests dropped to stay within the bounds
    "invalid",  # messages or edges that do not decode
    "refused",  # batches of a newer contract version
)


@dataclass(slots=True)
class _Edge:
    outbound_ns: int
    inbound: Key
    inbound_ns: int


def _ip(raw: bytes) -> str | None:
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        v6 = ipaddress.IPv6Address(raw)
        return str(v6.ipv4_mapped or v6)
    return None


def _key(conn: causality_pb2.CausalConnection) -> Key | None:
    client, server = _ip(conn.client_ip), _ip(conn.server_ip)
    if client is None or server is None or not conn.client_port or not conn.server_port:
        return None
    return (client, conn.client_port, server, conn.server_port)


def _entry_key(entry: dict[str, Any]) -> Key | None:
    src, dst = entry.get("src"), entry.get("dst")
    if not isinstance(src, dict) or not isinstance(dst, dict):
        return None
    sip, sport, dip, dport = src.get("ip"), src.get("port"), dst.get("ip"), dst.get("port")
    if type(sip) is not str or type(dip) is not str or type(sport) is not int or type(dport) is not int:
        return None
    return (sip, sport, dip, dport)


def _interval(entry: dict[str, Any]) -> tuple[int, int] | None:
    start, elapsed = entry.get("timestamp"), entry.get("elapsed_us")
    if type(start) is not int:
        return None
    return start, start + (elapsed * 1000 if type(elapsed) is int and elapsed > 0 else 0)


class KernelCausality:
    """Edges in (`add_batch`/`add`), entries noted (`observe`), causes out (`cause_of`)."""

    def __init__(
        self,
        *,
        horizon_ns: int = DEFAULT_HORIZON_NS,
        max_edges: int = MAX_EDGES,
        max_inbound: int = MAX_INBOUND,
        slack_ns: int = SLACK_NS,
    ) -> None:
        self.horizon_ns = horizon_ns
        self.max_edges = max_edges
        self.max_inbound = max_inbound
        self.slack_ns = slack_ns
        self._edges: dict[Key, list[_Edge]] = {}  # by outbound connection, oldest connection first
        self._inbound: dict[Key, list[tuple[int, int, str]]] = {}  # by connection: (start, end, id)
        self._n_edges = 0
        self._n_inbound = 0
        self.clock = 0  # packet time: the latest end of an observed entry
        self._pruned_at = 0
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.refused = ""  # the latest reason a batch was refused

    # ---- input ------------------------------------------------------------------------------

    def add_batch(self, data: bytes, subject: str) -> int:
        """One CausalEdgeBatch message; returns the edges taken."""
        batch = read_causality(data, subject)
        if batch.invalid:
            self.stats["invalid"] += 1
            return 0
        if batch.refused:
            self.stats["refused"] += 1
            self.refused = batch.refused
            return 0
        return self.add(batch.edges)

    def add(self, edges: Iterable[causality_pb2.CausalEdge]) -> int:
        taken = 0
        for e in edges:
            out, inb = _key(e.outbound), _key(e.inbound)
            if out is None or inb is None or not e.outbound_ns:
                self.stats["invalid"] += 1
                continue
            # Re-inserted at the end: the table stays in order of each connection's latest edge, so
            # pruning and eviction take from its front.
            held = self._edges.pop(out, None) or []
            horizon = e.outbound_ns - self.horizon_ns
            old = 0
            while old < len(held) and held[old].outbound_ns < horizon:
                old += 1
            if old:  # a long-lived connection's edges that no call took
                del held[:old]
                self._n_edges -= old
                self.stats["unmatched"] += old
            held.append(_Edge(e.outbound_ns, inb, e.inbound_ns))
            self._edges[out] = held
            self._n_edges += 1
            taken += 1
        self.stats["edges"] += taken
        while self._n_edges > self.max_edges:
            self._n_edges -= self._evict(self._edges)
        return taken

    def observe(self, entries: Iterable[dict[str, Any]]) -> None:
        """Note entries as they arrive: each is some server's inbound request, found again by its
        connection when an edge names it."""
        inbound = self._inbound
        clock = self.clock
        for entry in entries:
            key, span, eid = _entry_key(entry), _interval(entry), entry.get("id")
            if key is None or span is None or type(eid) is not str:
                continue
            held = inbound.pop(key, None) or []  # re-inserted at the end, as in `add`
            horizon = span[1] - self.horizon_ns
            old = 0
            while old < len(held) and held[old][1] < horizon:
                old += 1
            if old:
                del held[:old]
                self._n_inbound -= old
            held.append((span[0], span[1], eid))
            inbound[key] = held
            self._n_inbound += 1
            clock = max(clock, span[1])
        self.clock = clock
        while self._n_inbound > self.max_inbound:
            self._n_inbound -= self._evict(inbound)
        if clock - self._pruned_at >= PRUNE_EVERY_NS:
            self._pruned_at = clock
            self._prune(clock - self.horizon_ns)

    # ---- answers ----------------------------------------------------------------------------

    def cause_of(self, entry: dict[str, Any]) -> str | None:
        key, span = _entry_key(entry), _interval(entry)
        held = self._edges.get(key) if key is not None else None
        if not held or span is None:
            self.stats["no_edge"] += 1
            return None
        start = span[0]
        # The latest write that may have sent this request: at most the clock allowance after its
        # first packet, at most the write lag before it. Taken, so a later call on the connection
        # cannot reuse it.
        best = -1
        for i, e in enumerate(held):
            if start - MAX_WRITE_LAG_NS <= e.outbound_ns <= start + self.slack_ns and (
                best < 0 or e.outbound_ns > held[best].outbound_ns
            ):
                best = i
        if best < 0:
            self.stats["no_edge"] += 1
            return None
        edge = held.pop(best)
        self._n_edges -= 1
        if not held:
            del self._edges[key]  # type: ignore[arg-type]
        found = self._inbound_at(edge.inbound, edge.inbound_ns)
        if found is None:
            self.stats["inbound_unseen"] += 1
            return None
        self.stats["linked"] += 1
        return found

    def _inbound_at(self, key: Key, t: int) -> str | None:
        """The request on `key` whose [request, response] holds `t` (the latest to start by then)."""
        held = self._inbound.get(key)
        if not held:
            return None
        slack = self.slack_ns
        best: tuple[int, int, str] | None = None
        for start, end, eid in held:
            if start - slack <= t <= end + slack and (best is None or start > best[0]):
                best = (start, end, eid)
        return best[2] if best is not None else None

    # ---- bounds -----------------------------------------------------------------------------

    def _evict(self, table: dict[Key, Any]) -> int:
        """Drop the oldest connection's items; returns how many."""
        key = next(iter(table))
        n = len(table.pop(key))
        self.stats["evicted"] += n
        return n

    def _prune(self, horizon: int) -> None:
        """Forget connections whose latest edge or request is older than `horizon`: from the front of
        each table (in order of their latest item), so the work is what is forgotten."""
        edges = self._edges
        while edges:
            key = next(iter(edges))
            held = edges[key]
            if held and held[-1].outbound_ns >= horizon:
                break
            del edges[key]
            self._n_edges -= len(held)
            self.stats["unmatched"] += len(held)
        inbound = self._inbound
        while inbound:
            key = next(iter(inbound))
            reqs = inbound[key]
            if reqs and reqs[-1][1] >= horizon:
                break
            del inbound[key]
            self._n_inbound -= len(reqs)

    @property
    def held(self) -> tuple[int, int]:
        """(edges, inbound requests) held now."""
        return self._n_edges, self._n_inbound

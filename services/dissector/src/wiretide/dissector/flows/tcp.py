"""TCP reassembly of one direction: segments in any order → in-order bytes and explicit gaps.

Rule: bytes are delivered exactly once and in order; what was never captured is reported as a gap
(an int, its size) and never glued over. Overlaps keep the bytes seen first (first-wins) and are
counted. Sequence numbers compare modulo 2**32 (RFC 9293 §3.4), so wrap-around is ordinary.
"""

from __future__ import annotations

from typing import Final

SEQ_MOD: Final = 1 << 32
SEQ_MASK: Final = SEQ_MOD - 1
# Distances at or beyond half the space are "before", not "after" (RFC 1982 serial arithmetic).
SEQ_HALF: Final = 1 << 31
# Out-of-order bytes held per direction while waiting for a hole to fill; beyond it the hole is a gap.
MAX_BUFFERED_BYTES: Final = 1 << 20
# Out-of-order segments held per direction (bounds the per-drain sort).
MAX_BUFFERED_SEGMENTS: Final = 512
# A hole the peer has acknowledged is declared lost only after this much capture time: captures
# reorder packets (several NIC queues, a switch port mirror), so the missing bytes may still come.
REORDER_WINDOW_NS: Final = 200_000_000
# A segment further ahead than this is not in this window at all (garbage, or another connection).
MAX_AHEAD: Final = 1 << 30

Chunk = bytes | int  # bytes = data in order; int = a gap of that many bytes
NOTHING: Final[tuple[Chunk, ...]] = ()
NO_STAMPS: Final[tuple[int, ...]] = ()


class TcpStream:
    """One direction of a TCP connection."""

    __slots__ = (
        "buffered",
        "fin_seq",
        "gap_bytes",
        "gaps",
        "held_ts",
        "lost_at",
        "next_seq",
        "out_of_order",
        "overlaps",
        "pending",
        "retransmissions",
        "stamps",
    )

    def __init__(self) -> None:
        self.next_seq: int | None = None  # unknown until a SYN or the first data (SYN-less pickup)
        # Out-of-order segments by sequence number; allocated by the first one (most flows never
        # reorder, and a half-open flow should cost as little as possible).
        self.pending: dict[int, bytes] | None = None
        # Capture time of each held segment, by sequence number (allocated with `pending`): bytes
        # released from behind a hole keep the time they were captured, not the time of their release.
        self.held_ts: dict[int, int] | None = None
        # Capture times of the chunks the last `segment`/`acked`/`flush` returned, one per chunk (a
        # gap takes the time of the bytes after it); empty when they all belong to the current packet.
        self.stamps: tuple[int, ...] | list[int] = NO_STAMPS
        self.buffered = 0
        self.fin_seq: int | None = None
        self.retransmissions = 0
        self.overlaps = 0
        self.out_of_order = 0
        self.gaps = 0
        self.gap_bytes = 0
        self.lost_at = 0  # capture time when the peer acknowledged past a hole (0 = no such hole)

    def syn(self, seq: int) -> None:
        """A SYN consumes one sequence number (RFC 9293 §3.4); a retransmitted SYN changes nothing."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) & SEQ_MASK

    def fin(self, seq: int, payload_len: int) -> None:
        if self.fin_seq is None:
            self.fin_seq = (seq + payload_len) & SEQ_MASK

    @property
    def finished(self) -> bool:
        return self.fin_seq is not None and self.next_seq == self.fin_seq and not self.pending

    def segment(self, seq: int, payload: bytes, ts: int = 0) -> tuple[Chunk, ...]:
        """Take one segment with payload (captured at `ts`); return what is now deliverable, in
        order, with their capture times in `stamps`."""
        self.stamps = NO_STAMPS
        nxt = self.next_seq
        if nxt is None:
            nxt = self.next_seq = seq
        d = (seq - nxt) & SEQ_MASK
        if d == 0:
            self.next_seq = (seq + len(payload)) & SEQ_MASK
            if self.pending:
                return (payload, *self._drain([ts]))
            return (payload,)
        if d >= SEQ_HALF:  # starts before what was delivered: retransmission or overlap
            back = SEQ_MOD - d
            if back >= len(payload):
                self.retransmissions += 1
                return NOTHING
            self.overlaps += 1
            payload = payload[back:]
            self.next_seq = (nxt + len(payload)) & SEQ_MASK
            if self.pending:
                return (payload, *self._drain([ts]))
            return (payload,)
        if d > MAX_AHEAD:
            return NOTHING
        # Ahead of a hole: hold it (first copy wins).
        pending = self.pending
        held_ts = self.held_ts
        if pending is None or held_ts is None:
            pending = self.pending = {}
            held_ts = self.held_ts = {}
        old = pending.get(seq)
        if old is not None and len(old) >= len(payload):
            self.retransmissions += 1
            return NOTHING
        self.out_of_order += 1
        if old is not None:
            self.buffered -= len(old)
        pending[seq] = payload
        held_ts[seq] = ts
        self.buffered += len(payload)
        if self.buffered > MAX_BUFFERED_BYTES or len(pending) > MAX_BUFFERED_SEGMENTS:
            return self._skip_hole()
        return NOTHING

    def acked(self, ack: int, ts: int) -> tuple[Chunk, ...]:
        """The peer acknowledged `ack`. A hole below it was received but maybe not captured: once it
        has stayed open for REORDER_WINDOW_NS of capture time, it is a gap."""
        self.stamps = NO_STAMPS
        nxt = self.next_seq
        if nxt is None or not self.pending:
            return NOTHING
        d = (ack - nxt) & SEQ_MASK
        if d == 0 or d >= SEQ_HALF:
            return NOTHING
        if not self.lost_at:
            self.lost_at = ts
            return NOTHING
        if ts - self.lost_at < REORDER_WINDOW_NS:
            return NOTHING
        return self._skip_hole()

    def flush(self) -> tuple[Chunk, ...]:
        """The connection ended: deliver whatever is held, with gaps for the holes."""
        out: list[Chunk] = []
        stamps: list[int] = []
        while self.pending:
            out.extend(self._skip_hole())
            stamps += self.stamps
        self.stamps = stamps
        return tuple(out)

    def _skip_hole(self) -> tuple[Chunk, ...]:
        nxt = self.next_seq
        assert nxt is not None and self.pending
        lowest = min((s - nxt) & SEQ_MASK for s in self.pending)
        self.gaps += 1
        self.gap_bytes += lowest
        self.lost_at = 0
        self.next_seq = (nxt + lowest) & SEQ_MASK
        stamps: list[int] = []
        chunks = self._drain(stamps)
        if stamps:  # the gap is known from the first bytes after it
            stamps.insert(0, stamps[0])
        return (lowest, *chunks)

    def _drain(self, stamps: list[int]) -> list[Chunk]:
        """Deliverable held segments, in order; their capture times are appended to `stamps`, which
        becomes `self.stamps`."""
        self.stamps = stamps
        out: list[Chunk] = []
        pending = self.pending
        held_ts = self.held_ts
        assert pending is not None and held_ts is not None
        while pending:
            base = self.next_seq
            assert base is not None
            nxt: int = base
            progressed = False
            for seq in sorted(pending, key=lambda s: (s - base) & SEQ_MASK):
                d = (seq - nxt) & SEQ_MASK
                if 0 < d < SEQ_HALF:
                    break
                data = pending.pop(seq)
                t = held_ts.pop(seq, 0)
                self.buffered -= len(data)
                back = 0 if d == 0 else SEQ_MOD - d
                if back >= len(data):
                    self.retransmissions += 1
                    continue
                if back:
                    self.overlaps += 1
                    data = data[back:]
                out.append(data)
                stamps.append(t)
                nxt = self.next_seq = (nxt + len(data)) & SEQ_MASK
                progressed = True
                break
            if not progressed:
                break
        if not pending:
            self.lost_at = 0
        return out

"""SCTP associations (RFC 9260): chunks read in place, user messages rebuilt per direction and stream.

Rule: each direction of an association keeps its own TSN window (a TSN seen twice is a counted
duplicate; TSNs compare modulo 2**32 by serial arithmetic, so wrap-around is ordinary), its own
fragments (B..E, joined once their TSNs are consecutive; I-DATA by message id and fragment sequence,
RFC 8260) and, per stream, its ordered messages in stream-sequence order. A user message is handed up
only when it is complete; unordered ones (U flag) at once. Every buffer is bounded and what it lets go
is counted and reported as a gap, never held. Packet bytes never raise: a chunk whose length lies ends
the parse of its packet, and is counted.

The chunks are read with `struct` in place rather than through dpkt's `sctp.SCTP`: dpkt builds an
object per chunk, decodes none of the DATA, INIT or SACK fields, and takes a chunk length below the
chunk header or beyond the packet as it comes instead of stopping there.

An association is one pair of addresses and ports: the paths of a multi-homed association (the same
ports from other addresses) are associations of their own here. CRC32c is not checked (checksum
offload hands up packets whose sums are not filled in yet).
"""

from __future__ import annotations

import struct
from typing import Any, Final

# Chunk types (RFC 9260 §3.2; AUTH RFC 4895, NR-SACK/I-DATA RFC 8260, ASCONF RFC 5061,
# RE-CONFIG RFC 6525, PAD RFC 4820, FORWARD-TSN RFC 3758).
DATA: Final = 0
INIT: Final = 1
INIT_ACK: Final = 2
SACK: Final = 3
HEARTBEAT: Final = 4
HEARTBEAT_ACK: Final = 5
ABORT: Final = 6
SHUTDOWN: Final = 7
SHUTDOWN_ACK: Final = 8
ERROR: Final = 9
COOKIE_ECHO: Final = 10
COOKIE_ACK: Final = 11
SHUTDOWN_COMPLETE: Final = 14
I_DATA: Final = 64
CHUNK_NAMES: Final[dict[int, str]] = {
    0: "DATA", 1: "INIT", 2: "INIT_ACK", 3: "SACK", 4: "HEARTBEAT", 5: "HEARTBEAT_ACK", 6: "ABORT",
    7: "SHUTDOWN", 8: "SHUTDOWN_ACK", 9: "ERROR", 10: "COOKIE_ECHO", 11: "COOKIE_ACK", 12: "ECNE",
    13: "CWR", 14: "SHUTDOWN_COMPLETE", 15: "AUTH", 16: "NR_SACK", 64: "I_DATA", 0x80: "ASCONF_ACK",
    130: "RE_CONFIG", 132: "PAD", 192: "FORWARD_TSN", 0xC1: "ASCONF", 194: "I_FORWARD_TSN",
}  # fmt: skip
# Chunks that change the association's state: kept, in order, as its connection events.
_EVENTS: Final = frozenset({INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK,
                            SHUTDOWN_COMPLETE, ERROR})  # fmt: skip
# DATA / I-DATA flags (RFC 9260 §3.3.1, RFC 8260 §2.1).
FLAG_E: Final = 0x01
FLAG_B: Final = 0x02
FLAG_U: Final = 0x04
# ABORT and SHUTDOWN COMPLETE: the T bit says the packet carries the sender's own tag (§8.5.1).
FLAG_T: Final = 0x01
# Error causes (§3.3.10) of an ABORT or ERROR chunk.
CAUSES: Final[dict[int, str]] = {
    1: "invalid stream identifier", 2: "missing mandatory parameter", 3: "stale cookie",
    4: "out of resource", 5: "unresolvable address", 6: "unrecognized chunk type",
    7: "invalid mandatory parameter", 8: "unrecognized parameters", 9: "no user data",
    10: "cookie received while shutting down", 11: "restart with new addresses",
    12: "user-initiated abort", 13: "protocol violation",
}  # fmt: skip
# Payload protocol identifiers (IANA "SCTP Payload Protocol Identifiers"), the common ones by name.
PPIDS: Final[dict[int, str]] = {
    0: "unspecified", 1: "IUA", 2: "M2UA", 3: "M3UA", 4: "SUA", 5: "M2PA", 7: "H.248", 18: "S1AP",
    19: "RUA", 20: "HNBAP", 25: "NBAP", 27: "X2AP", 29: "LCS-AP", 31: "SABP", 46: "Diameter",
    47: "Diameter DTLS", 50: "WebRTC DCEP", 51: "WebRTC String", 53: "WebRTC Binary", 60: "NGAP",
    61: "XnAP", 62: "F1AP", 63: "HTTP", 64: "E1AP",
}  # fmt: skip
M3UA_PPID: Final = 3
# M3UA (RFC 4666 §3.1.2) message classes and types, for counting.
M3UA_TYPES: Final[dict[tuple[int, int], str]] = {
    (0, 0): "ERR", (0, 1): "NTFY", (1, 1): "DATA", (2, 1): "DUNA", (2, 2): "DAVA", (2, 3): "DAUD",
    (2, 4): "SCON", (2, 5): "DUPU", (2, 6): "DRST", (3, 1): "ASPUP", (3, 2): "ASPDN", (3, 3): "BEAT",
    (3, 4): "ASPUP_ACK", (3, 5): "ASPDN_ACK", (3, 6): "BEAT_ACK", (4, 1): "ASPAC", (4, 2): "ASPIA",
    (4, 3): "ASPAC_ACK", (4, 4): "ASPIA_ACK", (9, 1): "REG_REQ", (9, 2): "REG_RSP",
    (9, 3): "DEREG_REQ", (9, 4): "DEREG_RSP",
}  # fmt: skip

TSN_MASK: Final = 0xFFFFFFFF
TSN_HALF: Final = 1 << 31
SSN_MASK: Final = 0xFFFF
SSN_HALF: Final = 1 << 15
COMMON_HEADER: Final = 12
CHUNK_HEADER: Final = 4
DATA_HEADER: Final = 16  # chunk header, TSN, stream id, stream sequence number, PPID
I_DATA_HEADER: Final = 20  # chunk header, TSN, stream id, reserved, message id, PPID or FSN
# Chunks read per packet: a 64 KiB GSO super-frame of the smallest real DATA chunks holds ~3000; a
# storm of 4-byte chunks beyond this is skipped (counted) so a packet's cost stays bounded.
MAX_CHUNKS: Final = 4096
# Bytes of fragments and of out-of-order ordered messages held per direction (as TCP's reassembly
# holds, flows/tcp.py); beyond it they are let go as a gap. Also the largest user message rebuilt.
MAX_HELD_BYTES: Final = 1 << 20
# Fragments held per direction: bounds the walk that joins them (a real 1 MiB message of 1400-byte
# pieces has ~750).
MAX_FRAGMENTS: Final = 1024
# TSNs remembered above the cumulative one (received out of order); a hole that stays open longer
# was never captured: the window moves past it.
MAX_TSN_WINDOW: Final = 4096
# Streams whose order is kept per direction (stream ids are 16-bit); messages on further streams are
# handed up as they complete (counted).
MAX_STREAMS: Final = 1024
# Ordered messages waiting for an earlier one per stream; beyond it the earlier one is given up.
MAX_HELD_MESSAGES: Final = 256
# Connection events kept per association (INIT retransmissions can repeat without end).
MAX_EVENTS: Final = 32
# Distinct PPIDs tallied per direction (the identifier is 32-bit; more are counted as "other").
MAX_PPIDS: Final = 32

_HEAD = struct.Struct("!HHI")  # ports, verification tag
_CHUNK = struct.Struct("!BBH")
_DATA = struct.Struct("!IHHI")  # TSN, stream id, SSN, PPID
_I_DATA = struct.Struct("!IH2xII")  # TSN, stream id, (reserved), MID, PPID or FSN
_INIT = struct.Struct("!IIHHI")  # initiate tag, a_rwnd, outbound streams, inbound streams, initial TSN
_U32 = struct.Struct("!I")
_CAUSE = struct.Struct("!HH")
_M3UA = struct.Struct("!BxBBI")  # version, (reserved), class, type, length

# What `packet` hands up: (direction, stream id, PPID, the message or the size of a gap, capture time).
Delivered = tuple[int, int, int, bytes | int, int]


def m3ua_type(data: bytes) -> str:
    """The M3UA message's type name (`ASPUP`, `DATA` …), `other` for an unknown one, `malformed`."""
    if len(data) < 8 or data[0] != 1:
        return "malformed"
    _, cls, typ, _ = _M3UA.unpack_from(data, 0)
    return M3UA_TYPES.get((cls, typ), "other")


class _Stream:
    """Ordered delivery of one stream in one direction: the next sequence number and what waits."""

    __slots__ = ("held", "mask", "next")

    def __init__(self, first: int, mask: int) -> None:
        self.next = first
        self.mask = mask  # SSN_MASK for DATA's stream sequence numbers, TSN_MASK for I-DATA's message ids
        self.held: dict[int, tuple[int, bytes, int]] | None = None  # seq -> (ppid, message, ts)


class _Side:
    """What one end sent: its tag, its TSNs, its fragments and streams, and what it all counted."""

    __slots__ = (
        "a_rwnd",
        "above",
        "cum",
        "data_bytes",
        "data_chunks",
        "duplicates",
        "frag_bytes",
        "fragmented",
        "frags",
        "gaps",
        "held_bytes",
        "i_data",
        "in_streams",
        "incomplete",
        "initial_tsn",
        "last_tsn",
        "late",
        "m3ua",
        "messages",
        "out_streams",
        "partial",
        "pieces",
        "ppids",
        "streams",
        "tag",
        "tsn_gaps",
        "unordered",
        "untracked",
    )

    def __init__(self) -> None:
        self.tag: int | None = None  # the initiate tag this end announced (packets *to* it carry it)
        self.initial_tsn: int | None = None
        self.out_streams = self.in_streams = self.a_rwnd = 0
        self.cum: int | None = None  # every TSN up to this one was seen (or given up)
        self.above: set[int] | None = None  # TSNs seen beyond `cum`
        self.last_tsn: int | None = None
        # Fragments by TSN: (flags, stream, ssn, ppid, bytes, ts); I-DATA partial messages by
        # (stream, unordered, message id): [ppid or -1, {fsn: bytes}, last fsn or -1, ts].
        self.frags: dict[int, tuple[int, int, int, int, bytes, int]] | None = None
        self.partial: dict[tuple[int, int, int], list[Any]] | None = None
        self.frag_bytes = 0
        self.pieces = 0  # I-DATA pieces held in `partial`
        self.streams: dict[int, _Stream] | None = None
        self.held_bytes = 0
        self.ppids: dict[int, int] | None = None
        self.m3ua: dict[str, int] | None = None
        self.data_chunks = self.i_data = self.data_bytes = self.messages = self.duplicates = 0
        self.unordered = self.fragmented = self.gaps = self.tsn_gaps = self.late = 0
        self.incomplete = self.untracked = 0

    def fresh(self, tsn: int) -> bool:
        """Whether a DATA chunk's TSN is new (False: a retransmission already seen)."""
        cum = self.cum
        if cum is None:
            self.cum = tsn
            return True
        ahead = (tsn - cum) & TSN_MASK
        if ahead == 0 or ahead >= TSN_HALF:
            return False
        above = self.above
        if ahead == 1:
            cum = tsn
            if above:
                nxt = (cum + 1) & TSN_MASK
                while nxt in above:
                    above.discard(nxt)
                    cum = nxt
                    nxt = (cum + 1) & TSN_MASK
            self.cum = cum
            return True
        if above is None:
            above = self.above = set()
        elif tsn in above:
            return False
        above.add(tsn)
        if len(above) > MAX_TSN_WINDOW:
            # The hole below these never filled: it was not captured. Move the window past all of them.
            self.cum = max(above, key=lambda t: (t - cum) & TSN_MASK)
            above.clear()
            self.tsn_gaps += 1
        return True

    def acked(self, cum_ack: int) -> bool:
        """The peer acknowledged every TSN up to `cum_ack` (SACK, SHUTDOWN): True when some of them
        were never seen here (lost from the capture, not from the association)."""
        cum = self.cum
        if cum is None:
            return False
        ahead = (cum_ack - cum) & TSN_MASK
        if ahead == 0 or ahead >= TSN_HALF:
            return False
        above = self.above
        covered = 0
        if above:
            below = [t for t in above if 0 < (t - cum) & TSN_MASK <= ahead]
            covered = len(below)
            above.difference_update(below)
        self.cum = cum_ack
        if above:
            nxt = (cum_ack + 1) & TSN_MASK
            while nxt in above:
                above.discard(nxt)
                self.cum = nxt
                nxt = (nxt + 1) & TSN_MASK
        if covered < ahead:
            self.tsn_gaps += 1
            return True
        return False

    def tally(self, ppid: int, data: bytes) -> None:
        ppids = self.ppids
        if ppids is None:
            ppids = self.ppids = {}
        if ppid in ppids or len(ppids) < MAX_PPIDS:
            ppids[ppid] = ppids.get(ppid, 0) + 1
        else:
            ppids[-1] = ppids.get(-1, 0) + 1
        if ppid == M3UA_PPID:
            m3ua = self.m3ua
            if m3ua is None:
                m3ua = self.m3ua = {}
            name = m3ua_type(data)
            m3ua[name] = m3ua.get(name, 0) + 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data_chunks": self.data_chunks,
            "messages": self.messages,
            "user_bytes": self.data_bytes,
            "duplicates": self.duplicates,
        }
        if self.tag is not None:
            out["initiate_tag"] = f"0x{self.tag:08x}"
            out["initial_tsn"] = self.initial_tsn
            out["outbound_streams"] = self.out_streams
            out["inbound_streams"] = self.in_streams
            out["a_rwnd"] = self.a_rwnd
        if self.streams:
            out["streams_used"] = len(self.streams)
        for key in ("i_data", "unordered", "fragmented", "gaps", "tsn_gaps", "late", "incomplete",
                    "untracked"):  # fmt: skip
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.ppids:
            out["ppids"] = {
                ("other" if p < 0 else f"{p} {PPIDS[p]}" if p in PPIDS else str(p)): n
                for p, n in sorted(self.ppids.items())
            }
        if self.m3ua:
            out["m3ua"] = dict(sorted(self.m3ua.items()))
        return out


class SctpAssociation:
    """Both directions of one association; side 0 is the flow's side "a" (the first packet's sender)."""

    __slots__ = (
        "abort",
        "chunks",
        "client",
        "ended",
        "established",
        "events",
        "events_dropped",
        "init_ack_ts",
        "init_ts",
        "malformed",
        "restart",
        "sides",
        "vtag_mismatch",
    )

    def __init__(self) -> None:
        self.sides = (_Side(), _Side())
        self.client: int | None = None  # the side that sent INIT
        self.established = False
        self.init_ts = 0
        self.init_ack_ts = 0
        self.ended: str | None = None  # "abort" or "shutdown" once the association is over
        self.restart = False  # a new INIT for this address/port pair: the caller starts anew
        self.abort: dict[str, Any] | None = None
        self.chunks: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []
        self.events_dropped = 0
        self.malformed: dict[str, int] = {}  # what broke, by reason
        self.vtag_mismatch = 0

    # ---- packets in -----------------------------------------------------------------------------

    def packet(self, d: int, buf: memoryview | bytes, off: int, end: int, ts: int) -> list[Delivered]:
        """One SCTP packet (common header at `off`) sent by side `d`: the user messages it completes."""
        out: list[Delivered] = []
        if end - off < COMMON_HEADER + CHUNK_HEADER:
            self._bad("short_packet")
            return out
        vtag = _U32.unpack_from(buf, off + 4)[0]
        pos = off + COMMON_HEADER
        first = buf[pos]
        sides = self.sides
        if first == INIT:
            init_tag = _U32.unpack_from(buf, pos + 4)[0] if end - pos >= 8 else 0
            known = sides[d].tag
            if self.established and known is not None and init_tag != known:
                self.restart = True  # RFC 9260 §5.2.4: a peer restarted; a new association begins
                return out
            if vtag != 0:
                self.vtag_mismatch += 1  # §8.5.1: an INIT carries tag 0 (kept: some stacks differ)
        else:
            expect = sides[1 - d].tag
            if expect is not None and vtag != expect:
                reflected = first in (ABORT, SHUTDOWN_COMPLETE) and buf[pos + 1] & FLAG_T
                if not (reflected and vtag == sides[d].tag):
                    self.vtag_mismatch += 1
                    if first != INIT_ACK:
                        return out  # §8.5: the receiver drops it, so no data of it was delivered
        chunks = self.chunks
        count = 0
        while pos + CHUNK_HEADER <= end:
            ctype, flags, clen = _CHUNK.unpack_from(buf, pos)
            if clen < CHUNK_HEADER:
                self._bad("chunk_length")
                break
            cend = pos + clen
            if cend > end:
                self._bad("chunk_truncated")
                break
            count += 1
            if count > MAX_CHUNKS:
                self._bad("chunks_over_limit")
                break
            name = CHUNK_NAMES.get(ctype, "other")
            chunks[name] = chunks.get(name, 0) + 1
            if ctype == DATA:
                if clen <= DATA_HEADER:
                    self._bad("data_without_user_data")
                else:
                    tsn, sid, ssn, ppid = _DATA.unpack_from(buf, pos + 4)
                    self._data(d, flags, tsn, sid, ssn, ppid, bytes(buf[pos + DATA_HEADER : cend]), ts, out)
            elif ctype == SACK:
                if clen >= 8:
                    self._acked(1 - d, _U32.unpack_from(buf, pos + 4)[0], ts, out)
            elif ctype == I_DATA:
                if clen <= I_DATA_HEADER:
                    self._bad("data_without_user_data")
                else:
                    tsn, sid, mid, word = _I_DATA.unpack_from(buf, pos + 4)
                    self._i_data(
                        d, flags, tsn, sid, mid, word, bytes(buf[pos + I_DATA_HEADER : cend]), ts, out
                    )
            elif ctype in _EVENTS:
                self._control(d, ctype, flags, buf, pos, cend, ts, out)
            pos += (clen + 3) & ~3
        return out

    def _bad(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1

    def _event(self, d: int, name: str, ts: int, **detail: Any) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.events_dropped += 1
            return
        self.events.append({"chunk": name, "side": d, "ts": ts, **detail})

    def _control(
        self, d: int, ctype: int, flags: int, buf: memoryview | bytes, pos: int, cend: int, ts: int,
        out: list[Delivered],
    ) -> None:  # fmt: skip
        sides = self.sides
        if ctype in (INIT, INIT_ACK):
            if cend - pos < CHUNK_HEADER + _INIT.size:
                self._bad("init_length")
                return
            tag, a_rwnd, os_, mis, itsn = _INIT.unpack_from(buf, pos + 4)
            side = sides[d]
            if side.cum is None or side.initial_tsn is None:
                side.cum = (itsn - 1) & TSN_MASK  # the first DATA will be `itsn`
            side.tag, side.a_rwnd, side.out_streams, side.in_streams = tag, a_rwnd, os_, mis
            side.initial_tsn = itsn
            if ctype == INIT:
                if self.client is None:
                    self.client = d
                if not self.init_ts:
                    self.init_ts = ts
            else:
                if self.client is None:
                    self.client = 1 - d
                if not self.init_ack_ts:
                    self.init_ack_ts = ts
            self._event(d, CHUNK_NAMES[ctype], ts, tag=f"0x{tag:08x}", streams=[os_, mis])
            return
        if ctype in (COOKIE_ECHO, COOKIE_ACK):
            self.established = True
        elif ctype == SHUTDOWN and cend - pos >= 8:
            self._acked(1 - d, _U32.unpack_from(buf, pos + 4)[0], ts, out)
        elif ctype == SHUTDOWN_COMPLETE:
            self.ended = self.ended or "shutdown"
        elif ctype in (ABORT, ERROR):
            causes = self._causes(buf, pos + CHUNK_HEADER, cend)
            if ctype == ABORT:
                self.ended = "abort"
                self.abort = {"side": d, "causes": causes}
            self._event(d, CHUNK_NAMES[ctype], ts, causes=causes)
            return
        self._event(d, CHUNK_NAMES[ctype], ts)

    @staticmethod
    def _causes(buf: memoryview | bytes, pos: int, end: int) -> list[str]:
        """The error causes of an ABORT or ERROR chunk by name (at most 8)."""
        found: list[str] = []
        while pos + 4 <= end and len(found) < 8:
            code, length = _CAUSE.unpack_from(buf, pos)
            if length < 4:
                break
            found.append(CAUSES.get(code, f"cause {code}"))
            pos += (length + 3) & ~3
        return found

    # ---- user data ------------------------------------------------------------------------------

    def _acked(self, d: int, cum_ack: int, ts: int, out: list[Delivered]) -> None:
        side = self.sides[d]
        if side.acked(cum_ack) and side.streams:
            # Data the peer has, which the capture lost: ordered messages waiting on it never will.
            for sid, stream in side.streams.items():
                if stream.held:
                    self._skip(d, side, sid, stream, ts, out)

    def _data(
        self, d: int, flags: int, tsn: int, sid: int, ssn: int, ppid: int, data: bytes, ts: int,
        out: list[Delivered],
    ) -> None:  # fmt: skip
        side = self.sides[d]
        side.data_chunks += 1
        if not side.fresh(tsn):
            side.duplicates += 1
            return
        side.data_bytes += len(data)
        last = side.last_tsn
        side.last_tsn = tsn
        if flags & 3 == 3:  # B and E: a whole message in one chunk
            self._message(d, side, sid, ssn, ppid, data, ts, flags & FLAG_U, SSN_MASK, out)
            return
        frags = side.frags
        if frags is None:
            frags = side.frags = {}
        if side.frag_bytes + len(data) > MAX_HELD_BYTES or len(frags) >= MAX_FRAGMENTS:
            self._drop_fragments(d, side, ts, out)
        frags[tsn] = (flags, sid, ssn, ppid, data, ts)
        side.frag_bytes += len(data)
        # Arriving in order, only the last fragment completes a message; any other may fill a hole
        # (one that arrives in order fills one when fragments after it came earlier).
        if flags & FLAG_E or last is None or tsn != (last + 1) & TSN_MASK or (tsn + 1) & TSN_MASK in frags:
            self._join(d, side, frags, tsn, out)

    def _drop_fragments(self, d: int, side: _Side, ts: int, out: list[Delivered]) -> None:
        lost = side.frag_bytes
        if side.frags:
            side.incomplete += sum(1 for f in side.frags.values() if f[0] & FLAG_B) or 1
            side.frags.clear()
        if side.partial:
            side.incomplete += len(side.partial)
            side.partial.clear()
        side.frag_bytes = side.pieces = 0
        side.gaps += 1
        out.append((d, -1, 0, max(1, lost), ts))

    def _join(
        self, d: int, side: _Side, frags: dict[int, tuple[int, int, int, int, bytes, int]], tsn: int,
        out: list[Delivered],
    ) -> None:  # fmt: skip
        """Join the fragments around `tsn` into a message when its B..E run is all there."""
        sid = frags[tsn][1]
        start = tsn
        while not frags[start][0] & FLAG_B:
            prev = (start - 1) & TSN_MASK
            f = frags.get(prev)
            if f is None or f[1] != sid or f[0] & FLAG_E:
                return
            start = prev
        stop = tsn
        while not frags[stop][0] & FLAG_E:
            nxt = (stop + 1) & TSN_MASK
            f = frags.get(nxt)
            if f is None or f[1] != sid or f[0] & FLAG_B:
                return
            stop = nxt
        first = frags[start]
        parts: list[bytes] = []
        t = start
        while True:
            parts.append(frags.pop(t)[4])
            if t == stop:
                break
            t = (t + 1) & TSN_MASK
        data = b"".join(parts)
        side.frag_bytes -= len(data)
        side.fragmented += 1
        self._message(d, side, sid, first[2], first[3], data, first[5], first[0] & FLAG_U, SSN_MASK, out)

    def _i_data(
        self, d: int, flags: int, tsn: int, sid: int, mid: int, word: int, data: bytes, ts: int,
        out: list[Delivered],
    ) -> None:  # fmt: skip
        """RFC 8260 §2.1: fragments of one message share (stream, U, MID) and count up by FSN; the first
        (B) carries the PPID where the others carry their FSN."""
        side = self.sides[d]
        side.data_chunks += 1
        side.i_data += 1
        if not side.fresh(tsn):
            side.duplicates += 1
            return
        side.data_bytes += len(data)
        if flags & 3 == 3:
            self._message(d, side, sid, mid, word, data, ts, flags & FLAG_U, TSN_MASK, out)
            return
        partial = side.partial
        if partial is None:
            partial = side.partial = {}
        if side.frag_bytes + len(data) > MAX_HELD_BYTES or side.pieces >= MAX_FRAGMENTS:
            self._drop_fragments(d, side, ts, out)
        key = (sid, flags & FLAG_U, mid)
        msg = partial.get(key)
        if msg is None:
            msg = partial[key] = [-1, {}, -1, ts]
        pieces: dict[int, bytes] = msg[1]
        fsn = 0 if flags & FLAG_B else word
        if flags & FLAG_B:
            msg[0] = word
        if flags & FLAG_E:
            msg[2] = fsn
        if fsn in pieces:
            return
        pieces[fsn] = data
        side.pieces += 1
        side.frag_bytes += len(data)
        last = msg[2]
        if msg[0] < 0 or last < 0 or len(pieces) < last + 1:
            return
        if any(i not in pieces for i in range(last + 1)):
            return  # a piece numbered beyond the last one: never complete, let go with the bounds
        del partial[key]
        whole = b"".join([pieces[i] for i in range(last + 1)])
        side.frag_bytes -= sum(len(p) for p in pieces.values())
        side.pieces -= len(pieces)
        side.fragmented += 1
        self._message(d, side, sid, mid, msg[0], whole, msg[3], flags & FLAG_U, TSN_MASK, out)

    def _message(
        self, d: int, side: _Side, sid: int, seq: int, ppid: int, data: bytes, ts: int, unordered: int,
        mask: int, out: list[Delivered],
    ) -> None:  # fmt: skip
        """A complete user message: unordered at once; ordered ones in sequence order per stream."""
        side.messages += 1
        side.tally(ppid, data)
        if unordered:
            side.unordered += 1
            out.append((d, sid, ppid, data, ts))
            return
        streams = side.streams
        if streams is None:
            streams = side.streams = {}
        stream = streams.get(sid)
        if stream is None:
            if len(streams) >= MAX_STREAMS:
                side.untracked += 1
                out.append((d, sid, ppid, data, ts))
                return
            # With the handshake seen, every stream starts at sequence 0 (§6.5); else where we came in.
            stream = streams[sid] = _Stream(0 if side.initial_tsn is not None else seq, mask)
        mask = stream.mask
        ahead = (seq - stream.next) & mask
        if ahead == 0:
            out.append((d, sid, ppid, data, ts))
            stream.next = (seq + 1) & mask
            if stream.held:
                self._drain(d, side, sid, stream, out)
            return
        if ahead > mask >> 1:  # before the next one: it came after a gap was given up (late)
            side.late += 1
            out.append((d, sid, ppid, data, ts))
            return
        held = stream.held
        if held is None:
            held = stream.held = {}
        if seq in held:
            return
        held[seq] = (ppid, data, ts)
        side.held_bytes += len(data)
        if len(held) > MAX_HELD_MESSAGES or side.held_bytes > MAX_HELD_BYTES:
            self._skip(d, side, sid, stream, ts, out)

    def _drain(self, d: int, side: _Side, sid: int, stream: _Stream, out: list[Delivered]) -> None:
        mask = stream.mask
        held = stream.held
        assert held is not None
        while held:
            item = held.pop(stream.next, None)
            if item is None:
                break
            side.held_bytes -= len(item[1])
            out.append((d, sid, item[0], item[1], item[2]))
            stream.next = (stream.next + 1) & mask

    def _skip(self, d: int, side: _Side, sid: int, stream: _Stream, ts: int, out: list[Delivered]) -> None:
        """Give up waiting for the missing messages of a stream: a gap, then what was held, in order."""
        held = stream.held
        if not held:
            return
        mask = stream.mask
        nxt = stream.next
        stream.next = min(held, key=lambda s: (s - nxt) & mask)
        side.gaps += 1
        out.append((d, sid, 0, 1, ts))
        self._drain(d, side, sid, stream, out)

    def flush(self, ts: int) -> list[Delivered]:
        """The association ends: ordered messages still waiting are handed up after a gap; fragments
        that never completed are counted."""
        out: list[Delivered] = []
        for d, side in enumerate(self.sides):
            if side.streams:
                for sid, stream in side.streams.items():
                    while stream.held:
                        self._skip(d, side, sid, stream, ts, out)
            if side.frags:
                side.incomplete += sum(1 for f in side.frags.values() if f[0] & FLAG_B) or 1
                side.frags = None
            if side.partial:
                side.incomplete += len(side.partial)
                side.partial = None
            side.frag_bytes = side.pieces = 0
        return out

    # ---- the association entry ------------------------------------------------------------------

    def describe(self, client: int, first_ts: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(client side, server side) objects of the association's entry."""
        req = self.sides[client].to_json()
        resp = self.sides[1 - client].to_json()
        req["handshake"] = "complete" if self.established else "init" if self.init_ts else "none"
        if self.init_ts and self.init_ack_ts:
            req["handshake_rtt_us"] = max(0, self.init_ack_ts - self.init_ts) // 1000
        req["chunks"] = dict(sorted(self.chunks.items()))
        events = []
        for ev in self.events:
            item = {k: v for k, v in ev.items() if k not in ("side", "ts")}
            item["from"] = "client" if ev["side"] == client else "server"
            item["at_us"] = max(0, ev["ts"] - first_ts) // 1000
            events.append(item)
        req["events"] = events
        if self.events_dropped:
            req["events_dropped"] = self.events_dropped
        if self.vtag_mismatch:
            req["vtag_mismatch"] = self.vtag_mismatch
        if self.malformed:
            req["malformed"] = dict(sorted(self.malformed.items()))
        if self.abort is not None:
            req["abort"] = {
                "from": "client" if self.abort["side"] == client else "server",
                "causes": self.abort["causes"],
            }
        return req, resp

    @property
    def counters(self) -> dict[str, int]:
        """Totals for the pipeline's stats (`sctp_<name>`)."""
        a, b = self.sides
        out = {
            "data_chunks": a.data_chunks + b.data_chunks,
            "messages": a.messages + b.messages,
            "duplicates": a.duplicates + b.duplicates,
            "gaps": a.gaps + b.gaps,
            "incomplete": a.incomplete + b.incomplete,
            "vtag_mismatch": self.vtag_mismatch,
        }
        for reason, n in self.malformed.items():
            out[f"malformed_{reason}"] = n
        m3ua = sum((s.m3ua or {}).get(k, 0) for s in self.sides for k in (s.m3ua or {}))
        if m3ua:
            out["m3ua_messages"] = m3ua
        return out


def ports_and_tag(buf: memoryview | bytes, off: int) -> tuple[int, int, int]:
    """(source port, destination port, verification tag) of the common header at `off`."""
    sport, dport, vtag = _HEAD.unpack_from(buf, off)
    return sport, dport, vtag

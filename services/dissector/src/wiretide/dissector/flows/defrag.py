"""IPv4/IPv6 defragmentation: fragments in → the whole L4 datagram out, once every piece is in.

Rule: bounded by datagrams in progress and bytes per datagram; what does not fit or never
completes is dropped and counted by reason (RFC 791 §3.2 reassembly, RFC 8200 §4.5).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

# Datagrams being reassembled at once; beyond it the oldest is dropped.
MAX_DATAGRAMS: Final = 4096
# The largest datagram IP can carry (16-bit total length); anything bigger is hostile.
MAX_DATAGRAM_BYTES: Final = 65535
# Fragments of one datagram; real ones rarely exceed a few dozen (64 KiB / 1280 B MTU = 52).
MAX_FRAGMENTS: Final = 128
# RFC 791 suggests a reassembly timer of up to 15 s; RFC 8200 §4.5 says 60 s.
TIMEOUT_NS: Final = 60_000_000_000

FragKey = tuple[bytes, bytes, int, int]


class _Datagram:
    __slots__ = ("first_ts", "parts", "size", "total")

    def __init__(self, ts: int) -> None:
        self.first_ts = ts
        self.parts: dict[int, bytes] = {}
        self.total: int | None = None
        self.size = 0


class Defragmenter:
    """Collects fragments; `add` returns the reassembled L4 bytes (header included) when complete."""

    __slots__ = ("datagrams", "drops", "reassembled")

    def __init__(self) -> None:
        self.datagrams: OrderedDict[FragKey, _Datagram] = OrderedDict()
        self.drops: dict[str, int] = {}
        self.reassembled = 0

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def add(
        self, src: bytes, dst: bytes, proto: int, ip_id: int, offset: int, more: bool, data: bytes, ts: int
    ) -> bytes | None:
        key = (src, dst, proto, ip_id)
        dg = self.datagrams.get(key)
        if dg is None:
            if len(self.datagrams) >= MAX_DATAGRAMS:
                self.datagrams.popitem(last=False)
                self._drop("frag_table_full")
            dg = self.datagrams[key] = _Datagram(ts)
        end = offset + len(data)
        if end > MAX_DATAGRAM_BYTES or len(dg.parts) >= MAX_FRAGMENTS:
            del self.datagrams[key]
            self._drop("frag_oversize")
            return None
        if not more:
            dg.total = end
        if offset not in dg.parts:  # first copy wins
            dg.parts[offset] = data
            dg.size += len(data)
        if dg.total is None or dg.size < dg.total:
            return None
        # Every byte may be there: check coverage in order.
        pos = 0
        pieces: list[bytes] = []
        for off in sorted(dg.parts):
            piece = dg.parts[off]
            if off > pos:
                return None  # a hole remains (overlaps inflated the size)
            if off + len(piece) > pos:
                pieces.append(piece[pos - off :])
                pos = off + len(piece)
        if pos < dg.total:
            return None
        del self.datagrams[key]
        self.reassembled += 1
        return b"".join(pieces)[: dg.total]

    def expire(self, now_ns: int) -> None:
        table = self.datagrams
        while table:
            key, dg = next(iter(table.items()))
            if now_ns - dg.first_ts < TIMEOUT_NS:
                break
            del table[key]
            self._drop("frag_timeout")

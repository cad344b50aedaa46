"""The gRPC message framer as it was before its fast paths (a frozen copy, used by tests only).

Rule: never edited to follow `wiretide.dissector.protocols.grpc`; `test_h2_cost.py` checks that the
framer in use splits, keeps, counts and drops exactly as this copy does, whatever the DATA chunks and
capture gaps. Below, the original code, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# gRPC over HTTP/2 ("Length-Prefixed-Message"): 1 compressed-flag octet + 4 length octets.
PREFIX: Final = 5
# Messages listed per stream direction; beyond it they are counted, not listed.
MAX_LISTED: Final = 256


@dataclass(slots=True)
class _Msg:
    compressed: bool
    size: int
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False


class MessageFramer:
    """Splits one direction's DATA bytes into gRPC messages; keeps at most `cap` payload bytes."""

    __slots__ = (
        "cap",
        "count",
        "dropped",
        "header",
        "kept",
        "messages",
        "partial",
        "realigned",
        "remaining",
        "total",
    )

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.header = bytearray()
        self.messages: list[_Msg] = []
        self.partial: _Msg | None = None
        self.remaining = 0
        self.kept = 0
        self.dropped = 0  # payload bytes seen but not kept (over the cap or over MAX_LISTED)
        self.count = 0
        self.total = 0
        self.realigned = 0  # times message framing was picked up again after a gap

    def feed(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        self.total += n
        if self.remaining < 0:  # boundaries lost to a gap: realign on a DATA frame opening a message
            if n >= PREFIX and data[0] in (0, 1):
                self.remaining = 0
                self.realigned += 1
            else:
                self.dropped += n
                return
        while pos < n:
            if self.partial is None:
                need = PREFIX - len(self.header)
                self.header += data[pos : pos + need]
                pos += min(need, n - pos)
                if len(self.header) < PREFIX:
                    return
                size = int.from_bytes(self.header[1:5], "big")
                msg = _Msg(bool(self.header[0] & 1), size)
                self.header.clear()
                self.count += 1
                if len(self.messages) < MAX_LISTED:
                    self.messages.append(msg)
                self.partial = msg
                self.remaining = size
                if size == 0:
                    msg.complete = True
                    self.partial = None
                    continue
            msg = self.partial
            take = min(self.remaining, n - pos)
            room = self.cap - self.kept
            kept = 0
            if room > 0 and msg in self.messages[-1:]:
                piece = data[pos : pos + min(take, room)]
                msg.data += piece
                kept = len(piece)
                self.kept += kept
            self.dropped += take - kept
            pos += take
            self.remaining -= take
            if not self.remaining:
                msg.complete = True
                self.partial = None

    def lost(self) -> None:
        """A capture gap: message boundaries are unknown until a DATA frame opens a new message
        (gRPC implementations start each message in a fresh DATA frame, though none is obliged to)."""
        if self.partial is not None:
            self.partial = None
        self.header.clear()
        self.remaining = -1

    def payloads(self) -> list[bytes]:
        """Complete, wholly kept, uncompressed message payloads."""
        return [
            bytes(m.data) for m in self.messages if m.complete and len(m.data) == m.size and not m.compressed
        ]

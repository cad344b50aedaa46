"""WebSocket (RFC 6455) after an HTTP/1.1 upgrade: frames unmasked, fragments joined, one Message each.

Rule: each direction is its own frame parser over a bounded buffer; a message's payload is kept up
to the body cap (the rest counted), control frames may interleave a fragmented message (§5.4).
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Final

from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation

OPCODES: Final = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
_CONTROL: Final = 8
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
# RFC 6455 §5.5: control frames carry at most 125 bytes.
MAX_CONTROL_PAYLOAD: Final = 125
# A frame claiming more than this is not something we will count down byte by byte meaningfully.
MAX_FRAME_BYTES: Final = 1 << 40


def _unmask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3: XOR with the 4-byte key, done on whole integers."""
    n = len(data)
    if not n:
        return data
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def _unmask_from(data: bytes, key: bytes, offset: int) -> bytes:
    """Unmask a piece of a payload that starts `offset` bytes into it (the key cycles every 4)."""
    turn = offset % 4
    return _unmask(data, key[turn:] + key[:turn]) if turn else _unmask(data, key)


class _Direction:
    """One sender's frames. A frame whose payload fits the body cap is taken whole from the buffer; a
    larger one is streamed: its payload is counted as it passes and only the cap's worth is kept."""

    __slots__ = (
        "buf",
        "cap",
        "frame",
        "is_client",
        "kept",
        "left",
        "msg_first",
        "msg_opcode",
        "msg_parts",
        "msg_size",
        "msg_total",
    )

    def __init__(self, is_client: bool, cap: int) -> None:
        self.is_client = is_client
        self.cap = cap
        self.buf = bytearray()
        self.msg_opcode: int | None = None
        self.msg_parts: list[bytes] = []
        self.kept = 0
        self.msg_total = 0
        self.msg_size = 0
        self.msg_first = 0
        # The streamed frame: payload bytes still to come, and (fin, rsv, masked, key, wire size,
        # payload bytes seen) — None when no frame is being streamed.
        self.left = 0
        self.frame: tuple[bool, int, bool, bytes, int, list[int]] | None = None

    def feed(self, data: bytes, ts: int, out: list[Event]) -> None:
        if self.frame is not None:
            data = self._stream(data, ts, out)
            if not data:
                return
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            fin = bool(b0 & 0x80)
            rsv = b0 & 0x70
            opcode = b0 & 0x0F
            masked = bool(b1 & 0x80)
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = _U16.unpack_from(buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = _U64.unpack_from(buf, 2)[0]
                pos = 10
            if opcode not in OPCODES or n > MAX_FRAME_BYTES:
                out.append(Violation("ws: invalid frame header"))
                buf.clear()
                return
            if opcode >= _CONTROL and (n > MAX_CONTROL_PAYLOAD or not fin):
                out.append(Violation("ws: invalid control frame"))
                buf.clear()
                return
            key = b""
            if masked:
                if len(buf) < pos + 4:
                    return
                key = bytes(buf[pos : pos + 4])
                pos += 4
            if len(buf) < pos + n:
                if n <= self.cap:
                    return  # a frame within the cap is taken whole once it is all here
                # Beyond the cap: stream it instead of buffering up to 2^40 bytes.
                if not self._begin(opcode, ts, out):
                    buf.clear()
                    return
                self.frame = (fin, rsv, masked, key, pos + n, [0])
                self.left = n
                rest = bytes(buf[pos:])
                buf.clear()
                rest = self._stream(rest, ts, out)
                if not rest:
                    return
                buf += rest
                continue
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if masked:
                payload = _unmask(payload, key)
            if opcode >= _CONTROL:
                self._emit(opcode, [payload], len(payload), pos + n, fin, masked, rsv, ts, ts, out)
            elif self._begin(opcode, ts, out):
                self._data(payload)
                self._end(fin, rsv, masked, pos + n, ts, out)

    def _stream(self, data: bytes, ts: int, out: list[Event]) -> bytes:
        """Payload of the streamed frame: keep what fits the cap, count the rest; return what follows it."""
        frame = self.frame
        assert frame is not None
        fin, rsv, masked, key, size, seen = frame
        take = min(self.left, len(data))
        piece = data[:take]
        room = self.cap - self.kept
        if room > 0:
            kept = piece[:room]
            self._data(_unmask_from(kept, key, seen[0]) if masked else kept, len(piece))
        else:
            self.msg_total += take
        seen[0] += take
        self.left -= take
        if self.left:
            return b""
        self.frame = None
        self._end(fin, rsv, masked, size, ts, out)
        return data[take:]

    def _begin(self, opcode: int, ts: int, out: list[Event]) -> bool:
        """A data frame starts: a new message, or the next fragment of the one in hand (§5.4)."""
        if opcode == 0:
            if self.msg_opcode is None:
                out.append(Violation("ws: continuation without a message"))
                return False
            return True
        if self.msg_opcode is not None:
            out.append(Violation("ws: new message inside a fragmented one"))
            return False
        self.msg_opcode = opcode
        self.msg_parts = []
        self.kept = self.msg_total = self.msg_size = 0
        self.msg_first = ts
        return True

    def _data(self, payload: bytes, total: int = -1) -> None:
        """Unmasked payload bytes of the message (`total`: bytes they stand for, when cut already)."""
        if self.kept < self.cap:
            piece = payload[: self.cap - self.kept]
            self.msg_parts.append(piece)
            self.kept += len(piece)
        self.msg_total += len(payload) if total < 0 else total

    def _end(self, fin: bool, rsv: int, masked: bool, size: int, ts: int, out: list[Event]) -> None:
        self.msg_size += size
        if fin:
            op = self.msg_opcode
            assert op is not None
            self.msg_opcode = None
            self._emit(
                op, self.msg_parts, self.msg_total, self.msg_size, True, masked, rsv, self.msg_first, ts, out
            )

    def _emit(
        self,
        opcode: int,
        parts: list[bytes],
        total: int,
        size: int,
        fin: bool,
        masked: bool,
        rsv: int,
        first: int,
        ts: int,
        out: list[Event],
    ) -> None:
        data = b"".join(parts)
        fields: dict[str, Any] = {
            "opcode": opcode,
            "type": OPCODES[opcode],
            "fin": fin,
            "masked": masked,
            "compressed": bool(rsv & 0x40),  # permessage-deflate (RFC 7692): kept as sent
            "size": total,
            "truncated": total > len(data),
        }
        if opcode == 1 and not fields["compressed"]:
            fields["text"] = data.decode("utf-8", "replace")
        elif opcode == 8 and len(data) >= 2:
            fields["close_code"] = _U16.unpack_from(data)[0]
            fields["text"] = data[2:].decode("utf-8", "replace")
        else:
            fields["data"] = base64.b64encode(data).decode("ascii")
        out.append(
            Message(
                is_request=self.is_client,
                ts_first=first,
                ts_last=ts,
                size=size,
                fields=fields,
                standalone=True,
            )
        )


class WebSocketSession:
    __slots__ = ("client", "server")

    def __init__(self, config: SessionConfig) -> None:
        self.client = _Direction(True, config.body_cap)
        self.server = _Direction(False, config.body_cap)

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        out: list[Event] = []
        (self.client if from_client else self.server).feed(data, ts, out)
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        return [Violation("ws: capture gap inside the frame stream")]

    def close(self, ts: int) -> list[Event]:
        return []


def probe(client: bytes, server: bytes) -> Verdict:
    """Reached only through an HTTP upgrade; frames alone are too short to recognise safely."""
    return Verdict.NO


def present(req: Message | None, resp: Message | None) -> Presented:
    msg = req if req is not None else resp
    assert msg is not None
    f = msg.fields
    arrow = "→" if req is not None else "←"
    text = f.get("text")
    detail = (text[:60] if isinstance(text, str) else f"{f['size']} B") if f["type"] != "close" else ""
    return Presented(method=f["type"], summary=f"{arrow} {f['type']} {detail}".rstrip(), version="13")


SPEC: Final = ProtocolSpec(
    name="ws",
    transports=("tcp",),
    ports=(),
    probe=probe,
    session=WebSocketSession,
    present=present,
    matcher="none",
    detect=False,
)

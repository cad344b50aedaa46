"""AMQP 0-9-1 (RabbitMQ): frames per direction, channels multiplexed, methods named and paired.

Rule: each direction is a frame parser over a bounded buffer (method and content-header frames are
taken whole up to `MAX_FRAME`; body frames stream, keeping only the body cap); a content-bearing method
(publish, deliver, return, get-ok) becomes one message with its content header and body frames. On
each channel a synchronous method waits for its reply, FIFO per initiating side (the peer's
`channel.close` or `connection.close` answers the request it refuses); a delivery waits for the
consumer's ack (a publish, in confirm mode, for the broker's), both bounded. A channel first seen
mid-stream (its `channel.open` and any `confirm.select` before the capture) holds its publishes for a
while: a broker `basic.ack`/`nack` on it means confirm mode, whose numbering is then learned from that
ack by order; no ack within `CONFIRM_WAIT_NS` lets them go alone. Credentials
(`connection.start-ok` response, `connection.secure-ok`, `connection.update-secret`) are dropped at
parse time: only the SASL mechanism, the PLAIN user name and the response's size are kept.
"""

from __future__ import annotations

import base64
import math
import struct
from collections import OrderedDict
from decimal import Decimal
from typing import Any, Final

from wiretide.common.protocols import AMQP_REPLY_CODES as REPLY_CODES
from wiretide.dissector.api import (
    Event,
    Message,
    Presented,
    ProtocolSpec,
    SessionConfig,
    Verdict,
    Violation,
)
from wiretide.dissector.protocols._body import body_object

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
VERSION: Final = "0-9-1"
FRAME_END: Final = 0xCE
FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_TYPES: Final = frozenset({FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT})
# Method and content-header frames are decoded whole; RabbitMQ's largest frame_max is 128 MiB but its
# default is 128 KiB, and no method or header frame needs more than this.
MAX_FRAME: Final = 1 << 20
# Body frames stream (only the body cap is kept); a size beyond this is a lie, not a frame.
MAX_BODY_FRAME: Final = 1 << 31
# A declared body size beyond this (2^53: what a JSON number holds exactly) is not believed.
MAX_BODY_SIZE: Final = 1 << 53
# Channels tracked per connection: RabbitMQ's default channel_max is 2047.
MAX_CHANNELS: Final = 4096
# Deliveries awaiting an ack (and confirm-mode publishes awaiting the broker's) per connection; the
# oldest beyond this becomes an entry of its own, unsettled.
MAX_UNSETTLED: Final = 4096
# A channel first seen mid-stream may be in confirm mode unseen: its publishes wait this long (capture
# time) for a broker ack before going alone — RabbitMQ confirms within milliseconds, a persistent
# message to a durable queue after its fsync, batched at most every few hundred milliseconds.
CONFIRM_WAIT_NS: Final = 2_000_000_000
# ... and after this many publishes in a row went unconfirmed, it is taken to be out of confirm mode
# (its publishes go alone at once) until a broker ack says otherwise.
CONFIRM_GIVE_UP: Final = 4
# Nested field tables and arrays deeper than this are not decoded further.
MAX_TABLE_DEPTH: Final = 16
# Bytes a resynchronising direction scans for a frame start (mid-stream pickup, after a gap).
RESYNC_WINDOW: Final = 4096
# Frames a probe walks on each side.
PROBE_FRAMES: Final = 8

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_FRAME_HEAD = struct.Struct("!BHI")
_METHOD_HEAD = struct.Struct("!HH")
_CONTENT_HEAD = struct.Struct("!HHQH")

# Who may send a method: the client, the server or both.
_C, _S, _B = 1, 2, 3

# (class id, method id) → (name, argument spec, reply method ids, sender, carries content).
# Argument types: o octet, s short, l long, L long-long, S short string, X long string, b bit,
# T field table, t timestamp. Names starting with "_" are reserved fields, parsed and not shown.
_Spec = tuple[str, tuple[tuple[str, str], ...], tuple[int, ...], int, bool]
_CLOSE_ARGS: Final = (("reply_code", "s"), ("reply_text", "S"), ("class_id", "s"), ("method_id", "s"))
_BIND_ARGS: Final = (
    ("_ticket", "s"), ("destination", "S"), ("source", "S"), ("routing_key", "S"), ("no_wait", "b"),
    ("arguments", "T"),
)  # fmt: skip
METHODS: Final[dict[tuple[int, int], _Spec]] = {
    # connection (10)
    (10, 10): ("connection.start", (("version_major", "o"), ("version_minor", "o"),
               ("server_properties", "T"), ("mechanisms", "X"), ("locales", "X")), (11,), _S, False),
    (10, 11): ("connection.start-ok", (("client_properties", "T"), ("mechanism", "S"),
               ("response", "X"), ("locale", "S")), (), _C, False),
    (10, 20): ("connection.secure", (("challenge", "X"),), (21,), _S, False),
    (10, 21): ("connection.secure-ok", (("response", "X"),), (), _C, False),
    (10, 30): ("connection.tune", (("channel_max", "s"), ("frame_max", "l"), ("heartbeat", "s")),
               (31,), _S, False),
    (10, 31): ("connection.tune-ok", (("channel_max", "s"), ("frame_max", "l"), ("heartbeat", "s")),
               (), _C, False),
    (10, 40): ("connection.open", (("virtual_host", "S"), ("_capabilities", "S"), ("_insist", "b")),
               (41,), _C, False),
    (10, 41): ("connection.open-ok", (("_known_hosts", "S"),), (), _S, False),
    (10, 50): ("connection.close", _CLOSE_ARGS, (51,), _B, False),
    (10, 51): ("connection.close-ok", (), (), _B, False),
    (10, 60): ("connection.blocked", (("reason", "S"),), (), _S, False),
    (10, 61): ("connection.unblocked", (), (), _S, False),
    (10, 70): ("connection.update-secret", (("new_secret", "X"), ("reason", "S")), (71,), _C, False),
    (10, 71): ("connection.update-secret-ok", (), (), _S, False),
    # channel (20)
    (20, 10): ("channel.open", (("_out_of_band", "S"),), (11,), _C, False),
    (20, 11): ("channel.open-ok", (("_channel_id", "X"),), (), _S, False),
    (20, 20): ("channel.flow", (("active", "b"),), (21,), _B, False),
    (20, 21): ("channel.flow-ok", (("active", "b"),), (), _B, False),
    (20, 40): ("channel.close", _CLOSE_ARGS, (41,), _B, False),
    (20, 41): ("channel.close-ok", (), (), _B, False),
    # exchange (40)
    (40, 10): ("exchange.declare", (("_ticket", "s"), ("exchange", "S"), ("type", "S"),
               ("passive", "b"), ("durable", "b"), ("auto_delete", "b"), ("internal", "b"),
               ("no_wait", "b"), ("arguments", "T")), (11,), _C, False),
    (40, 11): ("exchange.declare-ok", (), (), _S, False),
    (40, 20): ("exchange.delete", (("_ticket", "s"), ("exchange", "S"), ("if_unused", "b"),
               ("no_wait", "b")), (21,), _C, False),
    (40, 21): ("exchange.delete-ok", (), (), _S, False),
    (40, 30): ("exchange.bind", _BIND_ARGS, (31,), _C, False),
    (40, 31): ("exchange.bind-ok", (), (), _S, False),
    (40, 40): ("exchange.unbind", _BIND_ARGS, (51,), _C, False),
    (40, 51): ("exchange.unbind-ok", (), (), _S, False),
    # queue (50)
    (50, 10): ("queue.declare", (("_ticket", "s"), ("queue", "S"), ("passive", "b"), ("durable", "b"),
               ("exclusive", "b"), ("auto_delete", "b"), ("no_wait", "b"), ("arguments", "T")),
               (11,), _C, False),
    (50, 11): ("queue.declare-ok", (("queue", "S"), ("message_count", "l"), ("consumer_count", "l")),
               (), _S, False),
    (50, 20): ("queue.bind", (("_ticket", "s"), ("queue", "S"), ("exchange", "S"),
               ("routing_key", "S"), ("no_wait", "b"), ("arguments", "T")), (21,), _C, False),
    (50, 21): ("queue.bind-ok", (), (), _S, False),
    (50, 30): ("queue.purge", (("_ticket", "s"), ("queue", "S"), ("no_wait", "b")), (31,), _C, False),
    (50, 31): ("queue.purge-ok", (("message_count", "l"),), (), _S, False),
    (50, 40): ("queue.delete", (("_ticket", "s"), ("queue", "S"), ("if_unused", "b"),
               ("if_empty", "b"), ("no_wait", "b")), (41,), _C, False),
    (50, 41): ("queue.delete-ok", (("message_count", "l"),), (), _S, False),
    (50, 50): ("queue.unbind", (("_ticket", "s"), ("queue", "S"), ("exchange", "S"),
               ("routing_key", "S"), ("arguments", "T")), (51,), _C, False),
    (50, 51): ("queue.unbind-ok", (), (), _S, False),
    # basic (60)
    (60, 10): ("basic.qos", (("prefetch_size", "l"), ("prefetch_count", "s"), ("global", "b")),
               (11,), _C, False),
    (60, 11): ("basic.qos-ok", (), (), _S, False),
    (60, 20): ("basic.consume", (("_ticket", "s"), ("queue", "S"), ("consumer_tag", "S"),
               ("no_local", "b"), ("no_ack", "b"), ("exclusive", "b"), ("no_wait", "b"),
               ("arguments", "T")), (21,), _C, False),
    (60, 21): ("basic.consume-ok", (("consumer_tag", "S"),), (), _S, False),
    (60, 30): ("basic.cancel", (("consumer_tag", "S"), ("no_wait", "b")), (31,), _B, False),
    (60, 31): ("basic.cancel-ok", (("consumer_tag", "S"),), (), _B, False),
    (60, 40): ("basic.publish", (("_ticket", "s"), ("exchange", "S"), ("routing_key", "S"),
               ("mandatory", "b"), ("immediate", "b")), (), _C, True),
    (60, 50): ("basic.return", (("reply_code", "s"), ("reply_text", "S"), ("exchange", "S"),
               ("routing_key", "S")), (), _S, True),
    (60, 60): ("basic.deliver", (("consumer_tag", "S"), ("delivery_tag", "L"), ("redelivered", "b"),
               ("exchange", "S"), ("routing_key", "S")), (), _S, True),
    (60, 70): ("basic.get", (("_ticket", "s"), ("queue", "S"), ("no_ack", "b")), (71, 72), _C, False),
    (60, 71): ("basic.get-ok", (("delivery_tag", "L"), ("redelivered", "b"), ("exchange", "S"),
               ("routing_key", "S"), ("message_count", "l")), (), _S, True),
    (60, 72): ("basic.get-empty", (("_cluster_id", "S"),), (), _S, False),
    (60, 80): ("basic.ack", (("delivery_tag", "L"), ("multiple", "b")), (), _B, False),
    (60, 90): ("basic.reject", (("delivery_tag", "L"), ("requeue", "b")), (), _C, False),
    (60, 100): ("basic.recover-async", (("requeue", "b"),), (), _C, False),
    (60, 110): ("basic.recover", (("requeue", "b"),), (111,), _C, False),
    (60, 111): ("basic.recover-ok", (), (), _S, False),
    (60, 120): ("basic.nack", (("delivery_tag", "L"), ("multiple", "b"), ("requeue", "b")), (),
                _B, False),
    # confirm (85), tx (90)
    (85, 10): ("confirm.select", (("no_wait", "b"),), (11,), _C, False),
    (85, 11): ("confirm.select-ok", (), (), _S, False),
    (90, 10): ("tx.select", (), (11,), _C, False),
    (90, 11): ("tx.select-ok", (), (), _S, False),
    (90, 20): ("tx.commit", (), (21,), _C, False),
    (90, 21): ("tx.commit-ok", (), (), _S, False),
    (90, 30): ("tx.rollback", (), (31,), _C, False),
    (90, 31): ("tx.rollback-ok", (), (), _S, False),
}  # fmt: skip
# Methods that are replies (some method lists them), so never the start of an exchange.
_REPLIES: Final = frozenset((c, r) for (c, _m), spec in METHODS.items() for r in spec[2])
_DELIVER: Final = (60, 60)
_PUBLISH: Final = (60, 40)
_SETTLE: Final = frozenset({(60, 80), (60, 90), (60, 120)})  # ack, reject, nack
_CONFIRMS: Final = frozenset({(60, 80), (60, 120)})  # what a broker sends in confirm mode: ack, nack
_CHANNEL_OPEN: Final = (20, 10)
_CONNECTION_CLOSE: Final = (10, 50)
_CHANNEL_CLOSE: Final = (20, 40)
_CLOSE_OK: Final = frozenset({(10, 51), (20, 41)})

# Content-header properties in property-flag order (bit 15 first).
_PROPERTIES: Final = (
    ("content_type", "S"), ("content_encoding", "S"), ("headers", "T"), ("delivery_mode", "o"),
    ("priority", "o"), ("correlation_id", "S"), ("reply_to", "S"), ("expiration", "S"),
    ("message_id", "S"), ("timestamp", "t"), ("type", "S"), ("user_id", "S"), ("app_id", "S"),
    ("cluster_id", "S"),
)  # fmt: skip
# Content codings the body decoder undoes; other values (Celery's "utf-8") are a charset, kept as said.
_CODINGS: Final = frozenset({"gzip", "x-gzip", "deflate", "br"})


class _Bad(Exception):
    """A frame's payload does not decode (caught inside this module; never leaves it)."""


# ---- field values ------------------------------------------------------------------------------


def _text(raw: bytes, cap: int) -> str:
    return raw[:cap].decode("utf-8", "replace")


def _shortstr(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise _Bad("short string past the end")
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise _Bad("short string past the end")
    return data[pos + 1 : end], end


def _longstr(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise _Bad("long string past the end")
    n = _U32.unpack_from(data, pos)[0]
    end = pos + 4 + n
    if end > len(data):
        raise _Bad("long string past the end")
    return data[pos + 4 : end], end


# Fixed-size field-value types as RabbitMQ reads them (the 0-9-1 errata: 's' is a signed short, 'l' a
# signed long-long, 'x' a byte array) with the spec's own 'u', 'U', 'L' for peers that send them.
_FIXED: Final[dict[int, struct.Struct]] = {
    ord("b"): struct.Struct("!b"), ord("B"): struct.Struct("!B"), ord("s"): struct.Struct("!h"),
    ord("U"): struct.Struct("!h"), ord("u"): struct.Struct("!H"), ord("I"): struct.Struct("!i"),
    ord("i"): struct.Struct("!I"), ord("l"): struct.Struct("!q"), ord("L"): struct.Struct("!q"),
    ord("f"): struct.Struct("!f"), ord("d"): struct.Struct("!d"), ord("T"): struct.Struct("!Q"),
}  # fmt: skip
_DECIMAL = struct.Struct("!Bi")


def _value(data: bytes, pos: int, cap: int, depth: int) -> tuple[Any, int]:
    """One typed field value at `pos`: (value, position after it)."""
    if pos >= len(data):
        raise _Bad("field value past the end")
    kind = data[pos]
    pos += 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        if pos + fixed.size > len(data):
            raise _Bad("field value past the end")
        value = fixed.unpack_from(data, pos)[0]
        if isinstance(value, float) and math.isnan(value):  # NaN is no JSON value
            value = None
        return value, pos + fixed.size
    if kind == 0x74:  # 't' boolean
        if pos >= len(data):
            raise _Bad("field value past the end")
        return data[pos] != 0, pos + 1
    if kind == 0x53:  # 'S' long string
        raw, pos = _longstr(data, pos)
        return _text(raw, cap), pos
    if kind == 0x78:  # 'x' byte array
        raw, pos = _longstr(data, pos)
        return base64.b64encode(raw[:cap]).decode("ascii"), pos
    if kind == 0x46:  # 'F' nested table
        raw, pos = _longstr(data, pos)
        return _table(raw, cap, depth + 1), pos
    if kind == 0x41:  # 'A' array
        raw, pos = _longstr(data, pos)
        return _array(raw, cap, depth + 1), pos
    if kind == 0x44:  # 'D' decimal: scale, then a signed 32-bit value
        if pos + _DECIMAL.size > len(data):
            raise _Bad("field value past the end")
        scale, unscaled = _DECIMAL.unpack_from(data, pos)
        return str(Decimal(unscaled).scaleb(-scale)), pos + _DECIMAL.size
    if kind == 0x56:  # 'V' void
        return None, pos
    raise _Bad(f"unknown field type 0x{kind:02x}")


def _table(raw: bytes, cap: int, depth: int = 0) -> dict[str, Any]:
    """A field table's content; one that does not decode is shown as its size and the reason."""
    if depth > MAX_TABLE_DEPTH:
        return {"_undecoded": len(raw), "_reason": "nested too deep"}
    out: dict[str, Any] = {}
    pos = 0
    try:
        while pos < len(raw):
            name, pos = _shortstr(raw, pos)
            out[_text(name, 255)], pos = _value(raw, pos, cap, depth)
    except _Bad as exc:
        out["_undecoded"] = len(raw) - pos
        out["_reason"] = str(exc)
    return out


def _array(raw: bytes, cap: int, depth: int) -> list[Any]:
    if depth > MAX_TABLE_DEPTH:
        return []
    out: list[Any] = []
    pos = 0
    try:
        while pos < len(raw):
            value, pos = _value(raw, pos, cap, depth)
            out.append(value)
    except _Bad:
        pass
    return out


_ARG_FIXED: Final = {"o": _FIXED[ord("B")], "s": _U16, "l": _U32, "L": _U64, "t": _U64}


def _arguments(spec: tuple[tuple[str, str], ...], data: bytes, pos: int, cap: int) -> dict[str, Any]:
    """A method's arguments in spec order; bits pack into octets (spec §4.2.5.2)."""
    out: dict[str, Any] = {}
    bit = 8  # the next bit within the current octet; 8 = take a new octet
    octet = 0
    n = len(data)
    for name, kind in spec:
        if kind == "b":
            if bit == 8:
                if pos >= n:
                    raise _Bad("bits past the end")
                octet = data[pos]
                pos += 1
                bit = 0
            value: Any = bool(octet & (1 << bit))
            bit += 1
        else:
            bit = 8
            if kind == "S":
                raw, pos = _shortstr(data, pos)
                value = _text(raw, cap)
            elif kind == "X":
                raw, pos = _longstr(data, pos)
                value = raw  # decided by the caller (credentials, text)
            elif kind == "T":
                raw, pos = _longstr(data, pos)
                value = _table(raw, cap)
            else:
                st = _ARG_FIXED[kind]
                if pos + st.size > n:
                    raise _Bad("argument past the end")
                value = st.unpack_from(data, pos)[0]
                pos += st.size
        if name[0] != "_":
            out[name] = value
    return out


def _plain_user(response: bytes) -> str | None:
    """The authentication identity of a SASL PLAIN response (authzid NUL authcid NUL passwd)."""
    parts = response.split(b"\x00")
    return _text(parts[1], 255) if len(parts) == 3 else None


def _method_args(key: tuple[int, int], spec: _Spec, data: bytes, cap: int) -> dict[str, Any]:
    """Decoded arguments with long strings made text, and credentials reduced to what is safe."""
    args = _arguments(spec[1], data, 4, cap)
    if key == (10, 11):  # start-ok: the SASL response holds the password
        response = args.pop("response")
        cred: dict[str, Any] = {"size": len(response), "redacted": True}
        if args.get("mechanism") == "PLAIN":
            user = _plain_user(response)
            if user is not None:
                cred["user"] = user
        args["response"] = cred
    elif key in ((10, 21), (10, 70)):  # secure-ok response, update-secret's new secret
        name = "response" if key == (10, 21) else "new_secret"
        args[name] = {"size": len(args[name]), "redacted": True}
    for name, value in args.items():
        if type(value) is bytes:
            args[name] = _text(value, cap)
    return args


# ---- frames, one direction -------------------------------------------------------------------


class _Content:
    """A content-bearing method waiting for its header and body frames on one channel."""

    __slots__ = ("args", "body_size", "kept", "key", "parts", "props", "seen", "size", "ts_first")

    def __init__(self, key: tuple[int, int], args: dict[str, Any], size: int, ts: int) -> None:
        self.key = key
        self.args = args
        self.props: dict[str, Any] | None = None
        self.body_size = -1  # -1 until the content header says
        self.parts: list[bytes] = []
        self.kept = 0
        self.seen = 0
        self.size = size
        self.ts_first = ts


# One parsed method: (channel, (class, method), arguments, content or None, ts_first, ts_last, wire
# size, truncated).
_Parsed = tuple[int, tuple[int, int], dict[str, Any], _Content | None, int, int, int, bool]


class _Direction:
    """One sender's frame stream."""

    __slots__ = (
        "buf",
        "cap",
        "contents",
        "counters",
        "is_client",
        "resynced",
        "skipped",
        "stream_left",
        "stream_to",
        "synced",
    )

    def __init__(self, is_client: bool, cap: int, counters: dict[str, int]) -> None:
        self.is_client = is_client
        self.cap = cap
        self.counters = counters
        self.buf = bytearray()
        self.synced = False  # a frame boundary is known (protocol header, or a frame found)
        self.resynced = False  # found by a search (mid-stream, after a gap): orphan content is skipped
        self.skipped = 0  # bytes passed over while searching
        self.contents: dict[int, _Content] = {}
        # A body frame being streamed: payload bytes still to come (then its end octet), and where.
        self.stream_left = 0
        self.stream_to: _Content | None = None

    def feed(self, data: bytes, ts: int, out: list[_Parsed]) -> str | None:
        """Parse what `data` completes; the reason when the stream breaks the protocol."""
        if self.stream_left:
            data = self._stream(data, ts, out)
            if not data:
                return None
        buf = self.buf
        buf += data
        if not self.synced:
            problem = self._sync()
            if not self.synced:
                return problem
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 7:
                ftype, channel, size = _FRAME_HEAD.unpack_from(buf, pos)
                if ftype not in FRAME_TYPES:
                    return f"amqp: unknown frame type {ftype}"
                if ftype == FRAME_BODY and size > MAX_FRAME:
                    if size > MAX_BODY_FRAME:
                        return "amqp: body frame too large"
                    content = self.contents.get(channel)
                    if content is None or content.body_size < 0:
                        problem = self._orphan("amqp: body frame without a content header")
                        if problem is not None:
                            return problem
                        content = _Content(_PUBLISH, {}, 0, ts)  # counted and dropped
                        content.body_size = -2
                    # Stream it: the payload passes without being buffered.
                    self.stream_to = content
                    self.stream_left = size + 1
                    content.size += 8 + size
                    rest = bytes(buf[pos + 7 :])
                    del buf[:]
                    pos = n = 0
                    rest = self._stream(rest, ts, out)
                    if not rest:
                        return None
                    buf += rest
                    n = len(buf)
                    continue
                if size > MAX_FRAME:
                    return "amqp: frame too large"
                end = pos + 7 + size
                if end >= n:
                    break
                if buf[end] != FRAME_END:
                    return "amqp: frame end octet missing"
                payload = bytes(buf[pos + 7 : end])
                pos = end + 1
                if ftype == FRAME_METHOD:
                    problem = self._method(channel, payload, ts, out)
                elif ftype == FRAME_HEADER:
                    problem = self._header(channel, payload, ts, out)
                elif ftype == FRAME_BODY:
                    problem = self._body(channel, payload, size, ts, out)
                else:
                    self.counters["heartbeats"] += 1
                    problem = None
                if problem is not None:
                    return problem
        finally:
            if pos:
                del buf[:pos]
        if len(buf) > MAX_FRAME + 8:
            return "amqp: frame too large"
        return None

    def _sync(self) -> str | None:
        """Find where frames start: the protocol header, or a frame whose end octet is in place.
        Sets `synced`; the reason when none is found within the bounds."""
        buf = self.buf
        if buf[:1] == b"A" and PROTOCOL_HEADER.startswith(bytes(buf[:8])):
            if len(buf) >= 8:
                del buf[:8]
                self.counters["protocol_headers"] += 1
                self.synced = True
            return None
        while buf:
            window = min(len(buf), RESYNC_WINDOW)
            start = _frame_start(bytes(buf[: window + MAX_FRAME + 8]), window)
            if start >= 0:
                self._skip(start)
                self.synced = self.resynced = True
                self.skipped = 0
                return None
            if start == -2:  # a method frame may start there: wait for the rest of it
                return "amqp: no frame boundary found" if len(buf) > 2 * MAX_FRAME else None
            self._skip(window)
            if self.skipped > MAX_FRAME:
                return "amqp: no frame boundary found"
        return None

    def _skip(self, n: int) -> None:
        if n:
            del self.buf[:n]
            self.skipped += n
            self.counters["resync_skipped_bytes"] += n

    def _stream(self, data: bytes, ts: int, out: list[_Parsed]) -> bytes:
        """Payload of a streamed body frame (and its end octet); return what follows it."""
        content = self.stream_to
        assert content is not None
        take = min(self.stream_left, len(data))
        payload_take = min(take, self.stream_left - 1)
        if payload_take > 0:
            self._keep(content, data[:payload_take])
        self.stream_left -= take
        if self.stream_left:
            return b""
        self.stream_to = None
        if data[take - 1] != FRAME_END:
            self.synced = False  # lost: find the next frame
            self.buf.clear()
            self.counters["bad_frame_end"] += 1
        self._maybe_done(content, ts, out)
        return data[take:]

    def _keep(self, content: _Content, piece: bytes) -> None:
        room = self.cap - content.kept
        if room > 0:
            kept = piece[:room]
            content.parts.append(kept)
            content.kept += len(kept)
        content.seen += len(piece)

    def _method(self, channel: int, payload: bytes, ts: int, out: list[_Parsed]) -> str | None:
        if len(payload) < 4:
            return "amqp: method frame too short"
        key = _METHOD_HEAD.unpack_from(payload)
        spec = METHODS.get(key)
        if spec is None:
            return f"amqp: unknown method {key[0]}.{key[1]}"
        try:
            args = _method_args(key, spec, payload, self.cap)
        except _Bad as exc:
            return f"amqp: {spec[0]}: {exc}"
        pending = self.contents.pop(channel, None)
        if pending is not None:  # a method cut the previous content short
            self._emit(channel, pending, ts, out, truncated=True)
        size = len(payload) + 8
        if spec[4]:
            if len(self.contents) >= MAX_CHANNELS:
                return "amqp: too many channels with content in flight"
            self.contents[channel] = _Content(key, args, size, ts)
            return None
        out.append((channel, key, args, None, ts, ts, size, False))
        return None

    def _header(self, channel: int, payload: bytes, ts: int, out: list[_Parsed]) -> str | None:
        content = self.contents.get(channel)
        if content is None or content.body_size >= 0:
            return self._orphan("amqp: content header without a content method")
        if len(payload) < _CONTENT_HEAD.size:
            return "amqp: content header too short"
        _cls, _weight, body_size, flags = _CONTENT_HEAD.unpack_from(payload)
        if body_size > MAX_BODY_SIZE:
            return "amqp: body size too large"
        pos = _CONTENT_HEAD.size
        more = flags
        while more & 1:  # continuation flag words: no basic property lives there; skipped
            if pos + 2 > len(payload):
                return "amqp: content header too short"
            more = _U16.unpack_from(payload, pos)[0]
            pos += 2
        props: dict[str, Any] = {}
        try:
            for i, (name, kind) in enumerate(_PROPERTIES):
                if not flags & (1 << (15 - i)):
                    continue
                if kind == "S":
                    raw, pos = _shortstr(payload, pos)
                    props[name] = _text(raw, self.cap)
                elif kind == "T":
                    raw, pos = _longstr(payload, pos)
                    props[name] = _table(raw, self.cap)
                elif kind == "o":
                    if pos >= len(payload):
                        raise _Bad("property past the end")
                    props[name] = payload[pos]
                    pos += 1
                else:  # timestamp
                    if pos + 8 > len(payload):
                        raise _Bad("property past the end")
                    props[name] = _U64.unpack_from(payload, pos)[0]
                    pos += 8
        except _Bad as exc:
            return f"amqp: content header: {exc}"
        content.props = props
        content.body_size = body_size
        content.size += len(payload) + 8
        self._maybe_done(content, ts, out)
        return None

    def _orphan(self, reason: str) -> str | None:
        """Content whose method was never seen: skipped after a resync (we joined mid-message)."""
        if self.resynced:
            self.counters["orphan_content_frames"] += 1
            return None
        return reason

    def _body(self, channel: int, payload: bytes, size: int, ts: int, out: list[_Parsed]) -> str | None:
        content = self.contents.get(channel)
        if content is None or content.body_size < 0:
            return self._orphan("amqp: body frame without a content header")
        content.size += size + 8
        self._keep(content, payload)
        self._maybe_done(content, ts, out)
        return None

    def _maybe_done(self, content: _Content, ts: int, out: list[_Parsed]) -> None:
        if content.body_size >= 0 and content.seen >= content.body_size:
            for channel, c in self.contents.items():
                if c is content:
                    del self.contents[channel]
                    self._emit(channel, content, ts, out, truncated=False)
                    return

    def _emit(self, channel: int, content: _Content, ts: int, out: list[_Parsed], truncated: bool) -> None:
        out.append(
            (channel, content.key, content.args, content, content.ts_first, ts, content.size, truncated)
        )

    def cut(self, ts: int, out: list[_Parsed]) -> None:
        """A gap or the flow's end: content in hand is emitted as it is, and frames are found anew."""
        for channel, content in list(self.contents.items()):
            self._emit(channel, content, ts, out, truncated=True)
        self.contents.clear()
        self.buf.clear()
        self.stream_left = 0
        self.stream_to = None
        self.synced = False


def _frame_at(data: bytes, pos: int) -> int:
    """The length of a plausible frame at `pos` (its end octet in place, a known method if a method
    frame), 0 when it is too short to tell, -1 when there is none."""
    n = len(data)
    if n - pos < 7:
        return 0
    ftype, _channel, size = _FRAME_HEAD.unpack_from(data, pos)
    if ftype not in FRAME_TYPES or size > MAX_FRAME:
        return -1
    if ftype == FRAME_METHOD:
        if n - pos < 11:
            return 0
        if _METHOD_HEAD.unpack_from(data, pos + 7) not in METHODS:
            return -1
    elif ftype == FRAME_HEARTBEAT and size:
        return -1
    end = pos + 7 + size
    if end >= n:
        return 0
    return size + 8 if data[end] == FRAME_END else -1


def _frame_start(data: bytes, window: int) -> int:
    """The first position within `window` where a plausible frame starts (-1: none; -2: a method
    frame may start at the first candidate but is not all here yet). A content frame counts only when
    what follows it also reads as a frame (or nothing follows yet): body bytes are arbitrary."""
    limit = min(window, len(data))
    pos = 0
    while pos < limit:
        # Candidates are positions holding a frame type, found with C-level searches.
        cands = [p for p in (data.find(bytes((t,)), pos, limit) for t in (1, 2, 3, 8)) if p >= 0]
        if not cands:
            return -1
        p = min(cands)
        n = _frame_at(data, p)
        if n > 0:
            if (
                data[p] in (FRAME_METHOD, FRAME_HEARTBEAT)
                or p + n >= len(data)
                or _frame_at(data, p + n) >= 0
            ):
                return p
        elif n == 0 and data[p] in (FRAME_METHOD, FRAME_HEARTBEAT):
            return -2
        pos = p + 1
    return -1


# ---- the session: channels, pairing, settlement ---------------------------------------------------


class _Channel:
    __slots__ = (
        "consumers", "gen", "maybe_confirms", "next_publish", "pending_no_ack", "replies", "requests",
        "unconfirmed",
    )  # fmt: skip

    def __init__(self, gen: int, midstream: bool = False) -> None:
        self.gen = gen
        # Synchronous requests sent and replies seen, per initiating side (0 client, 1 server).
        self.requests = [0, 0]
        self.replies = [0, 0]
        self.consumers: dict[str, bool] = {}  # consumer tag → no_ack
        self.pending_no_ack: list[bool] = []  # basic.consume requests awaiting consume-ok
        self.next_publish = 0  # confirm mode: the next publish's sequence number (0 = not in it)
        # Confirm mode unknown (first seen mid-stream, or a broker ack came with no numbering known):
        # publishes wait in the session's `provisional` for an ack that tells.
        self.maybe_confirms = midstream
        self.unconfirmed = 0  # publishes in a row that went alone for want of an ack


class AmqpSession:
    """Both directions of one AMQP connection."""

    __slots__ = (
        "cap", "channels", "client", "counters", "gens", "provisional", "refused", "server", "unsettled",
    )  # fmt: skip

    def __init__(self, config: SessionConfig) -> None:
        self.counters: dict[str, int] = {
            "heartbeats": 0,
            "protocol_headers": 0,
            "resync_skipped_bytes": 0,
            "bad_frame_end": 0,
            "unsettled_evicted": 0,
            "orphan_content_frames": 0,
            "confirms_inferred": 0,
            "publishes_unconfirmed": 0,
        }
        self.cap = config.body_cap
        self.client = _Direction(True, config.body_cap, self.counters)
        self.server = _Direction(False, config.body_cap, self.counters)
        self.channels: dict[int, _Channel] = {}
        self.gens = 0
        # Messages held until settled: (holder side, channel, generation, tag) → Message.
        self.unsettled: OrderedDict[tuple[int, int, int, int], Message] = OrderedDict()
        # Closes that answered a refused request, per (closing side, channel): their close-ok stands alone.
        self.refused: dict[tuple[int, int], int] = {}
        # Publishes on channels whose confirm mode is unknown, oldest first: (channel, generation) → them.
        self.provisional: dict[tuple[int, int], list[Message]] = {}

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        parsed: list[_Parsed] = []
        problem = (self.client if from_client else self.server).feed(data, ts, parsed)
        out: list[Event] = []
        side = 0 if from_client else 1
        for item in parsed:
            self._method(side, item, out)
        if self.provisional:
            self._unconfirmed(ts, out)
        if problem is not None:
            out.append(Violation(problem))
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        parsed: list[_Parsed] = []
        (self.client if from_client else self.server).cut(ts, parsed)
        out: list[Event] = []
        for item in parsed:
            self._method(0 if from_client else 1, item, out)
        if self.provisional:
            self._unconfirmed(ts, out)
        return out

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        for side, direction in enumerate((self.client, self.server)):
            parsed: list[_Parsed] = []
            direction.cut(ts, parsed)
            for item in parsed:
                self._method(side, item, out)
        self._flush(out, None)
        return out

    # -- helpers

    def _channel(self, number: int, key: tuple[int, int]) -> _Channel:
        ch = self.channels.get(number)
        if ch is None:
            if len(self.channels) >= MAX_CHANNELS:
                self.channels.pop(next(iter(self.channels)))
            self.gens += 1
            # A channel whose first method is not its channel.open was opened before the capture.
            ch = self.channels[number] = _Channel(self.gens, number != 0 and key != _CHANNEL_OPEN)
        return ch

    def _flush(self, out: list[Event], channel: int | None) -> None:
        """Held messages that will never be settled (their channel or connection closed)."""
        for key in [k for k in self.unsettled if channel is None or k[1] == channel]:
            msg = self.unsettled.pop(key)
            msg.fields["settled"] = False
            msg.standalone = True
            out.append(msg)
        for where in [k for k in self.provisional if channel is None or k[0] == channel]:
            for msg in self.provisional.pop(where):
                msg.standalone = True
                out.append(msg)

    def _unconfirmed(self, ts: int, out: list[Event]) -> None:
        """Publishes that waited `CONFIRM_WAIT_NS` for a broker ack go alone; after `CONFIRM_GIVE_UP`
        in a row, their channel is taken to be out of confirm mode."""
        for where in list(self.provisional):
            held = self.provisional[where]
            n = 0
            while n < len(held) and held[n].ts_last + CONFIRM_WAIT_NS < ts:
                held[n].standalone = True
                out.append(held[n])
                n += 1
            if not n:
                continue
            del held[:n]
            self.counters["publishes_unconfirmed"] += n
            ch = self.channels.get(where[0])
            if ch is not None and ch.gen == where[1]:
                ch.unconfirmed += n
                if ch.unconfirmed >= CONFIRM_GIVE_UP:
                    ch.maybe_confirms = False
                    for msg in held:
                        msg.standalone = True
                        out.append(msg)
                    held.clear()
            if not held:
                del self.provisional[where]

    def _infer_confirms(self, ch: _Channel, channel: int, msg: Message, out: list[Event]) -> bool:
        """A broker ack/nack on a channel not known to be in confirm mode: it is (a broker acks
        publishes only on a channel in confirm mode). Its publishes held so far pair by order — the first
        with this ack, all of them with a `multiple` one — and the numbering goes on from its tag.
        False when nothing was held (the ack is of a publish sent before the capture)."""
        self.counters["confirms_inferred"] += 1
        args = msg.fields["arguments"]
        tag = args.get("delivery_tag", 0)
        held = self.provisional.pop((channel, ch.gen), [])
        ch.maybe_confirms, ch.unconfirmed = True, 0
        if not isinstance(tag, int) or tag <= 0:
            for old in held:  # "every outstanding one" (tag 0 with multiple): numbering still unknown
                old.key = ("settle", 0, channel, ch.gen, -id(old))
                out.append(old)
                out.append(Message(False, msg.ts_first, msg.ts_last, msg.size, msg.fields, key=old.key))
            return bool(held)
        if not held:
            ch.next_publish = tag + 1
            return False
        settled = held[: min(len(held), tag)] if args.get("multiple") else held[:1]
        first = tag - len(settled) + 1  # by order: the settled ones end at `tag`
        for i, old in enumerate(settled):
            old.key = ("settle", 0, channel, ch.gen, first + i)
            out.append(old)
            out.append(Message(False, msg.ts_first, msg.ts_last, msg.size, msg.fields, key=old.key))
        ch.next_publish = tag + 1
        for old in held[len(settled) :]:
            self._hold(0, channel, ch.gen, ch.next_publish, old, out)
            ch.next_publish += 1
        return True

    def _hold(self, holder: int, channel: int, gen: int, tag: int, msg: Message, out: list[Event]) -> None:
        msg.key = ("settle", holder, channel, gen, tag)
        old = self.unsettled.pop((holder, channel, gen, tag), None)
        if old is not None:
            old.standalone = True
            out.append(old)
        self.unsettled[(holder, channel, gen, tag)] = msg
        if len(self.unsettled) > MAX_UNSETTLED:
            _key, first = self.unsettled.popitem(last=False)
            first.standalone = True
            self.counters["unsettled_evicted"] += 1
            out.append(first)

    def _settle(self, side: int, ch: _Channel, channel: int, msg: Message, out: list[Event]) -> bool:
        """An ack, nack or reject from `side` settles what the other side holds; False if nothing."""
        args = msg.fields["arguments"]
        tag = args.get("delivery_tag", 0)
        holder = 1 - side
        if args.get("multiple"):
            keys = [
                k
                for k in self.unsettled
                if k[0] == holder and k[1] == channel and k[2] == ch.gen and (tag == 0 or k[3] <= tag)
            ]
        else:
            keys = (
                [(holder, channel, ch.gen, tag)] if (holder, channel, ch.gen, tag) in self.unsettled else []
            )
        if not keys:
            return False
        for k in keys:
            held = self.unsettled.pop(k)
            out.append(held)
            out.append(Message(False, msg.ts_first, msg.ts_last, msg.size, msg.fields, key=held.key))
        return True

    def _method(self, side: int, item: _Parsed, out: list[Event]) -> None:
        channel, key, args, content, ts_first, ts_last, size, truncated = item
        spec = METHODS[key]
        fields: dict[str, Any] = {
            "method": spec[0],
            "channel": channel,
            "class_id": key[0],
            "method_id": key[1],
            "sender": "client" if side == 0 else "server",
            "arguments": args,
        }
        if content is not None:
            props = content.props or {}
            fields["properties"] = props
            ct = props.get("content_type")
            ce = props.get("content_encoding")
            head = {"content-type": ct if isinstance(ct, str) else ""}
            if isinstance(ce, str) and ce.strip().lower() in _CODINGS:
                head["content-encoding"] = ce
            raw = b"".join(content.parts)
            total = max(content.seen, content.body_size)
            fields["body"] = body_object(raw, total, head, self.cap, content.seen > content.kept or truncated)
        msg = Message(True, ts_first, ts_last, size, fields, truncated=truncated)
        ch = self._channel(channel, key)
        if key == _DELIVER:
            tag = args.get("delivery_tag", 0)
            if ch.consumers.get(args.get("consumer_tag", ""), False):
                msg.standalone = True  # a no-ack consumer: nothing will settle it
                out.append(msg)
            else:
                self._hold(side, channel, ch.gen, tag, msg, out)
            return
        if key == _PUBLISH:
            if ch.next_publish:
                self._hold(side, channel, ch.gen, ch.next_publish, msg, out)
                ch.next_publish += 1
            elif ch.maybe_confirms and side == 0:
                self._provisional(channel, ch, msg, out)
            else:
                msg.standalone = True
                out.append(msg)
            return
        if key in _SETTLE:
            if side == 1 and key in _CONFIRMS and not ch.next_publish:
                if not self._infer_confirms(ch, channel, msg, out):
                    msg.standalone = True
                    out.append(msg)
                return
            if not self._settle(side, ch, channel, msg, out):
                msg.standalone = True
                out.append(msg)
            return
        if key in _REPLIES:
            self._reply(side, ch, channel, key, args, msg, out)
            return
        if spec[2] and not args.get("no_wait"):
            refused = key in (_CONNECTION_CLOSE, _CHANNEL_CLOSE) and self._refuses(
                side, channel, args, msg, out
            )
            if key == (60, 20):  # basic.consume: its consumer's ack mode, known at consume-ok
                ch.pending_no_ack.append(bool(args.get("no_ack")))
            if not refused:
                msg.key = ("sync", side, channel, ch.gen, ch.requests[side])
                ch.requests[side] += 1
                out.append(msg)
            if key == _CHANNEL_CLOSE:
                self._flush(out, channel)
            elif key == _CONNECTION_CLOSE:
                self._flush(out, None)
            return
        if key in ((60, 20), (60, 30)):  # no-wait consume / cancel: the tag is the request's
            tag_name = args.get("consumer_tag", "")
            if key == (60, 20):
                ch.consumers[tag_name] = bool(args.get("no_ack"))
            else:
                ch.consumers.pop(tag_name, None)
        elif key == (85, 10):
            ch.next_publish = ch.next_publish or 1
        msg.standalone = True
        out.append(msg)

    def _provisional(self, channel: int, ch: _Channel, msg: Message, out: list[Event]) -> None:
        held = self.provisional.setdefault((channel, ch.gen), [])
        held.append(msg)
        if sum(len(h) for h in self.provisional.values()) > MAX_UNSETTLED:
            first = held.pop(0)
            first.standalone = True
            self.counters["unsettled_evicted"] += 1
            out.append(first)
            if not held:
                del self.provisional[(channel, ch.gen)]

    def _refuses(self, side: int, channel: int, args: dict[str, Any], msg: Message, out: list[Event]) -> bool:
        """A close that answers the peer's pending request (the one it refuses): that request's
        response. Its close-ok then stands alone. True when it answered one."""
        peer = 1 - side
        ch = self.channels.get(channel)
        target: tuple[_Channel, int] | None = None
        if ch is not None and ch.replies[peer] < ch.requests[peer]:
            target = (ch, channel)
        elif channel == 0:  # connection.close: the refused method may be on any channel
            wanted = (args.get("class_id"), args.get("method_id"))
            for number, other in self.channels.items():
                if other.replies[peer] < other.requests[peer] and wanted != (0, 0):
                    target = (other, number)
                    break
        if target is None:
            return False
        other, number = target
        answer = Message(False, msg.ts_first, msg.ts_last, msg.size, msg.fields, truncated=msg.truncated)
        answer.key = ("sync", peer, number, other.gen, other.replies[peer])
        other.replies[peer] += 1
        out.append(answer)
        # The close is that request's answer (not an exchange of its own): its close-ok stands alone.
        self.refused[(side, channel)] = self.refused.get((side, channel), 0) + 1
        return True

    def _reply(
        self, side: int, ch: _Channel, channel: int, key: tuple[int, int], args: dict[str, Any],
        msg: Message, out: list[Event],
    ) -> None:  # fmt: skip
        initiator = 1 - side
        msg.is_request = False
        if key == (60, 21) and ch.pending_no_ack:  # consume-ok names the consumer
            ch.consumers[args.get("consumer_tag", "")] = ch.pending_no_ack.pop(0)
        elif key == (60, 31):
            ch.consumers.pop(args.get("consumer_tag", ""), None)
        elif key == (85, 11):
            ch.next_publish = ch.next_publish or 1
        if ch.replies[initiator] < ch.requests[initiator]:
            msg.key = ("sync", initiator, channel, ch.gen, ch.replies[initiator])
            ch.replies[initiator] += 1
            out.append(msg)
        elif key in _CLOSE_OK and self.refused.get((initiator, channel), 0):
            self.refused[(initiator, channel)] -= 1
            msg.is_request = msg.standalone = True  # its close answered a refused request
            out.append(msg)
        else:
            msg.key = ("orphan", side, channel, ch.gen, id(msg))
            out.append(msg)
        if key in _CLOSE_OK:  # the channel (or connection) is gone; its number may be reused
            if channel == 0:
                self._flush(out, None)
                for number in list(self.channels):
                    if number != 0:
                        del self.channels[number]
            else:
                self._flush(out, channel)
                self.channels.pop(channel, None)


# ---- detection -------------------------------------------------------------------------------


def _walk(data: bytes, as_client: bool) -> int:
    """How `data` reads as frames from one side: -1 not AMQP (or the wrong side), 0 cannot tell yet,
    1 AMQP from this side."""
    if not data:
        return 0
    pos = 0
    if data[:1] == b"A":
        head = data[:8]
        if not PROTOCOL_HEADER.startswith(head):
            return -1
        if len(head) < 8:
            return 0
        # The client opens with the header; a server sends it only to refuse the version.
        return 1 if as_client else 0
    evidence = 0
    for _ in range(PROBE_FRAMES):
        n = _frame_at(data, pos)
        if n < 0:
            return -1
        if n == 0:
            break
        if data[pos] == FRAME_METHOD:
            spec = METHODS[_METHOD_HEAD.unpack_from(data, pos + 7)]
            sender = spec[3]
            if sender != _B:
                if (sender == _C) != as_client:
                    return -1
                evidence = 1
        pos += n
        if pos >= len(data):
            break
    return evidence


def probe(client: bytes, server: bytes) -> Verdict:
    """YES on the protocol header from the client, or on well-formed frames (end octet in place, known
    methods) whose methods only this orientation sends (a deliver from the server, a publish from the
    client); MAYBE while the frames fit but tell no direction."""
    c = _walk(client, True)
    s = _walk(server, False)
    if c < 0 or s < 0:
        return Verdict.NO
    if c > 0 or s > 0:
        return Verdict.YES
    return Verdict.MAYBE


# ---- presentation ----------------------------------------------------------------------------


def _route(args: dict[str, Any]) -> tuple[str, str]:
    return str(args.get("exchange") or "(default)"), str(args.get("routing_key", ""))


def present(req: Message | None, resp: Message | None) -> Presented:
    msg = req if req is not None else resp
    assert msg is not None
    f = msg.fields
    method: str = f["method"]
    args: dict[str, Any] = f["arguments"]
    path: str | None = None
    status: int | None = None
    summary = method
    if "body" in f:
        exchange, routing_key = _route(args)
        path = f"{exchange}/{routing_key}"
        target = f"{exchange} → {routing_key}" if routing_key else exchange
        summary = f"{method} {target} ({f['body']['size']} B)"
    elif method.startswith("queue.") or method in ("basic.consume", "basic.get"):
        path = str(args.get("queue", "")) or None
        if method in ("queue.bind", "queue.unbind"):
            source, binding = args.get("exchange", ""), args.get("routing_key", "")
            summary = f"{method} {args.get('queue', '')} ← {source} ({binding})"
        elif path:
            summary = f"{method} {path}"
    elif method.startswith("exchange."):
        path = str(args.get("exchange", args.get("destination", ""))) or None
        if path:
            summary = f"{method} {path}"
    elif method == "connection.open":
        path = str(args.get("virtual_host", "")) or None
        if path:
            summary = f"{method} {path}"
    elif method in ("basic.ack", "basic.nack", "basic.reject"):
        summary = f"{method} #{args.get('delivery_tag', 0)}"
    for m in (req, resp):
        if m is not None and "reply_code" in m.fields["arguments"]:
            code = m.fields["arguments"]["reply_code"]
            if type(code) is int:
                status = code
    if resp is not None and req is not None:
        r = resp.fields
        summary = f"{summary} → {r['method']}"
        if status is not None and status != 200:
            summary = f"{summary} {status} {REPLY_CODES.get(status, '')}".rstrip()
    elif status is not None and status != 200:
        summary = f"{summary} {status} {REPLY_CODES.get(status, '')}".rstrip()
    stream = str(f["channel"])
    return Presented(method=method, path=path, status=status, summary=summary, version=VERSION, stream=stream)


SPEC: Final = ProtocolSpec(
    name="amqp",
    transports=("tcp",),
    ports=(5672,),
    probe=probe,
    session=AmqpSession,
    present=present,
    matcher="key",
)

__all__ = ["METHODS", "PROTOCOL_HEADER", "REPLY_CODES", "SPEC", "AmqpSession", "probe"]

"""HTTP/2 (RFC 9113) seen from the wire: frames per direction, HPACK per direction, one entry per stream.

Rule: each direction is its own bounded frame parser with its own HPACK decoder; streams are shared
state keyed by stream id, each a pair of side machines driven by a transition table. Every stream
ends as a request Message and a response Message keyed by its id (RST_STREAM, GOAWAY and the end of
the flow close what is still open). GOAWAY is connection management, not a call: it is counted on the
connection and makes no entry of its own; the streams it ends are errors naming its code. Anything
that breaks framing or HPACK is a `Violation`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation
from wiretide.dissector.protocols import graphql, grpc
from wiretide.dissector.protocols._body import body_object, form_pairs
from wiretide.dissector.protocols._numbers import decimal
from wiretide.dissector.protocols.hpack import HpackDecoder, HpackError

# RFC 9113 §3.4: the client connection preface.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# RFC 9113 §4.1: frame header octets.
FRAME_HEADER: Final = 9
# RFC 9113 §4.2 / §6.5.2: SETTINGS_MAX_FRAME_SIZE starts at 16384 and may rise to 2^24-1.
DEFAULT_MAX_FRAME: Final = 16_384
MAX_FRAME_SIZE_SETTING: Final = (1 << 24) - 1
# Largest frame this parser will buffer whatever a peer allows: bounds memory per direction.
MAX_FRAME_BYTES: Final = 1 << 20
# Header block (HEADERS/PUSH_PROMISE + CONTINUATION) bytes before it is a CONTINUATION flood.
MAX_HEADER_BLOCK: Final = 256 * 1024
# CONTINUATION frames in one header block (empty ones cost nothing on the wire but work here).
MAX_CONTINUATIONS: Final = 512
# Streams tracked at once per connection; the oldest beyond it is closed out as an entry.
MAX_STREAMS: Final = 1024
# Bytes searched for a frame boundary after a capture gap before the flow is given up as raw.
MAX_RESYNC_SCAN: Final = 64 * 1024
# Offsets the probe tries when a capture starts inside a frame (the probe sees a few KiB at most).
MAX_PROBE_SHIFT: Final = 2048
# Consecutive well-formed frame headers that make a frame boundary plausible: checking more costs work
# per candidate offset (quadratic over a buffer of tiny frames) and says nothing more.
MAX_CHECKED_FRAMES: Final = 16
# Candidate offsets one resynchronisation may examine, over all the segments it waits for: beyond it
# the direction is given up (bounds the work when every offset looks like a frame that runs on).
MAX_RESYNC_CHECKS: Final = 2 * MAX_RESYNC_SCAN
# Interim (1xx) responses kept per stream.
MAX_INFORMATIONAL: Final = 8

# RFC 9113 §6: frame types.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
# RFC 9113 §6 flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

ZERO, NONZERO, ANY = "zero", "nonzero", "any"
# Per frame type: (name, stream id rule, exact payload length or None, minimum payload length).
FRAME_RULES: Final[dict[int, tuple[str, str, int | None, int]]] = {
    DATA: ("DATA", NONZERO, None, 0),  # §6.1
    HEADERS: ("HEADERS", NONZERO, None, 0),  # §6.2
    PRIORITY: ("PRIORITY", NONZERO, 5, 5),  # §6.3
    RST_STREAM: ("RST_STREAM", NONZERO, 4, 4),  # §6.4
    SETTINGS: ("SETTINGS", ZERO, None, 0),  # §6.5
    PUSH_PROMISE: ("PUSH_PROMISE", NONZERO, None, 4),  # §6.6
    PING: ("PING", ZERO, 8, 8),  # §6.7
    GOAWAY: ("GOAWAY", ZERO, None, 8),  # §6.8
    WINDOW_UPDATE: ("WINDOW_UPDATE", ANY, 4, 4),  # §6.9
    CONTINUATION: ("CONTINUATION", NONZERO, None, 0),  # §6.10
}

_FRAME_COUNTERS: Final = {t: f"frames_{rule[0].lower()}" for t, rule in FRAME_RULES.items()}

# RFC 9113 §7: error codes.
NO_ERROR: Final = 0x0
ERROR_CODES: Final = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
# RFC 9113 §6.5.2: settings parameters this observer acts on.
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5

# One side (request or response) of a stream: a state machine as a table (RFC 9113 §5.1 seen from
# one sender). INFO is a 1xx interim header block (§8.1), which leaves a response side where it was.
IDLE, OPEN, ENDED = "idle", "open", "ended"
E_HEADERS, E_INFO, E_DATA, E_TRAILERS, E_END = "headers", "info", "data", "trailers", "end"
SIDE_TRANSITIONS: Final[dict[tuple[str, str], str]] = {
    (IDLE, E_HEADERS): OPEN,
    (IDLE, E_INFO): IDLE,
    (IDLE, E_DATA): OPEN,  # mid-stream pickup: the header block went by before the capture started
    (IDLE, E_END): ENDED,
    (OPEN, E_DATA): OPEN,
    (OPEN, E_TRAILERS): OPEN,
    (OPEN, E_END): ENDED,
}
# The same table by state, then event: a step looks up two strings, not a tuple built per frame.
_NEXT_STATE: Final[dict[str, dict[str, str]]] = {
    state: {e: nxt for (s, e), nxt in SIDE_TRANSITIONS.items() if s == state} for state in (IDLE, OPEN, ENDED)
}


class _Side:
    """What one sender said on one stream.

    A plain class, not a dataclass: two are built per stream, and a dataclass's generated
    `__init__` (with its default factories) is interpreted even when this module is compiled."""

    __slots__ = (
        "body",
        "body_total",
        "cut",
        "grpc",
        "headers",
        "informational",
        "state",
        "trailers",
        "ts_first",
        "ts_last",
        "unknown",
        "wire",
    )

    def __init__(self) -> None:
        self.state = IDLE
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.informational: list[dict[str, Any]] = []
        self.body = bytearray()
        self.body_total = 0
        self.wire = 0
        self.ts_first = 0
        self.ts_last = 0
        self.unknown = 0
        self.cut = False  # a capture gap removed part of this side
        self.grpc: grpc.MessageFramer | None = None

    def step(self, event: str) -> bool:
        row = _NEXT_STATE.get(self.state)
        nxt = row.get(event) if row is not None else None
        if nxt is None:
            return False
        self.state = nxt
        return True

    def touch(self, ts: int, size: int) -> None:
        if not self.ts_first:
            self.ts_first = ts
        self.ts_last = ts
        self.wire += size


class _Stream:
    __slots__ = ("emitted", "pushed", "req", "resp", "sid", "upgraded")

    def __init__(self, sid: int, upgraded: bool = False) -> None:
        self.sid = sid
        self.req = _Side()
        self.resp = _Side()
        self.pushed = False
        # Stream 1 after `Upgrade: h2c`: its request went as HTTP/1.1 (§3.2 of RFC 7540).
        self.upgraded = upgraded
        self.emitted = False


class _Block:
    """A header block being collected across HEADERS/PUSH_PROMISE and CONTINUATION (§6.10)."""

    __slots__ = ("data", "end_stream", "frames", "promised", "sid", "ts", "wire")

    def __init__(
        self, sid: int, promised: int, end_stream: bool, data: bytearray, frames: int, ts: int, wire: int
    ) -> None:
        self.sid = sid
        self.promised = promised
        self.end_stream = end_stream
        self.data = data
        self.frames = frames
        self.ts = ts
        self.wire = wire


class _Direction:
    """Frames of one sender: preface, framing limits, header blocks and the HPACK decoder."""

    __slots__ = ("block", "buf", "checks", "hpack", "is_client", "max_frame", "resync", "started", "trimmed")

    def __init__(self, is_client: bool) -> None:
        self.is_client = is_client
        self.buf = bytearray()
        self.hpack = HpackDecoder()
        self.started = False  # first bytes seen (preface for the client, SETTINGS for the server)
        self.max_frame = DEFAULT_MAX_FRAME  # what the receiving peer allows (its SETTINGS)
        self.block: _Block | None = None
        self.resync = False  # after a gap or a mid-frame start: look for a frame boundary first
        self.checks = 0  # candidate offsets examined by the resynchronisation under way
        self.trimmed = False  # it dropped bytes: the buffer no longer starts where the gap ended


def _strip_padding(flags: int, payload: bytes) -> bytes | None:
    """RFC 9113 §6.1/§6.2/§6.6: Pad Length octet, then data, then padding; None if malformed."""
    if not flags & PADDED:
        return payload
    if not payload:
        return None
    pad = payload[0]
    if pad >= len(payload):  # padding must be shorter than the payload (§6.1)
        return None
    return payload[1 : len(payload) - pad]


def _join(fields: list[tuple[str, str]]) -> dict[str, str]:
    """Header list → {lower-case name: value} without pseudo-headers (what `:unknown-N` stand-ins are
    kept); repeats joined (cookies with "; ", RFC 9113 §8.2.3)."""
    out: dict[str, str] = {}
    for name, value in fields:
        if name.startswith(":") and not name.startswith(":unknown-"):
            continue
        key = name.lower()
        old = out.get(key)
        out[key] = value if old is None else f"{old}{'; ' if key == 'cookie' else ', '}{value}"
    return out


def _split(fields: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """(pseudo-headers, headers) in one pass: the pseudo-headers (and `:unknown-N` stand-ins) by
    lower-case name, repeats joined with ", "; and what `_join` gives."""
    pseudo: dict[str, str] = {}
    headers: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        if name.startswith(":"):
            old = pseudo.get(key)
            pseudo[key] = value if old is None else f"{old}, {value}"
            if not name.startswith(":unknown-"):
                continue
        old = headers.get(key)
        headers[key] = value if old is None else f"{old}{'; ' if key == 'cookie' else ', '}{value}"
    return pseudo, headers


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not header:
        return out
    for pair in header.split(";"):
        k, eq, v = pair.strip().partition("=")
        if eq and k:
            out[k] = v
    return out


def _set_cookies(fields: list[tuple[str, str]]) -> dict[str, str]:
    """Each set-cookie field is its own header line in HTTP/2; the name=value before attributes."""
    out: dict[str, str] = {}
    for name, value in fields:
        if name == "set-cookie":
            k, eq, v = value.split(";", 1)[0].strip().partition("=")
            if eq and k:
                out[k] = v
    return out


def _query(qs: str) -> dict[str, list[str]]:
    return form_pairs(qs, -1) if qs else {}


class Http2Session:
    """Both directions of one HTTP/2 connection.

    `upgraded`: the session follows an HTTP/1.1 `Upgrade: h2c` (RFC 7540 §3.2), so stream 1's request
    went as HTTP/1.1 and only its response is seen here.
    """

    __slots__ = (
        "cap",
        "client",
        "counters",
        "goaway",
        "max_client_sid",
        "max_push_sid",
        "schemas",
        "server",
        "streams",
        "upgraded",
    )

    def __init__(self, config: SessionConfig, upgraded: bool = False) -> None:
        self.cap = config.body_cap
        self.client = _Direction(True)
        self.server = _Direction(False)
        self.streams: OrderedDict[int, _Stream] = OrderedDict()
        self.max_client_sid = 0
        self.max_push_sid = 0
        self.upgraded = upgraded
        self.schemas = grpc.SchemaStore.from_config(config)
        self.counters: dict[str, int] = {}
        # The first GOAWAY with an error code: streams still open at the end of the flow died with it.
        self.goaway: dict[str, Any] | None = None
        if upgraded:
            self.max_client_sid = 1
            self.streams[1] = _Stream(1, upgraded=True)
            self.streams[1].req.state = ENDED

    # ---- bytes in ---------------------------------------------------------------------------

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        out: list[Event] = []
        d = self.client if from_client else self.server
        if not d.buf and d.started and not d.resync:
            # Bytes that start on a frame boundary (most segments): framed where they are.
            self._frames(d, bytes(data), ts, out)
            return out
        d.buf += data
        buf = d.buf
        if not d.started:
            if from_client:
                n = min(len(buf), len(PREFACE))
                if buf[:n] == PREFACE[:n]:
                    if n < len(PREFACE):
                        return out
                    del buf[: len(PREFACE)]
                else:
                    self._pickup(d)
                d.started = True
            else:
                if len(buf) < FRAME_HEADER:
                    return out
                if buf[3] != SETTINGS or buf[4] & ACK:  # §3.4: the server's preface is a SETTINGS frame
                    self._pickup(d)
                d.started = True
        if d.resync:
            at, hopeless, checked = _boundary(buf, d.is_client, not d.trimmed)
            d.checks += checked
            if at is None:
                if len(buf) > MAX_RESYNC_SCAN or d.checks > MAX_RESYNC_CHECKS:
                    self._count("resync_failures")
                    out.append(Violation("http2: no frame boundary found after a gap"))
                    buf.clear()
                elif hopeless:  # bytes that can start no frame are let go, never scanned again
                    self._count("resync_skipped_bytes", hopeless)
                    del buf[:hopeless]
                    d.trimmed = True
                return out
            if at:
                self._count("resync_skipped_bytes", at)
                del buf[:at]
            d.resync = d.trimmed = False
            d.checks = 0
        n = len(buf)
        if n < FRAME_HEADER:
            return out
        length = (buf[0] << 16) | (buf[1] << 8) | buf[2]
        if n < FRAME_HEADER + length and length <= self._limit(d):
            return out  # the frame under way is still incomplete (and allowed): nothing to copy yet
        work = bytes(buf)
        buf.clear()
        self._frames(d, work, ts, out)
        return out

    def _limit(self, d: _Direction) -> int:
        """§4.2: the receiver's SETTINGS_MAX_FRAME_SIZE; unknown settings (pickup) leave only our own
        buffering bound."""
        return min(d.max_frame if d.hpack.complete else MAX_FRAME_BYTES, MAX_FRAME_BYTES)

    def _frames(self, d: _Direction, work: bytes, ts: int, out: list[Event]) -> None:
        """Every whole frame in `work` (which starts on a frame boundary, `d.buf` being empty); the
        bytes of an incomplete last frame wait in `d.buf`."""
        pos = 0
        n = len(work)
        while n - pos >= FRAME_HEADER:
            length = (work[pos] << 16) | (work[pos + 1] << 8) | work[pos + 2]
            limit = self._limit(d)
            if length > limit:
                self._count("frames_too_large")
                out.append(Violation(f"http2: frame of {length} bytes above the allowed {limit}"))
                return
            end = pos + FRAME_HEADER + length
            if end > n:
                break
            ftype = work[pos + 3]
            flags = work[pos + 4]
            sid = (
                ((work[pos + 5] & 0x7F) << 24) | (work[pos + 6] << 16) | (work[pos + 7] << 8) | work[pos + 8]
            )
            payload = work[pos + FRAME_HEADER : end]
            pos = end
            if not self._frame(d, ftype, flags, sid, payload, FRAME_HEADER + length, ts, out):
                d.buf.clear()
                return
        if pos < n:
            d.buf += work[pos:] if pos else work

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        """Lost bytes: framing resumes at the next plausible frame header, the HPACK table is from then
        on partly unknown (like a mid-stream pickup), and streams open in this direction are cut."""
        self._count("gaps")
        d = self.client if from_client else self.server
        d.buf.clear()
        if d.block is not None:
            self._count("header_blocks_lost")
            d.block = None
        d.resync = True
        d.started = True
        d.hpack.complete = False
        for stream in self.streams.values():
            side = stream.req if from_client else stream.resp
            if side.state == OPEN:
                side.cut = True
                if side.grpc is not None:
                    side.grpc.lost()
        return []

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        for stream in list(self.streams.values()):
            if not stream.emitted:
                self._emit(stream, out, self.goaway)
        self.streams.clear()
        return out

    # ---- frames -----------------------------------------------------------------------------

    def _pickup(self, d: _Direction) -> None:
        """The capture began mid-connection: this direction's HPACK table is unknown (RFC 7541 §2.3.2),
        and the first bytes may be the middle of a frame."""
        d.hpack.complete = False
        d.resync = True
        self._count("midstream_pickups")

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _frame(
        self,
        d: _Direction,
        ftype: int,
        flags: int,
        sid: int,
        payload: bytes,
        wire: int,
        ts: int,
        out: list[Event],
    ) -> bool:
        rule = FRAME_RULES.get(ftype)
        block = d.block
        if block is not None and (ftype != CONTINUATION or sid != block.sid):
            return self._bad("frame interleaved inside a header block", out)  # §6.10
        if rule is None:
            return True  # §5.5: unknown frame types are ignored
        name, sid_rule, exact, minimum = rule
        if (sid_rule == ZERO and sid) or (sid_rule == NONZERO and not sid):
            return self._bad(f"{name} on stream {sid}", out)
        if (exact is not None and len(payload) != exact) or len(payload) < minimum:
            return self._bad(f"{name} of {len(payload)} bytes", out)
        self._count(_FRAME_COUNTERS[ftype])
        if ftype == DATA:
            return self._data(d, flags, sid, payload, wire, ts, out)
        if ftype == HEADERS:
            body = _strip_padding(flags, payload)
            if body is None:
                return self._bad("HEADERS padding", out)
            if flags & PRIORITY_FLAG:
                if len(body) < 5:
                    return self._bad("HEADERS priority", out)
                body = body[5:]
            if flags & END_HEADERS:  # the whole block in this frame: decoded from it, nothing collected
                return self._header_block(d, sid, 0, bool(flags & END_STREAM), body, ts, wire, out)
            d.block = _Block(sid, 0, bool(flags & END_STREAM), bytearray(body), 1, ts, wire)
            return True
        if ftype == CONTINUATION:
            if block is None:
                if not d.hpack.complete:  # its HEADERS went by before the capture or in a gap
                    self._count("orphan_continuations")
                    return True
                return self._bad("CONTINUATION without a header block", out)
            block.data += payload
            block.frames += 1
            block.wire += wire
            if len(block.data) > MAX_HEADER_BLOCK or block.frames > MAX_CONTINUATIONS:
                self._count("continuation_floods")
                return self._bad("header block too large (CONTINUATION flood)", out)
            return self._maybe_block(d, flags, out)
        if ftype == PUSH_PROMISE:
            if d.is_client:
                return self._bad("PUSH_PROMISE from the client", out)  # §8.4
            body = _strip_padding(flags, payload)
            if body is None or len(body) < 4:
                return self._bad("PUSH_PROMISE padding", out)
            promised = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            if not promised or promised % 2:
                return self._bad("PUSH_PROMISE of an odd stream", out)  # §5.1.1: server streams are even
            d.block = _Block(sid, promised, False, bytearray(body[4:]), 1, ts, wire)
            return self._maybe_block(d, flags, out)
        if ftype == RST_STREAM:
            code = int.from_bytes(payload, "big")
            stream = self.streams.get(sid)
            if stream is None:
                stream = self._stream(sid, out)
            side = stream.req if d.is_client else stream.resp
            side.touch(ts, wire)
            if not stream.emitted:
                who = "client" if d.is_client else "server"
                name = ERROR_CODES.get(code, hex(code))
                self._emit(stream, out, {"frame": "RST_STREAM", "code": code, "name": name, "by": who})
            self.streams.pop(sid, None)
            return True
        if ftype == SETTINGS:
            return self._settings(d, flags, payload, out)
        if ftype == GOAWAY:
            return self._goaway(d, payload, wire, ts, out)
        return True  # PRIORITY, PING, WINDOW_UPDATE: flow control and priority are not ours to judge

    def _bad(self, reason: str, out: list[Event]) -> bool:
        self._count("violations")
        out.append(Violation(f"http2: {reason}"))
        return False

    def _settings(self, d: _Direction, flags: int, payload: bytes, out: list[Event]) -> bool:
        """RFC 9113 §6.5: what the sender allows its peer; applied to the opposite direction."""
        if flags & ACK:
            return len(payload) == 0 or self._bad("SETTINGS ACK with a payload", out)
        if len(payload) % 6:
            return self._bad("SETTINGS length not a multiple of 6", out)
        other = self.server if d.is_client else self.client
        for i in range(0, len(payload), 6):
            ident = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if ident == SETTINGS_HEADER_TABLE_SIZE:
                other.hpack.set_limit(value)
            elif ident == SETTINGS_ENABLE_PUSH and value > 1:
                return self._bad("SETTINGS_ENABLE_PUSH not 0 or 1", out)
            elif ident == SETTINGS_INITIAL_WINDOW_SIZE and value > 0x7FFFFFFF:
                return self._bad("SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1", out)
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_SIZE_SETTING:
                    return self._bad("SETTINGS_MAX_FRAME_SIZE out of range", out)
                other.max_frame = value
        return True

    def _goaway(self, d: _Direction, payload: bytes, wire: int, ts: int, out: list[Event]) -> bool:
        """RFC 9113 §6.8: the sender stops taking new streams. Not a call: counted on the connection by
        its code. The streams its receiver opened above `last_stream_id` were never processed (refused,
        safe to retry) and end now, as errors; with an error code, so do the streams still open when the
        connection ends."""
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        code = int.from_bytes(payload[4:8], "big")
        self._count("goaway_no_error" if code == NO_ERROR else "goaway_errors")
        by = "client" if d.is_client else "server"
        name = ERROR_CODES.get(code, hex(code))
        receiver_parity = 1 if not d.is_client else 0  # §5.1.1: clients open odd streams, servers even
        for stream in list(self.streams.values()):
            if stream.sid > last and stream.sid % 2 == receiver_parity and not stream.emitted:
                ended = {"frame": "GOAWAY", "code": code, "name": name, "by": by, "last_stream_id": last}
                self._emit(stream, out, ended)
                self.streams.pop(stream.sid, None)
        if code != NO_ERROR and self.goaway is None:
            self.goaway = {"frame": "GOAWAY", "code": code, "name": name, "by": by, "last_stream_id": last}
        return True

    def _closed(self, sid: int) -> bool:
        """A stream this session saw open and already closed out (RFC 9113 §5.1 "closed")."""
        if sid in self.streams:
            return False
        if sid % 2:
            return sid <= self.max_client_sid and self.client.hpack.complete
        return sid <= self.max_push_sid

    def _stream(self, sid: int, out: list[Event]) -> _Stream:
        stream = _Stream(sid)
        self.streams[sid] = stream
        if len(self.streams) > MAX_STREAMS:
            _, old = self.streams.popitem(last=False)
            self._count("streams_evicted")
            if not old.emitted:
                self._emit(old, out, None)
        return stream

    def _maybe_block(self, d: _Direction, flags: int, out: list[Event]) -> bool:
        if not flags & END_HEADERS:
            return True
        block = d.block
        assert block is not None
        d.block = None
        return self._header_block(
            d, block.sid, block.promised, block.end_stream, bytes(block.data), block.ts, block.wire, out
        )

    def _header_block(
        self,
        d: _Direction,
        sid: int,
        promised: int,
        end_stream: bool,
        data: bytes,
        ts: int,
        wire: int,
        out: list[Event],
    ) -> bool:
        """A complete header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) for stream `sid`."""
        fields: list[tuple[str, str]] = []
        try:
            unknown, _ = d.hpack.decode_into(data, fields)
        except HpackError as exc:
            self._count("hpack_errors")
            return self._bad(f"HPACK: {exc}", out)
        if unknown:
            self._count("hpack_unknown", unknown)
        if promised:
            return self._promise(promised, ts, wire, fields, unknown, out)
        stream = self.streams.get(sid)
        code: int | None = None
        if d.is_client:
            if sid % 2 == 0:
                return self._bad(f"client HEADERS on even stream {sid}", out)  # §5.1.1
            if stream is None:
                if sid <= self.max_client_sid and d.hpack.complete:
                    self._count("stream_id_reuse")
                    return self._bad(f"stream id {sid} reused", out)  # §5.1.1
                self.max_client_sid = max(self.max_client_sid, sid)
                stream = self._stream(sid, out)
            side = stream.req
            event = E_HEADERS if side.state == IDLE else E_TRAILERS
        else:
            if stream is None:
                if self._closed(sid):
                    self._count("frames_on_closed_streams")  # §5.1: late frames after RST_STREAM
                    return True
                stream = self._stream(sid, out)
            side = stream.resp
            if side.state == IDLE:
                code = decimal(_header(fields, ":status") or "", 3, exact=True)
                event = E_INFO if code is not None and 100 <= code < 200 else E_HEADERS
            else:
                event = E_TRAILERS
        if not side.step(event):
            self._count("stream_state_errors")
            return self._bad(f"{event} on stream {sid} in state {side.state}", out)
        side.touch(ts, wire)
        side.unknown += unknown
        if event == E_INFO:
            if len(side.informational) < MAX_INFORMATIONAL:
                side.informational.append({"status": code, "headers": _join(fields)})
        elif event == E_HEADERS:
            side.headers = fields
            if grpc.is_grpc(_header(stream.req.headers, "content-type") or _header(fields, "content-type")):
                side.grpc = grpc.MessageFramer(self.cap)
        else:
            side.trailers = fields
        if end_stream:
            side.step(E_END)
        self._after(stream, d.is_client, out)
        return True

    def _promise(
        self, promised: int, ts: int, wire: int, fields: list[tuple[str, str]], unknown: int, out: list[Event]
    ) -> bool:
        """RFC 9113 §8.4: a pushed stream's request is the promise; its response follows on it."""
        if promised in self.streams:
            self._count("stream_id_reuse")
            return self._bad(f"promised stream {promised} already in use", out)
        stream = self._stream(promised, out)
        self.max_push_sid = max(self.max_push_sid, promised)
        stream.pushed = True
        req = stream.req
        req.headers = fields
        req.unknown = unknown
        req.state = ENDED
        req.touch(ts, wire)
        return True

    def _data(
        self, d: _Direction, flags: int, sid: int, payload: bytes, wire: int, ts: int, out: list[Event]
    ) -> bool:
        data = _strip_padding(flags, payload)
        if data is None:
            return self._bad("DATA padding", out)
        stream = self.streams.get(sid)
        if stream is None:
            if self._closed(sid):
                self._count("frames_on_closed_streams")  # §5.1: after it was closed out; ignored
                return True
            stream = self._stream(sid, out)
            self._count("streams_without_headers")
            if d.is_client:
                self.max_client_sid = max(self.max_client_sid, sid)
        side = stream.req if d.is_client else stream.resp
        if stream.emitted:
            self._count("data_after_entry")
            return True
        if not side.step(E_DATA):
            self._count("stream_state_errors")
            return self._bad(f"DATA on stream {sid} in state {side.state}", out)
        side.touch(ts, wire)
        side.body_total += len(data)
        if side.grpc is None and side.headers == [] and stream.req.grpc is not None and not d.is_client:
            side.grpc = grpc.MessageFramer(self.cap)
        if side.grpc is not None:
            side.grpc.feed(data)
        else:
            room = self.cap - len(side.body)
            if room > 0:
                side.body += data[:room]
        if flags & END_STREAM:
            side.step(E_END)
        self._after(stream, d.is_client, out)
        return True

    def _after(self, stream: _Stream, from_client: bool, out: list[Event]) -> None:
        """A stream becomes an entry when its response ends (the call is over for the client)."""
        if stream.resp.state == ENDED and not stream.emitted:
            self._emit(stream, out, None)
            if stream.req.state == ENDED:
                self.streams.pop(stream.sid, None)

    # ---- entries ----------------------------------------------------------------------------

    def _emit(self, stream: _Stream, out: list[Event], reset: dict[str, Any] | None) -> None:
        stream.emitted = True
        req, resp = stream.req, stream.resp
        key = stream.sid
        cap = self.cap
        req_fields: dict[str, Any] | None = None
        if not stream.upgraded and (req.headers or req.ts_first):
            req_fields = _request_fields(stream, cap, req.grpc is not None)
            if req.state != ENDED:
                req_fields["complete"] = False
            if req.grpc is not None:
                grpc.enrich_request(req_fields, req.grpc, self.schemas)
                self._count("grpc_messages", len(req_fields["messages"]))
            graphql.enrich_request(req_fields)
            out.append(Message(True, req.ts_first, req.ts_last, req.wire, req_fields, key, False, req.cut))
        if resp.ts_first or reset is not None or req_fields is None:
            ts_first = resp.ts_first or req.ts_last
            is_grpc = resp.grpc is not None or req.grpc is not None
            resp_fields = _response_fields(stream, cap, is_grpc)
            if reset is not None:
                resp_fields["reset"] = reset
                resp_fields["error"] = {"type": "connection", "message": _ended_by(reset, stream.sid)}
            if is_grpc:
                grpc.enrich_response(resp_fields, resp.grpc, req_fields, self.schemas)
                self._count("grpc_messages", len(resp_fields["messages"]))
            if req_fields is not None:
                graphql.enrich_response(req_fields, resp_fields)
                if (req_fields.get("path") or "").endswith("ServerReflectionInfo") and resp.grpc is not None:
                    self.schemas = self.schemas.learn(resp.grpc.payloads())
            out.append(
                Message(
                    False,
                    ts_first,
                    resp.ts_last or ts_first,
                    resp.wire,
                    resp_fields,
                    key,
                    stream.upgraded,
                    resp.cut,
                )
            )


def _ended_by(reset: dict[str, Any], sid: int) -> str:
    """The error message of a stream a RST_STREAM or GOAWAY ended, naming the code (RFC 9113 §7)."""
    if reset["frame"] != "GOAWAY":
        return f"{reset['name']} from the {reset['by']} on stream {sid}"
    if sid > reset["last_stream_id"]:
        return (
            f"GOAWAY {reset['name']} from the {reset['by']}: stream {sid} refused "
            f"(above last stream {reset['last_stream_id']}, not processed)"
        )
    return f"GOAWAY {reset['name']} from the {reset['by']}: stream {sid} still open when the connection ended"


def _header(fields: list[tuple[str, str]], name: str) -> str | None:
    for k, v in fields:
        if k == name:
            return v
    return None


def _body(side: _Side, headers: dict[str, str], cap: int) -> dict[str, Any]:
    return body_object(bytes(side.body), side.body_total, headers, cap, side.body_total > len(side.body))


def _request_fields(stream: _Stream, cap: int, is_grpc: bool) -> dict[str, Any]:
    """The request object; a gRPC one gets its body from `grpc.enrich_request` (in the same place)."""
    side = stream.req
    pseudo, headers = _split(side.headers)
    method = pseudo.get(":method")
    target = pseudo.get(":path")
    scheme = pseudo.get(":scheme", "http")
    authority = pseudo.get(":authority") or headers.get("host", "")
    path, _, qs = (target or "").partition("?")
    fields: dict[str, Any] = {
        "method": method,
        "url": f"{scheme}://{authority}{target or ''}",
        "path": path or None,
        "query_string": qs,
        "query": _query(qs),
        "http_version": "2",
        "headers": headers,
        "cookies": _cookies(headers.get("cookie", "")),
        "body": None if is_grpc else _body(side, headers, cap),
        "stream": stream.sid,
    }
    if pseudo.get(":protocol"):  # RFC 8441 extended CONNECT
        fields["protocol"] = pseudo[":protocol"]
    if stream.pushed:
        fields["pushed"] = True
    if side.unknown:
        fields["headers_unknown"] = side.unknown
    if not side.headers:
        fields["headers_missing"] = True
    return fields


def _response_fields(stream: _Stream, cap: int, is_grpc: bool) -> dict[str, Any]:
    """The response object; a gRPC one gets its body from `grpc.enrich_response` (in the same place)."""
    side = stream.resp
    pseudo, headers = _split(side.headers)
    fields: dict[str, Any] = {
        # RFC 9113 §8.3.2, RFC 9110 §15: three ASCII digits, anything else is no status at all.
        "status": decimal(pseudo.get(":status", ""), 3, exact=True),
        "http_version": "2",
        "headers": headers,
        "trailers": _join(side.trailers),
        "cookies": _set_cookies(side.headers),
        "body": None if is_grpc else _body(side, headers, cap),
        "stream": stream.sid,
    }
    if side.informational:
        fields["informational"] = side.informational
    if side.unknown:
        fields["headers_unknown"] = side.unknown
    if stream.upgraded:
        fields["upgraded_from"] = "http/1.1"
    return fields


# ---- detection --------------------------------------------------------------------------------


def _boundary(buf: bytearray, client: bool, at_gap: bool) -> tuple[int | None, int, int]:
    """(offset where well-formed frames resume after a gap or None, how many leading bytes can never
    start a frame, offsets examined). A frame header that runs past the buffer is taken at the very
    start when that is where the gap ended (`at_gap`: segments after a loss usually start on a frame).
    A NO is final — more bytes cannot mend a malformed header — so the bytes before the first
    undecided offset may be dropped."""
    limit = max(min(len(buf) - FRAME_HEADER + 1, MAX_RESYNC_SCAN), 0)
    hopeless = -1
    with memoryview(buf) as view:
        for at in range(limit):
            if view[at + 3] not in FRAME_RULES:
                continue
            verdict = _plausible_frames(view[at:], client, strict=False)
            if verdict == Verdict.YES or (verdict == Verdict.MAYBE and at == 0 and at_gap):
                return at, 0, at + 1
            if verdict == Verdict.MAYBE and hopeless < 0:
                hopeless = at
    return None, limit if hopeless < 0 else hopeless, limit


def _plausible_frames(data: bytes | memoryview, client: bool, strict: bool = True) -> Verdict:
    """Mid-stream heuristic: consecutive well-formed frame headers that end exactly or run on (the
    first MAX_CHECKED_FRAMES of them are enough)."""
    pos = 0
    frames = 0
    while len(data) - pos >= FRAME_HEADER:
        if frames >= MAX_CHECKED_FRAMES:
            return Verdict.YES
        length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
        ftype = data[pos + 3]
        rule = FRAME_RULES.get(ftype)
        sid_raw = int.from_bytes(data[pos + 5 : pos + 9], "big")
        if rule is None or sid_raw & 0x80000000 or length > MAX_FRAME_BYTES:
            return Verdict.NO
        _, sid_rule, exact, minimum = rule
        if (sid_rule == ZERO and sid_raw) or (sid_rule == NONZERO and not sid_raw):
            return Verdict.NO
        if (exact is not None and length != exact) or length < minimum:
            return Verdict.NO
        first_ok = ftype in (HEADERS, SETTINGS, DATA, WINDOW_UPDATE, PING) or (
            ftype == PUSH_PROMISE and not client
        )
        if strict and frames == 0 and not first_ok:
            return Verdict.NO
        if client and ftype == HEADERS and sid_raw % 2 == 0:
            return Verdict.NO
        if ftype == HEADERS and length and frames == 0 and pos + FRAME_HEADER < len(data):
            first = data[pos + FRAME_HEADER]
            # A header block opens with an HPACK representation (RFC 7541 §6): never 0x00-0x0F with
            # a zero name index followed by an empty name, which random bytes often are.
            if first == 0x00 and pos + FRAME_HEADER + 1 < len(data) and data[pos + FRAME_HEADER + 1] == 0:
                return Verdict.NO
        frames += 1
        pos += FRAME_HEADER + length
        if ftype == HEADERS and frames == 1 and pos == len(data):
            return Verdict.YES
    if frames >= 2 or (frames == 1 and pos == len(data)):
        return Verdict.YES
    return Verdict.MAYBE if frames == 1 or len(data) < FRAME_HEADER else Verdict.NO


# RFC 7541 §6 first octets of a header block that name a request or a response pseudo-header
# (Appendix A: indexes 1-7 are :authority/:method/:path/:scheme, 8-14 are :status), as an indexed
# field, a literal with incremental indexing, without indexing, or never indexed.
_REQUEST_OPENERS: Final = frozenset(
    [*range(0x81, 0x88), *range(0x41, 0x48), *range(0x01, 0x08), *range(0x11, 0x18)]
)
_RESPONSE_OPENERS: Final = frozenset([*range(0x88, 0x8F), 0x48, 0x08, 0x18])


def _role(data: bytes | memoryview) -> str | None:
    """ "request" or "response" from the first HEADERS block among the first MAX_CHECKED_FRAMES
    frames in `data` (frames already plausible)."""
    pos = 0
    frames = 0
    while len(data) - pos >= FRAME_HEADER and frames < MAX_CHECKED_FRAMES:
        frames += 1
        length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
        if data[pos + 3] == HEADERS:
            flags = data[pos + 4]
            at = pos + FRAME_HEADER + (1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0)
            while at < len(data) and data[at] & 0xE0 == 0x20 and data[at] != 0x3F:  # size update (§6.3)
                at += 1
            if at >= len(data) or at >= pos + FRAME_HEADER + length:
                return None
            first = data[at]
            if first in _REQUEST_OPENERS:
                return "request"
            if first in _RESPONSE_OPENERS:
                return "response"
            return None
        pos += FRAME_HEADER + length
    return None


def _aligned(data: bytes, client: bool) -> bytes:
    """The first bytes from a frame boundary: a capture may begin inside a frame. Only a chain of whole
    frames holding a header block that names its side is taken as a boundary found later on."""
    if len(data) < FRAME_HEADER or _plausible_frames(data, client) != Verdict.NO:
        return data
    with memoryview(data) as view:
        for at in range(1, min(len(data) - FRAME_HEADER, MAX_PROBE_SHIFT)):
            if view[at + 3] not in FRAME_RULES:
                continue
            rest = view[at:]  # a view, not a copy: most offsets are rejected at their first header
            if _plausible_frames(rest, client, strict=False) == Verdict.YES and _role(rest) is not None:
                return data[at:]
    return data


def probe(client: bytes, server: bytes) -> Verdict:
    """The client preface (RFC 9113 §3.4) says yes at once. Mid-connection, both sides must frame
    plausibly and a header block must say which side asks: the client's opens with a request
    pseudo-header, the server's with :status. Without a header block yet, the answer is MAYBE."""
    if client:
        n = min(len(client), len(PREFACE))
        if client[:n] == PREFACE[:n]:
            return Verdict.YES if n == len(PREFACE) else Verdict.MAYBE
    try:
        client, server = _aligned(client, True), _aligned(server, False)
        mine = _plausible_frames(client, True) if client else Verdict.MAYBE
        theirs = _plausible_frames(server, False) if server else Verdict.MAYBE
        if mine == Verdict.NO and theirs == Verdict.NO:
            return Verdict.NO
        asks, answers = _role(client), _role(server)
        if asks == "response" or answers == "request":
            return Verdict.NO  # the other orientation
        if Verdict.NO in (mine, theirs):
            # One side starts inside a frame too long to see past (a big header block or DATA frame):
            # the other side alone must show which end of an HTTP/2 connection it is.
            seen = answers if mine == Verdict.NO else asks
            return Verdict.YES if seen is not None else Verdict.MAYBE
        if asks == "request" or answers == "response":
            return Verdict.YES
        return Verdict.MAYBE
    except Exception:  # a probe never raises
        return Verdict.NO


def present(req: Message | None, resp: Message | None) -> Presented:
    """Top-level fields: gRPC and GraphQL entries are presented in their own terms."""
    rf = req.fields if req is not None else {}
    sf = resp.fields if resp is not None else {}
    stream = rf.get("stream", sf.get("stream"))
    status = sf.get("status")
    if "service" in rf or "grpc_status" in sf:
        return grpc.present(rf, sf, stream)
    if "operation_type" in rf:
        return graphql.present(rf, sf, stream, "2")
    method = rf.get("method")
    path = rf.get("path")
    if req is not None:
        summary = f"{method} {path}" + (f" → {status}" if status is not None else "")
    else:
        summary = f"→ {status}" if status is not None else "→ (no response headers)"
    if "reset" in sf:
        reset = sf["reset"]
        summary += f" {'GOAWAY' if reset['frame'] == 'GOAWAY' else 'RST'} {reset['name']}"
    # Positional: keywords cost a dict per call to this (interpreted) dataclass, one call per entry.
    return Presented(method, path, status, summary, "2", str(stream) if stream is not None else None)


def classify(req: dict[str, Any] | None, resp: dict[str, Any] | None) -> dict[str, Any]:
    """Entry fields a stream sets beyond `Presented`: its `protocol` ("grpc", "graphql" or "http2")
    and the `error` it carries on its own (ended by RST_STREAM/GOAWAY: connection; GraphQL errors in
    a 200)."""
    out: dict[str, Any] = {}
    if (req is not None and "service" in req) or (resp is not None and "grpc_status" in resp):
        out["protocol"] = "grpc"
    elif req is not None and "operation_type" in req:
        out["protocol"] = "graphql"
    else:
        out["protocol"] = "http2"
    for side in (resp, req):
        if side is None:
            continue
        if side.get("error"):
            out["error"] = dict(side["error"])
            break
        if side.get("graphql_error"):
            out["error"] = dict(side["graphql_error"])
            break
    return out


def _upgraded_session(config: SessionConfig) -> Http2Session:
    return Http2Session(config, upgraded=True)


SPEC: Final = ProtocolSpec(
    name="http2",
    transports=("tcp",),
    ports=(),
    probe=probe,
    session=Http2Session,
    present=present,
    matcher="key",
    classify=classify,
    classified_as=("grpc", "graphql"),
)

# Reached from HTTP/1.1 `Upgrade: h2c` + 101 (the HTTP/1 parser names the upgrade "h2c").
H2C_SPEC: Final = ProtocolSpec(
    name="h2c",
    transports=("tcp",),
    ports=(),
    probe=probe,
    session=_upgraded_session,
    present=present,
    matcher="key",
    detect=False,
    protocol="http2",
    classify=classify,
    classified_as=("grpc", "graphql"),
)

"""Redis (RESP2 and RESP3): commands and replies paired in order, pub/sub pushes as entries of their own.

Rule: each direction is one resumable tokenizer over a bounded buffer — it keeps at most one
unfinished token (a line or a bulk body within the body cap; a larger bulk is streamed, its first
bytes kept), and the aggregates being filled as a stack — so a reply split over many segments is read
once, never re-parsed from its start. Values are kept up to the body cap per message (strings cut,
items beyond MAX_ITEMS counted, not kept). Passwords (AUTH, HELLO … AUTH, MIGRATE AUTH/AUTH2,
CONFIG SET requirepass/masterauth, ACL SETUSER >pass) are replaced by the redaction marker here,
before any entry exists.

The wire format is the RESP specification (redis.io/docs/latest/develop/reference/protocol-spec):
RESP2 types `+ - : $ *`, RESP3 types `_ , # ! = ( % ~ | >`, and inline commands (a plain line).
A server array whose first element names a pub/sub event (`message`, `subscribe` …) on a connection
that subscribed, and every RESP3 `>` frame, is a push: an entry of its own, never a reply.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation

# What replaces a password: the dissector's redaction marker (redact.MARKER; a test holds them equal).
REDACTED: Final = "[REDACTED]"
# Redis's own limit on an inline command line (PROTO_INLINE_MAX_SIZE); status, error and length lines
# are far shorter, so a longer unfinished line is not RESP.
MAX_LINE: Final = 64 * 1024
# Redis's default proto-max-bulk-len (512 MB): a longer bulk string is not RESP.
MAX_BULK: Final = 512 * 1024 * 1024
# Elements an aggregate may claim (Redis caps a request at 1024*1024*1024 arguments; replies likewise).
MAX_AGGREGATE: Final = 1 << 30
# Nesting kept on the stack; real replies nest a handful of levels (COMMAND DOCS, XINFO STREAM FULL).
MAX_DEPTH: Final = 64
# Values (strings, numbers, containers) kept per message; the rest is counted, not kept.
MAX_ITEMS: Final = 1024
# Requests this side remembers as unanswered (matching.MAX_PENDING): beyond, pushes are not told apart.
MAX_OUTSTANDING: Final = 256

_CRLF: Final = b"\r\n"
# Type bytes (RESP spec "RESP protocol description").
_LINE_TYPES: Final = frozenset(b"+-:,#(_")
_BULK_TYPES: Final = frozenset(b"$!=")
_AGG_TYPES: Final = frozenset(b"*%~>|")
RESP_TYPES: Final = _LINE_TYPES | _BULK_TYPES | _AGG_TYPES
_RESP3_TYPES: Final = frozenset(b"_,#!=(%~>|")
TYPE_NAMES: Final = {
    ord("+"): "simple", ord("-"): "error", ord(":"): "integer", ord("$"): "bulk", ord("*"): "array",
    ord("_"): "null", ord(","): "double", ord("#"): "boolean", ord("!"): "error", ord("="): "verbatim",
    ord("("): "bignum", ord("%"): "map", ord("~"): "set", ord(">"): "push", ord("|"): "attribute",
}  # fmt: skip
# Type bytes as constants (Final: compiled code reads them as C constants, not module lookups).
_STAR: Final = 0x2A  # *
_DOLLAR: Final = 0x24  # $
_MINUS: Final = 0x2D  # -
_PUSH: Final = 0x3E  # >
_ATTR: Final = 0x7C  # |
_MAP: Final = 0x25  # %
_PLUS: Final = 0x2B  # +
_COLON: Final = 0x3A  # :
_CR: Final = 13
_LF: Final = 10
# Each type byte's class, one table lookup per value: 1 a line, 2 a bulk string, 3 an aggregate.
_LINE: Final = 1
_BULK: Final = 2
_AGG: Final = 3
_CLASS: Final = bytes(
    _LINE if b in _LINE_TYPES else _BULK if b in _BULK_TYPES else _AGG if b in _AGG_TYPES else 0
    for b in range(256)
)
# Digits read by the fast path of a length or integer line (more go through int()).
_MAX_DIGITS: Final = 18

# Pub/sub: commands answered by pushes (never a reply), and the pushes' kinds.
SUBSCRIBE_COMMANDS: Final = frozenset(
    {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"}
)
PUSH_KINDS: Final = frozenset(
    {"message", "pmessage", "smessage", "subscribe", "psubscribe", "ssubscribe", "unsubscribe",
     "punsubscribe", "sunsubscribe"}
)  # fmt: skip
# Commands whose second word names what they do (`CLIENT SETNAME`, `CONFIG GET`).
CONTAINERS: Final = frozenset(
    {"ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE",
     "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO"}
)  # fmt: skip
# Commands with no key (their first argument is something else).
KEYLESS: Final = frozenset(
    {"ACL", "AUTH", "BGREWRITEAOF", "BGSAVE", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DBSIZE",
     "DEBUG", "DISCARD", "ECHO", "EXEC", "FAILOVER", "FLUSHALL", "FLUSHDB", "FUNCTION", "HELLO", "INFO",
     "KEYS", "LASTSAVE", "LATENCY", "LOLWUT", "MODULE", "MONITOR", "MULTI", "PING", "PSYNC", "PUBSUB",
     "QUIT", "RANDOMKEY", "READONLY", "READWRITE", "REPLCONF", "REPLICAOF", "RESET", "ROLE", "SAVE",
     "SCAN", "SCRIPT", "SELECT", "SHUTDOWN", "SLAVEOF", "SLOWLOG", "SWAPDB", "SYNC", "TIME", "UNWATCH",
     "WAIT", "WAITAOF"}
)  # fmt: skip
# Where the key is when it is not the first argument.
KEY_AT: Final = {"BITOP": 1, "OBJECT": 1, "MEMORY": 1, "XINFO": 1, "XGROUP": 1, "MIGRATE": 2}
_SCRIPTS: Final = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_STREAM_READS: Final = frozenset({"XREAD", "XREADGROUP"})
# CONFIG SET parameters whose value is a password.
SECRET_CONFIG: Final = frozenset({"requirepass", "masterauth"})
# Commands that may carry a password (`redact_args` changes nothing in any other), and the methods they
# give (`CONFIG SET`, `ACL SETUSER`) as prefixes.
_WITH_SECRETS: Final = frozenset({"AUTH", "HELLO", "MIGRATE", "CONFIG", "ACL"})
_SECRET_PREFIXES: Final = tuple(f"{name} " for name in sorted(_WITH_SECRETS))
# Commands whose method or key `_command_of` works out by a rule of their own; any other's key is its
# first argument.
_KEY_RULES: Final = CONTAINERS | KEYLESS | _SCRIPTS | _STREAM_READS | frozenset(KEY_AT)


def _may_hold_secret(command: str) -> bool:
    """Whether a request's `command` is one of `_WITH_SECRETS` (alone or with its subcommand)."""
    return command in _WITH_SECRETS or command.startswith(_SECRET_PREFIXES)


# Inline commands the probe accepts when the server answers with a plain `+`/`-` line (POP3 servers
# answer `+OK` too, so an unknown word there is not enough).
INLINE_COMMANDS: Final = frozenset(
    {"append", "auth", "bitcount", "client", "command", "config", "dbsize", "decr", "decrby", "del",
     "echo", "exists", "expire", "flushall", "flushdb", "get", "getset", "hdel", "hello", "hget",
     "hgetall", "hincrby", "hmget", "hmset", "hset", "incr", "incrby", "info", "keys", "llen", "lpop",
     "lpush", "lrange", "mget", "monitor", "mset", "multi", "exec", "discard", "object", "persist",
     "ping", "psubscribe", "publish", "quit", "rpop", "rpush", "sadd", "scan", "select", "set",
     "setex", "setnx", "smembers", "srem", "strlen", "subscribe", "ttl", "type", "unlink", "xadd",
     "xrange", "zadd", "zrange", "zrem", "zscore"}
)  # fmt: skip
# A client frame that starts mid-stream: the next `*N\r\n$` after a line end.
_RESYNC_CLIENT: Final = re.compile(rb"\r\n(?=\*\d{1,10}\r\n\$)")
_RESYNC_SERVER: Final = re.compile(rb"\r\n(?=[-+:$*_,#!=(%~>|])")
# Inline arguments (Redis sdssplitargs): "double quoted", 'single quoted' or bare words.
_INLINE_ARG: Final = re.compile(rb'"((?:\\.|[^"\\])*)"|\'([^\']*)\'|(\S+)')
_ESCAPES: Final = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.S)
_ESCAPE_CHARS: Final = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}


def _unescape(m: re.Match[bytes]) -> bytes:
    s = m.group(1)
    if s[:1] == b"x" and len(s) == 3:
        return bytes([int(s[1:], 16)])
    return _ESCAPE_CHARS.get(s, s)


def inline_args(line: bytes) -> list[bytes]:
    """The words of an inline command line, quotes resolved as Redis does."""
    out: list[bytes] = []
    for m in _INLINE_ARG.finditer(line):
        if m.group(1) is not None:
            out.append(_ESCAPES.sub(_unescape, m.group(1)))
        elif m.group(2) is not None:
            out.append(m.group(2))
        else:
            out.append(m.group(3))
    return out


def _text(raw: bytes | bytearray) -> str:
    return raw.decode("utf-8", "replace")


class RespError(ValueError):
    """Bytes that are not RESP (caught inside this module; never escapes)."""


class _Agg:
    """An aggregate being filled: its type byte, elements still to come, elements kept."""

    __slots__ = ("items", "kind", "left", "size")

    def __init__(self, kind: int, left: int) -> None:
        self.kind = kind
        self.left = left  # elements still to come (a map's pairs count twice)
        self.size = left
        self.items: list[Any] = []


class _Direction:
    """One sender's frames: tokens read from a bounded buffer into a stack of open aggregates."""

    __slots__ = (
        "attrs",
        "budget",
        "buf",
        "bulk",
        "cap",
        "cut",
        "is_client",
        "items_left",
        "msg_first",
        "msg_size",
        "msg_started",
        "msg_type",
        "need",
        "skipped",
        "stack",
        "synced",
    )

    def __init__(self, is_client: bool, cap: int) -> None:
        self.is_client = is_client
        self.cap = cap
        # Bytes of an unfinished token, held until the next segment (parsing reads whole `bytes`).
        self.buf = bytearray()
        # Bytes `buf` must hold before the token can finish (a bulk string within the cap): until
        # then a segment is only appended, never parsed again.
        self.need = 0
        self.stack: list[_Agg] = []
        # The bulk string being streamed: [kind, bytes kept, length, bytes still to skip (with CRLF)].
        self.bulk: list[Any] | None = None
        self.synced = False  # the first frame boundary was found
        self.skipped = False  # bytes before it were passed over (a frame cut by the capture's start)
        self.attrs: Any = None  # a RESP3 attribute map waiting for the reply it annotates
        self._reset_message()

    def _reset_message(self) -> None:
        self.msg_started = False
        self.msg_first = 0
        self.msg_size = 0
        self.msg_type = 0
        self.budget = self.cap
        self.items_left = MAX_ITEMS
        self.cut = False
        self.attrs = None

    def reset(self) -> None:
        """Forget everything in hand (a gap): the next frame boundary must be found again."""
        self.buf.clear()
        self.need = 0
        self.stack.clear()
        self.bulk = None
        self.synced = False
        self._reset_message()

    # ---- tokens --------------------------------------------------------------------------------

    def feed(self, data: bytes, ts: int, out: list[tuple[int, Any, bool, int, int]]) -> None:
        """Read `data`; each finished top-level value goes to `out` as (type, value, cut, first, size)."""
        if self.bulk is not None:
            data = self._stream(data, ts, out)
            if not data:
                return
        held = self.buf
        if held or not self.synced:
            held += data
            if len(held) < self.need:
                return  # the bulk string in hand is not whole yet: nothing to read
            if not self.synced and not self._sync():
                return
            buf = bytes(held)
            held.clear()
        else:
            buf = data if type(data) is bytes else bytes(data)
        self.need = 0
        pos = 0
        n = len(buf)
        stack = self.stack
        is_client = self.is_client
        try:
            while pos < n:
                t = buf[pos]
                if not self.msg_started and not stack and self.attrs is None:
                    # A whole message at a message boundary, in one pass (the usual case: a command,
                    # a status, an integer, a string, an array of strings); anything else, or a
                    # message not whole in `buf`, goes the general way below, which reads it the same.
                    end = -1
                    if t == _STAR:
                        end = self._strings(buf, pos, n, ts, out)
                    elif not is_client:
                        end = self._scalar(t, buf, pos, n, ts, out)
                    if end > 0:
                        pos = end
                        continue
                if not self.msg_started:
                    self.msg_started = True
                    self.msg_first = ts
                    self.msg_type = t
                cls = _CLASS[t]
                if cls == _BULK:
                    length, eol = _number(buf, pos + 1, n)
                    if eol == -2:  # not a plain number: as int() reads it (or rejects it)
                        eol = buf.find(_CRLF, pos)
                        if eol >= 0:
                            length = int(buf[pos + 1 : eol])
                    if eol < 0:
                        self._check_line(n - pos)
                        break
                    if length < 0:
                        if length != -1:
                            raise RespError("negative bulk length")
                        self.msg_size += eol + 2 - pos
                        pos = eol + 2
                        self._value(None, out)
                        continue
                    if length > MAX_BULK:
                        raise RespError("bulk string beyond proto-max-bulk-len")
                    start = eol + 2
                    end = start + length
                    if end + 2 <= n:
                        if buf[end] != _CR or buf[end + 1] != _LF:
                            raise RespError("bulk string not followed by CRLF")
                        self.msg_size += end + 2 - pos
                        pos = end + 2
                        if stack and self.items_left <= 0:
                            self._value(None, out)  # beyond MAX_ITEMS: counted, not decoded
                        else:
                            raw = buf[start : start + min(length, max(self.budget, 0))]
                            self._value(self._bulk_value(t, raw, length), out)
                        continue
                    if length <= self.cap:
                        self.need = end + 2 - pos
                        break  # within the cap: taken whole once it is all here
                    # Beyond the cap: keep what the budget allows and stream the rest past.
                    self.msg_size += n - pos
                    kept = buf[start : start + min(length, self.budget, n - start)]
                    self.bulk = [t, kept, length, end + 2 - n]
                    pos = n
                    break
                if self.is_client and not stack and t != _STAR:
                    # An inline command: one plain line (RESP spec, "Inline commands"); Redis ends it
                    # at LF and drops a CR before it.
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        self._check_line(n - pos)
                        break
                    self.msg_size += nl + 1 - pos
                    words = inline_args(buf[pos:nl])
                    pos = nl + 1
                    self.msg_type = 0
                    if words:
                        self._inline(words, out)
                    else:
                        self._reset_message()  # an empty line: Redis ignores it
                    continue
                if cls == _AGG:
                    count, eol = _number(buf, pos + 1, n)
                    if eol == -2:
                        eol = buf.find(_CRLF, pos)
                        if eol >= 0:
                            count = int(buf[pos + 1 : eol])
                    if eol < 0:
                        self._check_line(n - pos)
                        break
                    self.msg_size += eol + 2 - pos
                    pos = eol + 2
                    if count < 0:
                        if count != -1 or t not in (_STAR, _DOLLAR):
                            raise RespError("negative aggregate length")
                        self._value(None, out)
                        continue
                    if count > MAX_AGGREGATE:
                        raise RespError("aggregate too long")
                    if len(stack) >= MAX_DEPTH:
                        raise RespError("aggregates nested too deep")
                    if self.is_client and (t != _STAR or stack):
                        raise RespError("a client sends arrays of bulk strings")
                    agg = _Agg(t, count * 2 if t in (_MAP, _ATTR) else count)
                    if agg.left == 0:
                        self._value(self._finish(agg), out, agg.kind)
                    else:
                        stack.append(agg)
                    continue
                eol = buf.find(_CRLF, pos)
                if eol < 0:
                    self._check_line(n - pos)
                    break
                if cls != _LINE:
                    raise RespError(f"unknown type byte {t:#x}")
                line = buf[pos + 1 : eol]
                self.msg_size += eol + 2 - pos
                pos = eol + 2
                if stack and self.items_left <= 0:
                    _check_value(t, line)  # beyond MAX_ITEMS: checked and counted, not kept
                    self._value(None, out)
                else:
                    self._value(self._line_value(t, line), out)
        except (RespError, ValueError) as exc:
            raise RespError(str(exc)) from None
        if pos < n:
            held += memoryview(buf)[pos:]

    def _check_line(self, size: int) -> None:
        if size > MAX_LINE:
            raise RespError("line longer than Redis allows")

    def _strings(
        self, buf: bytes, pos: int, n: int, ts: int, out: list[tuple[int, Any, bool, int, int]]
    ) -> int:
        """An array of (non-null) bulk strings at `pos`, whole in `buf` — every command, and many
        replies — read in one pass and put in `out`: where it ends, or -1 when it is anything else
        (then the general path reads it, with the same result, or rejects it)."""
        count, eol = _number(buf, pos + 1, n)
        if eol < 0 or count <= 0 or count > MAX_ITEMS:
            return -1
        p = eol + 2
        budget = self.budget  # a whole message's: nothing of this one is kept yet
        cut = False
        values: list[Any] = []
        for _ in range(count):
            if p >= n or buf[p] != _DOLLAR:
                return -1
            length, eol = _number(buf, p + 1, n)
            if eol < 0 or length < 0:
                return -1
            start = eol + 2
            end = start + length
            if end + 2 > n or buf[end] != _CR or buf[end + 1] != _LF:
                return -1
            keep = length if length <= budget else max(budget, 0)
            if keep < length:
                cut = True
            budget -= keep
            values.append(buf[start : start + keep].decode("utf-8", "replace"))
            p = end + 2
        out.append((_STAR, values, cut, ts, p - pos))
        return p

    def _scalar(
        self, t: int, buf: bytes, pos: int, n: int, ts: int, out: list[tuple[int, Any, bool, int, int]]
    ) -> int:
        """A whole status, error, integer or (non-null) bulk string reply at `pos`, put in `out`: where
        it ends, or -1 for anything else (read by the general path)."""
        if t in (_PLUS, _MINUS):
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                return -1
            text = buf[pos + 1 : eol].decode("utf-8", "replace")
            out.append((t, text if t == _PLUS else _Error(text), False, ts, eol + 2 - pos))
            return eol + 2
        if t == _COLON:
            value, eol = _number(buf, pos + 1, n)
            if eol < 0:
                return -1
            out.append((t, value, False, ts, eol + 2 - pos))
            return eol + 2
        if t == _DOLLAR:
            length, eol = _number(buf, pos + 1, n)
            if eol < 0 or length < 0:
                return -1
            start = eol + 2
            end = start + length
            if end + 2 > n or buf[end] != _CR or buf[end + 1] != _LF:
                return -1
            keep = length if length <= self.budget else max(self.budget, 0)
            raw = buf[start : start + keep]
            out.append((t, raw.decode("utf-8", "replace"), keep < length, ts, end + 2 - pos))
            return end + 2
        return -1

    def _sync(self) -> bool:
        """Find the first frame boundary (the stream may start mid-frame); False = need more bytes."""
        buf = self.buf
        if not buf:
            return False
        t = buf[0]
        if self.is_client:
            m = None if t == _STAR else _RESYNC_CLIENT.search(buf)
            word = "" if t == _STAR else _inline_word(bytes(buf[:64]))
            # A frame start, or an inline command (a known one, or a word with no RESP frame after it).
            if t == _STAR or word in INLINE_COMMANDS or (word and m is None):
                self.synced = True
                return True
        else:
            eol = buf.find(_CRLF)
            if t in RESP_TYPES and (eol < 0 or _line_ok(t, bytes(buf[1:eol]))):
                self.synced = True
                return True
            m = _RESYNC_SERVER.search(buf)
        if m is None:
            if len(buf) > MAX_LINE:
                del buf[: len(buf) - 2]  # keep a possible CRLF's first half
            return False
        del buf[: m.end()]
        self.synced = True
        self.skipped = True
        return True

    def _stream(self, data: bytes, ts: int, out: list[tuple[int, Any, bool, int, int]]) -> bytes:
        """Bytes of the streamed bulk string: the kept part grows to the budget; the rest is skipped."""
        bulk = self.bulk
        assert bulk is not None
        kind, kept, length, left = bulk
        take = min(left, len(data))
        self.msg_size += take
        room = min(length, self.budget) - len(kept)
        if room > 0:
            kept += data[: min(room, take, left - 2 if left > 2 else 0)]
            bulk[1] = kept
        left -= take
        bulk[3] = left
        if left:
            return b""
        self.bulk = None
        if data[take - 2 : take] != _CRLF and take >= 2:
            raise RespError("bulk string not followed by CRLF")
        self._value(self._bulk_value(kind, kept, length), out)
        return data[take:]

    # ---- values --------------------------------------------------------------------------------

    def _bulk_value(self, t: int, raw: bytes | bytearray, length: int) -> Any:
        if len(raw) < length:
            self.cut = True
        self.budget -= len(raw)
        if t == _DOLLAR:
            return _text(raw)
        if t == _MINUS or t == ord("!"):
            return _Error(_text(raw))
        text = _text(raw)  # verbatim: "txt:" or "mkd:" and the text (RESP3)
        return text[4:] if len(text) >= 4 and text[3] == ":" else text

    def _line_value(self, t: int, line: bytes) -> Any:
        if t == ord("+"):
            return _text(line)
        if t == _MINUS:
            return _Error(_text(line))
        if t == ord(":"):
            number = int(line)  # a signed 64-bit integer; beyond that, kept as text like a big number
            return number if -0x8000000000000000 <= number <= 0x7FFFFFFFFFFFFFFF else _text(line)
        if t == ord("_"):
            return None
        if t == ord("#"):
            if line not in (b"t", b"f"):
                raise RespError("boolean is neither t nor f")
            return line == b"t"
        if t == ord(","):
            value = float(line)
            return value if math.isfinite(value) else _text(line)  # JSON holds no inf or nan
        int(line)  # a big number: digits, kept as text (JSON cannot hold it)
        return _text(line)

    def _value(self, value: Any, out: list[tuple[int, Any, bool, int, int]], kind: int = 0) -> None:
        """A finished value: into the open aggregate, or out as a message when nothing is open."""
        stack = self.stack
        while stack:
            top = stack[-1]
            if kind == _ATTR:
                kind = 0  # an attribute annotates what follows; it is not an element
                self.attrs = value
                return
            if self.items_left > 0:
                top.items.append(value)
                self.items_left -= 1
            else:
                self.cut = True
            top.left -= 1
            if top.left:
                return
            stack.pop()
            kind = top.kind
            value = self._finish(top)
        if kind == _ATTR:
            self.attrs = value  # a top-level attribute: it belongs to the reply that follows
            self.msg_started = False
            return
        if self.attrs is not None:  # told before the value they annotate
            out.append((_ATTR, self.attrs, False, 0, 0))
        out.append((self.msg_type, value, self.cut, self.msg_first, self.msg_size))
        self._reset_message()

    def _finish(self, agg: _Agg) -> Any:
        items = agg.items
        if agg.kind in (_MAP, _ATTR):
            return {_key(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
        return items

    def _inline(self, words: list[bytes], out: list[tuple[int, Any, bool, int, int]]) -> None:
        values: list[Any] = []
        for w in words[:MAX_ITEMS]:
            kept = w[: max(self.budget, 0)]
            self.budget -= len(kept)
            if len(kept) < len(w):
                self.cut = True
            values.append(_text(kept))
        if len(words) > MAX_ITEMS:
            self.cut = True
        out.append((0, values, self.cut, self.msg_first, self.msg_size))
        self._reset_message()


def _number(buf: bytes, pos: int, n: int) -> tuple[int, int]:
    """A plain decimal line at `pos` (`-`, then at most _MAX_DIGITS digits, then CRLF): its value and
    where its CR is. (0, -1): the bytes end before the line does; (0, -2): some other line, for int()."""
    i = pos
    negative = i < n and buf[i] == _MINUS
    if negative:
        i += 1
    first = i
    value = 0
    while i < n:
        c = buf[i]
        if 48 <= c <= 57:
            value = value * 10 + (c - 48)
            i += 1
            continue
        if c == _CR and first < i <= first + _MAX_DIGITS:
            if i + 1 >= n:
                return 0, -1
            if buf[i + 1] == _LF:
                return (-value if negative else value), i
        return 0, -2
    return 0, -1


def _check_value(t: int, line: bytes) -> None:
    """What `_line_value` rejects, for a value that is counted but not kept."""
    if t in (ord(":"), ord("(")):
        int(line)
    elif t == ord("#"):
        if line not in (b"t", b"f"):
            raise RespError("boolean is neither t nor f")
    elif t == ord(","):
        float(line)


class _Error:
    """An error reply's text, told apart from a string reply until the entry is built (`_plain`)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _key(value: Any) -> str:
    if type(value) is str:
        return value
    return value.text if isinstance(value, _Error) else str(value)


def _plain(value: Any) -> Any:
    """Error texts inside aggregates (EXEC's answers) become {"error": text}."""
    if isinstance(value, _Error):
        return {"error": value.text}
    if type(value) is list:
        return [_plain(v) for v in value]
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    return value


def _has_error(value: Any) -> bool:
    if isinstance(value, _Error):
        return True
    if type(value) is list:
        return any(_has_error(v) for v in value)
    if type(value) is dict:
        return any(_has_error(v) for v in value.values())
    return False


def _inline_word(head: bytes) -> str:
    word = head.split(None, 1)[0] if head.strip() else b""
    ok = word[:1].isalpha() and word.replace(b"_", b"").replace(b"-", b"").isalnum()
    return word.decode("ascii", "replace").lower() if ok else ""


def _line_ok(t: int, line: bytes) -> bool:
    """Whether a first reply line is sane for its type byte (the probe's and the resync's check)."""
    if t in (ord("+"), _MINUS):
        return True
    if t == ord("_"):
        return line == b""
    if t == ord("#"):
        return line in (b"t", b"f")
    if t == ord(","):
        try:
            float(line)
        except ValueError:
            return False
        return True
    body = line[1:] if line[:1] == b"-" else line
    return 0 < len(body) <= 19 and body.isdigit()


# ---- commands ----------------------------------------------------------------------------------


def command_of(args: list[str]) -> tuple[str, str | None]:
    """(method, key): the command upper-case (`CLIENT SETNAME` for a subcommand) and its key, if any."""
    if not args:
        return "", None
    return _command_of(args[0].upper(), args)


def _command_of(name: str, args: list[str]) -> tuple[str, str | None]:
    """`command_of` for a command whose upper-case name is `name` (told once per request)."""
    if name not in _KEY_RULES:  # most commands (GET, SET, INCR …): the key is the first argument
        return name, args[1] if len(args) > 1 else None
    method = name
    if name in CONTAINERS and len(args) > 1:
        method = f"{name} {args[1].upper()}"
    rest = args[1:]
    if name in _SCRIPTS:
        try:
            has_keys = len(rest) > 2 and int(rest[1]) > 0
        except ValueError:
            has_keys = False
        return method, rest[2] if has_keys else None
    if name in _STREAM_READS:
        for i, word in enumerate(rest):
            if word.upper() == "STREAMS":
                return method, rest[i + 1] if i + 1 < len(rest) else None
        return method, None
    at = KEY_AT.get(name)
    if at is not None:
        return method, rest[at] if at < len(rest) else None
    if name in KEYLESS or not rest:
        return method, None
    return method, rest[0]


def redact_args(args: list[str]) -> list[int]:
    """Replace passwords in a command's arguments by the marker, in place; the indices replaced."""
    if not args:
        return []
    name = args[0].upper()
    hits: list[int] = []
    if name == "AUTH" and len(args) > 1:
        hits.append(len(args) - 1)  # AUTH password | AUTH username password
    elif name in ("HELLO", "MIGRATE"):
        for i in range(1, len(args)):
            word = args[i].upper()
            if word == "AUTH" and name == "HELLO":
                hits.append(i + 2)  # HELLO protover AUTH username password
            elif word == "AUTH":
                hits.append(i + 1)  # MIGRATE … AUTH password
            elif word == "AUTH2" and name == "MIGRATE":
                hits.append(i + 2)  # MIGRATE … AUTH2 username password
    elif name == "CONFIG" and len(args) > 2 and args[1].upper() == "SET":
        for i in range(2, len(args) - 1, 2):
            if args[i].lower() in SECRET_CONFIG:
                hits.append(i + 1)
    elif name == "ACL" and len(args) > 2 and args[1].upper() == "SETUSER":
        for i in range(3, len(args)):
            if args[i][:1] in (">", "<", "#", "!"):
                args[i] = args[i][0] + REDACTED
                hits.append(i)
        return hits
    hits = [i for i in hits if i < len(args)]
    for i in hits:
        args[i] = REDACTED
    return hits


# ---- the session -------------------------------------------------------------------------------


class RedisSession:
    """Both directions of one connection: requests, replies and pushes as Messages."""

    __slots__ = ("client", "counters", "monitor", "orphans", "outstanding", "resp3", "server", "subscribed")

    def __init__(self, config: SessionConfig) -> None:
        self.client = _Direction(True, config.body_cap)
        self.server = _Direction(False, config.body_cap)
        self.subscribed = False  # the client sent a (P|S)SUBSCRIBE: RESP2 pushes may come
        self.monitor = False  # MONITOR was answered: every later server line is a push
        self.resp3 = False  # HELLO 3 was sent, or a RESP3-only type was seen
        self.outstanding = 0  # requests sent and not yet answered (as far as this side counts)
        # Replies still due to a command whose start the capture missed: dropped, never paired.
        self.orphans = 0
        self.counters: dict[str, int] = {}

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        side = self.client if from_client else self.server
        frames: list[tuple[int, Any, bool, int, int]] = []
        try:
            side.feed(data, ts, frames)
        except RespError as exc:
            side.reset()
            return [*self._messages(from_client, frames, ts), Violation(f"redis: {exc}")]
        if side.skipped:
            side.skipped = False
            if from_client:
                self.orphans += 1
        return self._messages(from_client, frames, ts) if frames else []

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        # A lost request or reply would shift every later pair (FIFO): give the flow up honestly.
        return [Violation("redis: capture gap inside the command stream")]

    def close(self, ts: int) -> list[Event]:
        return []

    def _messages(
        self, from_client: bool, frames: list[tuple[int, Any, bool, int, int]], ts: int
    ) -> list[Event]:
        out: list[Event] = []
        attrs: Any = None
        for t, value, cut, first, size in frames:
            if t == _ATTR:
                attrs = value
                continue
            if from_client:
                if value:  # an empty array is no command (Redis skips it)
                    out.append(self._request(value, cut, first, ts, size))
            else:
                reply = self._reply(t, value, cut, first, ts, size, attrs)
                if reply is not None:
                    out.append(reply)
            attrs = None
        return out

    def _request(self, value: Any, cut: bool, first: int, ts: int, size: int) -> Message:
        args: list[str]
        if type(value) is list:
            args = value
            for v in value:
                if type(v) is not str:
                    args = [v if type(v) is str else str(v) for v in value]
                    break
        else:
            args = [str(value)]
        count = len(args)
        # Upper-cased once: the name decides redaction, the method and key, and the session's state.
        name = args[0].upper() if count else ""
        if name in _WITH_SECRETS:
            redact_args(args)
        method, key = _command_of(name, args) if count else ("", None)
        fields: dict[str, Any] = {"command": method, "args": args[1:], "args_count": max(count - 1, 0)}
        if key is not None:
            fields["key"] = key
        if cut:
            fields["truncated"] = True
        standalone = name in SUBSCRIBE_COMMANDS
        if standalone:
            self.subscribed = self.subscribed or not name.startswith(("UN", "PUN", "SUN"))
        else:
            self.outstanding = min(self.outstanding + 1, MAX_OUTSTANDING)
        if name == "HELLO" and count > 1 and args[1] == "3":
            self.resp3 = True
        elif name == "MONITOR":
            self.monitor = True
        # Message's fields in order (is_request, ts_first, ts_last, size, fields, key, standalone,
        # truncated): a positional call costs less than keywords.
        return Message(True, first, ts, size, fields, None, standalone, False)

    def _reply(
        self, t: int, value: Any, cut: bool, first: int, ts: int, size: int, attrs: Any
    ) -> Message | None:
        if t in _RESP3_TYPES:
            self.resp3 = True
        push = t == _PUSH
        if (
            not push
            and t == _STAR
            and (self.subscribed or not self.outstanding)
            and type(value) is list
            and value
            and type(value[0]) is str
            and value[0].lower() in PUSH_KINDS
        ):
            push = True
        elif not push and self.monitor and not self.outstanding:
            push = True  # MONITOR's stream of executed commands
        fields: dict[str, Any] = {"type": TYPE_NAMES.get(t, "simple"), "resp": 3 if self.resp3 else 2}
        if isinstance(value, _Error):
            text = value.text
            fields["value"] = None
            fields["error"] = text
            word, _, rest = text.partition(" ")
            if word in ("MOVED", "ASK"):
                slot, _, address = rest.partition(" ")
                fields["redirect"] = {"kind": word, "slot": int(slot) if slot.isdigit() else None,
                                      "address": address}  # fmt: skip
        else:
            fields["value"] = _plain(value)
            fields["error"] = None
            if t == _STAR and type(value) is list and _has_error(value):
                fields["errors"] = sum(1 for v in value if isinstance(v, _Error))  # EXEC's failed commands
        if type(value) is list:
            fields["count"] = len(value)
        if cut:
            fields["truncated"] = True
        if attrs is not None:
            fields["attributes"] = _plain(attrs)
        if push:
            kind = value[0] if type(value) is list and value and type(value[0]) is str else "monitor"
            fields["push"] = kind.lower()
            if kind.lower() == "subscribe" or kind.lower() in ("psubscribe", "ssubscribe"):
                self.subscribed = True
            return Message(False, first, ts, size, fields, None, True, False)
        if self.orphans:
            # The answer to the command cut by the capture's start (replies come in command order).
            self.orphans -= 1
            self.counters["orphan_replies"] = self.counters.get("orphan_replies", 0) + 1
            return None
        if self.outstanding:
            self.outstanding -= 1
        return Message(False, first, ts, size, fields)


# ---- detection ---------------------------------------------------------------------------------


def _array_of_bulk(data: bytes, pos: int) -> Verdict:
    """Whether `data[pos:]` starts an array of bulk strings whose first is a command word."""
    eol = data.find(_CRLF, pos)
    if eol < 0:
        return Verdict.MAYBE if len(data) - pos < 16 else Verdict.NO
    count = data[pos + 1 : eol]
    if not count.isdigit() or not 0 < int(count) <= MAX_AGGREGATE or len(count) > 10:
        return Verdict.NO
    pos = eol + 2
    if pos >= len(data):
        return Verdict.MAYBE
    if data[pos] != _DOLLAR:
        return Verdict.NO
    eol = data.find(_CRLF, pos)
    if eol < 0:
        return Verdict.MAYBE if len(data) - pos < 16 else Verdict.NO
    length = data[pos + 1 : eol]
    if not length.isdigit() or not 0 < int(length) <= 64:
        return Verdict.NO
    start = eol + 2
    word = data[start : start + int(length)]
    if not word.replace(b"_", b"").replace(b"-", b"").replace(b".", b"").isalnum():
        return Verdict.NO if len(word) == int(length) else Verdict.MAYBE
    if len(word) < int(length):
        return Verdict.MAYBE
    tail = data[start + len(word) : start + len(word) + 2]
    if len(tail) < 2:
        return Verdict.MAYBE
    return Verdict.YES if tail == _CRLF else Verdict.NO


def _reply_looks_ok(server: bytes, plain_ok: bool) -> Verdict:
    t = server[0]
    if t not in RESP_TYPES or (not plain_ok and t in (ord("+"), _MINUS)):
        return Verdict.NO
    eol = server.find(_CRLF)
    if eol < 0:
        return Verdict.MAYBE if len(server) < MAX_LINE else Verdict.NO
    return Verdict.YES if _line_ok(t, server[1:eol]) else Verdict.NO


def probe(client: bytes, server: bytes) -> Verdict:
    """A RESP array of bulk strings from the client (anywhere after a line end, for a capture that
    starts mid-stream), or an inline command line answered by a RESP reply. Never raises."""
    if not client:
        return Verdict.MAYBE if not server or server[0] in RESP_TYPES else Verdict.NO
    if client[0] == _STAR:
        found = _array_of_bulk(client, 0)
        if found != Verdict.NO:
            return found
    elif client[0] not in RESP_TYPES:
        m = _RESYNC_CLIENT.search(client)
        if m is not None and _array_of_bulk(client, m.end()) == Verdict.YES:
            return Verdict.YES  # a frame follows the first line: commands, maybe after a cut one
        word = _inline_word(client[:64])
        if word and (b"\n" in client or len(client) >= 64):
            if not server:
                return Verdict.MAYBE
            return _reply_looks_ok(server, word in INLINE_COMMANDS)
        if word and len(client) < 64:
            return Verdict.MAYBE  # the first line is not complete yet
        return Verdict.NO  # no frame after a line end (searched above) and no inline command
    m = _RESYNC_CLIENT.search(client)
    if m is not None and _array_of_bulk(client, m.end()) == Verdict.YES:
        return Verdict.YES
    return Verdict.NO


# ---- presentation ------------------------------------------------------------------------------

# Characters of a value shown in a summary.
SUMMARY_VALUE: Final = 60


def _short(value: Any) -> str:
    text = value if type(value) is str else str(value)
    return text if len(text) <= SUMMARY_VALUE else text[:SUMMARY_VALUE] + "…"


def present(req: Message | None, resp: Message | None) -> Presented:
    status: int | None = None
    version: str | None = None
    if resp is not None:
        f = resp.fields
        resp_version = f["resp"]
        if type(resp_version) is int and resp_version == 2:
            version = "RESP2"
        elif type(resp_version) is int and resp_version == 3:
            version = "RESP3"
        else:
            version = f"RESP{resp_version}"
        status = -1 if f["error"] is not None and "redirect" not in f else (1 if "redirect" in f else 0)
        if req is None and "push" in f:
            value = f["value"]
            kind = f["push"]
            if kind == "monitor":
                return Presented(method="MONITOR", status=0, summary=f"← {_short(value)}", version=version)
            parts = value if type(value) is list else []
            channel = (
                parts[2] if kind == "pmessage" and len(parts) > 2 else (parts[1] if len(parts) > 1 else None)
            )
            tail = parts[-1] if len(parts) > 2 else None
            shown = f"{kind} {channel}" if channel is not None else kind
            if tail is not None:
                shown += f": {_short(tail)}" if kind.endswith("message") else f" ({tail})"
            return Presented(
                method=kind.upper(), path=channel if type(channel) is str else None, status=0,
                summary=f"← {shown}", version=version,
            )  # fmt: skip
    if req is None:
        assert resp is not None
        return Presented(status=status, summary=f"← {resp.fields['type']}", version=version)
    rf = req.fields
    method = rf["command"]
    key = rf.get("key")
    summary = f"{method} {key}" if key is not None else method
    if resp is not None and resp.fields["error"] is not None:
        summary += f" → {_short(resp.fields['error'])}"
    return Presented(method, key, status, summary, version)  # in field order: cheaper than keywords


def classify(request: dict[str, Any] | None, response: dict[str, Any] | None) -> dict[str, Any]:
    """An error reply makes an error entry (its prefix, `WRONGTYPE` …, as the type); a password the
    parser replaced is listed in `redacted`."""
    over: dict[str, Any] = {}
    if response is not None:
        text = response.get("error")
        if text is not None and "redirect" not in response:
            over["error"] = {"type": text.split(" ", 1)[0] or "ERR", "message": text}
    if request is not None and _may_hold_secret(request["command"]):
        places = [f"request.args.{i}" for i, a in enumerate(request["args"]) if REDACTED in a]
        if places:
            over["redacted"] = places
    return over


SPEC: Final = ProtocolSpec(
    name="redis",
    transports=("tcp",),
    ports=(6379, 6380, 16379, 26379),
    probe=probe,
    session=RedisSession,
    present=present,
    matcher="fifo",
    classify=classify,
)

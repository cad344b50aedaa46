"""HTTP/1.0 and HTTP/1.1 (RFC 9112): each direction parsed on its own, paired FIFO afterwards.

Rule: a direction is a table-driven state machine over a bounded buffer; a malformed start line,
header or chunk size is a `Violation`, a capture gap truncates the message in hand and resynchronises
on the next start line, and nothing raises.

The header block is located with `bytes.find` and split with C-level bytes methods rather than
llhttp (httptools): llhttp calls back into Python per header, cannot be told that a response answers
a HEAD request (RFC 9110 §9.3.2), and hides how many bytes it consumed when it stops — all three
matter to a passive observer that parses both directions independently.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import unquote

from wiretide.dissector.api import (
    Event,
    Message,
    Presented,
    ProtocolSpec,
    SessionConfig,
    Upgrade,
    Verdict,
    Violation,
)
from wiretide.dissector.protocols import http_overlays
from wiretide.dissector.protocols._body import body_object, form_pairs
from wiretide.dissector.protocols._numbers import decimal

# A header block larger than this is hostile (common servers refuse beyond 8-64 KiB).
MAX_HEAD_BYTES: Final = 64 * 1024
# A start line without its end by this size is not HTTP (or is an attack).
MAX_START_LINE: Final = 16 * 1024
# Header fields kept per message; the rest are counted, not stored (header floods).
MAX_HEADERS: Final = 256
# Client bytes held while waiting to learn whether an upgrade was accepted.
MAX_UPGRADE_WAIT: Final = 64 * 1024
# Bytes kept while looking for the next start line after a gap.
MAX_RESYNC_BYTES: Final = 64 * 1024
# Request methods remembered for the responses to come (HEAD and CONNECT change how one is framed).
MAX_PIPELINED: Final = 1024
# Content-Length digits: 18 stay below 2^63, the largest length any implementation can represent.
MAX_LENGTH_DIGITS: Final = 18

METHODS: Final = frozenset(
    b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE LOCK "
    b"UNLOCK SEARCH REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PURGE LINK "
    b"UNLINK QUERY".split()
)
_MAX_METHOD_LEN: Final = max(len(m) for m in METHODS) + 1
_VERSIONS: Final = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
_REQUEST_START = re.compile(
    rb"(?:^|\n)((?:" + b"|".join(re.escape(m) for m in sorted(METHODS)) + rb") [^ \r\n]+ HTTP/1\.[01]\r?\n)"
)
_RESPONSE_START = re.compile(rb"(?:^|\n)(HTTP/1\.[01] [0-9]{3}[ \r\n])")
# RFC 9110 §5.6.2 token characters.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Direction states.
HEAD: Final = 0
LENGTH: Final = 1
CHUNK_SIZE: Final = 2
CHUNK_DATA: Final = 3
CHUNK_CRLF: Final = 4
TRAILERS: Final = 5
UNTIL_CLOSE: Final = 6
UPGRADE_WAIT: Final = 7
RESYNC: Final = 8
DONE: Final = 9

# Parse results kept by their input bytes. On a keep-alive connection a client sends the same header
# block, the same cookies and often the same targets again and again, and a server the same status
# line and many of the same header lines: a hit costs a dictionary lookup and a copy instead of a
# parse. Each cache is bounded in entries and in key size, and emptied when full (hostile traffic
# that never repeats costs one insertion per miss, never memory).
_CACHE_MAX: Final = 4096
_CACHE_KEY_BYTES: Final = 1024
_BLOCKS: Final[dict[bytes, tuple[dict[str, str], list[str]]]] = {}
_LINES: Final[dict[str, tuple[str, str]]] = {}
_Target = tuple[str, str | None, str, str, tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]]
_TARGETS: Final[dict[bytes, _Target]] = {}
# Whole request lines (method, version, target parts): a client repeats its calls line for line.
_REQUEST_LINES: Final[dict[bytes, tuple[str, str, _Target]]] = {}
_COOKIES: Final[dict[str, dict[str, str]]] = {}
_STATUS_LINES: Final[dict[bytes, tuple[str, int, str]]] = {}
# What `present` made of an exchange, by (method, path, status, version, reason): nothing assigns to a
# Presented, so one instance serves every exchange with the same top-level fields.
_PRESENTED: Final[dict[tuple[str | None, str | None, int | None, str, str | None], Presented]] = {}

_NO_BODY_STATUS: Final = frozenset({204, 304})
_COOKIE_FIELDS: Final = frozenset({"cookie", "set-cookie"})
_CRLF: Final = (13, 10)


class _Message:
    """A message being assembled (mutable; frozen into `Message` when complete)."""

    __slots__ = (
        "body",
        "body_kept",
        "body_total",
        "fields",
        "headers",
        "ordinal",
        "size",
        "trailers",
        "truncated",
        "ts",
    )

    def __init__(self, ts: int, fields: dict[str, Any], headers: dict[str, str], size: int) -> None:
        self.ts = ts
        self.fields = fields
        self.headers = headers
        self.size = size
        self.body: list[bytes] = []
        self.body_kept = 0
        self.body_total = 0
        self.truncated = False
        self.trailers: dict[str, str] | None = None
        self.ordinal: int | None = None  # responses: which request (by order) this one answers


class _Shared:
    """What the two directions of a connection share: the pairing of responses with requests.

    Held by both directions, and holding neither: a connection's objects form no reference cycle,
    so they are freed by reference counting when its flow ends (a cycle per connection left the
    cyclic collector a connection's worth of garbage to find for every new-connection call)."""

    __slots__ = ("answered", "held", "methods", "requests_done", "resume_client")

    def __init__(self) -> None:
        # Methods of the requests not yet answered, allocated by the first request: a list, as a
        # deque costs 600 bytes from its first item and most flows hold one method at a time.
        self.methods: list[str] | None = None
        self.answered = 0  # response heads matched to a request head so far
        self.requests_done = 0  # requests completed so far
        self.held: list[tuple[int, Message]] = []
        self.resume_client = False


class _Direction:
    __slots__ = (
        "buf",
        "cap",
        "cur",
        "informational",
        "is_client",
        "peer",
        "remaining",
        "session",
        "state",
        "upgrade_pending",
    )

    def __init__(self, session: _Shared, is_client: bool, cap: int, peer: _Direction | None) -> None:
        self.session = session
        self.peer = peer  # the server's direction knows the client's (upgrades); never the reverse
        self.is_client = is_client
        self.cap = cap
        self.buf = bytearray()
        self.state = HEAD
        self.cur: _Message | None = None
        self.remaining = 0
        self.informational: list[dict[str, Any]] = []
        self.upgrade_pending = False

    # -- bytes in -----------------------------------------------------------------------------

    def feed(self, data: bytes, ts: int, out: list[Event]) -> None:
        state = self.state
        if state == DONE:
            return
        # (The first byte is tested as an integer: `bytes in bytes` first tries its needle as an
        # integer, a raised and cleared TypeError per call.)
        if state == HEAD and not self.buf and data and data[0] != 13 and data[0] != 10:
            # A segment that starts a message and holds its whole header block (the usual case):
            # the block is cut from `data` itself; only what follows it is buffered.
            i = data.find(b"\r\n\r\n")
            if 0 <= i <= MAX_HEAD_BYTES:
                end = i + 4
                rest = data[end:] if len(data) > end else b""
                if rest:
                    self.buf += rest
                if self._parse_head(data, i, end, ts, out):
                    if self.state == LENGTH and self.remaining == len(rest) <= self.cap:
                        self._whole_body(rest, ts, out)
                    else:
                        self.run(ts, out)
                return
        self.buf += data
        self.run(ts, out)

    def run(self, ts: int, out: list[Event]) -> None:
        steps = _STEPS
        while self.state != DONE and steps[self.state](self, ts, out):
            pass

    def gap(self, size: int, ts: int, out: list[Event]) -> None:
        state = self.state
        cur = self.cur
        if state in (LENGTH, CHUNK_DATA) and cur is not None and size <= self.remaining and not self.buf:
            self.remaining -= size
            cur.truncated = True
            cur.body_total += size
            if state == LENGTH and self.remaining == 0:
                self._complete(ts, out)
            return
        if state == UNTIL_CLOSE and cur is not None:
            cur.truncated = True
            cur.body_total += size
            return
        if state in (DONE, UPGRADE_WAIT):
            return
        if cur is not None:
            cur.truncated = True
            self._complete(ts, out)
        self.buf.clear()
        self.state = RESYNC

    def close(self, ts: int, out: list[Event]) -> None:
        cur = self.cur
        if cur is not None and self.state in (
            UNTIL_CLOSE,
            LENGTH,
            CHUNK_SIZE,
            CHUNK_DATA,
            CHUNK_CRLF,
            TRAILERS,
        ):
            if self.state != UNTIL_CLOSE:
                cur.truncated = True
            self._complete(ts, out)
        self.state = DONE

    # -- states -------------------------------------------------------------------------------

    def _head(self, ts: int, out: list[Event]) -> bool:
        buf = self.buf
        # RFC 9112 §2.2: ignore empty lines before a start line.
        if not buf:
            return False
        if buf[0] in _CRLF:
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":
                del buf[: 2 if buf[:1] == b"\r" else 1]
            if not buf:
                return False
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            j = buf.find(b"\n")
            if j < 0:
                if len(buf) > MAX_START_LINE or not self._plausible_start(bytes(buf[:_MAX_METHOD_LEN])):
                    return self._violate("not an HTTP/1 start line", out)
                return False
            if not self._plausible_start(bytes(buf[:j])):
                return self._violate("not an HTTP/1 start line", out)
            if len(buf) > MAX_HEAD_BYTES:
                return self._violate("header block too large", out)
            k = buf.find(b"\n\n")  # bare-LF line endings (RFC 9112 §2.2 allows accepting them)
            if k < 0:
                return False
            head = bytes(buf[:k])
            consumed = k + 2
        else:
            if i > MAX_HEAD_BYTES:
                return self._violate("header block too large", out)
            head = bytes(buf[:i])
            consumed = i + 4
        del buf[:consumed]
        return self._parse_head(head, len(head), consumed, ts, out)

    def _parse_head(self, data: bytes, n: int, consumed: int, ts: int, out: list[Event]) -> bool:
        """The header block `data[:n]` (start line + fields, without the empty line) of `consumed`
        wire bytes. Its start line and fields are cut from `data` itself: a segment's head is not
        copied out whole first."""
        nl = data.find(b"\n", 0, n)
        if nl < 0:
            start, block = data[:n], b""
        else:
            start = data[: nl - 1] if nl and data[nl - 1] == 13 else data[:nl]
            block = data[nl + 1 : n]
        if self.is_client:
            return self._request_head(start, block, consumed, ts, out)
        return self._response_head(start, block, consumed, ts, out)

    def _plausible_start(self, line: bytes) -> bool:
        if self.is_client:
            method, sp, _ = line.partition(b" ")
            if not sp:
                return any(m.startswith(method) for m in METHODS) if len(method) < _MAX_METHOD_LEN else False
            return _TOKEN.fullmatch(method) is not None
        return b"HTTP/1."[: len(line)] == line[:7] and (len(line) < 8 or line[7:8] in b"01")

    def _violate(self, reason: str, out: list[Event]) -> bool:
        out.append(Violation(f"http: {reason}"))
        self.state = DONE
        self.buf.clear()
        return False

    def _headers(self, block: bytes, out: list[Event]) -> tuple[dict[str, str], list[str], int] | None:
        if not block:
            return {}, [], 0
        hit = _BLOCKS.get(block)
        if hit is not None:
            return hit[0].copy(), hit[1], 0
        # One decode for the whole block; field values may be UTF-8 in practice (RFC 9110 §5.5).
        lines = block.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        if len(lines) < MAX_HEADERS:
            # Usual block: well-formed lines, no folds, no repeated names. Anything else leaves the
            # loop early and is parsed again by `_headers_general`, which knows every case.
            headers: dict[str, str] = {}
            cookies: list[str] = []
            known = _LINES
            for line in lines:
                kv = known.get(line)
                if kv is None:
                    name, colon, value = line.partition(":")
                    if not colon or not name or name[-1] in " \t" or name[0] in " \t":
                        break
                    kv = (name.lower(), value.strip())
                    if len(line) <= _CACHE_KEY_BYTES:
                        if len(known) >= _CACHE_MAX:
                            known.clear()
                        known[line] = kv
                key, val = kv
                if key in headers:
                    break
                headers[key] = val
                if key in _COOKIE_FIELDS:
                    cookies.append(val)
            else:
                if len(block) <= _CACHE_KEY_BYTES:
                    if len(_BLOCKS) >= _CACHE_MAX:
                        _BLOCKS.clear()
                    _BLOCKS[block] = (headers.copy(), cookies)
                return headers, cookies, 0
        return self._headers_general(lines, out)

    def _headers_general(
        self, lines: list[str], out: list[Event]
    ) -> tuple[dict[str, str], list[str], int] | None:
        headers: dict[str, str] = {}
        cookies: list[str] = []
        dropped = 0
        last = ""
        for line in lines:
            if line[:1] in (" ", "\t"):  # obs-fold (RFC 9112 §5.2): continuation of the previous value
                if last:
                    headers[last] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon or not name or name[-1] in " \t":  # RFC 9112 §5.1: no space before the colon
                self._violate("malformed header line", out)
                return None
            if len(headers) >= MAX_HEADERS:
                dropped += 1
                continue
            key = name.lower()
            val = value.strip()
            if key in _COOKIE_FIELDS:
                cookies.append(val)
            old = headers.get(key)
            headers[key] = val if old is None else f"{old}, {val}"
            last = key
        return headers, cookies, dropped

    def _request_head(self, start: bytes, block: bytes, size: int, ts: int, out: list[Event]) -> bool:
        line = _REQUEST_LINES.get(start)
        if line is None:
            method, _, rest = start.partition(b" ")
            target, _, version = rest.rpartition(b" ")
            ver = _VERSIONS.get(version)
            if ver is None or not target or (method not in METHODS and _TOKEN.fullmatch(method) is None):
                return self._violate("malformed request line", out)
            known = _TARGETS.get(target)
            if known is None:
                known = _target(target)
                if len(target) <= _CACHE_KEY_BYTES:
                    if len(_TARGETS) >= _CACHE_MAX:
                        _TARGETS.clear()
                    _TARGETS[target] = known
            line = (method.decode("ascii"), ver, known)
            if len(start) <= _CACHE_KEY_BYTES:
                if len(_REQUEST_LINES) >= _CACHE_MAX:
                    _REQUEST_LINES.clear()
                _REQUEST_LINES[start] = line
        method_s, ver, known = line
        parsed = self._headers(block, out)
        if parsed is None:
            return False
        headers, cookie_lines, dropped = parsed
        target_s, url, path, qs, query_items, segments = known
        if url is None:
            url = f"http://{headers.get('host', '')}{target_s}"
        if len(cookie_lines) == 1:
            cookies = _cookie_pairs(cookie_lines[0])
        else:
            cookies = {}
            for cookie_line in cookie_lines:
                cookies.update(_cookie_pairs(cookie_line))
        fields: dict[str, Any] = {
            "method": method_s,
            "url": url,
            "path": path,
            "path_segments": list(segments),
            "query_string": qs,
            "query": {k: list(v) for k, v in query_items} if query_items else {},
            "http_version": ver,
            "headers": headers,
            "cookies": cookies,
            "body": None,
        }
        if dropped:
            fields["headers_dropped"] = dropped
        cur = self.cur = _Message(ts, fields, headers, size)
        methods = self.session.methods
        if methods is None:
            methods = self.session.methods = []
        methods.append(method_s)
        if len(methods) > MAX_PIPELINED:
            del methods[0]
        self.upgrade_pending = "upgrade" in headers and "upgrade" in headers.get("connection", "").lower()
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if te is not None:
            # RFC 9112 §6.3: a request whose final coding is not chunked cannot be framed.
            if not _chunked(te):
                return self._violate("request transfer-encoding without chunked", out)
            self.state = CHUNK_SIZE
            return True
        if cl is not None:
            n = _content_length(cl)
            if n is None:
                return self._violate("invalid content-length", out)
            if n:
                self.remaining = n
                self.state = LENGTH
                return True
        cur.fields["body"] = body_object(b"", 0, headers, self.cap, False)
        self._complete(ts, out)
        return True

    def _response_head(self, start: bytes, block: bytes, size: int, ts: int, out: list[Event]) -> bool:
        known = _STATUS_LINES.get(start)
        if known is None:
            version, _, rest = start.partition(b" ")
            code, _, reason = rest.partition(b" ")
            ver = _VERSIONS.get(version)
            if ver is None or len(code) != 3 or not code.isdigit():
                return self._violate("malformed status line", out)
            known = (ver, int(code), reason.strip().decode("utf-8", "replace"))
            if len(start) <= _CACHE_KEY_BYTES:
                if len(_STATUS_LINES) >= _CACHE_MAX:
                    _STATUS_LINES.clear()
                _STATUS_LINES[start] = known
        ver, status, reason_s = known
        parsed = self._headers(block, out)
        if parsed is None:
            return False
        headers, cookie_lines, dropped = parsed
        session = self.session
        if 100 <= status < 200 and status != 101:
            # RFC 9110 §15.2: interim responses precede the final one; kept on it.
            self.informational.append(
                {"status": status, "reason": reason_s, "headers": headers, "size": size}
            )
            return True
        method = session.methods.pop(0) if session.methods else None
        cookies: dict[str, str] = {}
        for line in cookie_lines:
            k, eq, v = line.split(";", 1)[0].strip().partition("=")
            if eq and k:
                cookies[k] = v
        fields: dict[str, Any] = {
            "status": status,
            "reason": reason_s,
            "http_version": ver,
            "headers": headers,
            "cookies": cookies,
            "body": None,
        }
        if dropped:
            fields["headers_dropped"] = dropped
        if self.informational:
            fields["informational"] = self.informational
            self.informational = []
        cur = self.cur = _Message(ts, fields, headers, size)
        if method is not None:
            cur.ordinal = session.answered
            session.answered += 1
        client = self.peer
        if client is None:  # only the server's direction parses responses
            return self._violate("a response from the client", out)
        if status == 101:
            cur.fields["body"] = body_object(b"", 0, headers, self.cap, False)
            self._complete(ts, out)
            proto = headers.get("upgrade", "").lower()
            self.state = DONE
            client.state = DONE
            rest = bytes(self.buf)
            self.buf.clear()
            out.append(Upgrade("ws" if "websocket" in proto else proto or "unknown", bytes(client.buf), rest))
            client.buf.clear()
            return False
        if client.state == UPGRADE_WAIT:  # upgrade refused: the client speaks HTTP on
            client.state = HEAD
            session.resume_client = True
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if method == "HEAD" or status in _NO_BODY_STATUS or (method == "CONNECT" and 200 <= status < 300):
            # RFC 9112 §6.3 items 1-2: these responses end with their header section.
            if method == "CONNECT" and 200 <= status < 300:
                cur.fields["body"] = body_object(b"", 0, headers, self.cap, False)
                self._complete(ts, out)
                return self._violate("CONNECT tunnel: the bytes that follow are not HTTP", out)
        elif te is not None:
            self.state = CHUNK_SIZE if _chunked(te) else UNTIL_CLOSE
            return True
        elif cl is not None:
            n = _content_length(cl)
            if n is None:
                return self._violate("invalid content-length", out)
            if n:
                self.remaining = n
                self.state = LENGTH
                return True
        else:
            self.state = UNTIL_CLOSE
            return True
        cur.fields["body"] = body_object(b"", 0, headers, self.cap, False)
        self._complete(ts, out)
        return True

    def _take_body(self, n: int) -> None:
        cur = self.cur
        assert cur is not None
        buf = self.buf
        if cur.body_kept < self.cap:
            piece = bytes(buf[: min(n, self.cap - cur.body_kept)])
            cur.body.append(piece)
            cur.body_kept += len(piece)
        cur.body_total += n
        cur.size += n
        del buf[:n]

    def _whole_body(self, body: bytes, ts: int, out: list[Event]) -> None:
        """The buffer holds exactly the rest of a Content-Length body, all of it under the cap:
        `_length` and `_take_body` in one step, without copying it out of the buffer."""
        cur = self.cur
        assert cur is not None
        n = len(body)
        cur.body.append(body)
        cur.body_kept += n
        cur.body_total += n
        cur.size += n
        self.buf.clear()
        self.remaining = 0
        self._complete(ts, out)

    def _length(self, ts: int, out: list[Event]) -> bool:
        n = min(self.remaining, len(self.buf))
        if n == 0:
            return False
        self._take_body(n)
        self.remaining -= n
        if self.remaining:
            return False
        self._complete(ts, out)
        return True

    def _until_close(self, ts: int, out: list[Event]) -> bool:
        if self.buf:
            self._take_body(len(self.buf))
        return False

    def _chunk_size(self, ts: int, out: list[Event]) -> bool:
        buf = self.buf
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) > MAX_START_LINE:
                return self._violate("chunk size line too long", out)
            return False
        line = bytes(buf[:i]).split(b";", 1)[0].strip()  # RFC 9112 §7.1.1: chunk extensions ignored
        if not line or len(line) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in line):
            return self._violate("invalid chunk size", out)
        del buf[: i + 1]
        assert self.cur is not None
        self.cur.size += i + 1
        n = int(line, 16)
        if n == 0:
            self.state = TRAILERS
        else:
            self.remaining = n
            self.state = CHUNK_DATA
        return True

    def _chunk_data(self, ts: int, out: list[Event]) -> bool:
        n = min(self.remaining, len(self.buf))
        if n == 0:
            return False
        self._take_body(n)
        self.remaining -= n
        if self.remaining:
            return False
        self.state = CHUNK_CRLF
        return True

    def _chunk_crlf(self, ts: int, out: list[Event]) -> bool:
        buf = self.buf
        assert self.cur is not None
        if buf[:2] == b"\r\n":
            del buf[:2]
            self.cur.size += 2
        elif buf[:1] == b"\n":
            del buf[:1]
            self.cur.size += 1
        elif len(buf) >= 2 or (buf and buf[:1] != b"\r"):
            return self._violate("chunk data not followed by CRLF", out)
        else:
            return False
        self.state = CHUNK_SIZE
        return True

    def _trailers(self, ts: int, out: list[Event]) -> bool:
        buf = self.buf
        cur = self.cur
        assert cur is not None
        # RFC 9112 §7.1.2: trailer fields, then an empty line.
        if buf[:2] == b"\r\n" or buf[:1] == b"\n":
            n = 2 if buf[:1] == b"\r" else 1
            del buf[:n]
            cur.size += n
            self._complete(ts, out)
            return True
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            if len(buf) > MAX_HEAD_BYTES:
                return self._violate("trailer section too large", out)
            return False
        block = bytes(buf[:i])
        del buf[: i + 4]
        cur.size += i + 4
        parsed = self._headers(block, out)
        if parsed is None:
            return False
        cur.fields["trailers"] = parsed[0]
        self._complete(ts, out)
        return True

    def _upgrade_wait(self, ts: int, out: list[Event]) -> bool:
        if len(self.buf) > MAX_UPGRADE_WAIT:
            return self._violate("too many bytes before the upgrade answer", out)
        return False

    def _resync(self, ts: int, out: list[Event]) -> bool:
        buf = self.buf
        m = (_REQUEST_START if self.is_client else _RESPONSE_START).search(buf)
        if m is None:
            if len(buf) > MAX_RESYNC_BYTES:
                del buf[: len(buf) - 64]
            return False
        del buf[: m.start(1)]
        self.state = HEAD
        if not self.is_client:  # the matching request is lost in the gap
            session = self.session
            if session.methods and len(session.methods) > 1:
                session.methods.pop(0)
        return True

    def _complete(self, ts: int, out: list[Event]) -> None:
        cur = self.cur
        assert cur is not None
        self.cur = None
        if cur.fields["body"] is None:
            raw = b"".join(cur.body)
            cur.fields["body"] = body_object(
                raw, cur.body_total, cur.headers, self.cap, cur.body_total > cur.body_kept
            )
        msg = Message(self.is_client, cur.ts, ts, cur.size, cur.fields, None, False, cur.truncated)
        session = self.session
        if self.is_client:
            out.append(msg)
            session.requests_done += 1
            if session.held:  # responses that finished before their request did
                ready = [m for o, m in session.held if o < session.requests_done]
                session.held = [(o, m) for o, m in session.held if o >= session.requests_done]
                out.extend(ready)
        elif cur.ordinal is not None and cur.ordinal >= session.requests_done:
            session.held.append((cur.ordinal, msg))  # FIFO pairing needs the request out first
        else:
            out.append(msg)
        if self.is_client and self.upgrade_pending:
            self.upgrade_pending = False
            self.state = UPGRADE_WAIT
        else:
            self.state = HEAD


_STEPS: Final = {
    HEAD: _Direction._head,
    LENGTH: _Direction._length,
    CHUNK_SIZE: _Direction._chunk_size,
    CHUNK_DATA: _Direction._chunk_data,
    CHUNK_CRLF: _Direction._chunk_crlf,
    TRAILERS: _Direction._trailers,
    UNTIL_CLOSE: _Direction._until_close,
    UPGRADE_WAIT: _Direction._upgrade_wait,
    RESYNC: _Direction._resync,
}


def _target(target: bytes) -> _Target:
    """A request target's parts: (origin-form target, absolute URL or None, path, query string, query
    pairs, path segments). Immutable, so that it can be cached; the caller builds fresh containers."""
    target_s = target.decode("utf-8", "replace")
    url: str | None = None
    if target_s.startswith(("http://", "https://")):
        url = target_s
        after = target_s.split("//", 1)[1]
        slash = after.find("/")
        target_s = after[slash:] if slash >= 0 else "/"
    path, _, qs = target_s.partition("?")
    query = _query(qs) if qs else {}
    segments = (
        tuple(unquote(s) for s in path.split("/") if s)
        if "%" in path
        else tuple(filter(None, path.split("/")))
    )
    return target_s, url, path, qs, tuple((k, tuple(v)) for k, v in query.items()), segments


def _cookie_pairs(line: str) -> dict[str, str]:
    """The name=value pairs of one Cookie header (RFC 6265 §5.4), a fresh dict each call."""
    known = _COOKIES.get(line)
    if known is None:
        known = {}
        for pair in line.split(";"):
            k, eq, v = pair.strip().partition("=")
            if eq and k:
                known[k] = v
        if len(line) <= _CACHE_KEY_BYTES:
            if len(_COOKIES) >= _CACHE_MAX:
                _COOKIES.clear()
            _COOKIES[line] = known
    return known.copy()


def _query(qs: str) -> dict[str, list[str]]:
    """application/x-www-form-urlencoded pairs (WHATWG URL §5.1); the first MAX_HEADERS are kept."""
    return form_pairs(qs, MAX_HEADERS)


def _chunked(te: str) -> bool:
    """RFC 9112 §6.3 item 4: chunked framing when chunked is the final coding (empty list items skipped)."""
    codings = [c.strip().lower() for c in te.split(",") if c.strip()]
    return bool(codings) and codings[-1] == "chunked"


def _content_length(value: str) -> int | None:
    """RFC 9110 §8.6: ASCII digits only (at most MAX_LENGTH_DIGITS); a list of equal values is
    accepted, differing ones are not."""
    if value.isascii() and value.isdigit() and len(value) <= MAX_LENGTH_DIGITS:  # the usual single value
        return int(value)
    parts = {p.strip() for p in value.split(",")}
    if len(parts) != 1:
        return None
    (text,) = parts
    return decimal(text, MAX_LENGTH_DIGITS)


class Http1Session:
    """Both directions of one HTTP/1 connection."""

    __slots__ = ("client", "server", "shared")

    def __init__(self, config: SessionConfig) -> None:
        shared = self.shared = _Shared()
        self.client = _Direction(shared, True, config.body_cap, None)
        self.server = _Direction(shared, False, config.body_cap, self.client)

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        out: list[Event] = []
        (self.client if from_client else self.server).feed(data, ts, out)
        shared = self.shared
        if shared.resume_client:
            shared.resume_client = False
            self.client.run(ts, out)
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        out: list[Event] = []
        (self.client if from_client else self.server).gap(size, ts, out)
        return out

    def end_of_direction(self, from_client: bool, ts: int) -> list[Event]:
        out: list[Event] = []
        (self.client if from_client else self.server).close(ts, out)
        return out

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        self.client.close(ts, out)
        self.server.close(ts, out)
        shared = self.shared
        out.extend(m for _, m in shared.held)
        shared.held = []
        return out


def probe(client: bytes, server: bytes) -> Verdict:
    """A request line from the client or a status line from the server, on any port."""
    maybe = False
    if client:
        method, sp, rest = client[:_MAX_METHOD_LEN].partition(b" ")
        if sp:
            if method in METHODS:
                return Verdict.YES
        elif any(m.startswith(method) for m in METHODS):
            maybe = True
    else:
        maybe = True
    if server:
        head = server[:8]
        if head.startswith(b"HTTP/1.") and len(head) == 8 and head[7:8] in b"01":
            return Verdict.YES
        if b"HTTP/1."[: len(head)] == head[:7]:
            maybe = True
    elif not client:
        maybe = True
    return Verdict.MAYBE if maybe else Verdict.NO


def present(req: Message | None, resp: Message | None) -> Presented:
    # (Each message's fields read once: Message is an interpreted class, every read a generic lookup.)
    req_fields = req.fields if req is not None else None
    resp_fields = resp.fields if resp is not None else None
    method = req_fields["method"] if req_fields is not None else None
    path = req_fields["path"] if req_fields is not None else None
    status = resp_fields["status"] if resp_fields is not None else None
    version = (req_fields if req_fields is not None else resp_fields)["http_version"]  # type: ignore[index]
    reason = resp_fields["reason"] if req_fields is None and resp_fields is not None else None
    key = (method, path, status, version, reason)
    shown = _PRESENTED.get(key)
    if shown is not None:
        return shown
    if req is not None:
        summary = f"{method} {path}" + (f" → {status}" if status is not None else "")
    else:
        summary = f"→ {status} {reason or ''}".rstrip()
    shown = Presented(method=method, path=path, status=status, summary=summary, version=version)
    if len(path or "") + len(reason or "") <= _CACHE_KEY_BYTES:
        if len(_PRESENTED) >= _CACHE_MAX:
            _PRESENTED.clear()
        _PRESENTED[key] = shown
    return shown


SPEC: Final = ProtocolSpec(
    name="http",
    transports=("tcp",),
    ports=(80, 8080, 8000, 8008, 8888, 3000, 5000, 9090),
    probe=probe,
    session=Http1Session,
    present=present,
    matcher="fifo",
    # GraphQL and gRPC-Web ride on HTTP/1.1: recognised on the finished exchange.
    classify=http_overlays.classify_http1,
    classified_as=("grpc", "graphql"),
)

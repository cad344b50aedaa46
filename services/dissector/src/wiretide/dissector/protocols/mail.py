"""SMTP (RFC 5321), IMAP (RFC 9051/3501) and POP3 (RFC 1939): commands paired with their replies, and
STARTTLS/STLS followed into the TLS handshake (RFC 3207, RFC 9051 §6.2.1, RFC 2595 §4).

Rule: each direction is read as CRLF lines (plus the raw bytes an IMAP literal or an SMTP BDAT chunk
announces), at most MAX_LINE bytes each; a command's entry is emitted when its final reply arrives, so
multi-line and intermediate replies (SMTP 334/354, IMAP `+` continuations and untagged responses, POP3
dot-terminated listings) belong to it. Credentials never reach an entry: the arguments of AUTH,
AUTHENTICATE, LOGIN's password, PASS and APOP's digest are replaced by the marker while parsing, and
the lines a client sends inside an authentication exchange are counted, not read. Message contents
(DATA, RETR, FETCH literals) are counted; only a message's Subject/From/To/Message-ID headers are kept.
"""

from __future__ import annotations

from typing import Any, Final

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
from wiretide.dissector.protocols._numbers import decimal

# RFC 5321 §4.5.3.1.4-6 caps command and reply lines at 512 and text lines at 1000 octets; IMAP
# (RFC 9051 §4) sets no limit but servers refuse lines of more than 64 KiB (Dovecot: 64 KiB).
MAX_LINE: Final = 64 * 1024
# Commands awaiting their reply per flow (SMTP PIPELINING batches and IMAP concurrency stay far below).
MAX_PENDING: Final = 256
# Characters of arguments, reply text and header values kept per entry.
TEXT_CHARS: Final = 1024
# Lines of a multi-line reply kept (EHLO extensions, CAPA, CAPABILITY); the count is kept beside them.
MAX_REPLY_LINES: Final = 64
# A message's header lines looked at for Subject/From/To/Message-ID (the rest of it is counted).
MAX_HEADER_LINES: Final = 200
# An IMAP literal or an SMTP BDAT chunk announced larger than this is a length bomb (RFC 9051 allows
# 4 GiB literals; no mail server accepts messages anywhere near them).
MAX_LITERAL: Final = 1 << 31
MARKER: Final = "[REDACTED]"
_KEPT_HEADERS: Final = frozenset({"subject", "from", "to", "cc", "message-id", "date"})


class _Side:
    __slots__ = ("buf", "raw")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.raw = 0  # bytes to pass over as data (an IMAP literal, a BDAT chunk)


class _Cmd:
    """A command waiting for its final reply, and what the replies before it added up to."""

    __slots__ = ("key", "req", "resp", "rsize", "rts", "size", "ts")

    def __init__(self, req: dict[str, Any], ts: int, size: int, key: Any = None) -> None:
        self.req = req
        self.ts = ts
        self.size = size
        self.key = key
        self.resp: dict[str, Any] | None = None
        self.rsize = 0
        self.rts = 0


class _LineSession:
    """What the three protocols share: the line reader, the queue of commands awaiting their final
    reply, authentication exchanges, STARTTLS/STLS, greetings; subclasses read the lines."""

    name = "mail"

    def __init__(self, config: SessionConfig) -> None:
        self.c = _Side()
        self.s = _Side()
        self.cmds: list[_Cmd] = []
        self.counters: dict[str, int] = {}
        self.dead = False
        self.upgrading = False  # STARTTLS accepted: hand the flow to TLS after the current line
        self.greeted = False
        self.auth: _Cmd | None = None  # an authentication exchange in progress: client lines are credentials

    # ---- the Session interface ---------------------------------------------------------------

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        out: list[Event] = []
        if self.dead or not data:
            return out
        side = self.c if from_client else self.s
        read = self._client if from_client else self._server
        if side.buf:
            side.buf += data
            data = bytes(side.buf)
            side.buf.clear()
        pos, size = 0, len(data)
        while pos < size and not self.dead:
            if side.raw:
                n = min(side.raw, size - pos)
                side.raw -= n
                pos += n
                self._raw(from_client, n)
                continue
            end = data.find(b"\n", pos, pos + MAX_LINE + 1)
            if end < 0:
                if size - pos > MAX_LINE:
                    self._violation(out, f"a line longer than {MAX_LINE} bytes")
                    return out
                side.buf += data[pos:]
                break
            line = data[pos:end].rstrip(b"\r")
            wire = end + 1 - pos
            pos = end + 1
            read(line, wire, ts, out)
            if self.upgrading and not self.dead:
                self.dead = True
                self._count("starttls")
                rest_client = bytes(self.c.buf) + (data[pos:] if from_client else b"")
                rest_server = b"" if from_client else data[pos:]
                self.c.buf.clear()
                out.append(Upgrade("tls", rest_client, rest_server))
                return out
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        side = self.c if from_client else self.s
        if self.dead:
            return []
        if side.raw >= size and not side.buf:
            side.raw -= size  # inside message contents: only what is counted is lost
            self._count("gap_in_data")
            return []
        out: list[Event] = []
        return self._violation(out, "capture gap inside a command or reply")

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        if not self.dead:
            self._flush(out, ts)
        self.dead = True
        return out

    # ---- shared helpers ----------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        _bump(self.counters, key, n)

    def _violation(self, out: list[Event], reason: str) -> list[Event]:
        self._flush(out, 0)
        self.dead = True
        out.append(Violation(f"{self.name}: {reason}"))
        return out

    def _not(self, out: list[Event], what: str, line: bytes) -> None:
        """A line that is not `what` ("an SMTP command"…): the flow is not this protocol any more."""
        self._violation(out, f"not {what}: {_text(line, 40)!r}")

    def _flush(self, out: list[Event], ts: int) -> None:
        """Commands still waiting go out unanswered (with what their replies held so far)."""
        for cmd in self.cmds:
            self._emit(cmd, out, None, ts or cmd.ts)
        self.cmds = []

    def _push(self, cmd: _Cmd, out: list[Event]) -> None:
        self.cmds.append(cmd)
        if len(self.cmds) > MAX_PENDING:
            self._count("pending_dropped")
            self._emit(self.cmds.pop(0), out, None, cmd.ts)

    def _emit(
        self, cmd: _Cmd, out: list[Event], final: dict[str, Any] | None, ts: int, size: int = 0
    ) -> None:
        out.append(Message(True, cmd.ts, cmd.ts, cmd.size, cmd.req))
        resp = cmd.resp
        if final is not None:
            resp = {**resp, **final} if resp else final
        if resp is not None:
            out.append(Message(False, cmd.rts or ts, ts, cmd.rsize + size, resp))

    def _progress(self, cmd: _Cmd, ts: int, size: int) -> dict[str, Any]:
        """The reply `cmd` has so far, grown by a line (or literal) of `size` bytes that is not final."""
        if cmd.resp is None:
            cmd.resp = {}
            cmd.rts = ts
        cmd.rsize += size
        return cmd.resp

    def _tally(self, cmd: _Cmd, ts: int, size: int, key: str, n: int = 1) -> dict[str, Any]:
        """`_progress`, counting the line under `key` (challenges, continuations, listing lines…)."""
        resp = self._progress(cmd, ts, size)
        _bump(resp, key, n)
        return resp

    def _answer(
        self,
        cmd: _Cmd,
        out: list[Event],
        fields: dict[str, Any],
        first_ts: int,
        ts: int,
        size: int,
        tls: bool,
    ) -> None:
        """`cmd`'s final reply (its first line at `first_ts`): the command leaves the queue and goes out
        with it; `tls` (STARTTLS/STLS accepted) hands the flow to TLS after this line."""
        self.cmds.remove(cmd)
        if cmd is self.auth:
            self.auth = None
        if cmd.resp is None:
            cmd.rts = first_ts
        self._emit(cmd, out, fields, ts, size)
        if tls:
            self.upgrading = True

    def _credentials(self, cmd: _Cmd) -> None:
        """A client line inside `cmd`'s authentication exchange: counted, never read."""
        _bump(cmd.req, "auth_lines")
        self._count("auth_lines")

    def _greeting(self, fields: dict[str, Any], ts: int, size: int, out: list[Event]) -> None:
        self.greeted = True
        fields["greeting"] = True
        out.append(Message(False, ts, ts, size, fields, standalone=True))

    def _unasked(
        self, fields: dict[str, Any], first_ts: int, ts: int, size: int, out: list[Event], keep: bool
    ) -> None:
        """A reply while no command waits: the greeting when none came yet, else counted (and, with
        `keep`, an entry of its own: an SMTP 421 closing the connection, say)."""
        if not self.greeted:
            self._greeting(fields, first_ts, size, out)
            return
        self._count("unsolicited_replies")
        if keep:
            out.append(Message(False, first_ts, ts, size, fields, standalone=True))

    def _raw(self, from_client: bool, n: int) -> None:
        self._count("client_data_bytes" if from_client else "server_data_bytes", n)

    def _client(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        raise NotImplementedError

    def _server(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        raise NotImplementedError


def _bump(counts: dict[str, Any], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _text(raw: bytes, limit: int = TEXT_CHARS) -> str:
    return raw[:limit].decode("utf-8", "replace")


def _split(line: bytes) -> tuple[str, str]:
    word, _, rest = line.partition(b" ")
    return _text(word, 64).upper(), _text(rest)


def _sasl(req: dict[str, Any], args: str) -> str:
    """AUTH/AUTHENTICATE's arguments as shown: the mechanism kept (also in `req`), an initial response
    (RFC 4954 §4, RFC 9051 §6.2.2, RFC 5034 §4) replaced by the marker."""
    mechanism, _, initial = args.partition(" ")
    req["mechanism"] = mechanism.upper()
    return f"{mechanism} {MARKER}" if initial else mechanism


def _angle(args: str) -> str | None:
    """The address inside `<...>` (MAIL FROM:<a@b>, RCPT TO:<c@d>)."""
    start = args.find("<")
    end = args.find(">", start + 1)
    return args[start + 1 : end] if 0 <= start < end else None


# ---- SMTP ---------------------------------------------------------------------------------------


class SmtpSession(_LineSession):
    """RFC 5321 with PIPELINING (RFC 2920), AUTH (RFC 4954), CHUNKING/BDAT (RFC 3030), STARTTLS."""

    name = "smtp"

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self.reply: list[str] = []  # lines of a multi-line reply so far
        self.reply_size = 0
        self.reply_ts = 0
        self.data: _Cmd | None = None  # DATA accepted (354): the client sends the message
        self.in_headers = False
        self.header_lines = 0

    def _client(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        data = self.data
        if data is not None:  # RFC 5321 §4.5.2: the message ends at a line holding only "."
            sent = data.req
            if line == b".":
                self.data = None
                return
            _bump(sent, "message_size", wire)
            _bump(sent, "message_lines")
            if self.in_headers:
                self._header(line, sent)
            return
        if self.auth is not None:  # an authentication exchange line (RFC 4954 §4): never read
            self._credentials(self.auth)
            return
        command, args = _split(line)
        if not command or not command.isalpha() or len(command) > 16:
            self._not(out, "an SMTP command", line)
            return
        req: dict[str, Any] = {"command": command}
        if command == "AUTH":
            req["args"] = _sasl(req, args)
        elif args:
            req["args"] = args
        if command == "MAIL":
            address = _angle(args)
            if address is not None:
                req["from"] = address
        elif command == "RCPT":
            address = _angle(args)
            if address is not None:
                req["to"] = address
        elif command == "BDAT":  # RFC 3030 §2: the chunk's bytes follow the command line
            parts = args.split()
            n = decimal(parts[0], 10) if parts else None
            if n is None or n > MAX_LITERAL:
                self._violation(out, "BDAT without a usable size")
                return
            req["message_size"] = n
            req["last"] = len(parts) > 1 and parts[1].upper() == "LAST"
            self.c.raw = n
        cmd = _Cmd(req, ts, wire)
        self._push(cmd, out)
        if command == "AUTH":
            self.auth = cmd

    def _header(self, line: bytes, req: dict[str, Any]) -> None:
        self.header_lines += 1
        if not line or self.header_lines > MAX_HEADER_LINES:
            self.in_headers = False
            return
        if line[:1] in (b" ", b"\t"):
            return  # a folded continuation: the first line of each kept header is enough
        name, sep, value = line.partition(b":")
        key = _text(name, 64).strip().lower()
        if sep and key in _KEPT_HEADERS:
            headers = req.setdefault("headers", {})
            headers.setdefault(key, _text(value.strip(), TEXT_CHARS))

    def _server(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        code = decimal(_text(line[:3], 3), 3, exact=True)
        if code is None or not 200 <= code <= 599 or (len(line) > 3 and line[3:4] not in (b" ", b"-")):
            self._not(out, "an SMTP reply", line)
            return
        if not self.reply:
            self.reply_ts = ts
        self.reply.append(_text(line[4:]))
        self.reply_size += wire
        if line[3:4] == b"-" and len(self.reply) <= MAX_REPLY_LINES * 4:
            return
        lines, size, first_ts = self.reply, self.reply_size, self.reply_ts
        self.reply, self.reply_size = [], 0
        fields: dict[str, Any] = {"code": code, "text": " ".join(lines[:1])[:TEXT_CHARS]}
        enhanced = lines[0].split(" ", 1)[0] if lines and lines[0][:1].isdigit() else ""
        if enhanced.count(".") == 2:
            fields["enhanced_code"] = enhanced
        if len(lines) > 1:
            fields["lines"] = lines[:MAX_REPLY_LINES]
            fields["line_count"] = len(lines)
        if not self.cmds:
            self._unasked(fields, first_ts, ts, size, out, keep=True)
            return
        cmd = self.cmds[0]
        command = cmd.req["command"]
        if code == 334 and command == "AUTH":  # a challenge: the client answers with a line
            self._tally(cmd, first_ts, size, "challenges")
            return
        if code == 354 and command == "DATA":  # RFC 5321 §4.1.1.4: send the message now
            self._progress(cmd, first_ts, size)["intermediate"] = 354
            self.data = cmd
            self.in_headers = True
            self.header_lines = 0
            return
        if command in ("EHLO", "LHLO") and code == 250 and len(lines) > 1:
            fields["extensions"] = [x for x in lines[1:MAX_REPLY_LINES]]
        self._answer(cmd, out, fields, first_ts, ts, size, tls=command == "STARTTLS" and code == 220)


# ---- IMAP ---------------------------------------------------------------------------------------

# A command's first argument that names a mailbox (RFC 9051 §6.3).
_MAILBOX_COMMANDS: Final = frozenset(
    {"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "STATUS", "APPEND"}
)
_IMAP_COMMANDS: Final = frozenset(
    {
        "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "ENABLE", "SELECT", "EXAMINE",
        "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE", "STATUS",
        "APPEND", "IDLE", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID",
        "CHECK", "ID", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "GETACL", "SETACL", "MYRIGHTS", "COMPRESS",
        "GETMETADATA", "SETMETADATA", "SORT", "THREAD", "XLIST",
    }
)  # fmt: skip
_COMPLETIONS: Final = {"OK": 0, "NO": 1, "BAD": 2}


def _literal(line: bytes) -> int | None:
    """The size of the literal a line announces at its end (`{12}` or `{12+}`, RFC 9051 §4.3, 7888)."""
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None
    digits = line[start + 1 : -1].rstrip(b"+")
    return decimal(digits.decode("ascii", "replace"), 10)


def _first_arg(args: str) -> str:
    if args.startswith('"'):
        end = args.find('"', 1)
        return args[1:end] if end > 0 else args[1:]
    return args.split(" ", 1)[0]


class ImapSession(_LineSession):
    """IMAP4rev1/rev2: tagged commands, untagged responses, literals, AUTHENTICATE, IDLE, STARTTLS."""

    name = "imap"

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self.partial: dict[bool, tuple[_Cmd | None, int]] = {}  # a line continued after a literal
        self.idle: _Cmd | None = None  # IDLE accepted: the client's next line is DONE

    def _find(self, tag: str) -> _Cmd | None:
        for cmd in self.cmds:
            if cmd.key == tag:
                return cmd
        return None

    def _client(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        cont = self.partial.pop(True, None)
        if cont is not None:  # the rest of a command line after a literal
            cmd = cont[0]
            if cmd is not None:
                cmd.size += wire
            self._client_literal(line, cmd)
            return
        if self.auth is not None:  # RFC 9051 §6.2.2: a response to a challenge; never read
            self._credentials(self.auth)
            return
        if self.idle is not None and line.upper() == b"DONE":  # RFC 2177: ends IDLE
            self.idle.req["done"] = True
            self.idle = None
            return
        tag, _, rest = line.partition(b" ")
        command, args = _split(rest)
        if not tag or not command or not command.replace("-", "").isalnum():
            self._not(out, "an IMAP command", line)
            return
        if command == "UID":
            sub, args = _split(args.encode("utf-8", "replace"))
            command = f"UID {sub}"
        req: dict[str, Any] = {"tag": _text(tag, 64), "command": command}
        base = command.split(" ", 1)[0]
        literal_shown = args
        if base == "LOGIN":  # RFC 9051 §6.2.3: the user stays, the password never
            user = _first_arg(args)
            req["user"] = user
            literal_shown = f"{args.split(' ', 1)[0]} {MARKER}"
        elif base == "AUTHENTICATE":
            literal_shown = _sasl(req, args)
        if literal_shown:
            req["args"] = literal_shown
        if base in _MAILBOX_COMMANDS and args:
            req["mailbox"] = _first_arg(args)
        cmd = _Cmd(req, ts, wire, key=req["tag"])
        self._push(cmd, out)
        if base == "AUTHENTICATE":
            self.auth = cmd
        self._client_literal(line, cmd)

    def _client_literal(self, line: bytes, cmd: _Cmd | None) -> None:
        n = _literal(line)
        if n is None:
            return
        if cmd is not None:
            _bump(cmd.req, "literal_bytes", n)
            cmd.size += n
        self.c.raw = min(n, MAX_LITERAL)
        self.partial[True] = (cmd, n)

    def _server(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        cont = self.partial.pop(False, None)
        if cont is not None:  # the rest of an untagged response after a literal
            self._server_literal(line, cont[0], wire, ts)
            return
        tag, _, rest = line.partition(b" ")
        if tag == b"*":
            word, args = _split(rest)
            kind = word
            if word.isdigit():  # `* 23 EXISTS`, `* 5 FETCH (...)`
                kind = args.split(" ", 1)[0].upper()
            if not self.greeted and not self.cmds and word in ("OK", "PREAUTH", "BYE"):
                # RFC 9051 §7.1: OK and PREAUTH welcome the client, BYE turns it away (an error).
                greeting: dict[str, Any] = {"completion": word, "status": 1 if word == "BYE" else 0}
                if args.startswith("["):  # `* OK [CAPABILITY …] ready`, `* BYE [UNAVAILABLE] …`
                    code, _, args = args[1:].partition("]")
                    greeting["code"] = code
                    if code.startswith("CAPABILITY"):
                        greeting["capabilities"] = code[len("CAPABILITY") :].strip()
                greeting["text"] = args.strip()
                self._greeting(greeting, ts, wire, out)
                return
            target = self.cmds[0] if self.cmds else None
            if target is None:
                self._count("unsolicited")
            else:
                resp = self._progress(target, ts, wire)
                untagged = resp.setdefault("untagged", {})
                if kind in untagged or len(untagged) < MAX_REPLY_LINES:
                    untagged[kind] = untagged.get(kind, 0) + 1
                if kind == "CAPABILITY" or (kind == "OK" and args.startswith("[CAPABILITY")):
                    resp["capabilities"] = args[:TEXT_CHARS]
            self._server_literal(line, target, 0, ts)
            return
        if tag == b"+":  # a continuation request (literal, AUTHENTICATE challenge, IDLE)
            target = self.auth or (self.cmds[-1] if self.cmds else None)
            if target is not None:
                self._tally(target, ts, wire, "continuations")
                if target.req["command"] == "IDLE":
                    self.idle = target
            return
        word, text = _split(rest)
        status = _COMPLETIONS.get(word)
        if status is None:
            self._not(out, "an IMAP response", line)
            return
        cmd = self._find(_text(tag, 64))
        fields: dict[str, Any] = {"tag": _text(tag, 64), "completion": word, "status": status}
        if text.startswith("["):
            code, _, text = text[1:].partition("]")
            fields["code"] = code
            text = text.strip()
        fields["text"] = text
        if cmd is None:
            self._count("orphan_completions")
            out.append(Message(False, ts, ts, wire, fields))
            return
        if cmd is self.idle:
            self.idle = None
        self._answer(cmd, out, fields, ts, ts, wire, tls=cmd.req["command"] == "STARTTLS" and status == 0)

    def _server_literal(self, line: bytes, target: _Cmd | None, wire: int, ts: int) -> None:
        if target is not None and wire:
            target.rsize += wire
        n = _literal(line)
        if n is None:
            return
        if target is not None:
            self._tally(target, ts, n, "literal_bytes", n)
        self.s.raw = min(n, MAX_LITERAL)
        self.partial[False] = (target, n)


# ---- POP3 ---------------------------------------------------------------------------------------

_POP3_COMMANDS: Final = frozenset(
    {"USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET",
     "QUIT", "TOP", "UIDL", "UTF8", "LANG"}
)  # fmt: skip


class Pop3Session(_LineSession):
    """RFC 1939 with CAPA (RFC 2449), AUTH (RFC 5034) and STLS (RFC 2595)."""

    name = "pop3"

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self.listing: _Cmd | None = None  # a multi-line reply is coming in (until ".")

    def _client(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        if self.auth is not None and self.auth.resp is not None:  # RFC 5034 §4: never read
            self._credentials(self.auth)
            return
        command, args = _split(line)
        if not command.isalpha() or len(command) > 8:
            self._not(out, "a POP3 command", line)
            return
        req: dict[str, Any] = {"command": command}
        if command == "PASS":
            req["args"] = MARKER
        elif command == "APOP":
            req["user"] = args.split(" ", 1)[0]
            req["args"] = f"{req['user']} {MARKER}"
        elif command == "AUTH" and args:
            req["args"] = _sasl(req, args)
        elif args:
            req["args"] = args
            if command == "USER":
                req["user"] = args
        cmd = _Cmd(req, ts, wire)
        self._push(cmd, out)
        if command == "AUTH" and args:
            self.auth = cmd

    def _multiline(self, cmd: _Cmd) -> bool:
        """Replies of more than one line (RFC 1939 §5-7, RFC 2449 §5, RFC 5034 §4)."""
        command = cmd.req["command"]
        has_args = "args" in cmd.req
        return command in ("RETR", "TOP", "CAPA") or (command in ("LIST", "UIDL", "AUTH") and not has_args)

    def _server(self, line: bytes, wire: int, ts: int, out: list[Event]) -> None:
        listing = self.listing
        if listing is not None:  # RFC 1939 §3: lines until ".", dot-stuffed
            if line == b".":
                self.listing = None
                self.cmds.remove(listing)
                self._emit(listing, out, None, ts, wire)
                return
            resp = self._tally(listing, ts, wire, "line_count")
            command = listing.req["command"]
            if command in ("CAPA", "AUTH", "LIST", "UIDL") and resp["line_count"] <= MAX_REPLY_LINES:
                resp.setdefault("lines", []).append(_text(line[1:] if line[:2] == b".." else line))
            return
        if (line.startswith(b"+ ") or line == b"+") and self.auth is not None:  # an AUTH challenge
            self._tally(self.auth, ts, wire, "challenges")
            return
        indicator, text = _split(line)
        if indicator not in ("+OK", "-ERR"):
            self._not(out, "a POP3 reply", line)
            return
        fields: dict[str, Any] = {
            "indicator": indicator,
            "status": 0 if indicator == "+OK" else 1,
            "text": text,
        }
        if not self.cmds:
            self._unasked(fields, ts, ts, wire, out, keep=False)  # an unasked POP3 reply is only counted
            return
        cmd = self.cmds[0]
        if cmd is self.auth:
            self.auth = None
        if indicator == "+OK" and self._multiline(cmd):
            resp = self._progress(cmd, ts, wire)
            resp.update(fields)
            self.listing = cmd
            return
        self._answer(cmd, out, fields, ts, ts, wire, tls=cmd.req["command"] == "STLS" and indicator == "+OK")


# ---- detection ----------------------------------------------------------------------------------


def _first_line(data: bytes) -> bytes | None:
    end = data.find(b"\n", 0, 1024)
    return data[:end].rstrip(b"\r") if end >= 0 else None


def probe_smtp(client: bytes, server: bytes) -> Verdict:
    """A 220 greeting (RFC 5321 §4.2) answered by EHLO/HELO/LHLO; the greeting alone when it names
    SMTP; the client's EHLO alone when the greeting was not captured."""
    if client:
        word = client[:5].upper()
        if word in (b"EHLO ", b"HELO ", b"LHLO "):
            return Verdict.YES
        if len(client) < 5 and b"EHLO "[: len(client)] == client[:5].upper():
            return Verdict.MAYBE
        return Verdict.NO
    if not server:
        return Verdict.MAYBE
    if len(server) < 4:
        return Verdict.MAYBE if b"220 "[: len(server)] == server[: len(server)] else Verdict.NO
    if server[:3] != b"220" or server[3:4] not in (b" ", b"-"):
        return Verdict.NO
    line = _first_line(server)
    if line is not None and b"SMTP" in line.upper():
        return Verdict.YES
    return Verdict.MAYBE


def probe_imap(client: bytes, server: bytes) -> Verdict:
    """An untagged greeting (RFC 9051 §7.1) answered by a tagged IMAP command; the greeting alone
    when it names IMAP."""
    if client:
        line = _first_line(client)
        if line is None:
            return Verdict.MAYBE if len(client) < 64 else Verdict.NO
        parts = line.split(b" ", 2)
        if len(parts) >= 2 and parts[0] and parts[1].upper().decode("ascii", "replace") in _IMAP_COMMANDS:
            return Verdict.YES
        return Verdict.NO
    if not server:
        return Verdict.MAYBE
    head = server[:10].upper()
    if not any(g.startswith(head) or head.startswith(g) for g in (b"* OK", b"* PREAUTH", b"* BYE")):
        return Verdict.NO
    line = _first_line(server)
    if line is None:
        return Verdict.MAYBE
    return Verdict.YES if b"IMAP" in line.upper() else Verdict.MAYBE


def probe_pop3(client: bytes, server: bytes) -> Verdict:
    """A `+OK` greeting (RFC 1939 §4) answered by a POP3 command."""
    if server and not (server[:3] == b"+OK" or b"+OK".startswith(server[:3])):
        return Verdict.NO
    if not client:
        return Verdict.MAYBE
    line = _first_line(client)
    if line is None:
        return Verdict.MAYBE if len(client) < 16 else Verdict.NO
    word = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
    if word in _POP3_COMMANDS:
        return Verdict.YES if server else Verdict.MAYBE
    return Verdict.NO


# ---- presentation -------------------------------------------------------------------------------


def _present(req: Message | None, resp: Message | None, status_key: str) -> Presented:
    r = req.fields if req is not None else {}
    p = resp.fields if resp is not None else {}
    status = p.get(status_key)
    if req is None:
        what = "greeting" if p.get("greeting") else "reply"
        text = p.get("text", "")
        return Presented(
            method=what, status=status if type(status) is int else None, summary=f"{what} {text}"[:200]
        )
    command = r.get("command")
    path = r.get("from") or r.get("to") or r.get("mailbox") or r.get("user")
    summary = f"{command} {r['args']}" if r.get("args") else str(command)
    if status is not None:
        summary += f" → {p.get('indicator') or p.get('completion') or status}"
    return Presented(
        method=command,
        path=path if type(path) is str else None,
        status=status if type(status) is int else None,
        summary=summary[:200],
        stream=r.get("tag"),
    )


def present_smtp(req: Message | None, resp: Message | None) -> Presented:
    return _present(req, resp, "code")


def present_status(req: Message | None, resp: Message | None) -> Presented:
    return _present(req, resp, "status")


def _error(response: dict[str, Any]) -> dict[str, str] | None:
    """A refusal as the entry's error: SMTP 4xx/5xx typed by its enhanced code (RFC 3463) or reply code,
    IMAP NO/BAD by its response code (RFC 5530: AUTHENTICATIONFAILED, NONEXISTENT …), POP3 -ERR by its
    extended response code (RFC 2449 §8, RFC 3206: AUTH, IN-USE, SYS/TEMP …); the server's text as the
    message. A greeting that turns the client away (SMTP 554, IMAP BYE, POP3 -ERR) is one too."""
    text = response.get("text")
    message = text if type(text) is str else ""
    code = response.get("code")
    if type(code) is int:  # SMTP
        if code < 400:
            return None
        enhanced = response.get("enhanced_code")
        if type(enhanced) is str:
            return {"type": enhanced, "message": message[len(enhanced) :].strip()}
        return {"type": str(code), "message": message}
    status = response.get("status")
    if type(status) is not int or status == 0:
        return None
    if "indicator" in response:  # POP3: `-ERR [AUTH] …`
        kind = message[1 : message.find("]")] if message.startswith("[") and "]" in message else ""
        return {"type": kind or "ERR", "message": message}
    completion = response.get("completion")
    kind = code.split(" ", 1)[0] if type(code) is str and code else ""
    return {"type": kind or (completion if type(completion) is str else "NO"), "message": message}


def classify(request: dict[str, Any] | None, response: dict[str, Any] | None) -> dict[str, Any]:
    """The places the parser replaced by the marker, in `redacted`; a refusal as `error`."""
    over: dict[str, Any] = {}
    args = request.get("args") if request is not None else None
    if type(args) is str and MARKER in args:
        over["redacted"] = ["request.args"]
    if response is not None:
        error = _error(response)
        if error is not None:
            over["error"] = error
    return over


SMTP_SPEC: Final = ProtocolSpec(
    name="smtp",
    transports=("tcp",),
    ports=(25, 587, 2525),
    probe=probe_smtp,
    session=SmtpSession,
    present=present_smtp,
    classify=classify,
)
IMAP_SPEC: Final = ProtocolSpec(
    name="imap",
    transports=("tcp",),
    ports=(143,),
    probe=probe_imap,
    session=ImapSession,
    present=present_status,
    classify=classify,
)
POP3_SPEC: Final = ProtocolSpec(
    name="pop3",
    transports=("tcp",),
    ports=(110,),
    probe=probe_pop3,
    session=Pop3Session,
    present=present_status,
    classify=classify,
)

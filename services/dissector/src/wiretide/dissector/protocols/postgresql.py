"""PostgreSQL frontend/backend protocol 3.x (postgresql.org/docs/current/protocol-message-formats.html):
startup, simple and extended query, COPY, errors, notices and LISTEN/NOTIFY notifications.

Rule: the backend answers the frontend's messages strictly in order, so one queue of the client's
messages per flow says which request every server message belongs to (protocol-flow.html). Each
Query and each Execute is one entry; an ErrorResponse in the extended protocol aborts the rest of its
batch up to Sync (protocol-flow.html §55.2.3), and those Executes are entries marked `aborted`.
Secrets never reach an entry: PasswordMessage and the SASL (SCRAM) exchange are skipped unread, the
cancel key is not kept, Bind parameter values are not kept (only their count) and a `PASSWORD '…'`
literal inside SQL is replaced by the redaction marker. Everything is bounded: the bytes kept of a
message (the body cap), pending messages, remembered prepared statements and portals.
"""

from __future__ import annotations

import re
import struct
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

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HEAD = struct.Struct("!ci")  # type byte, length (which counts itself, not the type byte)
_UNTYPED = struct.Struct("!ii")  # length, code: the untyped startup-phase packets

# protocol-message-formats.html: StartupMessage's version 3.0 (major << 16 | minor) and the codes of
# the untyped requests that share its framing.
PROTOCOL_3: Final = 3
SSL_REQUEST: Final = 80877103
GSSENC_REQUEST: Final = 80877104
CANCEL_REQUEST: Final = 80877102
# Backend limits: a startup packet over 10000 bytes is refused (MAX_STARTUP_PACKET_LENGTH), a message
# over 1 GiB - 1 cannot exist (PQ_LARGE_MESSAGE_LIMIT); a length beyond them is a lie, not PostgreSQL.
MAX_STARTUP: Final = 10_000
MAX_MESSAGE: Final = 0x3FFFFFFF
# A probe trusts a typed message seen mid-stream only when it is whole and at most this long.
MAX_PROBE_MESSAGE: Final = 1 << 20
# Bytes of a message kept for parsing at least, whatever the body cap (names, codes, a short query).
MIN_KEEP: Final = 1024
# Client messages waiting for the server (a pipelined batch of Parse/Bind/Execute): far beyond what
# a client pipelines; beyond it the oldest is given up (and counted).
MAX_PENDING: Final = 4096
# Prepared statements and portals remembered per flow (a pool's connection prepares a few hundred).
MAX_STATEMENTS: Final = 1024
MAX_PORTALS: Final = 256
# Startup parameters and ParameterStatus values kept, columns named per result, notices kept per entry.
MAX_PARAMETERS: Final = 32
MAX_COLUMNS: Final = 64
MAX_NOTICES: Final = 8
# Characters of SQL in an entry's summary (the query itself is kept up to the body cap).
SUMMARY_CHARS: Final = 256
# Characters of a query searched for its main table (the table follows the verb closely).
TABLE_SCAN_CHARS: Final = 1024
# The redaction marker (`wiretide.dissector.redact.MARKER`; protocol modules import only the api).
MARKER: Final = "[REDACTED]"

# Message types (protocol-message-formats.html). Frontend:
_F_TYPES: Final = frozenset(b"QPBDESCHXdcfFp")
# Backend:
_B_TYPES: Final = frozenset(b"R12356ACDEGHIKNSTVWZcdnstv")
# Bodies counted but never read: row data, COPY data, and the client's password/SASL responses.
_F_SKIP: Final = frozenset(b"dp")
_B_SKIP: Final = frozenset(b"Dd")

_AUTH: Final = {
    0: "ok", 2: "kerberos", 3: "cleartext", 5: "md5", 7: "gss", 8: "gss-continue", 9: "sspi",
    10: "sasl", 11: "sasl-continue", 12: "sasl-final",
}  # fmt: skip
_TX_STATUS: Final = {73: "idle", 84: "in_transaction", 69: "failed"}
# ErrorResponse / NoticeResponse field codes kept (protocol-error-fields.html).
_ERROR_FIELDS: Final = {
    ord("V"): "severity", ord("C"): "code", ord("M"): "message", ord("D"): "detail", ord("H"): "hint",
    ord("P"): "position", ord("s"): "schema", ord("t"): "table", ord("c"): "column", ord("n"): "constraint",
}  # fmt: skip
_STARTUP_KEYS: Final = ("user", "database", "application_name")

_PASSWORD = re.compile(r"(\bpassword\s+)'(?:[^']|'')*'", re.IGNORECASE)
_VERB = re.compile(r"(?:\s+|--[^\n]*\n?|/\*.*?\*/)*([A-Za-z]+)", re.DOTALL)
_NAME = r'(?:"[^"]{1,128}"|[A-Za-z_][\w$]{0,127})'
_TABLE = re.compile(
    r"\b(?:from|into|update|copy|join|table(?:\s+if(?:\s+not)?\s+exists)?)\s+(?:only\s+)?"
    rf"({_NAME}(?:\.{_NAME})?)",
    re.IGNORECASE,
)
_NOT_TABLES: Final = frozenset({"select", "lateral", "set", "stdin", "stdout", "if", "values"})


def _cstr(body: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated string at `pos` and the offset after it; a cut string runs to the end."""
    end = body.find(b"\0", pos)
    if end < 0:
        return body[pos:].decode("utf-8", "replace"), len(body)
    return body[pos:end].decode("utf-8", "replace"), end + 1


def _fields_of(body: bytes) -> dict[str, Any]:
    """ErrorResponse/NoticeResponse: (code byte, string)* up to a NUL (protocol-error-fields.html)."""
    out: dict[str, Any] = {}
    pos, n = 0, len(body)
    while pos < n and body[pos]:
        code = body[pos]
        value, pos = _cstr(body, pos + 1)
        name = _ERROR_FIELDS.get(code)
        if name is not None:
            out[name] = value
        elif code == ord("S") and "severity" not in out:  # localized severity (pre-9.6 servers only)
            out["severity"] = value
    return out


def redact_sql(query: str) -> str:
    """`PASSWORD 'secret'` (CREATE/ALTER ROLE) with the literal replaced by the marker."""
    if "assword" not in query and "ASSWORD" not in query:
        return query
    return _PASSWORD.sub(lambda m: f"{m.group(1)}'{MARKER}'", query)


def sql_verb(query: str) -> str:
    """The statement's first keyword, upper-case, past leading whitespace and comments."""
    m = _VERB.match(query, 0, 4096)
    return m.group(1).upper()[:32] if m else ""


def main_table(query: str) -> str | None:
    """The first table the statement names (FROM, INTO, UPDATE, COPY, JOIN, TABLE), if cheap to see."""
    for m in _TABLE.finditer(query, 0, TABLE_SCAN_CHARS):
        name = m.group(1)
        if name.lower() not in _NOT_TABLES:
            return name
    return None


class _Op:
    """One client message the server has yet to answer; Query/Execute/startup ones become entries."""

    __slots__ = ("aside", "kind", "req", "resp", "rsize", "rts", "size", "ts")

    def __init__(self, kind: str, ts: int, size: int, req: dict[str, Any] | None) -> None:
        self.kind = kind
        self.aside: dict[str, Any] | None = None  # a Parse's request: its entry if it fails alone
        self.ts = ts
        self.size = size
        self.req = req  # the entry's request object (None for Parse/Bind/Describe/Sync/Close)
        self.resp: dict[str, Any] | None = None
        self.rts = 0  # capture time of the first server byte for it
        self.rsize = 0


class _Direction:
    __slots__ = ("buf", "skip", "typed")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skip = 0  # body bytes still to discard (a counted-only or over-cap message)
        self.typed = False  # past the untyped startup packets (or picked up mid-stream)


class PostgresSession:
    """Both directions of one connection: client messages queue up, server messages answer them."""

    __slots__ = (
        "awaiting",
        "c",
        "copy",
        "counters",
        "dead",
        "group_size",
        "group_ts",
        "keep",
        "ops",
        "portals",
        "s",
        "seq",
        "statements",
    )

    def __init__(self, config: SessionConfig) -> None:
        self.keep = max(config.body_cap, MIN_KEEP)
        self.c = _Direction()
        self.s = _Direction()
        self.ops: list[_Op] = []
        self.statements: dict[str, tuple[str, bool]] = {}  # name → (SQL, cut by the cap)
        self.portals: dict[str, tuple[str | None, bool, str, int]] = {}  # → (SQL, cut, statement, params)
        self.awaiting = 0  # the untyped request (SSL/GSSENC) whose one-byte answer comes next
        self.copy: _Op | None = None  # the op whose COPY data is flowing
        self.dead = False  # encrypted or given up: later bytes are ignored
        self.group_ts = 0  # the extended-query messages building the next Execute (time, bytes)
        self.group_size = 0
        self.seq = 0
        self.counters: dict[str, int] = {}

    # ---- the Session interface ---------------------------------------------------------------

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        if self.dead or not data:
            return []
        d = self.c if from_client else self.s
        out: list[Event] = []
        if d.skip:
            n = len(data)
            if n <= d.skip:
                d.skip -= n
                return out
            data = data[d.skip :]
            d.skip = 0
        buf = d.buf
        if buf:  # a message cut at the end of the last chunk: join once, then slice bytes
            buf += data
            data = bytes(buf)
            buf.clear()
        types = _F_TYPES if from_client else _B_TYPES
        skipped = _F_SKIP if from_client else _B_SKIP
        handle = self._frontend if from_client else self._backend
        keep = self.keep
        pos = 0
        size = len(data)
        while pos < size:
            if not from_client and self.awaiting:
                pos = self._answer(data, pos, ts, out)
                if pos < 0:
                    return out
                continue
            if not d.typed:
                if not from_client or data[pos] != 0:  # a typed message: picked up mid-stream
                    d.typed = True
                    continue
                if size - pos < 8:
                    break
                length = _I32.unpack_from(data, pos)[0]
                if length < 8 or length > MAX_STARTUP:
                    return self._violation(out, f"startup packet length {length}")
                if size - pos < length:
                    break
                self._untyped(data[pos : pos + length], ts, out)
                pos += length
                if self.dead:
                    return out
                continue
            if size - pos < 5:
                break
            t, length = _HEAD.unpack_from(data, pos)
            mtype = t[0]
            if length < 4 or length > MAX_MESSAGE:
                return self._violation(out, f"message {t!r} length {length}")
            if mtype not in types:
                side = "frontend" if from_client else "backend"
                return self._violation(out, f"unknown {side} message {t!r}")
            total = length + 1
            if mtype in skipped:
                # Counted from its header alone: the body is skipped, never copied.
                self._counted(from_client, mtype, total, ts, out)
            elif total > keep + 5:
                if size - pos < keep + 5:
                    break
                handle(mtype, data[pos + 5 : pos + 5 + keep], total, True, ts, out)
            elif size - pos < total:
                break
            else:
                handle(mtype, data[pos + 5 : pos + total], total, False, ts, out)
            if self.dead:
                return out
            if size - pos < total:  # the rest of a skipped or over-cap message is still to come
                d.skip = total - (size - pos)
                return out
            pos += total
        if pos < size:
            buf += data[pos:]
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        d = self.c if from_client else self.s
        if self.dead:
            return []
        if d.skip and size <= d.skip and not d.buf:
            d.skip -= size  # inside row or COPY data: only that content is lost
            self.counters["gap_in_data"] = self.counters.get("gap_in_data", 0) + 1
            return []
        return self._violation([], "capture gap inside a message")

    def close(self, ts: int) -> list[Event]:
        out: list[Event] = []
        for op in self.ops:
            if op.req is not None:
                self._emit(op, out, ts)
        self.ops = []
        self.dead = True
        return out

    # ---- framing helpers ---------------------------------------------------------------------

    def _violation(self, out: list[Event], reason: str) -> list[Event]:
        """Hand out what is pending (unanswered), then the violation: the flow becomes raw."""
        for op in self.ops:
            if op.req is not None:
                self._emit(op, out, op.ts)
        self.ops = []
        self.dead = True
        out.append(Violation(f"postgresql: {reason}"))
        return out

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _push(self, op: _Op, out: list[Event]) -> None:
        ops = self.ops
        ops.append(op)
        if len(ops) > MAX_PENDING:
            old = ops.pop(0)
            self._count("pending_dropped")
            if old.req is not None:
                self._emit(old, out, old.ts)

    def _head(self) -> _Op | None:
        return self.ops[0] if self.ops else None

    def _pop_to(self, kind: str, ts: int, out: list[Event]) -> _Op | None:
        """Pop up to the first pending op of `kind` (the server answered it); entries passed over were
        lost to the capture and go out unanswered."""
        ops = self.ops
        for i, op in enumerate(ops):
            if op.kind == kind:
                for lost in ops[:i]:
                    self._count("unanswered")
                    if lost.req is not None:
                        self._emit(lost, out, ts)
                del ops[: i + 1]
                return op
        self._count("orphan_responses")
        return None

    def _resp(self, op: _Op, ts: int, size: int) -> dict[str, Any]:
        resp = op.resp
        if resp is None:
            resp = op.resp = {}
            op.rts = ts
        op.rsize += size
        return resp

    def _emit(self, op: _Op, out: list[Event], ts: int, standalone: bool = False) -> None:
        req = op.req
        if req is None:
            return
        self.seq += 1
        key = self.seq
        out.append(Message(True, op.ts, op.ts, op.size, req, key=key, standalone=standalone))
        if op.resp is not None:
            out.append(Message(False, op.rts or ts, ts, op.rsize, op.resp, key=key))

    # ---- client → server ---------------------------------------------------------------------

    def _untyped(self, pkt: bytes, ts: int, out: list[Event]) -> None:
        code = _I32.unpack_from(pkt, 4)[0]
        size = len(pkt)
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            kind = "ssl_request" if code == SSL_REQUEST else "gssenc_request"
            self.awaiting = code
            self._push(_Op("untyped", ts, size, {"type": kind}), out)
        elif code == CANCEL_REQUEST:
            pid = _I32.unpack_from(pkt, 8)[0] if size >= 12 else None
            # The secret key after the pid is a credential: never kept.
            op = _Op("cancel", ts, size, {"type": "cancel", "process_id": pid})
            self._emit(op, out, ts, standalone=True)
        elif code >> 16 == PROTOCOL_3:
            req: dict[str, Any] = {"type": "startup", "protocol_version": f"3.{code & 0xFFFF}"}
            options: dict[str, str] = {}
            pos = 8
            while pos < size and pkt[pos]:
                name, pos = _cstr(pkt, pos)
                value, pos = _cstr(pkt, pos)
                if name in _STARTUP_KEYS:
                    req[name] = value
                elif len(options) < MAX_PARAMETERS:
                    options[name] = value
            if options:
                req["parameters"] = options
            self.c.typed = True
            self._push(_Op("startup", ts, size, req), out)
        else:
            self._violation(out, f"unknown startup code {code}")

    def _answer(self, data: bytes, pos: int, ts: int, out: list[Event]) -> int:
        """The server's one-byte answer to SSLRequest/GSSENCRequest at `pos`; returns where parsing
        goes on, or -1 when the connection is encrypted (or given up) from here on."""
        byte = data[pos]
        code = self.awaiting
        self.awaiting = 0
        op = self._pop_to("untyped", ts, out)
        if op is not None:
            resp = self._resp(op, ts, 1)
            resp["answer"] = chr(byte)
            resp["encrypted"] = byte in (ord("S"), ord("G"))
            self._emit(op, out, ts)
        if byte == ord("E"):  # an old server's ErrorResponse instead: parse it as a typed message
            return pos
        if code == SSL_REQUEST and byte == ord("S"):
            self.dead = True
            out.append(Upgrade("tls", bytes(self.c.buf), data[pos + 1 :]))
            self.c.buf.clear()
            return -1
        if byte == ord("G"):  # GSSAPI encryption: nothing readable follows
            self.dead = True
            return -1
        if byte != ord("N"):
            self._violation(out, f"answer {byte!r} to an encryption request")
            return -1
        return pos + 1

    def _counted(self, client: bool, t: int, size: int, ts: int, out: list[Event]) -> None:
        """A message known from its header alone: DataRow, CopyData, PasswordMessage/SASL."""
        if client:
            if t == 100:  # 'd' CopyData into COPY FROM STDIN
                op = self.copy
                if op is not None and op.req is not None:
                    op.size += size
                    copy = op.req.setdefault("copy", {"messages": 0, "bytes": 0})
                    copy["messages"] += 1
                    copy["bytes"] += size - 5
                return
            # 'p': a password, SASLInitialResponse or SASLResponse — never read.
            head = self._head()
            if head is not None and head.kind == "startup" and head.req is not None:
                head.size += size
                head.req["auth_responses"] = head.req.get("auth_responses", 0) + 1
            return
        head = self._head()
        if head is None or head.req is None:
            self._count("orphan_responses")
            return
        resp = self._resp(head, ts, size)
        if t == 68:  # 'D' DataRow
            resp["rows"] = resp.get("rows", 0) + 1
        else:  # 'd' CopyData out of COPY TO STDOUT
            copy = resp.setdefault("copy", {"direction": "out"})
            copy["messages"] = copy.get("messages", 0) + 1
            copy["bytes"] = copy.get("bytes", 0) + size - 5

    def _frontend(self, t: int, body: bytes, size: int, cut: bool, ts: int, out: list[Event]) -> None:
        if t == 81:  # 'Q' Query
            query, _ = _cstr(body, 0)
            req: dict[str, Any] = {"type": "query", "query": redact_sql(query)}
            if cut:
                req["query_truncated"] = True
            self._push(_Op("Q", ts, size, req), out)
            self.group_size = 0
            return
        if not self.group_size:
            self.group_ts = ts
        self.group_size += size
        if t == 80:  # 'P' Parse
            name, pos = _cstr(body, 0)
            query, pos = _cstr(body, pos)
            query = redact_sql(query)
            statements = self.statements
            statements.pop(name, None)
            statements[name] = (query, cut)
            if len(statements) > MAX_STATEMENTS:
                del statements[next(iter(statements))]
            op = _Op("P", ts, size, None)
            op.aside = {"type": "parse", "query": query, "statement": name}
            if cut:
                op.aside["query_truncated"] = True
            self._push(op, out)
        elif t == 66:  # 'B' Bind
            portal, pos = _cstr(body, 0)
            stmt, pos = _cstr(body, pos)
            params = -1
            if pos + 2 <= len(body):
                nfmt = _I16.unpack_from(body, pos)[0]
                pos += 2 + 2 * max(nfmt, 0)
                if pos + 2 <= len(body):
                    params = _I16.unpack_from(body, pos)[0]
            known = self.statements.get(stmt)
            portals = self.portals
            portals.pop(portal, None)
            portals[portal] = (known[0] if known else None, known[1] if known else False, stmt, params)
            if len(portals) > MAX_PORTALS:
                del portals[next(iter(portals))]
            self._push(_Op("B", ts, size, None), out)
        elif t == 69:  # 'E' Execute
            portal, pos = _cstr(body, 0)
            max_rows = _I32.unpack_from(body, pos)[0] if pos + 4 <= len(body) else 0
            bound = self.portals.get(portal)
            req = {"type": "execute", "query": bound[0] if bound else None}
            if bound is not None:
                if bound[1]:
                    req["query_truncated"] = True
                req["statement"] = bound[2]
                if bound[3] >= 0:
                    req["parameters"] = bound[3]
            if portal:
                req["portal"] = portal
            if max_rows:
                req["max_rows"] = max_rows
            self._push(_Op("E", self.group_ts, self.group_size, req), out)
            self.group_size = 0
        elif t == 83:  # 'S' Sync
            self._push(_Op("S", ts, size, None), out)
            self.group_size = 0
        elif t in (68, 67):  # 'D' Describe, 'C' Close
            what = chr(body[0]) if body else "?"
            name, _ = _cstr(body, 1)
            if t == 67:
                (self.statements if what == "S" else self.portals).pop(name, None)
            self._push(_Op("D" if t == 68 else "C", ts, size, None), out)
        elif t == 70:  # 'F' FunctionCall
            oid = _I32.unpack_from(body, 0)[0] if len(body) >= 4 else None
            self._push(_Op("F", ts, size, {"type": "function_call", "function_oid": oid}), out)
            self.group_size = 0
        elif t == 102:  # 'f' CopyFail
            copying = self.copy
            if copying is not None and copying.req is not None:
                copying.req["copy_fail"] = _cstr(body, 0)[0]
        # 'H' Flush, 'X' Terminate, 'c' CopyDone: nothing to answer

    # ---- server → client ---------------------------------------------------------------------

    def _backend(self, t: int, body: bytes, size: int, cut: bool, ts: int, out: list[Event]) -> None:
        if t in (67, 73, 115):  # 'C' CommandComplete, 'I' EmptyQuery, 's' PortalSuspended
            head = self._head()
            tag = _cstr(body, 0)[0] if t == 67 else ""
            if head is not None and head.kind == "Q":
                resp = self._resp(head, ts, size)
                resp.setdefault("commands", []).append(tag)
                return
            op = self._pop_to("E", ts, out)
            if op is None:
                return
            self.copy = None
            resp = self._resp(op, ts, size)
            resp["command_tag"] = tag
            affected = _affected(tag)
            if affected is not None:
                resp["rows_affected"] = affected
            if t == 115:
                resp["suspended"] = True
            self._emit(op, out, ts)
        elif t == 90:  # 'Z' ReadyForQuery
            self._ready(body[0] if body else 0, size, ts, out)
        elif t in (49, 50, 51, 110):  # '1' ParseComplete, '2' BindComplete, '3' CloseComplete, 'n' NoData
            self._pop_to({49: "P", 50: "B", 51: "C", 110: "D"}[t], ts, out)
        elif t == 84:  # 'T' RowDescription
            head = self._head()
            if head is None:
                return
            if head.kind == "D":  # Describe answered; the Execute after it returns these columns
                del self.ops[0]
                head = self._head()
            if head is not None and head.req is not None:
                resp = self._resp(head, ts, size)
                resp["columns"] = _columns(body)
        elif t == 69:  # 'E' ErrorResponse
            self._error(_fields_of(body), size, ts, out)
        elif t == 78:  # 'N' NoticeResponse
            head = self._head()
            if head is None or head.req is None:
                self._count("notices")
                return
            resp = self._resp(head, ts, size)
            resp["notices"] = resp.get("notices", 0) + 1
            kept = resp.setdefault("notice_messages", [])
            if len(kept) < MAX_NOTICES:
                kept.append(_fields_of(body))
        elif t == 65:  # 'A' NotificationResponse (LISTEN/NOTIFY)
            pid = _I32.unpack_from(body, 0)[0] if len(body) >= 4 else None
            channel, pos = _cstr(body, 4)
            payload, _ = _cstr(body, pos)
            note = {"type": "notification", "channel": channel, "payload": payload, "process_id": pid}
            out.append(Message(False, ts, ts, size, note, standalone=True))
        elif t in (71, 72, 87):  # 'G' CopyIn, 'H' CopyOut, 'W' CopyBoth response
            head = self._head()
            if head is None or head.req is None:
                return
            resp = self._resp(head, ts, size)
            copy = resp.setdefault("copy", {})
            copy["direction"] = {71: "in", 72: "out", 87: "both"}[t]
            copy["format"] = "binary" if body[:1] == b"\x01" else "text"
            self.copy = head
        elif t == 82:  # 'R' Authentication request: the method, never the SCRAM data
            head = self._head()
            code = _I32.unpack_from(body, 0)[0] if len(body) >= 4 else -1
            if head is None or head.kind != "startup":
                return
            resp = self._resp(head, ts, size)
            methods = resp.setdefault("authentication", [])
            name = _AUTH.get(code, str(code))
            if code == 10:  # SASL: the mechanisms offered
                mechs = [m for m in body[4:].split(b"\0") if m][:8]
                name = "sasl " + ",".join(m.decode("ascii", "replace") for m in mechs)
            if len(methods) < 8:
                methods.append(name)
        elif t == 83:  # 'S' ParameterStatus
            head = self._head()
            if head is None or head.kind != "startup":
                return
            name, pos = _cstr(body, 0)
            value, _ = _cstr(body, pos)
            params = self._resp(head, ts, size).setdefault("parameters", {})
            if len(params) < MAX_PARAMETERS:
                params[name] = value
        elif t == 75:  # 'K' BackendKeyData: the pid; the key is a cancel credential, not kept
            head = self._head()
            if head is not None and head.kind == "startup" and len(body) >= 4:
                self._resp(head, ts, size)["process_id"] = _I32.unpack_from(body, 0)[0]
        elif t == 118:  # 'v' NegotiateProtocolVersion
            head = self._head()
            if head is not None and head.kind == "startup" and len(body) >= 4:
                self._resp(head, ts, size)["protocol_version"] = f"3.{_I32.unpack_from(body, 0)[0]}"
        elif t == 86:  # 'V' FunctionCallResponse
            head = self._head()
            if head is not None and head.kind == "F":
                self._resp(head, ts, size)["result_length"] = (
                    _I32.unpack_from(body, 0)[0] if len(body) >= 4 else None
                )
        # 't' ParameterDescription, 'c' CopyDone: nothing to record

    def _error(self, err: dict[str, Any], size: int, ts: int, out: list[Event]) -> None:
        ops = self.ops
        head = self._head()
        self.copy = None
        if head is None:  # unsolicited (the server shutting down, FATAL): an entry of its own
            out.append(Message(False, ts, ts, size, {"type": "error", "error": err}, standalone=True))
            return
        if head.kind in ("Q", "startup", "F"):
            resp = self._resp(head, ts, size)
            resp["error"] = err
            if head.kind == "startup" and err.get("severity") in _FATAL:  # the server hangs up
                del ops[0]
                self._emit(head, out, ts)
            return
        # Extended protocol: the server discards messages up to the next Sync (protocol-flow.html).
        stop = next((i for i, op in enumerate(ops) if op.kind == "S"), len(ops))
        batch = ops[:stop]
        del ops[:stop]
        failed: _Op | None = None
        for op in batch:
            if op.kind == "E":
                resp = self._resp(op, ts, size if failed is None else 0)
                if failed is None:
                    resp["error"] = err
                    failed = op
                else:
                    resp["aborted"] = True
                self._emit(op, out, ts)
        if failed is None:  # no Execute in the batch (a prepare that failed): the failing message itself
            if not batch:  # at Sync itself (a deferred constraint failing the implicit commit)
                out.append(Message(False, ts, ts, size, {"type": "error", "error": err}, standalone=True))
                return
            first = batch[0]
            req = first.aside or {"type": _KIND_NAMES.get(first.kind, first.kind)}
            op = _Op(first.kind, first.ts, first.size, req)
            self._resp(op, ts, size)["error"] = err
            self._emit(op, out, ts)

    def _ready(self, status: int, size: int, ts: int, out: list[Event]) -> None:
        """ReadyForQuery ends a Query, a Sync'd batch, a function call or the startup."""
        ops = self.ops
        for i, op in enumerate(ops):
            if op.kind in ("Q", "S", "F", "startup"):
                for lost in ops[:i]:
                    if lost.req is not None:
                        self._count("unanswered")
                        self._emit(lost, out, ts)
                del ops[: i + 1]
                if op.req is not None:
                    resp = self._resp(op, ts, size)
                    resp["transaction_status"] = _TX_STATUS.get(status, chr(status) if status else "")
                    commands = resp.get("commands")
                    if commands:
                        resp["command_tag"] = commands[-1]
                        affected = _affected(commands[-1])
                        if affected is not None:
                            resp["rows_affected"] = affected
                        if len(commands) == 1:
                            del resp["commands"]
                    self._emit(op, out, ts)
                self.copy = None
                return
        self._count("orphan_responses")


_FATAL: Final = frozenset({"FATAL", "PANIC"})
_KIND_NAMES: Final = {"P": "parse", "B": "bind", "D": "describe", "C": "close", "S": "sync"}


def _affected(tag: str) -> int | None:
    """The row count a command tag ends with (`INSERT 0 5`, `UPDATE 2`, `SELECT 3`, `COPY 10`)."""
    _, _, last = tag.rpartition(" ")
    return int(last) if last.isdigit() and len(last) <= 20 else None


def _columns(body: bytes) -> list[str]:
    """RowDescription: the column names (each followed by 18 bytes of type information)."""
    n = _I16.unpack_from(body, 0)[0] if len(body) >= 2 else 0
    names: list[str] = []
    pos = 2
    for _ in range(min(n, MAX_COLUMNS)):
        name, pos = _cstr(body, pos)
        names.append(name)
        pos += 18
        if pos >= len(body):
            break
    return names


# ---- detection ------------------------------------------------------------------------------------


def _probe_untyped(data: bytes) -> Verdict:
    n = len(data)
    if n < 8:
        return Verdict.MAYBE if data[0] == 0 and (n < 2 or data[1] <= MAX_STARTUP >> 8) else Verdict.NO
    length, code = _UNTYPED.unpack_from(data)
    if code in (SSL_REQUEST, GSSENC_REQUEST):
        return Verdict.YES if length == 8 else Verdict.NO
    if code == CANCEL_REQUEST:
        return Verdict.YES if 16 <= length <= 264 else Verdict.NO
    if code >> 16 != PROTOCOL_3 or not 8 < length <= MAX_STARTUP:
        return Verdict.NO
    params = data[8:length]
    if b"user\0" in params and (n < length or data[length - 1] == 0):
        return Verdict.YES
    return Verdict.MAYBE if n < length else Verdict.NO


def _walk_bind(body: bytes) -> bool:
    """Bind's fields fill its body exactly: portal, statement, formats, parameters, result formats."""
    pos = body.find(b"\0")
    pos = body.find(b"\0", pos + 1) + 1 if pos >= 0 else 0
    if pos <= 0:
        return False
    n = len(body)
    for counted in (2, 4, 2):  # parameter formats (int16 each), values (int32 length + bytes), formats
        if pos + 2 > n:
            return False
        count = _I16.unpack_from(body, pos)[0]
        pos += 2
        if count < 0:
            return False
        if counted == 4:
            for _ in range(count):
                if pos + 4 > n:
                    return False
                vlen = _I32.unpack_from(body, pos)[0]
                pos += 4 + max(vlen, 0)
                if vlen < -1 or pos > n:
                    return False
        else:
            pos += 2 * count
    return pos == n


def _probe_typed(data: bytes) -> Verdict:
    """A whole Query, Parse or Bind message at the start of a client's bytes (mid-stream pickup)."""
    t = data[0]
    if t not in b"QPB":
        return Verdict.NO
    if len(data) < 5:
        return Verdict.MAYBE
    length = _I32.unpack_from(data, 1)[0]
    if not 4 < length <= MAX_PROBE_MESSAGE:
        return Verdict.NO
    if len(data) < length + 1:
        return Verdict.MAYBE
    body = data[5 : length + 1]
    if t == 81:  # Query: one string, its NUL the last byte
        return Verdict.YES if body.find(b"\0") == len(body) - 1 else Verdict.NO
    if t == 80:  # Parse: name, query, int16 n, n int32 type oids
        end = body.find(b"\0")
        end = body.find(b"\0", end + 1) if end >= 0 else -1
        if end < 0 or end + 3 > len(body):
            return Verdict.NO
        count = _I16.unpack_from(body, end + 1)[0]
        return Verdict.YES if count >= 0 and end + 3 + 4 * count == len(body) else Verdict.NO
    return Verdict.YES if _walk_bind(body) else Verdict.NO


def _probe_server(data: bytes) -> Verdict:
    """The backend's first bytes: an authentication request or ReadyForQuery."""
    if len(data) < 9:
        return Verdict.MAYBE if data[:1] in (b"R", b"Z") else Verdict.NO
    t, length = _HEAD.unpack_from(data)
    if t == b"R" and 8 <= length <= 1024 and _I32.unpack_from(data, 5)[0] in _AUTH:
        return Verdict.YES
    if t == b"Z" and length == 5 and data[5] in _TX_STATUS:
        return Verdict.YES
    return Verdict.NO


def probe(client: bytes, server: bytes) -> Verdict:
    """StartupMessage (protocol 3.x, with its mandatory `user`), SSLRequest, GSSENCRequest or
    CancelRequest; mid-stream a whole Query/Parse/Bind message; any port."""
    verdict = Verdict.MAYBE
    if client:
        verdict = _probe_untyped(client) if client[0] == 0 else _probe_typed(client)
        if verdict == Verdict.YES:
            return verdict
    if server:
        sv = _probe_server(server)
        if sv == Verdict.YES or not client:
            return sv
    return verdict


# ---- presentation -----------------------------------------------------------------------------


def present(req: Message | None, resp: Message | None) -> Presented:
    q = req.fields if req is not None else {}
    r = resp.fields if resp is not None else {}
    kind = q.get("type") or r.get("type")
    err = r.get("error")
    ok = resp is not None and err is None and not r.get("aborted")
    status = 0 if ok else None
    query = q.get("query")
    if type(query) is str:
        tag = r.get("command_tag")
        verb = tag.split(" ", 1)[0] if type(tag) is str and tag else sql_verb(query)
        text = " ".join(query[: SUMMARY_CHARS * 2].split())[:SUMMARY_CHARS]
        return Presented(method=verb or None, path=main_table(query), status=status, summary=text)
    if kind == "startup":
        summary = f"startup user={q.get('user', '?')} database={q.get('database', q.get('user', '?'))}"
        return Presented("STARTUP", q.get("database") or q.get("user"), status, summary)
    if kind == "notification":
        payload = r.get("payload") or ""
        channel = r.get("channel")
        summary = f"NOTIFICATION {channel} {payload}"[:SUMMARY_CHARS].rstrip()
        return Presented("NOTIFICATION", channel, 0, summary)
    if kind in ("ssl_request", "gssenc_request"):
        method = "SSLRequest" if kind == "ssl_request" else "GSSENCRequest"
        answer = r.get("answer")
        return Presented(method, None, status, f"{method} → {answer or '?'}")
    if kind == "cancel":
        return Presented("CANCEL", None, None, f"CancelRequest for process {q.get('process_id')}")
    if kind == "error" and type(err) is dict:
        return Presented("ERROR", None, None, f"{err.get('code', '')} {err.get('message', '')}".strip())
    name = str(kind or "message").upper()
    return Presented(name, None, status, name)


def classify(request: dict[str, Any] | None, response: dict[str, Any] | None) -> dict[str, Any]:
    """An ErrorResponse makes the entry an error whose type is its SQLSTATE (the status text); a
    password literal the parser replaced is listed in `redacted`."""
    over = _NOTHING
    if response is not None:
        err = response.get("error")
        if err is not None:
            over = {"error": {"type": err.get("code") or "error", "message": err.get("message", "")}}
        elif response.get("aborted"):
            over = dict(_ABORTED)
    if request is not None:
        query = request.get("query")
        if type(query) is str and MARKER in query:
            over = {**over, "redacted": ["request.query", "summary"]}
    return over


_NOTHING: Final[dict[str, Any]] = {}
_ABORTED: Final[dict[str, Any]] = {
    "error": {"type": "aborted", "message": "not executed: an earlier message of its batch failed"}
}

SPEC: Final = ProtocolSpec(
    name="postgresql",
    transports=("tcp",),
    ports=(5432,),
    probe=probe,
    session=PostgresSession,
    present=present,
    matcher="key",
    classify=classify,
)

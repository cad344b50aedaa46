"""MySQL and MariaDB client/server protocol: the login, COM_QUERY, prepared statements and the other
commands, each paired in order with its OK, ERR or result set.

Rule: each direction is split into packets (3-byte length, 1-byte sequence id) over a bounded buffer:
a packet of up to the hold size is read whole, a larger one is streamed (its first bytes kept, the rest
counted), and 16 MiB packets continued by the next one are joined into one logical packet of which
at most the keep size is kept. A command is a client packet with sequence id 0; its response is read
by a small state machine chosen by the command (OK/ERR, result set, prepare answer, login exchange),
so a result set of any size costs one step per row packet and keeps only counts. The auth response is
never parsed into an entry, and passwords inside SQL (`IDENTIFIED BY '…'`, `PASSWORD('…')`) are
replaced by the redaction marker here, before any entry exists.

The wire format is MySQL's "Client/Server Protocol" (dev.mysql.com/doc/dev/mysql-server/latest/
PAGE_PROTOCOL.html) and MariaDB's (mariadb.com/kb/en/clientserver-protocol). `CLIENT_SSL` is followed
into TLS by an `Upgrade`; a compressed connection (`CLIENT_COMPRESS`) is named at login and its later
bytes are not dissected.
"""

from __future__ import annotations

import re
from collections import deque
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

# What replaces a password: the dissector's redaction marker (redact.MARKER; a test holds them equal).
REDACTED: Final = "[REDACTED]"
# A physical packet's payload is at most 2^24 - 1 bytes; one of exactly that size is continued.
MAX_PAYLOAD: Final = 0xFFFFFF
# Packets up to this size are read whole (column definitions, OK/ERR, the greeting are far smaller);
# a larger one is streamed so that the buffer stays bounded whatever a peer claims.
MIN_HOLD: Final = 16 * 1024
# Bytes of a logical packet kept at least, whatever the body cap (its fields must stay parseable).
MIN_KEEP: Final = 4096
# Characters of SQL in an entry's summary (the request keeps up to the body cap).
SUMMARY_CHARS: Final = 200
# Column names kept per result set; beyond, the columns are counted only.
MAX_COLUMN_NAMES: Final = 256
# A result set never has more columns than this (MySQL and MariaDB cap a table at 4096 columns and a
# select list far below 64 Ki): a larger count is not MySQL.
MAX_COLUMNS: Final = 65535
# Prepared statements remembered per connection (statement id → SQL); the oldest is forgotten first.
MAX_STATEMENTS: Final = 1024
# Commands awaiting a response (matching.MAX_PENDING): MySQL clients rarely pipeline at all.
MAX_OUTSTANDING: Final = 256
# Connection attributes kept from the login, and the characters of each.
MAX_ATTRIBUTES: Final = 64
MAX_ATTRIBUTE_CHARS: Final = 256
# The greeting's protocol version (HandshakeV10; v9 is pre-3.21 and not dissected).
PROTOCOL_VERSION: Final = 10
# Longest version string a greeting is taken to have (real ones are ~40 characters).
MAX_VERSION_CHARS: Final = 256

# Capability flags (mysql_com.h, "Capabilities Flags").
CLIENT_CONNECT_WITH_DB: Final = 1 << 3
CLIENT_COMPRESS: Final = 1 << 5
CLIENT_PROTOCOL_41: Final = 1 << 9
CLIENT_SSL: Final = 1 << 11
CLIENT_SECURE_CONNECTION: Final = 1 << 15
CLIENT_PLUGIN_AUTH: Final = 1 << 19
CLIENT_CONNECT_ATTRS: Final = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: Final = 1 << 21
CLIENT_SESSION_TRACK: Final = 1 << 23
CLIENT_DEPRECATE_EOF: Final = 1 << 24
CLIENT_QUERY_ATTRIBUTES: Final = 1 << 27
CAPABILITIES: Final = (
    "LONG_PASSWORD", "FOUND_ROWS", "LONG_FLAG", "CONNECT_WITH_DB", "NO_SCHEMA", "COMPRESS", "ODBC",
    "LOCAL_FILES", "IGNORE_SPACE", "PROTOCOL_41", "INTERACTIVE", "SSL", "IGNORE_SIGPIPE", "TRANSACTIONS",
    "RESERVED", "SECURE_CONNECTION", "MULTI_STATEMENTS", "MULTI_RESULTS", "PS_MULTI_RESULTS",
    "PLUGIN_AUTH", "CONNECT_ATTRS", "PLUGIN_AUTH_LENENC_CLIENT_DATA", "CAN_HANDLE_EXPIRED_PASSWORDS",
    "SESSION_TRACK", "DEPRECATE_EOF", "OPTIONAL_RESULTSET_METADATA", "ZSTD_COMPRESSION",
    "QUERY_ATTRIBUTES",
)  # fmt: skip
# Server status flags (SERVER_STATUS_flags_enum).
SERVER_MORE_RESULTS_EXISTS: Final = 0x0008
SERVER_STATUS_CURSOR_EXISTS: Final = 0x0040

# Packet headers (first payload byte) of the generic responses.
OK: Final = 0x00
EOF: Final = 0xFE
ERR: Final = 0xFF
LOCAL_INFILE: Final = 0xFB
# An EOF packet is 5 bytes (protocol 4.1) or 1 (older); an OK packet with the 0xFE header (which
# replaces EOF under CLIENT_DEPRECATE_EOF) is at least 7.
EOF_MAX_LEN: Final = 7
# MariaDB's progress report is an ERR packet with this code; it never ends a response.
PROGRESS_CODE: Final = 0xFFFF

# Command bytes (my_command.h, MariaDB's COM_STMT_BULK_EXECUTE).
COMMANDS: Final = {
    0x00: "COM_SLEEP", 0x01: "COM_QUIT", 0x02: "COM_INIT_DB", 0x03: "COM_QUERY",
    0x04: "COM_FIELD_LIST", 0x05: "COM_CREATE_DB", 0x06: "COM_DROP_DB", 0x07: "COM_REFRESH",
    0x08: "COM_SHUTDOWN", 0x09: "COM_STATISTICS", 0x0A: "COM_PROCESS_INFO", 0x0B: "COM_CONNECT",
    0x0C: "COM_PROCESS_KILL", 0x0D: "COM_DEBUG", 0x0E: "COM_PING", 0x0F: "COM_TIME",
    0x10: "COM_DELAYED_INSERT", 0x11: "COM_CHANGE_USER", 0x12: "COM_BINLOG_DUMP",
    0x13: "COM_TABLE_DUMP", 0x14: "COM_CONNECT_OUT", 0x15: "COM_REGISTER_SLAVE",
    0x16: "COM_STMT_PREPARE", 0x17: "COM_STMT_EXECUTE", 0x18: "COM_STMT_SEND_LONG_DATA",
    0x19: "COM_STMT_CLOSE", 0x1A: "COM_STMT_RESET", 0x1B: "COM_SET_OPTION", 0x1C: "COM_STMT_FETCH",
    0x1D: "COM_DAEMON", 0x1E: "COM_BINLOG_DUMP_GTID", 0x1F: "COM_RESET_CONNECTION",
    0x20: "COM_CLONE", 0xFA: "COM_STMT_BULK_EXECUTE",
}  # fmt: skip
COM_QUIT: Final = 0x01
COM_INIT_DB: Final = 0x02
COM_QUERY: Final = 0x03
COM_FIELD_LIST: Final = 0x04
COM_CREATE_DB: Final = 0x05
COM_DROP_DB: Final = 0x06
COM_STATISTICS: Final = 0x09
COM_PROCESS_KILL: Final = 0x0C
COM_PING: Final = 0x0E
COM_CHANGE_USER: Final = 0x11
COM_BINLOG_DUMP: Final = 0x12
COM_STMT_PREPARE: Final = 0x16
COM_STMT_EXECUTE: Final = 0x17
COM_STMT_SEND_LONG_DATA: Final = 0x18
COM_STMT_CLOSE: Final = 0x19
COM_STMT_RESET: Final = 0x1A
COM_SET_OPTION: Final = 0x1B
COM_STMT_FETCH: Final = 0x1C
COM_BINLOG_DUMP_GTID: Final = 0x1E
COM_STMT_BULK_EXECUTE: Final = 0xFA
# Commands whose packet is the command byte alone (quit, statistics, process info, debug, ping, time,
# reset connection).
BARE_COMMANDS: Final = frozenset({0x01, 0x09, 0x0A, 0x0D, 0x0E, 0x0F, 0x1F})
# Commands the server never answers (a request entry of its own).
NO_RESPONSE: Final = frozenset({COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE})
# Commands after which the server streams events for the rest of the connection (replication).
STREAMS: Final = frozenset({COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID})
# Commands whose payload is a statement id (4 bytes, little-endian).
STATEMENT_COMMANDS: Final = frozenset(
    {COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE, COM_STMT_RESET, COM_STMT_FETCH,
     COM_STMT_BULK_EXECUTE}
)  # fmt: skip
# Commands whose payload is a name (schema or table) in text.
NAME_COMMANDS: Final = {COM_INIT_DB: "database", COM_CREATE_DB: "database", COM_DROP_DB: "database"}
# Commands whose entries are named by the SQL verb (method) rather than the command.
SQL_COMMANDS: Final = frozenset({"COM_QUERY", "COM_STMT_EXECUTE"})
LOGIN: Final = "CONNECT"  # the method of the login exchange (MySQL's general log calls it Connect)

# Response kinds (what the server side reads for a command).
_RESULT, _PREPARE, _FIELDS, _AUTH, _ONE, _STRING, _ROWS = range(7)
# Result-set phases.
_FIRST, _DEFS, _DEFS_END, _ROW, _PARAMS, _PCOLS, _DONE = range(7)

_VERB: Final = re.compile(rb"\A(?:\s|/\*.*?\*/|(?:--\s|#)[^\n]*(?:\n|\Z)|\()*([A-Za-z]+)", re.S)
# Passwords inside SQL: IDENTIFIED [WITH plugin] BY|AS 'x', PASSWORD('x'), SET PASSWORD … = 'x'.
_SECRET_SQL: Final = re.compile(
    r"""(IDENTIFIED(?:\s+WITH\s+\S+)?\s+(?:BY|AS)\s+(?:PASSWORD\s+)?|PASSWORD\s*\(\s*|SET\s+PASSWORD\b[^=]*=\s*)"""
    r"""('(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")""",
    re.I | re.S,
)


def redact_sql(sql: str) -> str:
    """The statement with the passwords it sets replaced by the marker (quoted, so it still reads)."""
    if "ASSWORD" not in sql.upper() and "DENTIFIED" not in sql.upper():
        return sql
    return _SECRET_SQL.sub(lambda m: f"{m.group(1)}'{REDACTED}'", sql)


def sql_verb(sql: bytes | str) -> str | None:
    """The statement's first keyword, upper-case (`SELECT`), past comments and parentheses."""
    raw = sql.encode("utf-8", "replace") if isinstance(sql, str) else sql
    m = _VERB.match(raw[:512])
    return m.group(1).decode("ascii").upper() if m else None


def capability_names(flags: int) -> list[str]:
    return [name for bit, name in enumerate(CAPABILITIES) if flags >> bit & 1]


def _lenenc(p: bytes, i: int) -> tuple[int, int]:
    """A length-encoded integer at `i`: (value, next index); (-1, …) for NULL (0xFB) or a bad prefix."""
    if i >= len(p):
        return -1, i
    b = p[i]
    if b < 0xFB:
        return b, i + 1
    if b == 0xFC:
        return int.from_bytes(p[i + 1 : i + 3], "little"), i + 3
    if b == 0xFD:
        return int.from_bytes(p[i + 1 : i + 4], "little"), i + 4
    if b == 0xFE:
        return int.from_bytes(p[i + 1 : i + 9], "little"), i + 9
    return -1, i + 1


def _lenenc_str(p: bytes, i: int) -> tuple[bytes, int]:
    n, i = _lenenc(p, i)
    if n < 0:
        return b"", i
    return p[i : i + n], i + n


def _cstr(p: bytes, i: int) -> tuple[bytes, int]:
    end = p.find(b"\0", i)
    if end < 0:
        return p[i:], len(p)
    return p[i:end], end + 1


def _text(raw: bytes, cap: int) -> str:
    return raw[:cap].decode("utf-8", "replace")


def parse_ok(p: bytes, session_track: bool | None) -> dict[str, Any]:
    """An OK packet (header 0x00, or 0xFE in place of EOF): counts, status and the info text."""
    affected, i = _lenenc(p, 1)
    insert_id, i = _lenenc(p, i)
    status = int.from_bytes(p[i : i + 2], "little")
    warnings = int.from_bytes(p[i + 2 : i + 4], "little")
    out: dict[str, Any] = {
        "affected_rows": max(affected, 0),
        "last_insert_id": max(insert_id, 0),
        "status_flags": status,
        "warnings": warnings,
    }
    i += 4
    if i < len(p):
        info = _lenenc_str(p, i)[0] if session_track else p[i:]
        if info and info.isascii() and (text := info.decode("ascii")).isprintable():
            out["info"] = text
    return out


def parse_err(p: bytes, cap: int) -> dict[str, Any]:
    """An ERR packet: code, SQLSTATE (protocol 4.1: `#` + 5 characters) and message."""
    code = int.from_bytes(p[1:3], "little")
    if p[3:4] == b"#":
        return {"code": code, "sqlstate": p[4:9].decode("ascii", "replace"), "message": _text(p[9:], cap)}
    return {"code": code, "sqlstate": None, "message": _text(p[3:], cap)}


def _column_name(p: bytes) -> str:
    """Column definition 4.1: catalog, schema, table, org_table, name, … (lenenc strings)."""
    i = 0
    for _ in range(4):
        _, i = _lenenc_str(p, i)
    name, _ = _lenenc_str(p, i)
    return name.decode("utf-8", "replace")


# ---- detection ---------------------------------------------------------------------------------


def _header(data: bytes) -> tuple[int, int] | None:
    if len(data) < 4:
        return None
    return data[0] | data[1] << 8 | data[2] << 16, data[3]


def _greeting_verdict(server: bytes) -> Verdict:
    head = _header(server)
    if head is None:
        return Verdict.MAYBE
    length, seq = head
    if seq != 0 or length < 2 or length > 1024:
        return Verdict.NO
    if len(server) < 5:
        return Verdict.MAYBE
    if server[4] == ERR:  # a server refusing the connection before any greeting
        return Verdict.YES if length >= 3 and len(server) >= 4 + length else Verdict.MAYBE
    if server[4] != PROTOCOL_VERSION:
        return Verdict.NO
    version = server[5 : 4 + length]
    end = version.find(b"\0")
    if end < 0:
        return Verdict.MAYBE if len(server) < 4 + length else Verdict.NO
    text = version[:end]
    if not text[:1].isdigit() or not (text.isascii() and text.decode("ascii").isprintable()):
        return Verdict.NO
    return Verdict.YES


def _command_verdict(client: bytes, server: bytes) -> Verdict:
    head = _header(client)
    if head is None:
        return Verdict.MAYBE
    length, seq = head
    if seq != 0 or length == 0 or length > MAX_PAYLOAD:
        return Verdict.NO
    if len(client) < 5:
        return Verdict.MAYBE
    cmd = client[4]
    if cmd not in COMMANDS or cmd in (0x00, 0x0B, 0x20):  # sleep/connect/clone: never a first word
        return Verdict.NO
    body = client[5 : 4 + length]
    if cmd in (COM_QUERY, COM_STMT_PREPARE, COM_INIT_DB):
        if not body or (cmd != COM_INIT_DB and sql_verb(body) is None):
            return Verdict.NO
        if len(client) >= 4 + length:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                return Verdict.NO
    elif cmd in BARE_COMMANDS:
        if length != 1:
            return Verdict.NO
    elif cmd in STATEMENT_COMMANDS:
        if length < 5:
            return Verdict.NO
    else:
        return Verdict.MAYBE  # a rarer command alone is weak evidence: let more bytes decide
    if len(client) > 4 + length:  # the next packet must parse too
        nxt = _header(client[4 + length :])
        if nxt is not None and nxt[1] not in (0, 1, 2):
            return Verdict.NO
    # SQL text after a command byte is evidence enough; a bare or binary command needs its answer
    # (sequence id 1). A server that spoke first mid-connection may be finishing an older answer.
    strong = cmd in (COM_QUERY, COM_STMT_PREPARE)
    answer = _header(server)
    if answer is not None and answer[1] == 1:
        return Verdict.YES
    if strong:
        return Verdict.YES
    return Verdict.NO if answer is not None else Verdict.MAYBE


def probe(client: bytes, server: bytes) -> Verdict:
    """A server greeting (protocol 10 and a version string), or a client command packet with sequence
    id 0 and a known command byte (SQL that starts with a keyword), any port. Never raises."""
    try:
        best = Verdict.NO
        if server:
            v = _greeting_verdict(server)
            if v == Verdict.YES:
                return v
            best = v
        if client:
            c = _command_verdict(client, server if best == Verdict.NO else b"")
            if c == Verdict.YES:
                return c
            best = max(best, c)
        elif not server:
            return Verdict.MAYBE
        return best
    except Exception:
        return Verdict.NO


# ---- the session -------------------------------------------------------------------------------


class _Reader:
    """One direction's packet splitter: a bounded buffer and the logical packet being joined."""

    __slots__ = ("buf", "buf_ts", "head", "joining", "seq", "skip", "total", "ts_first", "wire")

    def __init__(self) -> None:
        self.buf = b""  # an unfinished header or packet (at most the hold size + 4)
        self.buf_ts = 0  # capture time of the buffer's first byte
        self.head: bytearray | None = None  # the logical packet being joined or streamed (kept part)
        self.joining = False  # the last physical packet had the maximum length: the next continues it
        self.seq = 0
        self.skip = 0  # payload bytes of the current physical packet still to pass over
        self.total = 0  # payload bytes of the logical packet so far
        self.ts_first = 0
        self.wire = 0  # bytes on the wire of the logical packet so far


# One logical packet: sequence id, payload (its first bytes), payload size, wire size, first/last ts.
Packet = tuple[int, bytes, int, int, int, int]


class _Pending:
    """A command awaiting its response, and the response being read."""

    __slots__ = (
        "columns", "command", "fields", "kind", "left", "names", "phase", "query", "request_ts", "rows",
        "sets", "size", "ts_first",
    )  # fmt: skip

    def __init__(self, command: str, kind: int, query: str | None) -> None:
        self.command = command
        self.kind = kind
        self.query = query  # the prepared SQL (COM_STMT_PREPARE), remembered with its statement id
        self.phase = _FIRST
        self.fields: dict[str, Any] = {}
        self.left = 0  # definitions still to read in this block
        self.columns = -1  # the first result set's column count
        self.names: list[str] = []
        self.rows = 0
        self.sets = 0
        self.size = 0
        self.ts_first = 0
        self.request_ts = 0


class MysqlSession:
    """Both directions of one connection: commands as requests, their answers as responses."""

    __slots__ = (
        "cap",
        "caps",
        "client",
        "counters",
        "cur",
        "database",
        "deprecate_eof",
        "greeting",
        "greeting_size",
        "hold",
        "keep",
        "logged_in",
        "login_fields",
        "opaque",
        "pending",
        "server",
        "server_caps",
        "statements",
        "swallow",
        "system",
        "upgrade",
    )  # fmt: skip

    def __init__(self, config: SessionConfig) -> None:
        self.cap = max(config.body_cap, 1)
        self.keep = max(config.body_cap, MIN_KEEP)
        self.hold = max(config.body_cap, MIN_HOLD)
        self.client = _Reader()
        self.server = _Reader()
        self.greeting: dict[str, Any] | None = None
        self.greeting_size = 0
        self.server_caps = 0
        self.caps = 0  # the client's capabilities (from its login), 0 when the login was not seen
        self.logged_in = False
        self.login_fields: dict[str, Any] | None = None
        self.deprecate_eof: bool | None = None  # None: not known (no login seen, nothing learned)
        self.system: str | None = None  # "mysql" | "mariadb" once the greeting was seen
        self.database: str | None = None
        self.pending: deque[_Pending] = deque()
        self.cur: _Pending | None = None
        self.statements: dict[int, str] = {}
        self.swallow = -1  # the sequence id of a trailing EOF that may still come (unknown EOF mode)
        self.opaque = False  # compressed after login: nothing more is dissected
        self.upgrade: Upgrade | None = None
        self.counters: dict[str, int] = {}

    # ---- the Session protocol ----

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        # (Not `if self.upgrade is not None: return`: a compiled build would then take `self.upgrade`
        # for None after `_split` set it — mypyc keeps mypy's narrowing of the attribute.)
        handed_over = self.opaque or self.upgrade is not None
        if handed_over:
            return []
        out: list[Event] = []
        reader = self.client if from_client else self.server
        rest = self._split(reader, data, ts, from_client, out)
        up = self.upgrade
        if up is None:
            return out
        server_rest = self.server.buf
        if from_client:
            out.append(Upgrade(up.protocol, rest, server_rest))
        else:
            out.append(Upgrade(up.protocol, self.client.buf, rest))
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        if self.opaque or self.upgrade is not None:
            return []
        # A lost command or answer would shift every later pair (FIFO): give the flow up honestly.
        return [Violation("mysql: capture gap inside the packet stream")]

    def close(self, ts: int) -> list[Event]:
        cur = self.cur
        if cur is None or cur.phase == _FIRST or self.opaque or self.upgrade is not None:
            return []
        self.cur = None
        msg = self._response(cur, ts)
        msg.truncated = True
        return [msg]

    # ---- packets ----

    def _split(self, r: _Reader, data: bytes, ts: int, from_client: bool, out: list[Event]) -> bytes:
        """Cut the direction's bytes into logical packets and hand each on; the bytes left over when
        the connection switched to TLS (to be handed to the TLS session)."""
        buffered = len(r.buf)
        if buffered:
            data = r.buf + data
            r.buf = b""
        pos, n = 0, len(data)
        handle = self._client_packet if from_client else self._server_packet
        while pos < n:
            if r.skip:
                take = min(r.skip, n - pos)
                r.skip -= take
                pos += take
                if r.skip or r.joining:
                    continue
                pkt = (r.seq, bytes(r.head or b""), r.total, r.wire, r.ts_first, ts)
                r.head = None
                if handle(pkt, out):
                    return data[pos:]
                continue
            if n - pos < 4:
                break
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            avail = n - pos - 4
            first_ts = r.buf_ts if pos < buffered else ts
            if length > avail and length <= self.hold:
                break  # wait for the whole packet
            if r.head is None and length <= avail and length != MAX_PAYLOAD:
                # The usual case: one whole physical packet is one logical packet.
                end = pos + 4 + (length if length <= self.keep else self.keep)
                pkt = (data[pos + 3], data[pos + 4 : end], length, 4 + length, first_ts, ts)
                pos += 4 + length
                if handle(pkt, out):
                    return data[pos:]
                continue
            if r.head is None:
                r.head = bytearray()
                r.seq = data[pos + 3]
                r.total = r.wire = 0
                r.ts_first = first_ts
            take = min(length, avail)
            room = self.keep - len(r.head)
            if room > 0:
                r.head += data[pos + 4 : pos + 4 + min(take, room)]
            r.total += length
            r.wire += 4 + length
            r.joining = length == MAX_PAYLOAD
            pos += 4 + take
            if take < length:
                r.skip = length - take
                break
            if not r.joining:
                pkt = (r.seq, bytes(r.head), r.total, r.wire, r.ts_first, ts)
                r.head = None
                if handle(pkt, out):
                    return data[pos:]
        if pos < n:
            r.buf = data[pos:]
            r.buf_ts = ts if pos >= buffered else r.buf_ts
        return b""

    # ---- the client side ----

    def _client_packet(self, pkt: Packet, out: list[Event]) -> bool:
        """One client packet; True when the connection switches to TLS after it."""
        seq, p, total, wire, ts0, ts1 = pkt
        if seq != 0:
            if seq == 1 and self.greeting is not None and self.login_fields is None and p:
                return self._login(p, total, wire, ts0, ts1, out)
            return False  # auth data, LOCAL INFILE contents: part of an exchange already under way
        if not p:
            out.append(Violation("mysql: empty command packet"))
            self.opaque = True
            return False
        code = p[0]
        name = COMMANDS.get(code)
        if name is None:
            out.append(Violation(f"mysql: unknown command 0x{code:02x}"))
            self.opaque = True
            return False
        fields: dict[str, Any] = {"command": name}
        query: str | None = None
        if code in (COM_QUERY, COM_STMT_PREPARE):
            start = 1
            if code == COM_QUERY and self.caps & self.server_caps & CLIENT_QUERY_ATTRIBUTES:
                count, start = _lenenc(p, 1)
                _, start = _lenenc(p, start)
                if count != 0:
                    fields["query_attributes"] = count
                    start = -1  # the values come first and are typed: the SQL is not located
            if start >= 0:
                query = redact_sql(_text(p[start:], self.cap))
                fields["query"] = query
                if total - start > self.cap:
                    fields["query_truncated"] = True
        elif code in STATEMENT_COMMANDS and len(p) >= 5:
            sid = int.from_bytes(p[1:5], "little")
            fields["statement_id"] = sid
            known = self.statements.get(sid)
            if known is not None:
                fields["query"] = known
            if code == COM_STMT_EXECUTE and len(p) >= 6:
                fields["cursor"] = p[5] != 0
            elif code == COM_STMT_CLOSE:
                self.statements.pop(sid, None)
        elif code in NAME_COMMANDS:
            value = _text(p[1:], MAX_ATTRIBUTE_CHARS)
            fields[NAME_COMMANDS[code]] = value
            if code == COM_INIT_DB:
                self.database = value
        elif code == COM_FIELD_LIST:
            fields["table"] = _text(_cstr(p, 1)[0], MAX_ATTRIBUTE_CHARS)
        elif code == COM_PROCESS_KILL:
            fields["connection_id"] = int.from_bytes(p[1:5], "little")
        elif code == COM_SET_OPTION:
            fields["option"] = int.from_bytes(p[1:3], "little")
        elif code == COM_CHANGE_USER:
            fields["user"] = _text(_cstr(p, 1)[0], MAX_ATTRIBUTE_CHARS)
        if self.system is not None:
            fields["db_system"] = self.system
        if code in NO_RESPONSE or code in STREAMS:
            out.append(Message(True, ts0, ts1, wire, fields, standalone=True))
            if code in STREAMS:
                self.opaque = True  # the server streams replication events from now on
            return False
        if code in (COM_QUERY, COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE):
            kind = _RESULT
        elif code == COM_STMT_PREPARE:
            kind = _PREPARE
        elif code == COM_FIELD_LIST:
            kind = _FIELDS
        elif code == COM_CHANGE_USER:
            kind = _AUTH
        elif code == COM_STATISTICS:
            kind = _STRING
        elif code == COM_STMT_FETCH:
            kind = _ROWS
        else:
            kind = _ONE
        self._expect(_Pending(name, kind, query if code == COM_STMT_PREPARE else None), ts0)
        out.append(Message(True, ts0, ts1, wire, fields))
        return False

    def _expect(self, item: _Pending, ts: int) -> None:
        item.request_ts = ts
        if len(self.pending) >= MAX_OUTSTANDING:
            self.pending.popleft()
            self.counters["outstanding_dropped"] = self.counters.get("outstanding_dropped", 0) + 1
        self.pending.append(item)

    def _login(self, p: bytes, total: int, wire: int, ts0: int, ts1: int, out: list[Event]) -> bool:
        """HandshakeResponse41 (or the SSLRequest that precedes it): user, database, attributes."""
        caps = int.from_bytes(p[0:4], "little")
        fields: dict[str, Any] = {"command": LOGIN}
        if self.system is not None:
            fields["db_system"] = self.system
        if not caps & CLIENT_PROTOCOL_41 or len(p) < 32:
            fields["protocol_41"] = False
            self.login_fields = fields
            self._expect(_Pending(LOGIN, _AUTH, None), ts0)
            out.append(Message(True, ts0, ts1, wire, fields))
            return False
        self.caps = caps
        both = caps & self.server_caps
        self.deprecate_eof = bool(both & CLIENT_DEPRECATE_EOF)
        fields["capabilities"] = capability_names(caps)
        if caps & CLIENT_SSL and total == 32:
            # SSLRequest: the rest of the login travels inside TLS (handed to the TLS dissector).
            fields["ssl"] = True
            self.login_fields = fields
            out.append(Message(True, ts0, ts1, wire, fields))
            out.append(Message(False, ts1, ts1, self.greeting_size, dict(self.greeting or {})))
            self.upgrade = Upgrade("tls")
            return True
        user, i = _cstr(p, 32)
        fields["user"] = _text(user, MAX_ATTRIBUTE_CHARS)
        # The auth response is passed over, never kept.
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            n, i = _lenenc(p, i)
            i += max(n, 0)
        elif caps & CLIENT_SECURE_CONNECTION:
            i += 1 + (p[i] if i < len(p) else 0)
        else:
            i = _cstr(p, i)[1]
        if caps & CLIENT_CONNECT_WITH_DB:
            db, i = _cstr(p, i)
            fields["database"] = self.database = _text(db, MAX_ATTRIBUTE_CHARS)
        if caps & CLIENT_PLUGIN_AUTH:
            plugin, i = _cstr(p, i)
            fields["auth_plugin"] = _text(plugin, MAX_ATTRIBUTE_CHARS)
        if caps & CLIENT_CONNECT_ATTRS and i < len(p):
            size, i = _lenenc(p, i)
            end = min(len(p), i + max(size, 0))
            attrs: dict[str, str] = {}
            while i < end and len(attrs) < MAX_ATTRIBUTES:
                key, i = _lenenc_str(p, i)
                value, i = _lenenc_str(p, i)
                attrs[_text(key, MAX_ATTRIBUTE_CHARS)] = _text(value, MAX_ATTRIBUTE_CHARS)
            fields["attributes"] = attrs
        if both & CLIENT_COMPRESS:
            fields["compressed"] = True
        self.login_fields = fields
        self._expect(_Pending(LOGIN, _AUTH, None), ts0)
        out.append(Message(True, ts0, ts1, wire, fields))
        return False

    # ---- the server side ----

    def _server_packet(self, pkt: Packet, out: list[Event]) -> bool:
        seq, p, total, wire, ts0, ts1 = pkt
        cur = self.cur
        if cur is None:
            if self.swallow >= 0:
                expected, self.swallow = self.swallow, -1
                if seq == expected and p[:1] == b"\xfe" and total < EOF_MAX_LEN:
                    self.deprecate_eof = False  # the trailing EOF of a prepare answer
                    return False
            if seq == 0 and self.greeting is None and not self.logged_in and p:
                return self._greeting(p, wire, ts0, ts1, out)
            if not self.pending:
                return False  # the tail of an answer whose command was not captured
            cur = self.cur = self.pending.popleft()
            cur.ts_first = ts0
        cur.size += wire
        if not p:
            out.append(Violation("mysql: empty response packet"))
            self.opaque = True
            return False
        first = p[0]
        if first == ERR and total >= 3:
            err = parse_err(p, self.cap)
            if err["code"] == PROGRESS_CODE:
                return False
            cur.fields["error"] = err
            return self._finish(cur, ts1, out)
        kind = cur.kind
        if kind == _AUTH:
            return self._auth(cur, p, ts1, out)
        if kind == _STRING:
            cur.fields["text"] = _text(p, self.cap)
            return self._finish(cur, ts1, out)
        if kind == _ONE:
            if first == OK or (first == EOF and total < EOF_MAX_LEN):
                cur.fields.update(parse_ok(p, self._track()) if first == OK else self._eof(p))
                return self._finish(cur, ts1, out)
            kind = cur.kind = _RESULT  # an unexpected result set (COM_PROCESS_INFO and the like)
        if kind == _FIELDS:
            if first == EOF and total < EOF_MAX_LEN:
                cur.fields["columns"] = cur.rows
                cur.rows = 0
                if cur.names:
                    cur.fields["column_names"] = cur.names
                return self._finish(cur, ts1, out)
            cur.rows += 1
            if len(cur.names) < MAX_COLUMN_NAMES:
                cur.names.append(_column_name(p))
            return False
        if kind == _PREPARE:
            return self._prepare(cur, p, total, seq, ts1, out)
        if kind == _ROWS:
            cur.phase = _ROW if cur.phase == _FIRST else cur.phase
        return self._result(cur, p, total, ts1, out)

    def _greeting(self, p: bytes, wire: int, ts0: int, ts1: int, out: list[Event]) -> bool:
        if p[0] == ERR:  # refused before any greeting ("Too many connections", host blocked)
            fields = {"command": LOGIN, "error": parse_err(p, self.cap)}
            out.append(Message(False, ts0, ts1, wire, fields, standalone=True))
            return False
        if p[0] != PROTOCOL_VERSION:
            out.append(Violation(f"mysql: greeting of protocol version {p[0]}"))
            self.opaque = True
            return False
        version, i = _cstr(p, 1)
        text = _text(version, MAX_VERSION_CHARS)
        conn_id = int.from_bytes(p[i : i + 4], "little")
        i += 4 + 8 + 1  # auth-plugin-data part 1 and a filler: never kept
        caps = int.from_bytes(p[i : i + 2], "little")
        charset = p[i + 2] if i + 2 < len(p) else 0
        status = int.from_bytes(p[i + 3 : i + 5], "little")
        caps |= int.from_bytes(p[i + 5 : i + 7], "little") << 16
        auth_len = p[i + 7] if i + 7 < len(p) else 0
        i += 8 + 10
        plugin = ""
        if caps & CLIENT_SECURE_CONNECTION:
            i += max(13, auth_len - 8)
        if caps & CLIENT_PLUGIN_AUTH and i < len(p):
            plugin = _text(_cstr(p, i)[0], MAX_ATTRIBUTE_CHARS)
        mariadb = "mariadb" in text.lower()
        self.system = "mariadb" if mariadb else "mysql"
        # MariaDB before 11 prefixes its version with "5.5.5-" for old replication clients.
        shown = text[6:] if mariadb and text.startswith("5.5.5-") else text
        self.server_caps = caps
        self.greeting_size = wire
        self.greeting = {
            "server_version": shown,
            "protocol_version": p[0],
            "connection_id": conn_id,
            "capabilities": capability_names(caps),
            "charset": charset,
            "status_flags": status,
        }
        if plugin:
            self.greeting["auth_plugin"] = plugin
        return False

    def _auth(self, cur: _Pending, p: bytes, ts: int, out: list[Event]) -> bool:
        first = p[0]
        if first == OK:
            cur.fields.update(parse_ok(p, self._track()))
            return self._finish(cur, ts, out)
        if first == EOF and len(p) > 1:  # AuthSwitchRequest: the plugin to continue with
            cur.fields["auth_switch"] = _text(_cstr(p, 1)[0], MAX_ATTRIBUTE_CHARS)
        return False  # AuthMoreData (0x01) and friends: the exchange goes on

    def _track(self) -> bool | None:
        if not self.caps:
            return None
        return bool(self.caps & self.server_caps & CLIENT_SESSION_TRACK)

    @staticmethod
    def _eof(p: bytes) -> dict[str, Any]:
        return {
            "warnings": int.from_bytes(p[1:3], "little"),
            "status_flags": int.from_bytes(p[3:5], "little"),
        }

    def _result(self, cur: _Pending, p: bytes, total: int, ts: int, out: list[Event]) -> bool:
        """A text or binary result set (or an OK in its place), possibly followed by more of them."""
        first = p[0]
        phase = cur.phase
        if phase == _ROW:
            if first == EOF and total < MAX_PAYLOAD:
                if total < EOF_MAX_LEN:
                    status = int.from_bytes(p[3:5], "little")
                else:
                    ok = parse_ok(p, self._track())
                    status = ok["status_flags"]
                    if cur.fields.get("warnings") is None:
                        cur.fields["warnings"] = ok["warnings"]
                return self._end_set(cur, status, ts, out)
            cur.rows += 1
            return False
        if phase == _DEFS:
            if len(cur.names) < MAX_COLUMN_NAMES and cur.sets == 0:
                cur.names.append(_column_name(p))
            cur.left -= 1
            if cur.left == 0:
                cur.phase = _DEFS_END
            return False
        if phase == _DEFS_END:
            cur.phase = _ROW
            if first == EOF and total < EOF_MAX_LEN:
                self.deprecate_eof = False
                status = int.from_bytes(p[3:5], "little")
                if status & SERVER_STATUS_CURSOR_EXISTS:  # rows come later, by COM_STMT_FETCH
                    return self._end_set(cur, status, ts, out)
                return False
            if self.deprecate_eof is None:
                self.deprecate_eof = True
            return self._result(cur, p, total, ts, out)
        # _FIRST: OK, LOCAL INFILE request, or the column count of a result set.
        if first == OK:
            ok = parse_ok(p, self._track())
            for key in ("affected_rows", "last_insert_id"):
                cur.fields[key] = cur.fields.get(key, 0) + ok[key]
            cur.fields["warnings"] = ok["warnings"]
            if "info" in ok:
                cur.fields["info"] = ok["info"]
            return self._end_set(cur, ok["status_flags"], ts, out, result=False)
        if first == LOCAL_INFILE:
            cur.fields["local_infile"] = _text(p[1:], MAX_ATTRIBUTE_CHARS)
            cur.kind = _ONE  # the client sends the file; then OK or ERR
            return False
        count, _ = _lenenc(p, 0)
        if count <= 0 or count > MAX_COLUMNS:
            out.append(Violation(f"mysql: result set of {count} columns"))
            self.opaque = True
            return False
        if cur.columns < 0:
            cur.columns = count
        cur.left = count
        cur.phase = _DEFS
        return False

    def _end_set(self, cur: _Pending, status: int, ts: int, out: list[Event], result: bool = True) -> bool:
        if result:
            cur.sets += 1
        if status & SERVER_MORE_RESULTS_EXISTS:
            cur.phase = _FIRST
            return False
        return self._finish(cur, ts, out)

    def _prepare(self, cur: _Pending, p: bytes, total: int, seq: int, ts: int, out: list[Event]) -> bool:
        """COM_STMT_PREPARE_OK, then the parameter and column definitions (each block ended by an EOF
        unless CLIENT_DEPRECATE_EOF)."""
        first = p[0]
        if cur.phase == _FIRST:
            if first != OK or total < 12:
                out.append(Violation("mysql: malformed prepare answer"))
                self.opaque = True
                return False
            sid = int.from_bytes(p[1:5], "little")
            columns = int.from_bytes(p[5:7], "little")
            params = int.from_bytes(p[7:9], "little")
            cur.fields.update(
                {"statement_id": sid, "columns": columns, "params": params,
                 "warnings": int.from_bytes(p[10:12], "little")}
            )  # fmt: skip
            if cur.query is not None:
                if len(self.statements) >= MAX_STATEMENTS:
                    self.statements.pop(next(iter(self.statements)))
                    self.counters["statements_forgotten"] = self.counters.get("statements_forgotten", 0) + 1
                self.statements[sid] = cur.query
            cur.rows = columns  # column definitions still to come after the parameters
            if params:
                cur.left, cur.phase = params, _PARAMS
            elif columns:
                cur.left, cur.phase = columns, _PCOLS
            else:
                return self._finish(cur, ts, out)
            return False
        if cur.left == 0:  # the EOF closing the parameter block
            if first == EOF and total < EOF_MAX_LEN:
                self.deprecate_eof = False
                if cur.phase == _PARAMS and cur.rows:
                    cur.left, cur.phase = cur.rows, _PCOLS
                    return False
                return self._finish(cur, ts, out)
            if cur.phase == _PARAMS and cur.rows:
                cur.left, cur.phase = cur.rows, _PCOLS  # no EOF: a column definition already
            else:
                return self._finish(cur, ts, out)
        if cur.phase == _PCOLS and len(cur.names) < MAX_COLUMN_NAMES:
            cur.names.append(_column_name(p))
        cur.left -= 1
        if cur.left == 0:
            last = cur.phase == _PCOLS or not cur.rows
            if last and self.deprecate_eof is not None:
                if self.deprecate_eof:
                    return self._finish(cur, ts, out)
                return False  # its EOF follows
            if last:
                # Not known whether an EOF follows: answer now and drop one if it comes next.
                self.swallow = (seq + 1) & 0xFF
                return self._finish(cur, ts, out)
        return False

    def _finish(self, cur: _Pending, ts: int, out: list[Event]) -> bool:
        self.cur = None
        msg = self._response(cur, ts)
        out.append(msg)
        if cur.command == LOGIN:
            self.logged_in = True
            if self.caps & self.server_caps & CLIENT_COMPRESS and "error" not in cur.fields:
                self.opaque = True  # every later packet is compressed
                self.counters["compressed"] = self.counters.get("compressed", 0) + 1
        return False

    def _response(self, cur: _Pending, ts: int) -> Message:
        fields = cur.fields
        if cur.command == LOGIN and self.greeting is not None:
            fields = {**self.greeting, **fields}
        elif cur.kind in (_RESULT, _ROWS):
            if cur.columns >= 0:
                fields["columns"] = cur.columns
                fields["rows"] = cur.rows
                if cur.names:
                    fields["column_names"] = cur.names
            elif cur.kind == _ROWS:
                fields["rows"] = cur.rows
            if cur.sets > 1:
                fields["result_sets"] = cur.sets
        elif cur.kind == _PREPARE and cur.names:
            fields["column_names"] = cur.names
        return Message(False, cur.ts_first, ts, cur.size, fields)


# ---- presentation ------------------------------------------------------------------------------


def present(req: Message | None, resp: Message | None) -> Presented:
    rq = req.fields if req is not None else {}
    rs = resp.fields if resp is not None else {}
    command = rq.get("command") or rs.get("command") or LOGIN
    query = rq.get("query")
    method = command
    if query and command in SQL_COMMANDS:
        method = sql_verb(query) or command
    err = rs.get("error")
    status: int | None = None
    if resp is not None:
        status = err["code"] if type(err) is dict and type(err.get("code")) is int else 0
    if query:
        summary = query if len(query) <= SUMMARY_CHARS else query[:SUMMARY_CHARS] + "…"
    elif command == LOGIN:
        who = rq.get("user") or ""
        db = rq.get("database")
        version = rs.get("server_version")
        summary = " ".join(
            part for part in (
                LOGIN, f"{who}@{db}" if db else who, "(TLS)" if rq.get("ssl") else "",
                f"[{version}]" if version else "",
            ) if part
        )  # fmt: skip
    else:
        arg = rq.get("database") or rq.get("table") or rq.get("user")
        summary = f"{command} {arg}" if arg else command
    sid = rq.get("statement_id", rs.get("statement_id"))
    return Presented(
        method=method,
        path=None,
        status=status,
        summary=summary,
        stream=str(sid) if type(sid) is int else None,
    )


SPEC: Final = ProtocolSpec(
    name="mysql",
    transports=("tcp",),
    ports=(3306, 3307),  # (33060 is the X Protocol, another wire format)
    probe=probe,
    session=MysqlSession,
    present=present,
    matcher="fifo",
)

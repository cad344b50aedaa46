"""MongoDB wire protocol: OP_MSG commands and their replies, the legacy OP_QUERY/OP_REPLY pair and
OP_COMPRESSED (counted as the message it wraps), paired by requestID ↔ responseTo.

Rule: each direction is cut into messages by the 16-byte header (messageLength, requestID, responseTo,
opCode; all little-endian) over a bounded buffer: a message up to the hold size is read whole, a larger
one keeps its first bytes and the rest is counted and skipped. BSON is read by the small bounded reader
below (an element budget, a depth limit and capped strings), never by a dev-only library. What an entry
shows is chosen here: the command (the body's first key), database, collection and a capped filter;
the reply's ok, n, batch size and error. Credentials of the authentication commands (`saslStart`,
`saslContinue`, `authenticate`, a `pwd`) are replaced by the redaction marker at parse time.

Wire format: mongodb.com/docs/manual/reference/mongodb-wire-protocol/ and the OP_MSG and
OP_COMPRESSED specifications (github.com/mongodb/specifications, source/message/OP_MSG.md,
source/compression/OP_COMPRESSED.md); BSON: bsonspec.org/spec.html.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

from wiretide.common.protocols import MONGODB_ERRORS
from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation

# What replaces a credential: the dissector's redaction marker (redact.MARKER; a test holds them equal).
REDACTED: Final = "[REDACTED]"
HEADER: Final = 16
# The server's maxMessageSizeBytes (48 MB, `hello` reply): a larger messageLength is a lie.
MAX_MESSAGE: Final = 48_000_000
# Messages up to this size are read whole (commands and most replies are far smaller); a larger one keeps
# this many first bytes (at least the body cap) and skips the rest, so the buffer stays bounded.
MIN_HOLD: Final = 1024 * 1024
# BSON elements decoded per top-level value (a filter, a pipeline) and top-level keys read per document;
# beyond, the document is cut ("…": "truncated").
MAX_ELEMENTS: Final = 256
# Nesting shown; deeper documents become "{…}" (and the recursion is bounded).
MAX_DEPTH: Final = 8
# Characters of a string value shown.
MAX_STRING: Final = 1024
# Characters of a filter/pipeline in the summary.
SUMMARY_CHARS: Final = 200
# Requests awaiting a reply are bounded by matching.MAX_PENDING; exhaust replies remembered per flow:
MAX_EXHAUST: Final = 64

OP_REPLY: Final = 1
OP_UPDATE: Final = 2001
OP_INSERT: Final = 2002
OP_QUERY: Final = 2004
OP_GET_MORE: Final = 2005
OP_DELETE: Final = 2006
OP_KILL_CURSORS: Final = 2007
OP_COMPRESSED: Final = 2012
OP_MSG: Final = 2013
OPCODES: Final = {
    OP_REPLY: "OP_REPLY", OP_UPDATE: "OP_UPDATE", OP_INSERT: "OP_INSERT", OP_QUERY: "OP_QUERY",
    OP_GET_MORE: "OP_GET_MORE", OP_DELETE: "OP_DELETE", OP_KILL_CURSORS: "OP_KILL_CURSORS",
    OP_COMPRESSED: "OP_COMPRESSED", OP_MSG: "OP_MSG",
}  # fmt: skip
# Legacy writes (removed in MongoDB 6.0) have no reply.
NO_REPLY: Final = frozenset({OP_UPDATE, OP_INSERT, OP_DELETE, OP_KILL_CURSORS})
# Opcodes a client opens a connection with (the probe's evidence).
CLIENT_FIRST: Final = frozenset({OP_MSG, OP_QUERY, OP_COMPRESSED})

# OP_MSG flagBits (OP_MSG.md "Flag Bits"); bits 0-15 are required: an unknown one is an error.
CHECKSUM_PRESENT: Final = 1 << 0
MORE_TO_COME: Final = 1 << 1
EXHAUST_ALLOWED: Final = 1 << 16
REQUIRED_BITS: Final = 0xFFFF
KNOWN_REQUIRED: Final = CHECKSUM_PRESENT | MORE_TO_COME
# OP_REPLY responseFlags: the query failed and the single document is `{$err: …}`.
QUERY_FAILURE: Final = 1 << 1
# OP_COMPRESSED compressor ids; snappy via cramjam (a runtime dependency), zstd is named only.
NOOP, SNAPPY, ZLIB, ZSTD = 0, 1, 2, 3
COMPRESSORS: Final = {NOOP: "noop", SNAPPY: "snappy", ZLIB: "zlib", ZSTD: "zstd"}

# Credential fields per authentication command: replaced at parse time, listed in `redacted`.
SECRETS: Final = {
    "saslstart": ("payload",),
    "saslcontinue": ("payload",),
    "authenticate": ("key", "nonce"),
    "createuser": ("pwd",),
    "updateuser": ("pwd",),
    "copydbsaslstart": ("payload",),
    "copydbgetnonce": (),
}
# Keys of a command that hold its filter (find, count, delete's q …) and its pipeline.
FILTER_KEYS: Final = ("filter", "query", "q")
PIPELINE_KEY: Final = "pipeline"
# Request arguments kept beside the filter when present.
KEPT_ARGS: Final = ("limit", "skip", "sort", "projection", "batchSize", "mechanism", "user", "roles")
# The status of `ok: 0` without a `code` (some servers and stand-ins send only errmsg); its name,
# like every code's, is the protocol table's (MONGODB_ERRORS).
NO_CODE: Final = -1
_I32: Final = struct.Struct("<i")
_HDR: Final = struct.Struct("<iiii")
_DOUBLE: Final = struct.Struct("<d")
_I64: Final = struct.Struct("<q")


class BsonError(Exception):
    """Malformed BSON (internal: the session turns it into a Violation or a truncated message)."""


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def _cstring(data: bytes, i: int, end: int) -> tuple[str, int]:
    j = data.find(b"\x00", i, end)
    if j < 0:
        raise BsonError("unterminated cstring")
    return data[i:j].decode("utf-8", "replace"), j + 1


def _string(data: bytes, i: int, end: int) -> tuple[str, int]:
    if i + 4 > end:
        raise BsonError("short string")
    n = _I32.unpack_from(data, i)[0]
    if n < 1 or i + 4 + n > end:
        raise BsonError("bad string length")
    raw = data[i + 4 : i + 3 + min(n, MAX_STRING + 1)]
    text = raw.decode("utf-8", "replace")
    return (text if n - 1 <= MAX_STRING else text[:MAX_STRING] + "…"), i + 4 + n


def _value(data: bytes, t: int, i: int, end: int, depth: int, budget: _Budget) -> tuple[Any, int]:
    """One BSON value of type `t` at `i`: (the value as JSON-able Python, the offset after it)."""
    if t in (2, 13, 14):  # string, JavaScript code, symbol
        return _string(data, i, end)
    if t == 0x10:
        if i + 4 > end:
            raise BsonError("short int32")
        return _I32.unpack_from(data, i)[0], i + 4
    if t in (3, 4):
        if i + 4 > end:
            raise BsonError("short document")
        n = _I32.unpack_from(data, i)[0]
        if n < 5 or i + n > end:
            raise BsonError("bad document length")
        if depth >= MAX_DEPTH:
            return ("[…]" if t == 0x04 else "{…}"), i + n
        doc = _document(data, i, i + n, depth + 1, budget)
        return (list(doc.values()) if t == 0x04 else doc), i + n
    if t in (1, 18, 9, 17):  # double, int64, datetime, timestamp
        if i + 8 > end:
            raise BsonError("short 8-byte value")
        if t == 0x01:
            return _DOUBLE.unpack_from(data, i)[0], i + 8
        v = _I64.unpack_from(data, i)[0]
        if t == 0x09:
            return {"$date": v}, i + 8
        if t == 0x11:
            return {"$timestamp": {"t": (v >> 32) & 0xFFFFFFFF, "i": v & 0xFFFFFFFF}}, i + 8
        return v, i + 8
    if t == 0x08:
        if i + 1 > end:
            raise BsonError("short bool")
        return data[i] != 0, i + 1
    if t in (10, 6):  # null, undefined
        return None, i
    if t == 0x07:
        if i + 12 > end:
            raise BsonError("short ObjectId")
        return {"$oid": data[i : i + 12].hex()}, i + 12
    if t == 0x05:
        if i + 5 > end:
            raise BsonError("short binary")
        n = _I32.unpack_from(data, i)[0]
        if n < 0 or i + 5 + n > end:
            raise BsonError("bad binary length")
        return {"$binary": {"subType": f"{data[i + 4]:02x}", "size": n}}, i + 5 + n
    if t == 0x13:
        if i + 16 > end:
            raise BsonError("short decimal128")
        return {"$numberDecimal": data[i : i + 16].hex()}, i + 16
    if t == 0x0B:
        pattern, i = _cstring(data, i, end)
        options, i = _cstring(data, i, end)
        return {"$regex": pattern, "$options": options}, i
    if t == 0x0C:  # DBPointer (deprecated): a string and an ObjectId
        ns, i = _string(data, i, end)
        if i + 12 > end:
            raise BsonError("short DBPointer")
        return {"$ref": ns, "$id": data[i : i + 12].hex()}, i + 12
    if t == 0x0F:  # code with scope: int32 total, string, document
        if i + 4 > end:
            raise BsonError("short code with scope")
        n = _I32.unpack_from(data, i)[0]
        if n < 14 or i + n > end:
            raise BsonError("bad code with scope length")
        code, _ = _string(data, i + 4, i + n)
        return {"$code": code}, i + n
    if t == 0xFF:
        return {"$minKey": 1}, i
    if t == 0x7F:
        return {"$maxKey": 1}, i
    raise BsonError(f"unknown BSON type 0x{t:02x}")


def _document(
    data: bytes, start: int, end: int, depth: int, budget: _Budget, partial: bool = False
) -> dict[str, Any]:
    """The document whose int32 length is at `start` and which ends at `end` (its 0 terminator);
    `partial`: the bytes end early (the head of a cut message) and what can be read is kept."""
    if partial:
        return _partial(data, start, end, budget)
    if data[end - 1] != 0:
        raise BsonError("document not terminated")
    out: dict[str, Any] = {}
    i = start + 4
    last = end - 1
    top = depth == 0
    while i < last:
        if budget.left <= 0:
            out["…"] = "truncated"
            break
        budget.left -= 1
        t = data[i]
        name, i = _cstring(data, i + 1, last)
        # Each top-level value gets its own budget: a huge filter must not hide the `$db` after it.
        value, i = _value(data, t, i, last, depth, _Budget(MAX_ELEMENTS) if top else budget)
        out[name] = value
    if i > last:
        raise BsonError("element overruns its document")
    return out


def _partial(data: bytes, start: int, end: int, budget: _Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = start + 4
    while i < end and data[i] != 0 and budget.left > 0:
        budget.left -= 1
        try:
            t = data[i]
            name, j = _cstring(data, i + 1, end)
            value, i = _value(data, t, j, end, 0, _Budget(MAX_ELEMENTS))
        except BsonError:
            break
        out[name] = value
    out["…"] = "truncated"
    return out


def read_document(data: bytes, start: int = 0, partial: bool = False) -> tuple[dict[str, Any], int]:
    """The BSON document at `start` (at most MAX_ELEMENTS elements per top-level value) and the offset
    after it. Raises BsonError on malformed bytes; `partial` reads what there is of a cut document."""
    if start + 5 > len(data):
        raise BsonError("short document")
    n = _I32.unpack_from(data, start)[0]
    if n < 5:
        raise BsonError("bad document length")
    if start + n > len(data):
        if not partial:
            raise BsonError("bad document length")
        return _document(data, start, len(data), 0, _Budget(MAX_ELEMENTS), True), len(data)
    return _document(data, start, start + n, 0, _Budget(MAX_ELEMENTS)), start + n


# ---- values no entry shows: checked as `_value` checks them, nothing built ----------------------


def _i32(data: bytes, i: int) -> int:
    """The little-endian int32 at `i` (the caller has checked that its 4 bytes are there)."""
    v = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
    return v - 0x100000000 if v & 0x80000000 else v


def _string_end(data: bytes, i: int, end: int) -> int:
    if i + 4 > end:
        raise BsonError("short string")
    n = _i32(data, i)
    if n < 1 or i + 4 + n > end:
        raise BsonError("bad string length")
    return i + 4 + n


def _cstring_end(data: bytes, i: int, end: int) -> int:
    j = data.find(b"\x00", i, end)
    if j < 0:
        raise BsonError("unterminated cstring")
    return j + 1


def _skip(data: bytes, t: int, i: int, end: int, depth: int, budget: _Budget) -> int:
    """Where the value `_value` would read at `i` ends; raises what it raises (same budget, same depth
    limit), builds nothing."""
    if t in (2, 13, 14):
        return _string_end(data, i, end)
    if t == 0x10:
        if i + 4 > end:
            raise BsonError("short int32")
        return i + 4
    if t in (3, 4):
        if i + 4 > end:
            raise BsonError("short document")
        n = _i32(data, i)
        if n < 5 or i + n > end:
            raise BsonError("bad document length")
        if depth < MAX_DEPTH:
            _skip_document(data, i, i + n, depth + 1, budget)
        return i + n
    if t in (1, 18, 9, 17):
        if i + 8 > end:
            raise BsonError("short 8-byte value")
        return i + 8
    if t == 0x08:
        if i + 1 > end:
            raise BsonError("short bool")
        return i + 1
    if t in (10, 6, 0xFF, 0x7F):
        return i
    if t == 0x07:
        if i + 12 > end:
            raise BsonError("short ObjectId")
        return i + 12
    if t == 0x05:
        if i + 5 > end:
            raise BsonError("short binary")
        n = _i32(data, i)
        if n < 0 or i + 5 + n > end:
            raise BsonError("bad binary length")
        return i + 5 + n
    if t == 0x13:
        if i + 16 > end:
            raise BsonError("short decimal128")
        return i + 16
    if t == 0x0B:
        return _cstring_end(data, _cstring_end(data, i, end), end)
    if t == 0x0C:
        i = _string_end(data, i, end)
        if i + 12 > end:
            raise BsonError("short DBPointer")
        return i + 12
    if t == 0x0F:
        if i + 4 > end:
            raise BsonError("short code with scope")
        n = _i32(data, i)
        if n < 14 or i + n > end:
            raise BsonError("bad code with scope length")
        _string_end(data, i + 4, i + n)
        return i + n
    raise BsonError(f"unknown BSON type 0x{t:02x}")


def _skip_document(data: bytes, start: int, end: int, depth: int, budget: _Budget) -> None:
    """`_document` without the document: the same checks, the same budget spent."""
    if data[end - 1] != 0:
        raise BsonError("document not terminated")
    i = start + 4
    last = end - 1
    top = depth == 0
    while i < last:
        if budget.left <= 0:
            break
        budget.left -= 1
        t = data[i]
        i = _cstring_end(data, i + 1, last)
        i = _skip(data, t, i, last, depth, _Budget(MAX_ELEMENTS) if top else budget)
    if i > last:
        raise BsonError("element overruns its document")


def _selected(
    data: bytes, start: int, end: int, depth: int, budget: _Budget, keep: dict[str, Any]
) -> dict[str, Any]:
    """`_document` keeping only the elements named in `keep` (a name's value: None to read it whole,
    or the `keep` of the document it holds); the others are checked and skipped the same way."""
    if data[end - 1] != 0:
        raise BsonError("document not terminated")
    out: dict[str, Any] = {}
    i = start + 4
    last = end - 1
    top = depth == 0
    while i < last:
        if budget.left <= 0:
            out["…"] = "truncated"
            break
        budget.left -= 1
        t = data[i]
        name, i = _cstring(data, i + 1, last)
        inner = _Budget(MAX_ELEMENTS) if top else budget
        if name not in keep:
            i = _skip(data, t, i, last, depth, inner)
            continue
        sub = keep[name]
        if sub is not None and t == 0x03 and depth < MAX_DEPTH:
            if i + 4 > last:
                raise BsonError("short document")
            n = _i32(data, i)
            if n < 5 or i + n > last:
                raise BsonError("bad document length")
            out[name] = _selected(data, i, i + n, depth + 1, inner, sub)
            i += n
            continue
        out[name], i = _value(data, t, i, last, depth, inner)
    if i > last:
        raise BsonError("element overruns its document")
    return out


def count_elements(data: bytes, start: int) -> int:
    """How many elements the BSON document (or array) at `start` has — a firstBatch's size — walking
    element headers only (each nested document skipped by its length)."""
    if start + 5 > len(data):
        raise BsonError("short document")
    end = start + _I32.unpack_from(data, start)[0]
    if end > len(data) or end < start + 5:
        raise BsonError("bad document length")
    i, count, last = start + 4, 0, end - 1
    budget = _Budget(1 << 30)
    while i < last:
        t = data[i]
        _, i = _cstring(data, i + 1, last)
        if t in {3, 4}:  # skip without decoding
            if i + 4 > last:
                raise BsonError("short document")
            i += _I32.unpack_from(data, i)[0]
        else:
            _, i = _value(data, t, i, last, MAX_DEPTH, budget)
        count += 1
    if i != last:
        raise BsonError("element overruns its document")
    return count


# ---- the fields an entry shows -----------------------------------------------------------------


def _num(value: Any) -> Any:
    """1.0 → 1 (ok and n arrive as doubles from most servers)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def command_fields(body: dict[str, Any], counts: dict[str, int]) -> tuple[dict[str, Any], list[str]]:
    """The request object of a command body, and the places redacted in it."""
    if not body:
        return {"command": None}, []
    command = next(iter(body))
    if command == "…":  # nothing readable in a cut message
        return {"command": None}, []
    target = body[command]
    fields: dict[str, Any] = {"command": command}
    db = body.get("$db")
    if type(db) is str:
        fields["database"] = db
    if type(target) is str and command.lower() not in SECRETS:
        fields["collection"] = target
    for key in FILTER_KEYS:
        value = body.get(key)
        if type(value) is dict:
            fields["filter"] = value
            break
    pipeline = body.get(PIPELINE_KEY)
    if type(pipeline) is list:
        fields["pipeline"] = pipeline
    for key in KEPT_ARGS:
        if key in body:
            fields[key] = body[key]
    for name in ("documents", "updates", "deletes"):  # inline arrays (legacy drivers, small writes)
        value = body.get(name)
        if type(value) is list:
            counts.setdefault(name, len(value))
    if counts:
        fields["documents"] = counts
    redacted: list[str] = []
    for key in SECRETS.get(command.lower(), ()):
        if key in body:
            fields[key] = REDACTED
            redacted.append(f"request.{key}")
    return fields, redacted


# What reply_fields reads of a reply's body (a test holds it to what it reads of a whole one).
REPLY_KEEP: Final[dict[str, Any]] = {
    "ok": None, "n": None, "nModified": None, "nMatched": None, "nUpserted": None,
    "cursor": {"id": None, "ns": None}, "writeErrors": None, "code": None, "codeName": None,
    "errmsg": None, "$err": None,
}  # fmt: skip


def read_reply(data: bytes, start: int, partial: bool = False) -> tuple[dict[str, Any], int]:
    """`read_document` for a reply body: only what REPLY_KEEP names is built (all of it is checked)."""
    if start + 5 > len(data):
        raise BsonError("short document")
    n = _I32.unpack_from(data, start)[0]
    if n < 5:
        raise BsonError("bad document length")
    if start + n > len(data):
        return read_document(data, start, partial)
    return _selected(data, start, start + n, 0, _Budget(MAX_ELEMENTS), REPLY_KEEP), start + n


def reply_fields(body: dict[str, Any], batch: int | None) -> dict[str, Any]:
    """The response object of a command reply: ok, n, batch size and the error."""
    fields: dict[str, Any] = {}
    ok = _num(body.get("ok"))
    if ok is not None:
        fields["ok"] = ok
    for key in ("n", "nModified", "nMatched", "nUpserted"):
        if key in body:
            fields[key] = _num(body[key])
    cursor = body.get("cursor")
    if type(cursor) is dict:
        if "id" in cursor:
            fields["cursor_id"] = cursor["id"]
        if type(cursor.get("ns")) is str:
            fields["ns"] = cursor["ns"]
    if batch is not None:
        fields["batch"] = batch
    errors = body.get("writeErrors")
    if type(errors) is list and errors:
        fields["write_errors"] = len(errors)
        first = errors[0]
        if type(first) is dict:
            fields["write_error"] = {k: first[k] for k in ("index", "code", "errmsg") if k in first}
    if ok == 0 or "$err" in body:
        code = _num(body.get("code"))
        error: dict[str, Any] = {"code": code if type(code) is int else NO_CODE}
        if type(body.get("codeName")) is str:
            error["name"] = body["codeName"]
        message = body.get("errmsg", body.get("$err"))
        if type(message) is str:
            error["message"] = message
        fields["error"] = error
    return fields


def _batch(data: bytes, start: int, end: int) -> int | None:
    """The size of `cursor.firstBatch`/`nextBatch` in the reply body at `start`, without decoding it."""
    try:
        i = start + 4
        last = end - 1
        while i < last:
            t = data[i]
            name, i = _cstring(data, i + 1, last)
            if name == "cursor" and t == 0x03:
                j, cend = i + 4, i + _I32.unpack_from(data, i)[0] - 1
                while j < cend:
                    ct = data[j]
                    cname, j = _cstring(data, j + 1, cend)
                    if cname in ("firstBatch", "nextBatch") and ct == 0x04:
                        return count_elements(data, j)
                    if ct in {3, 4}:
                        j += _I32.unpack_from(data, j)[0]
                    else:
                        _, j = _value(data, ct, j, cend, MAX_DEPTH, _Budget(1))
                return None
            if t in {3, 4}:
                i += _I32.unpack_from(data, i)[0]
            else:
                _, i = _value(data, t, i, last, MAX_DEPTH, _Budget(1))
    except (BsonError, struct.error, IndexError):
        return None
    return None


# ---- detection -----------------------------------------------------------------------------------


def _plausible(data: bytes, client: bool) -> Verdict:
    if len(data) < HEADER:
        return Verdict.MAYBE if data else Verdict.NO
    length, _rid, response_to, opcode = _HDR.unpack_from(data)
    if not HEADER + 5 <= length <= MAX_MESSAGE:
        return Verdict.NO
    if client:
        if opcode not in CLIENT_FIRST or response_to != 0:
            return Verdict.NO
    elif opcode not in (OP_MSG, OP_REPLY, OP_COMPRESSED) or response_to == 0:
        return Verdict.NO
    if opcode == OP_MSG:
        flags = _I32.unpack_from(data, 12 + 4)[0] if len(data) >= 21 else 0
        if flags & REQUIRED_BITS & ~KNOWN_REQUIRED:
            return Verdict.NO
        if len(data) >= 21 and data[20] not in (0, 1):
            return Verdict.NO
    elif (
        opcode == OP_COMPRESSED
        and len(data) >= 25
        and (_I32.unpack_from(data, 16)[0] not in OPCODES or data[24] not in COMPRESSORS)
    ):
        return Verdict.NO
    return Verdict.YES


def probe(client: bytes, server: bytes) -> Verdict:
    """A header with a plausible length and a command opcode (responseTo 0 from the client), or a reply
    header from the server; never raises."""
    try:
        if client:
            return _plausible(client, True)
        return _plausible(server, False) if server else Verdict.MAYBE
    except Exception:
        return Verdict.NO


# ---- the session ---------------------------------------------------------------------------------


class _Direction:
    __slots__ = ("buf", "cut", "need", "skip", "ts_first")

    def __init__(self) -> None:
        self.buf = bytearray()  # the start of a message not yet whole (parsing reads whole `bytes`)
        self.need = 0  # bytes `buf` must hold before that message can be read (until then: appended)
        self.skip = 0  # bytes of an oversized message still to skip
        self.cut: tuple[bytes, int, int] | None = None  # kept head, full length, first ts
        self.ts_first = 0


class MongoSession:
    """Both directions of one connection; requests are keyed by requestID, replies by responseTo."""

    def __init__(self, config: SessionConfig) -> None:
        self.hold = max(MIN_HOLD, config.body_cap)
        self.dirs = (_Direction(), _Direction())
        self.broken = False
        self.exhaust: dict[int, bool] = {}  # requestIDs of server replies with moreToCome set
        self.counters: dict[str, int] = {}

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        if self.broken or not data:
            return []
        d = self.dirs[0 if from_client else 1]
        out: list[Event] = []
        view = memoryview(data)
        if d.skip:
            n = min(d.skip, len(view))
            d.skip -= n
            view = view[n:]
            if not d.skip and d.cut is not None:
                head, length, first = d.cut
                d.cut = None
                self._message(from_client, head, length, first, ts, True, out)
        if not view:
            return out
        held = d.buf
        if held:
            held += view
            if len(held) < d.need:
                return out  # the message in hand is not whole yet: nothing to read
            buf = bytes(held)
            held.clear()
        else:
            d.ts_first = ts
            buf = data if len(view) == len(data) and type(data) is bytes else bytes(view)
        d.need = 0
        pos = 0
        n = len(buf)
        while n - pos >= HEADER:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16 | buf[pos + 3] << 24
            if length & 0x80000000:
                length -= 0x100000000
            if not HEADER <= length <= MAX_MESSAGE:
                self.broken = True
                out.append(Violation(f"mongodb: implausible messageLength {length}"))
                d.buf = bytearray()
                return out
            if length > self.hold:
                have = n - pos
                if have >= length:
                    self._message(from_client, buf[pos : pos + self.hold], length, d.ts_first, ts, True, out)
                    pos += length
                    continue
                if have >= self.hold:
                    d.cut = (buf[pos : pos + self.hold], length, d.ts_first)
                    d.skip = length - have
                    pos = n
                else:
                    d.need = self.hold
                break
            if n - pos < length:
                d.need = length
                break
            self._message(from_client, buf[pos : pos + length], length, d.ts_first, ts, False, out)
            if self.broken:
                d.buf = bytearray()
                return out
            pos += length
            d.ts_first = ts
        if pos < n:
            held += memoryview(buf)[pos:]
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        if self.broken:
            return []
        d = self.dirs[0 if from_client else 1]
        if d.skip and d.cut is not None and size <= d.skip:
            d.skip -= size  # inside a message already cut short: nothing more is lost
            return [] if d.skip else self._flush_cut(from_client, d, ts)
        self.broken = True  # message boundaries are lost (MongoDB has no resynchronisation marker)
        return [Violation("mongodb: capture gap")]

    def _flush_cut(self, from_client: bool, d: _Direction, ts: int) -> list[Event]:
        out: list[Event] = []
        if d.cut is not None:
            head, length, first = d.cut
            d.cut = None
            self._message(from_client, head, length, first, ts, True, out)
        return out

    def close(self, ts: int) -> list[Event]:
        return []

    # One whole message (or the head of an oversized one, `cut`) of `length` bytes on the wire.
    def _message(
        self, from_client: bool, msg: bytes, length: int, first: int, ts: int, cut: bool, out: list[Event]
    ) -> None:
        _, rid, response_to, opcode = _HDR.unpack_from(msg)
        fields: dict[str, Any] = {"op": OPCODES.get(opcode, str(opcode))}
        body = msg
        start = HEADER
        if opcode == OP_COMPRESSED:
            if len(msg) < HEADER + 9:
                out.append(Violation("mongodb: short OP_COMPRESSED"))
                self.broken = True
                return
            opcode, size = struct.unpack_from("<ii", msg, HEADER)
            compressor = msg[HEADER + 8]
            fields["op"] = OPCODES.get(opcode, str(opcode))
            fields["compressor"] = COMPRESSORS.get(compressor, str(compressor))
            inner = self._decompress(compressor, msg[HEADER + 9 :], size, cut)
            if inner is None:
                self._emit(from_client, fields, rid, response_to, opcode, length, first, ts, cut, out)
                return
            body, start = msg[:HEADER] + inner, HEADER
        if opcode not in OPCODES or opcode == OP_COMPRESSED:
            out.append(Violation(f"mongodb: unknown opCode {opcode}"))
            self.broken = True
            return
        try:
            redacted = self._parse(opcode, body, start, fields, from_client, cut)
        except (BsonError, struct.error, IndexError, UnicodeDecodeError) as exc:
            if not cut:
                out.append(Violation(f"mongodb: {exc}"))
                self.broken = True
                return
            redacted = []  # the head of a cut message: what was read is kept
        if redacted:
            fields["redacted"] = redacted
        self._emit(from_client, fields, rid, response_to, opcode, length, first, ts, cut, out)

    def _decompress(self, compressor: int, data: bytes, size: int, cut: bool) -> bytes | None:
        if cut or not 0 <= size <= MAX_MESSAGE:
            return None
        try:
            if compressor == NOOP:
                return data
            if compressor == ZLIB:
                inflated = zlib.decompressobj().decompress(data, size)  # bounded by the declared size
                return inflated if len(inflated) == size else None
            if compressor == SNAPPY:
                import cramjam

                if len(data) < 1:
                    return None
                raw = bytes(cramjam.snappy.decompress_raw(data))
                return raw if len(raw) == size else None
        except Exception:
            self.counters["decompress_errors"] = self.counters.get("decompress_errors", 0) + 1
        return None  # zstd and unknown compressors: named, not decoded

    def _parse(
        self, opcode: int, msg: bytes, i: int, fields: dict[str, Any], client: bool, cut: bool
    ) -> list[str]:
        if opcode == OP_MSG:
            flags = _I32.unpack_from(msg, i)[0] & 0xFFFFFFFF
            if flags & REQUIRED_BITS & ~KNOWN_REQUIRED:
                raise BsonError(f"unknown required OP_MSG flag bits 0x{flags:x}")
            names = [n for bit, n in ((CHECKSUM_PRESENT, "checksumPresent"), (MORE_TO_COME, "moreToCome"),
                                      (EXHAUST_ALLOWED, "exhaustAllowed")) if flags & bit]  # fmt: skip
            if names:
                fields["flags"] = names
            end = len(msg) - (4 if flags & CHECKSUM_PRESENT else 0)
            i += 4
            body: dict[str, Any] | None = None
            body_at = -1
            counts: dict[str, int] = {}
            while i < end:
                kind = msg[i]
                if kind == 0:
                    body_at = i + 1
                    body, i = read_document(msg, i + 1, cut) if client else read_reply(msg, i + 1, cut)
                elif kind == 1:
                    size = _I32.unpack_from(msg, i + 1)[0]
                    if cut and i + 1 + size > end:
                        break  # the rest of a cut message: its documents are not counted
                    if size < 4 or i + 1 + size > end:
                        raise BsonError("bad document sequence size")
                    ident, j = _cstring(msg, i + 5, i + 1 + size)
                    n = 0
                    while j < i + 1 + size:
                        dlen = _I32.unpack_from(msg, j)[0]
                        if dlen < 5:
                            raise BsonError("bad document in sequence")
                        j += dlen
                        n += 1
                    if j != i + 1 + size:
                        raise BsonError("document sequence overruns its size")
                    counts[ident] = n
                    i = j
                else:
                    raise BsonError(f"unknown OP_MSG section kind {kind}")
            if body is None:
                raise BsonError("OP_MSG without a body section")
            if client:
                req, redacted = command_fields(body, counts)
                fields.update(req)
                return redacted
            fields.update(
                reply_fields(body, _batch(msg, body_at, body_at + _I32.unpack_from(msg, body_at)[0]))
            )
            return []
        if opcode == OP_QUERY:
            i += 4  # flags
            ns, i = _cstring(msg, i, len(msg))
            skip, limit = struct.unpack_from("<ii", msg, i)
            query, _ = read_document(msg, i + 8)
            db, _, coll = ns.partition(".")
            if coll == "$cmd" or coll.startswith("$cmd."):
                inner = query.get("$query", query.get("query"))
                req, redacted = command_fields(inner if type(inner) is dict else query, {})
                fields.update(req)
                fields.setdefault("database", db)
                return redacted
            inner = query.get("$query", query.get("query"))
            fields.update({"command": "query", "database": db, "collection": coll,
                           "filter": inner if type(inner) is dict else query,
                           "skip": skip, "limit": limit})  # fmt: skip
            return []
        if opcode == OP_REPLY:
            flags, cursor_id, _start, returned = struct.unpack_from("<iqii", msg, i)
            i += 20
            fields.update({"cursor_id": cursor_id, "batch": returned})
            if returned and i < len(msg):
                first, _ = read_document(msg, i)
                if flags & QUERY_FAILURE or "ok" in first or "$err" in first:
                    fields.update(reply_fields(first, None))
                    fields["batch"] = returned
            return []
        # OP_GET_MORE / OP_INSERT / OP_UPDATE / OP_DELETE / OP_KILL_CURSORS: the namespace (if any)
        legacy = {OP_GET_MORE: "getMore", OP_INSERT: "insert", OP_UPDATE: "update", OP_DELETE: "delete",
                  OP_KILL_CURSORS: "killCursors"}  # fmt: skip
        fields["command"] = legacy[opcode]
        if opcode != OP_KILL_CURSORS:
            ns, _ = _cstring(msg, i + 4, len(msg))  # after flags (OP_INSERT) or a reserved ZERO
            db, _, coll = ns.partition(".")
            fields.update({"database": db, "collection": coll})
        return []

    def _emit(
        self, from_client: bool, fields: dict[str, Any], rid: int, response_to: int, opcode: int,
        length: int, first: int, ts: int, cut: bool, out: list[Event],
    ) -> None:  # fmt: skip
        more = "moreToCome" in fields.get("flags", ())
        if from_client:
            standalone = more or opcode in NO_REPLY
            out.append(
                Message(True, first, ts, length, fields, key=rid, standalone=standalone, truncated=cut)
            )
            return
        # An exhaust stream: each later reply answers the previous reply, not a request.
        continued = self.exhaust.pop(response_to, False)
        if more:
            if len(self.exhaust) >= MAX_EXHAUST:
                self.exhaust.pop(next(iter(self.exhaust)))
            self.exhaust[rid] = True
        out.append(
            Message(False, first, ts, length, fields, key=response_to, standalone=continued, truncated=cut)
        )


# ---- presentation ------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "…"


def present(req: Message | None, resp: Message | None) -> Presented:
    rq = req.fields if req is not None else {}
    rs = resp.fields if resp is not None else {}
    command = rq.get("command")
    db, coll = rq.get("database"), rq.get("collection")
    path = f"{db}.{coll}" if db and coll else (db or None)
    status: int | None = None
    if resp is not None:
        err = rs.get("error")
        status = err["code"] if type(err) is dict else 0
    if command is None:
        summary = f"← {rs.get('op', 'reply')}" if req is None else str(rq.get("op"))
    else:
        summary = f"{command} {path}" if path else str(command)
        err = rs.get("error")
        if type(err) is dict:
            summary += f" → {err.get('name') or err.get('code')}: {_short(err.get('message', ''))}"
    return Presented(method=command, path=path, status=status, summary=summary)


def classify(request: dict[str, Any] | None, response: dict[str, Any] | None) -> dict[str, Any]:
    """`ok: 0` (or a `$err` reply) is an error entry typed by its codeName; redacted credentials are
    listed in `redacted`."""
    over: dict[str, Any] = {}
    if response is not None:
        err = response.get("error")
        if type(err) is dict:
            name = err.get("name") or MONGODB_ERRORS.get(err["code"]) or str(err["code"])
            over["error"] = {"type": name, "message": err.get("message", "")}
    if request is not None and "redacted" in request:
        over["redacted"] = list(request["redacted"])
    return over


SPEC: Final = ProtocolSpec(
    name="mongodb",
    transports=("tcp",),
    ports=(27017, 27018, 27019),
    probe=probe,
    session=MongoSession,
    present=present,
    matcher="key",
    classify=classify,
)

"""Protocol Buffers wire format decoded without a schema into a readable field-number tree.

Rule: decoding is total and bounded — any bytes give a tree or None, never an exception, within a
depth and field-count limit; a length-delimited field is shown as a nested message only when its
bytes parse as one completely, else as text when they are UTF-8, else as base64.
"""

from __future__ import annotations

import base64
from typing import Any, Final

# Nesting levels explored before length-delimited fields are shown as bytes.
MAX_DEPTH: Final = 16
# Fields decoded per message tree (all levels); a bigger message is cut and flagged.
MAX_FIELDS: Final = 2000
# Varints longer than 10 bytes do not encode a 64-bit value (protobuf encoding, "Base 128 Varints").
MAX_VARINT_BYTES: Final = 10
# A 10-byte varint carries 70 bits; decoders keep the low 64 (protobuf encoding, "Base 128 Varints").
U64_MASK: Final = (1 << 64) - 1
# Field numbers are 1 .. 2^29 - 1 (protobuf language guide, "Assigning Field Numbers").
MAX_FIELD_NUMBER: Final = (1 << 29) - 1
# Text fields and bytes fields are shortened to this many characters in the tree.
MAX_SHOWN: Final = 4096

# Wire types (protobuf encoding, "Message Structure").
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


class _Bad(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise _Bad
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value & U64_MASK, pos + i + 1
    raise _Bad


class _Reader:
    """One tree's decoding: the message bytes, the read position in them and the fields left to the
    budget. Nested messages are read in place (start and end offsets), never copied out first."""

    __slots__ = ("data", "left", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.left = MAX_FIELDS

    def varint(self, end: int) -> int:
        """The varint at `pos`, which moves past it; -1 when it runs past `end` or is too long."""
        data = self.data
        pos = self.pos
        if pos < end:
            b = data[pos]
            if b < 0x80:  # one byte: most keys, lengths and small values
                self.pos = pos + 1
                return b
        value = 0
        shift = 0
        for i in range(MAX_VARINT_BYTES):
            if pos + i >= end:
                return -1
            b = data[pos + i]
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                self.pos = pos + i + 1
                return value & U64_MASK
        return -1


def _fields(r: _Reader, end: int, depth: int, group: int) -> list[dict[str, Any]] | None:
    """The fields from `r.pos` to `end` (or to the end of group `group`, when not 0); None when the
    bytes are not a message. A bad message is an answer (None), not an exception: nested attempts
    on bytes fields fail often."""
    fields: list[dict[str, Any]] = []
    data = r.data
    while r.pos < end:
        key = r.varint(end)
        if key < 0:
            return None
        number = key >> 3
        wire = key & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            return None
        if wire == EGROUP:
            return fields if group == number else None
        r.left -= 1
        if r.left < 0:
            return None
        entry: dict[str, Any]
        if wire == VARINT:
            value = r.varint(end)
            if value < 0:
                return None
            entry = {"field": number, "wire": "varint", "value": value}
            if value >> 63:  # a negative int32/int64 is sent as a 10-byte two's complement
                entry["signed"] = value - (1 << 64)
        elif wire == LEN:
            size = r.varint(end)
            if size < 0:
                return None
            start = r.pos
            if start + size > end:
                return None
            chunk = data[start : start + size]
            if _printable_ascii(chunk):
                # Text (or nothing): a nested message would be discarded as looking like text (and
                # one byte never parses as a message), so none is attempted.
                text = chunk.decode("ascii") if size <= MAX_SHOWN else chunk[:MAX_SHOWN].decode("ascii")
                entry = {"field": number, "wire": "len", "size": size, "string": text}
            else:
                entry = {"field": number, "wire": "len", "size": size}
                _length_delimited(r, chunk, start, depth, entry)
            r.pos = start + size
        elif wire == I64:
            pos = r.pos
            if pos + 8 > end:
                return None
            entry = {"field": number, "wire": "i64", "value": int.from_bytes(data[pos : pos + 8], "little")}
            r.pos = pos + 8
        elif wire == I32:
            pos = r.pos
            if pos + 4 > end:
                return None
            entry = {"field": number, "wire": "i32", "value": int.from_bytes(data[pos : pos + 4], "little")}
            r.pos = pos + 4
        elif wire == SGROUP:
            if depth >= MAX_DEPTH:
                return None
            inner = _fields(r, end, depth + 1, number)
            if inner is None:
                return None
            entry = {"field": number, "wire": "group", "message": inner}
        else:
            return None
        fields.append(entry)
    return None if group else fields


def _printable_ascii(chunk: bytes) -> bool:
    """Every byte a printable ASCII character (space to tilde); true of no bytes at all."""
    for i in range(len(chunk)):
        b = chunk[i]
        if b < 32 or b > 126:
            return False
    return True


def _length_delimited(r: _Reader, chunk: bytes, start: int, depth: int, entry: dict[str, Any]) -> None:
    """A length-delimited field that is not printable ASCII (`chunk`, at `start` in the message): a
    nested message when it parses as one completely, else UTF-8 text, else base64."""
    if depth < MAX_DEPTH:
        saved = r.left
        r.pos = start
        inner = _fields(r, start + len(chunk), depth + 1, 0)
        if inner:
            entry["message"] = inner
            return
        r.left = saved
    try:
        text = chunk.decode("utf-8")
        if all(c.isprintable() or c in "\r\n\t" for c in text[:256]):
            entry["string"] = text[:MAX_SHOWN]
            return
    except UnicodeDecodeError:
        pass
    entry["bytes"] = base64.b64encode(chunk[:MAX_SHOWN]).decode("ascii")


def decode(data: bytes) -> list[dict[str, Any]] | None:
    """The field tree of one serialized message, or None when the bytes are not protobuf."""
    try:
        return _fields(_Reader(bytes(data)), len(data), 0, 0)
    except RecursionError:
        return None


def repeated_bytes(data: bytes, path: tuple[int, ...]) -> list[bytes]:
    """Raw bytes of every length-delimited field found along a field-number path (schemaless)."""
    out: list[bytes] = []
    try:
        _walk(data, path, out)
    except _Bad:
        return out
    return out


def _walk(data: bytes, path: tuple[int, ...], out: list[bytes]) -> None:
    pos = 0
    n = len(data)
    while pos < n:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, pos = _varint(data, pos)
        elif wire == I64:
            pos += 8
        elif wire == I32:
            pos += 4
        elif wire == LEN:
            size, pos = _varint(data, pos)
            if pos + size > n:
                raise _Bad
            if number == path[0]:
                chunk = data[pos : pos + size]
                if len(path) == 1:
                    out.append(chunk)
                else:
                    _walk(chunk, path[1:], out)
            pos += size
        else:
            raise _Bad

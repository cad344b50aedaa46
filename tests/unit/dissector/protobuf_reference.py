"""Schemaless protobuf decoding as it was before its fast paths (a frozen copy, used by tests only).

Rule: never edited to follow `wiretide.dissector.protocols.protobuf`; `test_h2_cost.py` checks that
the module in use gives exactly this copy's tree (or None) for generated messages and random bytes, so
a fast path that changes a tree fails there. Below, the original code, unchanged.
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
WIRE_NAMES: Final = {VARINT: "varint", I64: "i64", LEN: "len", SGROUP: "group", I32: "i32"}


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


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_FIELDS


def _message(data: bytes, depth: int, budget: _Budget, end_group: int | None = None) -> tuple[list[Any], int]:
    fields: list[dict[str, Any]] = []
    pos = 0
    n = len(data)
    while pos < n:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            raise _Bad
        if wire == EGROUP:
            if end_group == number:
                return fields, pos
            raise _Bad
        budget.left -= 1
        if budget.left < 0:
            raise _Bad
        value: Any
        entry: dict[str, Any] = {"field": number, "wire": WIRE_NAMES.get(wire, "?")}
        if wire == VARINT:
            value, pos = _varint(data, pos)
            entry["value"] = value
            if value >> 63:  # a negative int32/int64 is sent as a 10-byte two's complement
                entry["signed"] = value - (1 << 64)
        elif wire == I64:
            if pos + 8 > n:
                raise _Bad
            entry["value"] = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == I32:
            if pos + 4 > n:
                raise _Bad
            entry["value"] = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        elif wire == LEN:
            size, pos = _varint(data, pos)
            if pos + size > n:
                raise _Bad
            chunk = data[pos : pos + size]
            pos += size
            _length_delimited(chunk, depth, budget, entry)
        elif wire == SGROUP:
            if depth >= MAX_DEPTH:
                raise _Bad
            inner, used = _message(data[pos:], depth + 1, budget, end_group=number)
            pos += used
            entry["message"] = inner
        else:
            raise _Bad
        fields.append(entry)
    if end_group is not None:
        raise _Bad
    return fields, pos


def _length_delimited(chunk: bytes, depth: int, budget: _Budget, entry: dict[str, Any]) -> None:
    entry["size"] = len(chunk)
    if chunk and depth < MAX_DEPTH:
        saved = budget.left
        try:
            inner, _ = _message(chunk, depth + 1, budget)
            if inner and not _looks_like_text(chunk):
                entry["message"] = inner
                return
        except _Bad:
            pass
        budget.left = saved
    try:
        text = chunk.decode("utf-8")
        if all(c.isprintable() or c in "\r\n\t" for c in text[:256]):
            entry["string"] = text[:MAX_SHOWN]
            return
    except UnicodeDecodeError:
        pass
    entry["bytes"] = base64.b64encode(chunk[:MAX_SHOWN]).decode("ascii")


def _looks_like_text(chunk: bytes) -> bool:
    """Short printable ASCII often parses as a message by accident ("ab" is field 12, varint 98)."""
    return len(chunk) >= 2 and all(32 <= b < 127 for b in chunk)


def decode(data: bytes) -> list[dict[str, Any]] | None:
    """The field tree of one serialized message, or None when the bytes are not protobuf."""
    try:
        fields, _ = _message(data, 0, _Budget())
    except (_Bad, RecursionError):
        return None
    return fields

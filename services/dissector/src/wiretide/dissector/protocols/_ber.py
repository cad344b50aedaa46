"""A small bounded reader for BER (ITU-T X.690) as LDAP uses it (RFC 4511 §5.1).

Rule: every element is read in place (offsets into one `bytes`), and nothing is trusted: a length is
never larger than what encloses it (unless the caller says the enclosing bytes were cut by a cap, when
the element is clipped and marked), a length takes at most four octets, the indefinite form is refused
(LDAP forbids it, §5.1) and a tag number fits in four octets. A broken element raises `BerError`,
which the protocol module catches and counts; it never escapes a session.
"""

from __future__ import annotations

from typing import Final

# X.690 §8.1.3.5: a long-form length of more than four octets would describe more than 4 GiB — no LDAP
# message (OpenLDAP's sockbuf_max_incoming is 16 MiB) comes near.
MAX_LENGTH_OCTETS: Final = 4
# High tag numbers (X.690 §8.1.2.4) are unused by LDAP; more than four octets of one is hostile.
MAX_TAG_OCTETS: Final = 4
# Octets of an INTEGER read (LDAP's are 32-bit; sizes and ids never exceed int64).
MAX_INTEGER_OCTETS: Final = 8

# Identifier octets used by LDAP (universal class).
BOOLEAN: Final = 0x01
INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
NULL: Final = 0x05
ENUMERATED: Final = 0x0A
SEQUENCE: Final = 0x30
SET: Final = 0x31


class BerError(ValueError):
    """A malformed element (caught by the protocol module, counted, never raised out of a session)."""


def header(data: bytes, pos: int, end: int, clip: bool = False) -> tuple[int, int, int]:
    """(identifier, start of contents, end of contents) of the element at `pos`, inside `data[:end]`.

    The identifier is the first octet for the low tag numbers LDAP uses; a high tag number gives
    `first << 24 | number`, which no LDAP tag equals. With `clip`, contents that run past `end` (the
    enclosing bytes were cut by a cap) end at `end` instead of raising.
    """
    if pos >= end:
        raise BerError("element expected")
    ident = data[pos]
    pos += 1
    if ident & 0x1F == 0x1F:
        number = 0
        for _ in range(MAX_TAG_OCTETS):
            if pos >= end:
                raise BerError("cut tag")
            octet = data[pos]
            pos += 1
            number = number << 7 | (octet & 0x7F)
            if not octet & 0x80:
                break
        else:
            raise BerError("tag number too long")
        ident = ident << 24 | number
    if pos >= end:
        raise BerError("cut length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise BerError("indefinite length")
    else:
        n = first & 0x7F
        if n > MAX_LENGTH_OCTETS:
            raise BerError(f"length of {n} octets")
        if pos + n > end:
            raise BerError("cut length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    stop = pos + length
    if stop > end:
        if not clip:
            raise BerError(f"length {length} beyond its container")
        stop = end
    return ident, pos, stop


def expect(data: bytes, pos: int, end: int, ident: int, clip: bool = False) -> tuple[int, int]:
    """(start, end) of the contents of the element at `pos`, which must have identifier `ident`."""
    found, start, stop = header(data, pos, end, clip)
    if found != ident:
        raise BerError(f"identifier 0x{found:02x} where 0x{ident:02x} belongs")
    return start, stop


def integer(data: bytes, start: int, stop: int) -> int:
    """A two's-complement INTEGER or ENUMERATED (X.690 §8.3)."""
    n = stop - start
    if n <= 0 or n > MAX_INTEGER_OCTETS:
        raise BerError(f"integer of {n} octets")
    return int.from_bytes(data[start:stop], "big", signed=True)


def boolean(data: bytes, start: int, stop: int) -> bool:
    if stop - start != 1:
        raise BerError("boolean of more than one octet")
    return data[start] != 0


def text(data: bytes, start: int, stop: int, limit: int) -> str:
    """An OCTET STRING as UTF-8 text (invalid sequences replaced), at most `limit` octets of it."""
    return data[start : min(stop, start + limit)].decode("utf-8", "replace")


def children(data: bytes, start: int, stop: int, clip: bool = False) -> list[tuple[int, int, int]]:
    """The elements inside a constructed element's contents, in order (a clipped one ends the list)."""
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < stop:
        ident, s, e = header(data, pos, stop, clip)
        out.append((ident, s, e))
        pos = e
    return out


def oid(raw: bytes) -> str:
    """A dotted OBJECT IDENTIFIER from its contents octets (X.690 §8.19), for DER-encoded tokens."""
    if not raw:
        return ""
    parts: list[int] = []
    value = 0
    for octet in raw[:64]:
        value = value << 7 | (octet & 0x7F)
        if not octet & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        return ""
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(p) for p in (*head, *parts[1:]))

"""HPACK (RFC 7541) header block decoding for a passive observer: one `HpackDecoder` per direction.

Rule: decoding is bounded (string, header-list and table sizes) and never raises out of `decode`;
a reference into dynamic-table state that the capture never saw (mid-stream pickup) becomes an
`:unknown-<index>` header instead of an error, and is counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

# RFC 7541 Appendix A: the static table (index 1..61).
STATIC_TABLE: Final[tuple[tuple[str, str], ...]] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
STATIC_LEN: Final = len(STATIC_TABLE)
# RFC 7541 §4.1: each entry costs its name and value lengths plus 32 octets.
ENTRY_OVERHEAD: Final = 32
# RFC 9113 §6.5.2: SETTINGS_HEADER_TABLE_SIZE starts at 4096.
DEFAULT_TABLE_SIZE: Final = 4096
# Largest dynamic table we will hold whatever a peer advertises: bounds memory per direction.
MAX_TABLE_SIZE: Final = 64 * 1024
# One header string longer than this is hostile or useless to a reader (and costs memory).
MAX_STRING: Final = 64 * 1024
# Decoded header list size (RFC 7541 §4.1 accounting) per block: stops "HPACK bombs" that reference a
# big table entry thousands of times.
MAX_HEADER_LIST: Final = 256 * 1024
# Header fields per block; beyond this the block is hostile.
MAX_FIELDS: Final = 1024
# RFC 7541 §5.1 integers: more continuation octets than this cannot encode a sane value.
MAX_INT_OCTETS: Final = 5


class HpackError(Exception):
    """The block cannot be decoded; the direction's table is out of sync from here on."""


@dataclass(frozen=True, slots=True)
class Block:
    """One decoded header block: fields in order, how many referenced unknown state."""

    fields: tuple[tuple[str, str], ...]
    unknown: int
    table_updates: int


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 §5.1 integer with an N-bit prefix at data[pos]; (value, next position)."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    for _ in range(MAX_INT_OCTETS):
        if pos >= len(data):
            raise HpackError("integer runs past the block")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
    raise HpackError("integer too long")


def _string(data: bytes, pos: int) -> tuple[str, int]:
    """RFC 7541 §5.2 string literal, Huffman-coded or raw."""
    if pos >= len(data):
        raise HpackError("string runs past the block")
    huffman = bool(data[pos] & 0x80)
    n, pos = _integer(data, pos, 7)
    if n > MAX_STRING:
        raise HpackError("string too long")
    end = pos + n
    if end > len(data):
        raise HpackError("string runs past the block")
    raw = data[pos:end]
    if huffman:
        raw = _huffman(raw)
    return raw.decode("utf-8", "replace"), end


class _HuffmanCode:
    """RFC 7541 Appendix B as lookup tables: codes of up to 8 bits by the next 8 bits of input (the
    usual case: every letter, digit and common punctuation), longer ones by (length, code)."""

    __slots__ = ("long", "short_len", "short_sym")

    def __init__(self) -> None:
        # The code table itself comes with the `hpack` package (its encoder's), loaded on first use:
        # a run that never meets a Huffman-coded string does not pay for it.
        from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

        short_len = bytearray(256)
        short_sym = bytearray(256)
        self.long: dict[int, int] = {}
        for sym, (code, n) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True)):
            if n <= 8:
                first = code << (8 - n)
                for p in range(first, first + (1 << (8 - n))):  # every byte this code prefixes
                    short_len[p] = n
                    short_sym[p] = sym
            else:
                self.long[(n << 32) | code] = sym
        self.short_len = bytes(short_len)
        self.short_sym = bytes(short_sym)


_HUFFMAN: Final[list[_HuffmanCode]] = []  # built by the first Huffman-coded string
# RFC 7541 Appendix B: the EOS symbol, which no string may contain (§5.2).
EOS: Final = 256
# RFC 7541 Appendix B: the longest code (EOS and a few control characters).
MAX_HUFFMAN_BITS: Final = 30


def _huffman(raw: bytes) -> bytes:
    """RFC 7541 §5.2 Huffman-coded octets decoded; at most 7 bits of padding, all ones (the start of
    EOS), and no EOS symbol, else an HpackError."""
    if not raw:
        return b""
    if not _HUFFMAN:
        _HUFFMAN.append(_HuffmanCode())
    code = _HUFFMAN[0]
    short_len = code.short_len
    short_sym = code.short_sym
    out = bytearray()
    acc = 0  # the undecoded bits, `nbits` of them, in the low end
    nbits = 0
    for i in range(len(raw)):
        acc = ((acc << 8) | raw[i]) & 0xFFFFFFFFFF  # never more than 30 + 7 bits are pending
        nbits += 8
        while nbits >= 5:  # the shortest code
            p = (acc >> (nbits - 8)) & 0xFF if nbits >= 8 else (acc << (8 - nbits)) & 0xFF
            n = short_len[p]
            if n:
                if n > nbits:
                    break  # the end of the input so far is the start of a code
                out.append(short_sym[p])
                nbits -= n
                continue
            sym = -1
            n = 9
            while n <= nbits and n <= MAX_HUFFMAN_BITS:
                sym = code.long.get((n << 32) | ((acc >> (nbits - n)) & ((1 << n) - 1)), -1)
                if sym >= 0:
                    break
                n += 1
            if sym < 0:
                break  # more bits to come (the code is complete: 30 bits always hold a code)
            if sym == EOS:
                raise HpackError("bad huffman code")
            out.append(sym)
            nbits -= n
    mask = (1 << nbits) - 1
    if nbits > 7 or acc & mask != mask:
        raise HpackError("bad huffman code")
    return bytes(out)


class HpackDecoder:
    """The dynamic table of one direction (RFC 7541 §2.3.2) and the block decoder over it.

    `complete` is False when the capture did not see the connection start: indexes beyond what this
    decoder inserted then name entries it never saw, and decode as unknown instead of failing.
    """

    __slots__ = ("complete", "limit", "max_size", "size", "table", "unknown_total")

    def __init__(self, complete: bool = True) -> None:
        # Allocated by the first insertion: a deque costs 600 bytes, and many flows never index.
        self.table: deque[tuple[str, str]] | None = None
        self.size = 0
        self.max_size = DEFAULT_TABLE_SIZE
        self.limit = DEFAULT_TABLE_SIZE  # what the receiving peer's SETTINGS allow (RFC 9113 §6.5.2)
        self.complete = complete
        self.unknown_total = 0

    def set_limit(self, value: int) -> None:
        """The decoding peer advertised SETTINGS_HEADER_TABLE_SIZE; clamp to our own bound."""
        self.limit = min(value, MAX_TABLE_SIZE)

    def _evict(self, room: int) -> None:
        """RFC 7541 §4.4: evict from the end until `room` more octets fit."""
        table = self.table
        while table and self.size + room > self.max_size:
            name, value = table.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD

    def _add(self, name: str, value: str) -> None:
        cost = len(name) + len(value) + ENTRY_OVERHEAD
        if cost > self.max_size:  # RFC 7541 §4.4: a too-large entry empties the table
            self.table = None
            self.size = 0
            return
        self._evict(cost)
        if self.table is None:
            self.table = deque()
        self.table.appendleft((name, value))
        self.size += cost

    def _resize(self, new: int) -> None:
        """RFC 7541 §6.3 dynamic table size update, bounded by the advertised limit."""
        bound = self.limit if self.complete else MAX_TABLE_SIZE
        if new > bound:
            raise HpackError(f"table size update {new} above the allowed {bound}")
        self.max_size = new
        self._evict(0)

    def _lookup(self, index: int) -> tuple[str, str] | None:
        """RFC 7541 §2.3.3 index space; None for an entry this decoder never saw."""
        if index <= 0:
            raise HpackError("index 0")
        if index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        i = index - STATIC_LEN - 1
        table = self.table
        if table is not None and i < len(table):
            return table[i]
        if self.complete:
            raise HpackError(f"index {index} beyond the dynamic table")
        return None

    def decode(self, block: bytes) -> Block:
        """Decode one complete header block; raises HpackError (the caller degrades the flow)."""
        fields: list[tuple[str, str]] = []
        unknown, updates = self.decode_into(block, fields)
        return Block(tuple(fields), unknown, updates)

    def decode_into(self, block: bytes, fields: list[tuple[str, str]]) -> tuple[int, int]:
        """`decode` into an empty list the caller keeps (no tuple, no `Block`): (unknown references,
        table size updates). Raises HpackError as `decode` does."""
        unknown = 0
        updates = 0
        listed = 0
        pos = 0
        n = len(block)
        while pos < n:
            b = block[pos]
            if b & 0x80:  # §6.1 indexed header field
                if b != 0xFF:  # the index fits the prefix (what `_integer` reads, without a call)
                    index = b & 0x7F
                    pos += 1
                else:
                    index, pos = _integer(block, pos, 7)
                entry = self._lookup(index)
                if entry is None:
                    unknown += 1
                    entry = (f":unknown-{index}", "")
                fields.append(entry)
            elif b & 0xE0 == 0x20:  # §6.3 dynamic table size update
                if fields:
                    raise HpackError("table size update after a header field")  # §4.2
                size, pos = _integer(block, pos, 5)
                self._resize(size)
                updates += 1
                continue
            else:
                if b & 0x40:  # §6.2.1 literal with incremental indexing
                    prefix, index_it = 6, True
                else:  # §6.2.2 without indexing, §6.2.3 never indexed
                    prefix, index_it = 4, False
                index, pos = _integer(block, pos, prefix)
                if index:
                    entry = self._lookup(index)
                    if entry is None:
                        unknown += 1
                        name = f":unknown-{index}"
                    else:
                        name = entry[0]
                else:
                    name, pos = _string(block, pos)
                value, pos = _string(block, pos)
                if index_it:
                    self._add(name, value)
                fields.append((name, value))
            last = fields[-1]
            listed += len(last[0]) + len(last[1]) + ENTRY_OVERHEAD
            if listed > MAX_HEADER_LIST or len(fields) > MAX_FIELDS:
                raise HpackError("header list too large")
        self.unknown_total += unknown
        return unknown, updates

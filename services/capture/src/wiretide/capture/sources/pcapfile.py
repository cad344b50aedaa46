"""pcap and pcapng files as a packet source: records in, `PacketColumns` batches out.

Rule: a file is read up to the first record that cannot be trusted; everything before it is handed
on, then `PcapError` says where (byte offset) and after how many packets reading stopped.
Formats: classic pcap (µs and ns, either byte order) and pcapng (draft-ietf-opsawg-pcapng).
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from wiretide.common.packets import ColumnBuilder, PacketColumns

DEFAULT_BATCH: Final = 1024
# Larger than any real frame (jumbo/TSO 256 KiB); a record claiming more is corruption, not data.
MAX_RECORD: Final = 1 << 20

PCAP_MAGIC_US: Final = 0xA1B2C3D4
PCAP_MAGIC_NS: Final = 0xA1B23C4D
PCAP_HEADER: Final = 24
PCAP_RECORD: Final = 16

# pcapng block types (draft-ietf-opsawg-pcapng §4, §11.1).
BT_SHB: Final = 0x0A0D0D0A
BT_IDB: Final = 0x00000001
BT_OPB: Final = 0x00000002  # obsolete Packet Block, still written by old tools (Appendix A)
BT_SPB: Final = 0x00000003
BT_EPB: Final = 0x00000006
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
OPT_ENDOFOPT: Final = 0
IF_NAME: Final = 2
IF_TSRESOL: Final = 9
IF_TSOFFSET: Final = 14
# Smallest block: type + length + trailing length.
BLOCK_MIN: Final = 12

_PACE_SLEEP_MAX_S: Final = 1.0  # wake up at least this often while pacing so a consumer can stop us


class PcapError(Exception):
    """A file that cannot be read (further). `offset` is the byte where reading stopped."""

    def __init__(self, path: str, message: str, offset: int, packets: int) -> None:
        super().__init__(f"{path}: {message} at byte offset {offset} after {packets} packets")
        self.path = path
        self.reason = message
        self.offset = offset
        self.packets = packets


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a file's headers say: format and the interfaces in order (name, link type)."""

    format: str
    interfaces: tuple[tuple[str, int], ...]


def _ts_factor(resol: int) -> tuple[int, int]:
    """(multiplier, divisor) turning timestamp units into ns for an if_tsresol byte (§4.2)."""
    exp = resol & 0x7F
    if resol & 0x80:
        return 1_000_000_000, 1 << exp
    if exp <= 9:
        return 10 ** (9 - exp), 1
    return 1, 10 ** (exp - 9)


class _Paced:
    """Sleeps so that packets come out at the pace they were recorded."""

    __slots__ = ("first_ts", "start")

    def __init__(self) -> None:
        self.first_ts = -1
        self.start = 0.0

    def due_in(self, ts_ns: int) -> float:
        if self.first_ts < 0:
            self.first_ts = ts_ns
            self.start = time.monotonic()
            return 0.0
        return (ts_ns - self.first_ts) / 1e9 - (time.monotonic() - self.start)


def read_batches(
    path: str | os.PathLike[str], batch_size: int = DEFAULT_BATCH, *, pace: bool = False
) -> Iterator[PacketColumns]:
    """Yield the packets of a pcap or pcapng file in batches of up to `batch_size`.

    With `pace`, packets come out at their recorded spacing (a batch is cut whenever the next packet
    is not yet due). Raises `PcapError` after yielding every packet read before a corrupt record.
    """
    name = str(path)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise PcapError(name, "empty file", 0, 0)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        buf = memoryview(mm)
        try:
            if size < 4:
                raise PcapError(name, "file too short for a header", 0, 0)
            magic_le = struct.unpack_from("<I", buf, 0)[0]
            if magic_le == BT_SHB:
                yield from _read_pcapng(name, buf, batch_size, pace)
            else:
                yield from _read_pcap(name, buf, batch_size, pace)
        finally:
            try:
                buf.release()
                mm.close()
            except BufferError:
                pass  # a slice is still referenced from a traceback; the map goes when it does


def _pace(builder: ColumnBuilder, pacer: _Paced, ts: int) -> Iterator[PacketColumns]:
    """Hand on what is batched and sleep until the packet stamped `ts` is due."""
    wait = pacer.due_in(ts)
    if wait <= 0:
        return
    if len(builder):
        yield builder.take()
    _sleep_until(pacer, ts, wait)


def _sleep_until(pacer: _Paced, ts: int, wait: float) -> None:
    while wait > 0:
        time.sleep(min(wait, _PACE_SLEEP_MAX_S))
        wait = pacer.due_in(ts)


def _read_pcap(name: str, buf: memoryview, batch_size: int, pace: bool) -> Iterator[PacketColumns]:
    size = len(buf)
    if size < PCAP_HEADER:
        raise PcapError(name, "file too short for a pcap header", 0, 0)
    magic = struct.unpack_from("<I", buf, 0)[0]
    if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        endian = "<"
    elif struct.unpack_from(">I", buf, 0)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        endian = ">"
        magic = struct.unpack_from(">I", buf, 0)[0]
    else:
        raise PcapError(name, f"not a pcap or pcapng file (magic 0x{magic:08x})", 0, 0)
    frac_ns = 1 if magic == PCAP_MAGIC_NS else 1000
    snaplen, network = struct.unpack_from(endian + "II", buf, 16)
    link_type = network & 0x0FFFFFFF  # upper bits carry FCS length flags
    limit = max(snaplen, MAX_RECORD)
    interfaces = [(Path(name).name, link_type)]
    unpack = struct.Struct(endian + "IIII").unpack_from
    pacer = _Paced() if pace else None
    off = PCAP_HEADER
    count = 0
    # One interface, so the batch columns are filled here directly (the per-packet path of a file
    # read): frames are sliced out of the map and joined once per batch.
    frames: list[memoryview] = []
    caplens: list[int] = []
    origlens: list[int] = []
    stamps: list[int] = []

    def take() -> PacketColumns:
        nonlocal frames, caplens, origlens, stamps
        cols = PacketColumns(
            b"".join(frames), caplens, origlens, stamps, [0] * len(caplens), list(interfaces)
        )
        frames, caplens, origlens, stamps = [], [], [], []
        return cols

    try:
        while off < size:
            if size - off < PCAP_RECORD:
                if caplens:
                    yield take()
                raise PcapError(name, "truncated record header", off, count)
            sec, frac, caplen, origlen = unpack(buf, off)
            start = off + PCAP_RECORD
            off = start + caplen
            if caplen > limit or off > size:
                if caplens:
                    yield take()
                what = (
                    "record longer than the file" if caplen <= limit else f"record length {caplen} too large"
                )
                raise PcapError(name, what, start - PCAP_RECORD, count)
            ts = sec * 1_000_000_000 + frac * frac_ns
            if pacer is not None:
                wait = pacer.due_in(ts)
                if wait > 0:
                    if caplens:
                        yield take()
                    _sleep_until(pacer, ts, wait)
            if len(caplens) >= batch_size:
                yield take()
            frames.append(buf[start:off])
            caplens.append(caplen)
            origlens.append(origlen)
            stamps.append(ts)
            count += 1
        if caplens:
            yield take()
    finally:
        frames.clear()  # no view of the map may outlive the reader (read_batches closes it)


def _options(buf: memoryview, off: int, end: int, endian: str) -> Iterator[tuple[int, bytes]]:
    """Options of a block (§3.5); stops quietly at the end marker or at a malformed option."""
    while end - off >= 4:
        code, length = struct.unpack_from(endian + "HH", buf, off)
        if code == OPT_ENDOFOPT:
            return
        value_end = off + 4 + length
        if value_end > end:
            return
        yield code, bytes(buf[off + 4 : value_end])
        off += 4 + ((length + 3) & ~3)


def read_info(path: str | os.PathLike[str]) -> FileInfo:
    """The format and interfaces a file declares (reads the whole file for pcapng IDBs)."""
    interfaces: list[tuple[str, int]] = []
    for batch in read_batches(path, 65536):
        interfaces = batch.interfaces
    with open(path, "rb") as fh:
        head = fh.read(4)
    return FileInfo("pcapng" if head == struct.pack("<I", BT_SHB) else "pcap", tuple(interfaces))


def _read_pcapng(name: str, buf: memoryview, batch_size: int, pace: bool) -> Iterator[PacketColumns]:
    size = len(buf)
    builder = ColumnBuilder()
    pacer = _Paced() if pace else None
    # Per section: interface ids -> (builder index, ts multiplier, ts divisor, ts offset ns, snaplen).
    section: list[tuple[int, int, int, int, int]] = []
    endian = "<"
    off = 0
    count = 0
    n_if = 0

    def fail(message: str, at: int) -> PcapError:
        return PcapError(name, message, at, count)

    while off < size:
        if size - off < BLOCK_MIN:
            if len(builder):
                yield builder.take()
            raise fail("truncated block header", off)
        btype_le = struct.unpack_from("<I", buf, off)[0]
        if btype_le == BT_SHB:
            if size - off < 16:
                if len(builder):
                    yield builder.take()
                raise fail("truncated section header", off)
            bom = struct.unpack_from("<I", buf, off + 8)[0]
            if bom == BYTE_ORDER_MAGIC:
                endian = "<"
            elif struct.unpack_from(">I", buf, off + 8)[0] == BYTE_ORDER_MAGIC:
                endian = ">"
            else:
                if len(builder):
                    yield builder.take()
                raise fail("bad byte-order magic in section header", off)
            section = []
        btype, blen = struct.unpack_from(endian + "II", buf, off)
        if blen < BLOCK_MIN or blen % 4 or off + blen > size:
            if len(builder):
                yield builder.take()
            raise fail(f"bad block length {blen}", off)
        if struct.unpack_from(endian + "I", buf, off + blen - 4)[0] != blen:
            if len(builder):
                yield builder.take()
            raise fail("block trailing length does not match", off)
        body = off + 8
        body_end = off + blen - 4
        if btype == BT_IDB:
            if body_end - body < 8:
                if len(builder):
                    yield builder.take()
                raise fail("truncated interface block", off)
            link_type, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, body)
            if_name = f"if{n_if}"
            mul, div, ts_off = 1000, 1, 0
            for code, value in _options(buf, body + 8, body_end, endian):
                if code == IF_NAME:
                    if_name = value.rstrip(b"\x00").decode("utf-8", "replace") or if_name
                elif code == IF_TSRESOL and len(value) >= 1:
                    mul, div = _ts_factor(value[0])
                elif code == IF_TSOFFSET and len(value) >= 8:
                    ts_off = struct.unpack_from(endian + "q", value, 0)[0] * 1_000_000_000
            idx = builder.interface(if_name, link_type)
            section.append((idx, mul, div, ts_off, snaplen))
            n_if += 1
        elif btype in (BT_EPB, BT_OPB):
            if body_end - body < 20:
                if len(builder):
                    yield builder.take()
                raise fail("truncated packet block", off)
            if btype == BT_EPB:
                ifid, ts_hi, ts_lo, caplen, origlen = struct.unpack_from(endian + "IIIII", buf, body)
            else:
                ifid, _drops, ts_hi, ts_lo, caplen, origlen = struct.unpack_from(endian + "HHIIII", buf, body)
            data = body + 20
            if data + caplen > body_end:
                if len(builder):
                    yield builder.take()
                raise fail(f"captured length {caplen} exceeds its block", off)
            if ifid >= len(section):
                if len(builder):
                    yield builder.take()
                raise fail(f"packet refers to undeclared interface {ifid}", off)
            idx, mul, div, ts_off, _snap = section[ifid]
            ts = ((ts_hi << 32) | ts_lo) * mul // div + ts_off
            if pacer is not None:
                yield from _pace(builder, pacer, ts)
            if len(builder) >= batch_size:
                yield builder.take()
            builder.append(buf[data : data + caplen], origlen, ts, idx)
            count += 1
        elif btype == BT_SPB:
            if body_end - body < 4 or not section:
                if len(builder):
                    yield builder.take()
                raise fail("simple packet block without interface", off)
            origlen = struct.unpack_from(endian + "I", buf, body)[0]
            idx, _mul, _div, _ts_off, snap = section[0]
            caplen = min(origlen, body_end - body - 4, snap or origlen)
            if len(builder) >= batch_size:
                yield builder.take()
            builder.append(buf[body + 4 : body + 4 + caplen], origlen, 0, idx)
            count += 1
        off += blen
    if len(builder):
        yield builder.take()

"""pcap and pcapng files as a packet source: records in, `PacketColumns` batches out.

Rule: a file is read up to the first record that cannot be trusted; everything before it is handed
on, then `PcapError` says where (byte offset) and after how many packets reading stopped, and whether
the input was cut short mid-record (`truncated`) or is damaged. A regular file is memory-mapped; a
pipe (stdin, `<(tcpdump -w -)`) is read in chunks without ever seeking, and a batch is handed on
before the reader waits for more input, so a live pipe flows through.
Formats: classic pcap (µs and ns, either byte order) and pcapng (draft-ietf-opsawg-pcapng).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from wiretide.common.packets import ColumnBuilder, PacketColumns

DEFAULT_BATCH: Final = 1024
# Frame bytes in one batch, whatever its packet count: a capture of 64 KiB super-frames (TSO/GRO)
# would otherwise make a batch of 1,024 packets 64 MiB, held several times over on its way (columns,
# the message, the queue). A live ring block is this size too. A single larger frame is a batch alone.
DEFAULT_BATCH_BYTES: Final = 1 << 20
# Larger than any real frame (jumbo/TSO 256 KiB); a record claiming more is corruption, not data.
MAX_RECORD: Final = 1 << 20
# Larger than any block a capture tool writes (packet blocks hold at most MAX_RECORD bytes, name and
# secrets blocks far less): a longer block is corruption, and a pipe never buffers more than this.
MAX_BLOCK: Final = 16 << 20
# Bytes asked of a pipe per read: a few pipe buffers (64 KiB each on Linux), so a fast producer is
# drained in few reads while a slow one hands on whatever it has written.
STREAM_CHUNK: Final = 256 * 1024

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


# What a reader says when the input ends inside a record (tshark's wording, so users recognise it).
CUT_SHORT: Final = "the capture appears to have been cut short in the middle of a packet"


class PcapError(Exception):
    """A file that cannot be read (further). `offset` is the byte where reading stopped; `truncated`
    says the input ended inside a record (everything before it was good), as opposed to damage or a
    file that is no capture at all."""

    def __init__(
        self, path: str, message: str, offset: int, packets: int, *, truncated: bool = False
    ) -> None:
        where = f" (at byte offset {offset}, after {packets} packets)" if offset or packets else ""
        super().__init__(f"{path}: {message}{where}")
        self.path = path
        self.reason = message
        self.offset = offset
        self.packets = packets
        self.truncated = truncated


def _open_error(name: str, exc: OSError) -> PcapError:
    """An `open()` failure in the words a user needs: what is wrong with the path."""
    if exc.errno == errno.ENOENT:
        reason = "no such file"
    elif exc.errno == errno.EISDIR:
        reason = "is a directory, not a capture file"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    else:
        reason = f"cannot open: {exc.strerror or exc}"
    return PcapError(name, reason, 0, 0)


def check_readable(path: str | os.PathLike[str]) -> int:
    """Before reading: the size of a regular file, or -1 for a stream (a pipe, a device), which is not
    opened here (a named pipe would block until its writer comes). Raises `PcapError` saying what is
    wrong with a path that cannot be read: missing, a directory, no permission."""
    name = str(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if not stat.S_ISREG(st.st_mode):
            return -1
        with open(path, "rb"):
            return st.st_size
    except OSError as exc:
        raise _open_error(name, exc) from None


class _Window:
    """The bytes a parser reads: the whole mapped file, or the unread part of a stream.

    `more(consumed)` drops the first `consumed` bytes, appends the stream's next chunk and says
    whether anything came; a mapped file has no more. `base` is the stream offset of `buf[0]`.
    A parser must hand on every frame sliced from `buf` before calling `more`.
    """

    __slots__ = ("base", "buf", "read")

    def __init__(self, buf: memoryview, read: Callable[[int], bytes] | None = None) -> None:
        self.buf = buf
        self.base = 0
        self.read = read

    @property
    def streaming(self) -> bool:
        return self.read is not None

    def more(self, consumed: int) -> bool:
        if self.read is None:
            return False
        chunk = self.read(STREAM_CHUNK)
        if not chunk:
            self.read = None  # end of input: later calls answer at once
            return False
        self.buf = memoryview(bytes(self.buf[consumed:]) + chunk)
        self.base += consumed
        return True


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
    path: str | os.PathLike[str],
    batch_size: int = DEFAULT_BATCH,
    *,
    pace: bool = False,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[PacketColumns]:
    """Yield the packets of a pcap or pcapng file in batches of up to `batch_size` packets and
    `batch_bytes` frame bytes (a frame larger than that alone).

    With `pace`, packets come out at their recorded spacing (a batch is cut whenever the next packet
    is not yet due). A path that is not a regular file (a named pipe, `/dev/stdin`) is read as a
    stream. Raises `PcapError` after yielding every packet read before a corrupt or cut record, and
    for a path that cannot be opened (naming what is wrong with it).
    """
    name = str(path)
    _check_sizes(batch_size, batch_bytes)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the generator is done with it
    except OSError as exc:
        raise _open_error(name, exc) from None
    with fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            yield from read_stream(fh, name, batch_size, pace=pace, batch_bytes=batch_bytes)
            return
        if st.st_size == 0:
            raise PcapError(name, "empty file (0 bytes), not a pcap or pcapng capture", 0, 0)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        window = _Window(memoryview(mm))
        try:
            yield from _read(name, window, batch_size, batch_bytes, pace)
        finally:
            try:
                window.buf.release()
                mm.close()
            except BufferError:
                pass  # a slice is still referenced from a traceback; the map goes when it does


def read_stream(
    fh: BinaryIO,
    name: str = "<stdin>",
    batch_size: int = DEFAULT_BATCH,
    *,
    pace: bool = False,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[PacketColumns]:
    """`read_batches` over an open binary stream (a pipe, stdin): read in chunks, never seeking.

    What has been read is handed on before each wait for more input, so packets written into a pipe
    come out as they arrive. At the end of input inside a record, `PcapError(truncated=True)`.
    """
    _check_sizes(batch_size, batch_bytes)
    read: Callable[[int], bytes] = getattr(fh, "read1", fh.read)
    window = _Window(memoryview(b""), read)
    if not window.more(0):
        raise PcapError(name, "empty input (0 bytes), not a pcap or pcapng capture", 0, 0)
    yield from _read(name, window, batch_size, batch_bytes, pace)


def _check_sizes(batch_size: int, batch_bytes: int) -> None:
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if batch_bytes < 1:
        raise ValueError("batch_bytes must be >= 1")


def _read(
    name: str, window: _Window, batch_size: int, batch_bytes: int, pace: bool
) -> Iterator[PacketColumns]:
    """Dispatch on the first four bytes: the pcapng section header type, else a pcap magic."""
    while len(window.buf) < 4:
        if not window.more(0):
            raise PcapError(
                name, f"only {len(window.buf)} bytes, too short for a pcap or pcapng header", 0, 0
            )
    if struct.unpack_from("<I", window.buf, 0)[0] == BT_SHB:
        yield from _read_pcapng(name, window, batch_size, batch_bytes, pace)
    else:
        yield from _read_pcap(name, window, batch_size, batch_bytes, pace)


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


def _read_pcap(
    name: str, window: _Window, batch_size: int, batch_bytes: int, pace: bool
) -> Iterator[PacketColumns]:
    while len(window.buf) < PCAP_HEADER:
        if not window.more(0):
            raise PcapError(name, f"only {len(window.buf)} bytes, too short for a pcap file header", 0, 0)
    buf = window.buf
    magic = struct.unpack_from("<I", buf, 0)[0]
    if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        endian = "<"
    elif struct.unpack_from(">I", buf, 0)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        endian = ">"
        magic = struct.unpack_from(">I", buf, 0)[0]
    else:
        head = bytes(buf[:8])
        raise PcapError(
            name, f"not a pcap or pcapng capture: it starts with {head!r} (magic 0x{magic:08x})", 0, 0
        )
    frac_ns = 1 if magic == PCAP_MAGIC_NS else 1000
    snaplen, network = struct.unpack_from(endian + "II", buf, 16)
    link_type = network & 0x0FFFFFFF  # upper bits carry FCS length flags
    limit = min(max(snaplen, MAX_RECORD), MAX_BLOCK)
    interfaces = [(Path(name).name, link_type)]
    unpack = struct.Struct(endian + "IIII").unpack_from
    pacer = _Paced() if pace else None
    off = PCAP_HEADER
    size = len(buf)
    count = 0
    # One interface, so the batch columns are filled here directly (the per-packet path of a file
    # read): frames are sliced out of the map and joined once per batch.
    frames: list[memoryview] = []
    caplens: list[int] = []
    origlens: list[int] = []
    stamps: list[int] = []
    nbytes = 0

    def take() -> PacketColumns:
        nonlocal frames, caplens, origlens, stamps, nbytes
        cols = PacketColumns(
            b"".join(frames), caplens, origlens, stamps, [0] * len(caplens), list(interfaces)
        )
        frames, caplens, origlens, stamps = [], [], [], []
        nbytes = 0
        return cols

    try:
        while True:
            if size - off >= PCAP_RECORD:
                sec, frac, caplen, origlen = unpack(buf, off)
                need = PCAP_RECORD + caplen
                if caplen > limit:
                    if caplens:
                        yield take()
                    raise PcapError(name, f"record length {caplen} too large", window.base + off, count)
            else:
                need = PCAP_RECORD
            if size - off < need:
                # The input ends here, or (a stream) has not arrived yet: hand on the batch (its
                # frames are views of `buf`), then read on or stop.
                if caplens:
                    yield take()
                if window.more(off):
                    buf, off, size = window.buf, 0, len(window.buf)
                    continue
                if off == size:
                    return
                raise PcapError(name, CUT_SHORT, window.base + off, count, truncated=True)
            start = off + PCAP_RECORD
            off = start + caplen
            ts = sec * 1_000_000_000 + frac * frac_ns
            if pacer is not None:
                wait = pacer.due_in(ts)
                if wait > 0:
                    if caplens:
                        yield take()
                    _sleep_until(pacer, ts, wait)
            if caplens and (len(caplens) >= batch_size or nbytes + caplen > batch_bytes):
                yield take()
            frames.append(buf[start:off])
            nbytes += caplen
            caplens.append(caplen)
            origlens.append(origlen)
            stamps.append(ts)
            count += 1
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


def _read_pcapng(
    name: str, window: _Window, batch_size: int, batch_bytes: int, pace: bool
) -> Iterator[PacketColumns]:
    buf = window.buf
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
        return PcapError(name, message, window.base + at, count)

    while True:
        # Bytes the block at `off` needs before it can be read: its header, then its whole length.
        need = BLOCK_MIN
        btype_le = -1
        if size - off >= BLOCK_MIN:
            btype_le = struct.unpack_from("<I", buf, off)[0]
            need = 16 if btype_le == BT_SHB else BLOCK_MIN
        if size - off >= need:
            if btype_le == BT_SHB:  # a section header sets the byte order of itself and what follows
                if struct.unpack_from("<I", buf, off + 8)[0] == BYTE_ORDER_MAGIC:
                    endian = "<"
                elif struct.unpack_from(">I", buf, off + 8)[0] == BYTE_ORDER_MAGIC:
                    endian = ">"
                else:
                    if len(builder):
                        yield builder.take()
                    raise fail("bad byte-order magic in section header", off)
                section = []
            blen = struct.unpack_from(endian + "I", buf, off + 4)[0]
            if blen < BLOCK_MIN or blen % 4 or blen > MAX_BLOCK:
                if len(builder):
                    yield builder.take()
                raise fail(f"bad block length {blen}", off)
            need = blen
        if size - off < need:
            # The input ends here, or (a stream) has not arrived yet: hand on the batch, read on.
            if len(builder):
                yield builder.take()
            if window.more(off):
                buf, off, size = window.buf, 0, len(window.buf)
                continue
            if off == size:
                return
            raise PcapError(name, CUT_SHORT, window.base + off, count, truncated=True)
        btype, blen = struct.unpack_from(endian + "II", buf, off)
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
            if len(builder) and (len(builder) >= batch_size or builder.nbytes + caplen > batch_bytes):
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
            if len(builder) and (len(builder) >= batch_size or builder.nbytes + caplen > batch_bytes):
                yield builder.take()
            builder.append(buf[body + 4 : body + 4 + caplen], origlen, 0, idx)
            count += 1
        off += blen

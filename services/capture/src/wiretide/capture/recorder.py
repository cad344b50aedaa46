"""The node-local recorder: a ring of pcapng files bounded by size and age, and snapshots cut from it.

Rule: the files on disk never exceed `max_bytes` together (plus at most the batch being written) and
none is kept longer than `max_age_s` after its last write; the oldest file goes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from wiretide.capture import metrics
from wiretide.capture.bpf import BpfProgram, FilterError, compile_bpf
from wiretide.capture.pcapng import PcapngWriter
from wiretide.capture.sources.pcapfile import PcapError, read_batches
from wiretide.common.packets import PacketColumns, decode_headers, flow_id

FILE_PREFIX: Final = "rec-"
SUFFIX: Final = ".pcapng"
DEFAULT_FILE_BYTES: Final = 64 << 20
DEFAULT_MAX_BYTES: Final = 1 << 30
DEFAULT_FILE_AGE_S: Final = 300.0
DEFAULT_MAX_AGE_S: Final = 3600.0
SNAPSHOT_INLINE_MAX: Final = 32 << 20  # bytes returned inline in a Snapshot answer (gRPC message bound)


@dataclass(frozen=True, slots=True)
class RecorderLimits:
    file_bytes: int = DEFAULT_FILE_BYTES
    file_age_s: float = DEFAULT_FILE_AGE_S
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_s: float = DEFAULT_MAX_AGE_S

    def check(self) -> None:
        if self.file_bytes <= 0 or self.max_bytes <= 0:
            raise ValueError("recorder sizes must be positive")
        if self.file_bytes > self.max_bytes:
            raise ValueError(f"recorder file size {self.file_bytes} exceeds the ring size {self.max_bytes}")
        if self.file_age_s <= 0 or self.max_age_s <= 0:
            raise ValueError("recorder ages must be positive")


@dataclass(frozen=True, slots=True)
class Snapshot:
    path: Path
    packets: int


class Recorder:
    """Writes every batch into rotating pcapng files under `directory`."""

    def __init__(
        self,
        directory: Path,
        node: str,
        limits: RecorderLimits = RecorderLimits(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        limits.check()
        self.directory = directory
        self.node = node
        self.limits = limits
        self.clock = clock
        directory.mkdir(parents=True, exist_ok=True)
        existing = self.files()
        self._seq = 1 + max((self._seq_of(p) for p in existing), default=0)
        self._fh: BinaryIO | None = None
        self._writer: PcapngWriter | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self.rotations = 0
        self.deleted = 0

    @staticmethod
    def _seq_of(path: Path) -> int:
        try:
            return int(path.stem[len(FILE_PREFIX) :])
        except ValueError:
            return 0

    def files(self) -> list[Path]:
        """Recording files, oldest first."""
        return sorted(self.directory.glob(f"{FILE_PREFIX}*{SUFFIX}"), key=self._seq_of)

    def _open(self) -> PcapngWriter:
        path = self.directory / f"{FILE_PREFIX}{self._seq:08d}{SUFFIX}"
        self._seq += 1
        self._fh = open(path, "wb")  # noqa: SIM115 - held open across batches, closed on rotation
        self._path = path
        self._opened_at = self.clock()
        self._writer = PcapngWriter(self._fh, self.node)
        return self._writer

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None
        self._writer = None
        self._path = None

    def write(self, cols: PacketColumns) -> None:
        if not len(cols):
            return
        now = self.clock()
        writer = self._writer
        if (
            writer is not None
            and writer.packets
            and (
                writer.bytes_written + len(cols.data) + 32 * len(cols) > self.limits.file_bytes
                or now - self._opened_at >= self.limits.file_age_s
            )
        ):
            self._close_current()
            self.rotations += 1
            writer = None
        if writer is None:
            writer = self._open()
        writer.write(cols)
        assert self._fh is not None
        self._fh.flush()
        self.enforce(now)

    def enforce(self, now: float | None = None) -> None:
        """Delete the oldest closed files until the ring is within its size and age bounds."""
        now = self.clock() if now is None else now
        files = self.files()
        sizes = {}
        for p in files:
            try:
                sizes[p] = p.stat().st_size
            except FileNotFoundError:
                continue
        total = sum(sizes.values())
        for p in files:
            if p == self._path or p not in sizes:
                continue
            try:
                mtime = p.stat().st_mtime
            except FileNotFoundError:
                continue
            if total > self.limits.max_bytes or now - mtime > self.limits.max_age_s:
                p.unlink(missing_ok=True)
                total -= sizes[p]
                self.deleted += 1
        metrics.RECORDER_BYTES.set(total)

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def close(self) -> None:
        self._close_current()

    def snapshot(
        self, out: Path, start_ns: int = 0, end_ns: int = 0, bpf: str = "", flow: str = ""
    ) -> Snapshot:
        """Write the recorded packets in [start_ns, end_ns) (0 = open) matching `bpf` and `flow` to `out`."""
        programs: dict[int, BpfProgram] = {}
        if bpf:
            compile_bpf(bpf)  # a bad expression fails here, before any file is touched
        if self._fh is not None:
            self._fh.flush()
        out.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        tmp = out.with_name(out.name + ".part")
        with open(tmp, "wb") as fh:
            writer = PcapngWriter(fh, self.node)
            for path in self.files():
                try:
                    for cols in read_batches(path, 4096):
                        keep = self._select(cols, start_ns, end_ns, bpf, flow, programs)
                        count += writer.write(cols, keep)
                except (PcapError, FileNotFoundError):
                    # The file being written ends mid-block, or a file rotated away meanwhile.
                    continue
        tmp.replace(out)
        return Snapshot(out, count)

    @staticmethod
    def _select(
        cols: PacketColumns, start_ns: int, end_ns: int, bpf: str, flow: str, programs: dict[int, BpfProgram]
    ) -> list[bool]:
        keep: list[bool] = []
        buf = memoryview(cols.data)
        for off, caplen, origlen, ts, ifid in cols.iter_packets():
            ok = (not start_ns or ts >= start_ns) and (not end_ns or ts < end_ns)
            link = cols.link_type(ifid)
            if ok and flow:
                h = decode_headers(buf, off, off + caplen, link)
                ok = h is not None and flow_id(h[1], h[4], h[2], h[5], h[3]) == flow
            if ok and bpf:
                prog = programs.get(link)
                if prog is None:
                    try:
                        prog = compile_bpf(bpf, link)
                    except FilterError:
                        ok = False
                    else:
                        programs[link] = prog
                if prog is not None:
                    ok = prog.matches(cols.data[off : off + caplen], origlen)
            keep.append(ok)
        buf.release()
        return keep

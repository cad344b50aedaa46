"""The capture source on its own, as `wiretide capture` runs it: interfaces (or a file) to a pcapng
file, with totals and drops at the end — a tcpdump for Wiretide.

Rule: when it stops (count, duration or interrupt) it waits for the kernel to retire the partly filled
ring blocks and drains them, so no captured packet is left behind in the ring.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from wiretide.capture.bpf import OfflineFilter
from wiretide.capture.interfaces import Selection
from wiretide.capture.live import InterfaceTotals, LiveCapture
from wiretide.capture.pcapng import PcapngWriter
from wiretide.capture.sources.afpacket import RingConfig
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.common.packets import ColumnBuilder, PacketColumns

RESCAN_S: Final = 2.0  # how often new and vanished interfaces are noticed
POLL_MS: Final = 100
FLUSH_PACKETS: Final = 4096  # write to the output file at least this often


@dataclass(frozen=True, slots=True)
class Options:
    selection: Selection
    ring: RingConfig
    write: Path | BinaryIO | None = None  # a file, or a stream the caller owns (stdout): never closed here
    duration_s: float = 0.0  # 0 = until count or interrupt
    count: int = 0  # 0 = unlimited
    pcap: Path | None = None
    pace: bool = False
    node: str = ""


@dataclass(slots=True)
class Result:
    packets: int = 0
    bytes: int = 0
    interfaces: list[InterfaceTotals] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def kernel_drops(self) -> int:
        return sum(t.kernel_drops for t in self.interfaces)


class _LimitedSink:
    """Collects into a builder, ignoring packets beyond `limit` (0 = no limit)."""

    __slots__ = ("builder", "limit", "seen")

    def __init__(self, builder: ColumnBuilder, limit: int) -> None:
        self.builder = builder
        self.limit = limit
        self.seen = 0

    def add(self, buf: memoryview, start: int, end: int, origlen: int, ts_ns: int, interface_id: int) -> None:
        if self.limit and self.seen >= self.limit:
            return
        self.seen += 1
        self.builder.append(buf[start:end], origlen, ts_ns, interface_id)


def run(
    options: Options, stop: list[bool] | None = None, on_change: Callable[[str], None] | None = None
) -> Result:
    """Capture until the count, the duration or `stop[0]` is reached; KeyboardInterrupt also stops.
    `on_change` hears one line per interface opened or released."""
    if options.pcap is not None:
        return _replay(options)
    interfaces: list[tuple[str, int]] = []
    live = LiveCapture(options.selection, options.ring, interfaces)
    result = Result()
    out = _open_output(options.write)
    writer = PcapngWriter(out, options.node) if out else None
    builder = ColumnBuilder()
    builder.interfaces = interfaces
    sink = _LimitedSink(builder, options.count)

    def flush() -> None:
        cols = builder.take()
        builder.interfaces = interfaces
        result.packets += len(cols)
        result.bytes += len(cols.data)
        if writer is not None and len(cols):
            writer.write(cols)

    try:
        announce(live, live.rescan(), on_change)
        if not live.sockets:
            result.errors = dict(live.errors) or {"": "no interface matches the selection"}
            return result
        start = time.monotonic()
        last_scan = start
        try:
            while not (stop and stop[0]):
                live.poll(sink, POLL_MS)
                if len(builder) >= FLUSH_PACKETS or (len(builder) and out is options.write):
                    flush()  # a stream (a pipe to tshark) gets each poll's packets as they come
                now = time.monotonic()
                if options.count and sink.seen >= options.count:
                    break
                if options.duration_s and now - start >= options.duration_s:
                    break
                if now - last_scan >= RESCAN_S:
                    announce(live, live.rescan(), on_change)
                    last_scan = now
        except KeyboardInterrupt:
            pass
        # Partly filled blocks are retired by the kernel after retire_ms; wait for them, then drain.
        time.sleep(options.ring.retire_ms * 2 / 1000)
        live.drain_all(sink)
        flush()
        live.refresh_stats()
        result.interfaces = list(live.totals.values())
        result.errors = dict(live.errors)
        return result
    finally:
        live.close()
        if out is not None and out is not options.write:
            out.close()


def _open_output(write: Path | BinaryIO | None) -> BinaryIO | None:
    """The file to write pcapng to: opened from a path, or the caller's stream as it is."""
    if write is None or not isinstance(write, Path):
        return write
    return open(write, "wb")  # closed by the caller's finally


def announce(
    live: LiveCapture, changes: tuple[list[str], list[str]], on_change: Callable[[str], None] | None
) -> None:
    """Tell `on_change` about interfaces opened and released by a rescan."""
    added, removed = changes
    if on_change is None:
        return
    for name in added:
        ring = live.sockets[name]
        on_change(f"listening on {name}, link-type {ring.link_type}, snaplen {live.config.snaplen}")
    for name in removed:
        on_change(f"released {name}")


def _replay(options: Options) -> Result:
    assert options.pcap is not None
    result = Result()
    # The capture filter applies to a file as to an interface (the kernel cannot run it here).
    match = OfflineFilter(options.ring.bpf) if options.ring.bpf else None
    out = _open_output(options.write)
    try:
        writer = PcapngWriter(out, options.node) if out else None
        for cols in read_batches(options.pcap, FLUSH_PACKETS, pace=options.pace):
            flags = _selected(cols, match, options.count - result.packets if options.count else -1)
            n = len(cols) if flags is None else sum(flags)
            nbytes = (
                len(cols.data)
                if flags is None
                else sum(c for c, f in zip(cols.caplens, flags, strict=True) if f)
            )
            if writer is not None:
                writer.write(cols, flags)
            result.packets += n
            result.bytes += nbytes
            if options.count and result.packets >= options.count:
                break
    finally:
        if out is not None and out is not options.write:
            out.close()
    return result


def _selected(cols: PacketColumns, match: OfflineFilter | None, room: int) -> list[bool] | None:
    """Which packets of a batch pass the filter, at most `room` of them (-1: no limit); None: all."""
    if match is None and (room < 0 or room >= len(cols)):
        return None
    flags: list[bool] = []
    for off, caplen, origlen, _ts, ifid in cols.iter_packets():
        ok = room != 0 and (
            match is None or match.matches(cols.data[off : off + caplen], origlen, cols.link_type(ifid))
        )
        room -= ok
        flags.append(ok)
    return flags

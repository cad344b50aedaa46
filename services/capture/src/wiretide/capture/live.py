"""A set of ring sockets over the selected interfaces, kept in step with the host's interfaces.

Rule: an interface's socket is opened once and released when the interface goes away or falls out of
the selection; interface ids are never reused within a process, so a batch's ids stay meaningful.
Kernel counters are folded into the per-interface totals and metrics on every `refresh_stats`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from wiretide.capture import metrics
from wiretide.capture.bpf import FilterError
from wiretide.capture.interfaces import Selection, present
from wiretide.capture.interfaces import select as select_interfaces
from wiretide.capture.sources.afpacket import PacketSink, RingConfig, RingSocket

log = logging.getLogger(__name__)


@dataclass(slots=True)
class InterfaceTotals:
    name: str
    packets: int = 0
    bytes: int = 0
    kernel_drops: int = 0
    ring_full: int = 0
    up: bool = True


class LiveCapture:
    """Ring sockets on the selected interfaces; `poll` drains what is ready into the sink."""

    def __init__(
        self,
        selection: Selection,
        config: RingConfig,
        interfaces: list[tuple[str, int]],
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.selection = selection
        self.config = config
        self.interfaces = interfaces  # shared index -> (name, link type); only ever appended to
        self.sockets: dict[str, RingSocket] = {}
        self.totals: dict[str, InterfaceTotals] = {}
        self.errors: dict[str, str] = {}
        self._on_error = on_error
        self._poller = select.poll()
        self._by_fd: dict[int, RingSocket] = {}
        self._released: list[str] = []  # released between rescans (the device went away under us)

    def rescan(self) -> tuple[list[str], list[str]]:
        """Open sockets on newly selected interfaces and release vanished ones; (added, removed)."""
        wanted = set(select_interfaces(self.selection))
        added: list[str] = []
        removed: list[str] = self._released
        self._released = []
        for name in sorted(set(self.sockets) - wanted):
            self._release(name)
            removed.append(name)
        for name in sorted(wanted - set(self.sockets)):
            if self._open(name):
                added.append(name)
        metrics.INTERFACES.set(len(self.sockets))
        return added, removed

    def set_filter(self, bpf: str) -> dict[str, str]:
        """The kernel filter of every socket, now and for interfaces opened later; {interface: error}
        for sockets that refused it (they keep their old filter)."""
        self.config = dataclasses.replace(self.config, bpf=bpf)
        failed: dict[str, str] = {}
        for name, ring in self.sockets.items():
            try:
                ring.set_filter(bpf)
            except FilterError as exc:
                failed[name] = str(exc)
        return failed

    def _open(self, name: str) -> bool:
        try:
            ring = RingSocket(name, self.config, interface_id=-1)
        except (OSError, FilterError) as exc:
            if self.errors.get(name) != str(exc):
                log.warning("cannot capture", extra={"interface": name, "error": str(exc)})
                if self._on_error is not None:
                    self._on_error(name, exc)
            self.errors[name] = str(exc)
            return False
        self.errors.pop(name, None)
        key = (name, ring.link_type)
        if key in self.interfaces:
            ring.interface_id = self.interfaces.index(key)
        else:
            self.interfaces.append(key)
            ring.interface_id = len(self.interfaces) - 1
        self.sockets[name] = ring
        self._by_fd[ring.fileno()] = ring
        self._poller.register(ring.fileno(), select.POLLIN | select.POLLERR)
        totals = self.totals.setdefault(name, InterfaceTotals(name))
        totals.up = True
        log.info("capturing", extra={"interface": name, "link_type": ring.link_type})
        return True

    def _release(self, name: str) -> None:
        ring = self.sockets.pop(name, None)
        if ring is None:
            return
        self._by_fd.pop(ring.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._poller.unregister(ring.fileno())
        with contextlib.suppress(OSError):
            self._fold_stats(name, ring)
        ring.close()
        self.totals[name].up = False
        log.info("released", extra={"interface": name})

    def _fold_stats(self, name: str, ring: RingSocket) -> None:
        before = self.totals[name]
        stats = ring.stats()
        new_drops = stats.drops - getattr(ring, "_seen_drops", 0)
        new_freezes = stats.freezes - getattr(ring, "_seen_freezes", 0)
        ring._seen_drops = stats.drops  # type: ignore[attr-defined]
        ring._seen_freezes = stats.freezes  # type: ignore[attr-defined]
        if new_drops:
            before.kernel_drops += new_drops
            metrics.KERNEL_DROPS.labels(name).inc(new_drops)
        if new_freezes:
            before.ring_full += new_freezes
            metrics.RING_FULL.labels(name).inc(new_freezes)

    def refresh_stats(self) -> None:
        for name, ring in list(self.sockets.items()):
            try:
                self._fold_stats(name, ring)
            except OSError:
                self._release(name)

    def fds(self) -> list[int]:
        return list(self._by_fd)

    def drain_fd(self, fd: int, sink: PacketSink, max_blocks: int = 0) -> int:
        """Drain the ready blocks of one socket (at most `max_blocks`, 0 = all); packets drained."""
        ring = self._by_fd.get(fd)
        if ring is None:
            return 0
        return self._drain(ring, sink, max_blocks)

    def _drain(self, ring: RingSocket, sink: PacketSink, max_blocks: int = 0) -> int:
        n = ring.drain(sink, max_blocks)
        if n:
            totals = self.totals[ring.ifname]
            totals.packets += n
            totals.bytes += ring.last_bytes
            metrics.PACKETS.labels(ring.ifname).inc(n)
            metrics.BYTES.labels(ring.ifname).inc(ring.last_bytes)
        return n

    def poll(self, sink: PacketSink, timeout_ms: int) -> int:
        """Wait up to `timeout_ms` for ready blocks and drain them; returns packets drained."""
        total = 0
        for fd, events in self._poller.poll(timeout_ms):
            ring = self._by_fd.get(fd)
            if ring is None:
                continue
            if events & select.POLLERR and not events & select.POLLIN:
                self.check_error(fd)
                continue
            total += self._drain(ring, sink)
        return total

    def check_error(self, fd: int) -> bool:
        """After POLLERR (or a wake-up with nothing to read): read and clear the socket error; release
        the socket if its device went down or away. True when it was released."""
        ring = self._by_fd.get(fd)
        if ring is None:
            return False
        try:
            err = ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            err = errno.ENODEV
        if err in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV) or ring.ifname not in present():
            self._release(ring.ifname)
            self._released.append(ring.ifname)
            return True
        return False

    def drain_all(self, sink: PacketSink) -> int:
        return sum(self._drain(ring, sink) for ring in list(self.sockets.values()))

    def close(self) -> None:
        for name in list(self.sockets):
            self._release(name)

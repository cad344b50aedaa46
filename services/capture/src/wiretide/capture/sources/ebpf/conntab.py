"""A process's socket fd → the TCP connection it is (4-tuple, and which end listened), from /proc.

Rule: /proc is read once per socket a hooked process uses (the answer is cached until the kernel side
reports the fd closed), never per chunk, and only for sockets the kernel side did not name (older
than the program, or any accepted socket on a kernel without the socket tracepoints, < 6.3).
Addresses come from the process's own network namespace (`/proc/PID/net/tcp{,6}`), so a process in
a pod's namespace is named by its pod's addresses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

TCP_LISTEN: Final = 0x0A
# Cached sockets; beyond it the cache starts afresh (entries are re-read on demand).
MAX_CACHED: Final = 65536


@dataclass(frozen=True, slots=True)
class Connection:
    """A TCP connection as one of its ends sees it."""

    local_ip: bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    local_is_server: bool  # the local port listens in the process's namespace


def _ip(hexed: str) -> bytes:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hexed)
    out = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(out) == 16 and out[:12] == b"\0" * 10 + b"\xff\xff":
        return out[12:]  # an IPv4-mapped address is the IPv4 connection it carries
    return out


def parse_tcp_table(text: str) -> tuple[dict[int, tuple[bytes, int, bytes, int]], set[int]]:
    """(socket inode → (local ip, port, remote ip, port), listening ports) of a /proc/net/tcp text."""
    by_inode: dict[int, tuple[bytes, int, bytes, int]] = {}
    listening: set[int] = set()
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local, remote, state, inode = parts[1], parts[2], int(parts[3], 16), int(parts[9])
        lip, lport = local.split(":")
        rip, rport = remote.split(":")
        if state == TCP_LISTEN:
            listening.add(int(lport, 16))
            continue
        if inode:
            by_inode[inode] = (_ip(lip), int(lport, 16), _ip(rip), int(rport, 16))
    return by_inode, listening


class ConnectionTable:
    """(pid, fd) → Connection, read from /proc on first use and kept until `forget`."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._cache: dict[tuple[int, int], Connection | None] = {}
        self.lookups = 0  # /proc reads (for the source's statistics)

    def get(self, pid: int, fd: int) -> Connection | None:
        key = (pid, fd)
        if key in self._cache:
            return self._cache[key]
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        conn = self._cache[key] = self._read(pid, fd)
        return conn

    def forget(self, pid: int, fd: int) -> None:
        self._cache.pop((pid, fd), None)

    def forget_process(self, pid: int) -> None:
        for key in [k for k in self._cache if k[0] == pid]:
            del self._cache[key]

    def _read(self, pid: int, fd: int) -> Connection | None:
        self.lookups += 1
        try:
            target = os.readlink(self.proc / str(pid) / "fd" / str(fd))
        except OSError:
            return None  # the process or the fd is gone
        if not target.startswith("socket:["):
            return None
        inode = int(target[8:-1])
        for name in ("tcp", "tcp6"):
            try:
                text = (self.proc / str(pid) / "net" / name).read_text()
            except OSError:
                continue
            by_inode, listening = parse_tcp_table(text)
            found = by_inode.get(inode)
            if found is not None:
                lip, lport, rip, rport = found
                return Connection(lip, lport, rip, rport, lport in listening)
        return None

"""SCTP socket owners (`SocketOwner.protocol` 132), read from procfs.

No tracepoint names an SCTP socket's addresses, so associations are read from each network
namespace's `/proc/<pid>/net/sctp/assocs` and listening endpoints from `.../eps` (net/sctp/proc.c),
and joined to processes through `/proc/<pid>/fd/*` → `socket:[inode]`. An association is multihomed:
one owner goes out per local × remote address pair the packets can show (same family, loopback only
with loopback), at most `MAX_ADDRESSES` addresses a side.

Rule: cost bounded and nothing when there is no SCTP. `scan` runs on the source's timer; when
`/proc/net/sctp/assocs` is absent (no SCTP in the kernel) it returns at once, logging nothing. Files are
read up to `MAX_LINES` lines; with SCTP present a scan reads each process's `ns/net` link (to find the
namespaces) and `/proc/*/fd` is walked only for socket inodes not seen before (at most `MAX_WALK_FDS`
links a walk); what cannot be named is counted (`drop`), never raised.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wiretide.capture.sources.ebpf.cgroups import ROOT as CGROUP_ROOT
from wiretide.capture.sources.ebpf.cgroups import unified_root
from wiretide.common import containers
from wiretide.common.packets import IPPROTO_SCTP

if TYPE_CHECKING:
    from wiretide.capture.sources.ebpf.source import SocketOwner

# sk_state of a listening SCTP socket: SCTP_SS_LISTENING is TCP_LISTEN (include/net/sctp/constants.h).
SS_LISTENING: Final = 10
# The columns of an assocs line before its addresses (net/sctp/proc.c, sctp_assocs_seq_show):
# ASSOC SOCK STY SST ST HBKT ASSOC-ID TX_QUEUE RX_QUEUE UID INODE LPORT RPORT, then
# LADDRS <-> RADDRS, then (newer kernels, after a tab) HBINT INS OUTS MAXRT T1X T2X RTXC wmema ….
ASSOC_INODE, ASSOC_LPORT, ASSOC_RPORT, ASSOC_ADDRESSES = 10, 11, 12, 13
# Of an eps line (sctp_eps_seq_show): ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS.
EPS_SST, EPS_LPORT, EPS_INODE, EPS_ADDRESSES = 3, 5, 7, 8
# Lines read per file: a node's busiest SCTP peers (a Diameter or S1AP front) hold a few thousand
# associations; a file beyond this is cut (counted) rather than read without bound.
MAX_LINES: Final = 65536
# Addresses taken per side of an association (primary first): SCTP peers are multihomed on a few
# interfaces; a socket bound to any address lists every local address, which can be many.
MAX_ADDRESSES: Final = 16
# Network namespaces read per scan (one per pod on a node, plus the host's).
MAX_NAMESPACES: Final = 4096
# fd links read per walk of /proc/*/fd (a walk happens only when a socket inode is new).
MAX_WALK_FDS: Final = 1 << 20
# Scans an association's socket is looked for before it is counted unnamed: an accepted socket's fd
# is installed just after its association moves to it.
MAX_TRIES: Final = 3
# Owners remembered as reported (so each goes out once); beyond it the memory starts afresh.
MAX_REPORTED: Final = 1 << 18


@dataclass(frozen=True, slots=True)
class Association:
    """One line of /proc/net/sctp/assocs: its socket and both ends' addresses (primary first)."""

    inode: int
    local_port: int
    remote_port: int
    local: tuple[bytes, ...]
    remote: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    comm: str
    cgroup_id: int
    container_id: str


def _address(token: str) -> tuple[bytes, bool] | None:
    """(packed address, primary) of one address as the kernel prints it (`%pI4 `, `%pI6 `, a leading
    `*` on the primary), an IPv4-mapped one as its IPv4 address; None when it is not one."""
    primary = token.startswith("*")
    try:
        ip = ipaddress.ip_address(token[1:] if primary else token)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.packed, primary
    return ip.packed, primary


def _addresses(tokens: Iterable[str]) -> tuple[tuple[bytes, ...], int]:
    """(addresses, primary first, at most MAX_ADDRESSES; how many were left out) of the leading
    tokens that are addresses (what follows the remote list on older kernels is numbers)."""
    primary: list[bytes] = []
    others: list[bytes] = []
    for token in tokens:
        found = _address(token)
        if found is None:
            break
        (primary if found[1] else others).append(found[0])
    ordered = list(dict.fromkeys(primary + others))
    return tuple(ordered[:MAX_ADDRESSES]), max(0, len(ordered) - MAX_ADDRESSES)


def parse_assoc_line(line: str) -> tuple[Association, int] | None:
    """(the association, addresses left out) of one assocs line; None when it is not one."""
    head = line.split("\t", 1)[0].split()
    if len(head) < ASSOC_ADDRESSES + 2 or "<->" not in head[ASSOC_ADDRESSES:]:
        return None
    try:
        inode, lport, rport = int(head[ASSOC_INODE]), int(head[ASSOC_LPORT]), int(head[ASSOC_RPORT])
    except ValueError:
        return None
    if not (0 < lport < 65536 and 0 < rport < 65536):
        return None
    split = head.index("<->", ASSOC_ADDRESSES)
    local, cut_l = _addresses(head[ASSOC_ADDRESSES:split])
    remote, cut_r = _addresses(head[split + 1 :])
    if not local or not remote:
        return None
    return Association(inode, lport, rport, local, remote), cut_l + cut_r


def parse_eps_line(line: str) -> tuple[int, bool] | None:
    """(local port, listening) of one eps line; None when it is not one."""
    parts = line.split()
    if len(parts) < EPS_ADDRESSES:
        return None
    try:
        state, port, _inode = int(parts[EPS_SST]), int(parts[EPS_LPORT]), int(parts[EPS_INODE])
    except ValueError:
        return None
    return port, state == SS_LISTENING


def pairs(assoc: Association) -> Iterator[tuple[bytes, bytes]]:
    """(local, remote) address pairs a packet of the association can carry: the same family, and a
    loopback address only with a loopback one."""
    for local, remote in itertools.product(assoc.local, assoc.remote):
        if len(local) == len(remote) and _loopback(local) == _loopback(remote):
            yield local, remote


def _loopback(ip: bytes) -> bool:
    return ip[0] == 127 if len(ip) == 4 else ip == bytes(15) + b"\x01"


class SctpOwners:
    """The processes of a node's SCTP associations, read from procfs on each `scan`."""

    def __init__(
        self,
        proc: Path = Path("/proc"),
        cgroup_root: str = CGROUP_ROOT,
        drop: Callable[[str, int], None] | None = None,
        *,
        max_lines: int = MAX_LINES,
        max_walk_fds: int = MAX_WALK_FDS,
    ) -> None:
        self.proc = proc
        self.cgroup_root = cgroup_root
        self._drop = drop
        self.max_lines = max_lines
        self.max_walk_fds = max_walk_fds
        self._processes: dict[int, Process | None] = {}  # socket inode → its process (None: unnamed)
        self._tries: dict[int, int] = {}  # socket inode → scans it was looked for and not found
        self._reported: set[tuple[int, int, bytes, bytes, int, int]] = set()
        self.scans = 0
        self.walks = 0  # /proc/*/fd walks (only for new inodes)
        self.gone = 0  # processes that exited while read (not an error)
        self.counts: dict[str, int] = {}

    def count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        if self._drop is not None:
            self._drop(reason, n)

    # -- the scan ------------------------------------------------------------------------------

    def scan(self, timestamp_ns: int | None = None) -> list[SocketOwner]:
        """The owners of associations (and address pairs) not reported before; [] without SCTP."""
        if not (self.proc / "net" / "sctp" / "assocs").exists():
            if self._processes or self._reported:  # SCTP unloaded: nothing it named is current
                self._processes.clear()
                self._tries.clear()
                self._reported.clear()
            return []
        self.scans += 1
        from wiretide.capture.sources.ebpf.source import SocketOwner

        pids = self._pids()
        associations: dict[tuple[int, int, int, tuple[bytes, ...]], Association] = {}
        listening: dict[int, set[int]] = {}  # inode → listening ports of its namespace
        for directory in self._namespaces(pids):
            ports = self._listening(directory / "eps")
            for assoc in self._associations(directory / "assocs"):
                associations[(assoc.inode, assoc.local_port, assoc.remote_port, assoc.remote)] = assoc
                listening[assoc.inode] = ports
        inodes = {a.inode for a in associations.values()}
        for gone in [i for i in self._processes if i not in inodes]:
            del self._processes[gone]
        for gone in [i for i in self._tries if i not in inodes]:
            del self._tries[gone]
        wanted = {i for i in inodes if i not in self._processes}
        if wanted:
            self._name(wanted, pids)
        now = time.time_ns() if timestamp_ns is None else timestamp_ns
        current: set[tuple[int, int, bytes, bytes, int, int]] = set()
        out: list[SocketOwner] = []
        for assoc in associations.values():
            process = self._processes.get(assoc.inode)
            if process is None:
                continue
            server = assoc.local_port in listening.get(assoc.inode, ())
            for local, remote in pairs(assoc):
                key = (assoc.inode, process.pid, local, remote, assoc.local_port, assoc.remote_port)
                current.add(key)
                if key in self._reported:
                    continue
                out.append(
                    SocketOwner(
                        local,
                        assoc.local_port,
                        remote,
                        assoc.remote_port,
                        server,
                        process.pid,
                        process.comm,
                        process.cgroup_id,
                        now,
                        process.container_id,
                        IPPROTO_SCTP,
                    )
                )
        self._reported = current if len(current) <= MAX_REPORTED else set()
        return out

    def _pids(self) -> list[int]:
        try:
            with os.scandir(self.proc) as it:
                return sorted(int(e.name) for e in it if e.name.isdigit())
        except OSError:
            return []

    def _namespaces(self, pids: list[int]) -> list[Path]:
        """`net/sctp` of one process per network namespace (a pod's associations are seen only from
        inside its namespace); the reader's own when no process's namespace can be read."""
        seen: dict[str, Path] = {}
        for pid in pids:
            try:
                ns = os.readlink(self.proc / str(pid) / "ns" / "net")
            except OSError:
                continue  # gone, or a kernel thread's
            if ns not in seen:
                if len(seen) >= MAX_NAMESPACES:
                    self.count("sctp_namespaces_cut")
                    break
                seen[ns] = self.proc / str(pid) / "net" / "sctp"
        return list(seen.values()) or [self.proc / "net" / "sctp"]

    def _lines(self, path: Path) -> Iterator[str]:
        """The lines of a procfs table after its header, at most `max_lines`."""
        try:
            with path.open(encoding="ascii", errors="replace") as f:
                next(f, None)  # the column names
                for n, line in enumerate(f):
                    if n >= self.max_lines:
                        self.count("sctp_lines_cut")
                        return
                    yield line
        except OSError:
            return  # the namespace's last process exited

    def _associations(self, path: Path) -> Iterator[Association]:
        for line in self._lines(path):
            if not line.strip():
                continue
            parsed = parse_assoc_line(line)
            if parsed is None:
                self.count("sctp_garbage")
                continue
            assoc, cut = parsed
            if cut:
                self.count("sctp_addresses_cut", cut)
            yield assoc

    def _listening(self, path: Path) -> set[int]:
        ports: set[int] = set()
        for line in self._lines(path):
            if not line.strip():
                continue
            parsed = parse_eps_line(line)
            if parsed is None:
                self.count("sctp_garbage")
            elif parsed[1]:
                ports.add(parsed[0])
        return ports

    # -- naming --------------------------------------------------------------------------------

    def _name(self, wanted: set[int], pids: list[int]) -> None:
        """Look for the processes holding the sockets `wanted` in /proc/*/fd (lowest pid first: a
        socket shared across a fork is named by its parent)."""
        self.walks += 1
        found: dict[int, int] = {}
        links = 0
        todo = set(wanted) - {0}  # inode 0: a kernel socket, held by no process
        for pid in pids:
            if not todo:
                break
            fd_dir = self.proc / str(pid) / "fd"
            try:
                names = os.listdir(fd_dir)
            except FileNotFoundError:
                self.gone += 1
                continue
            except OSError:
                continue  # not ours to read
            for name in names:
                links += 1
                try:
                    target = os.readlink(fd_dir / name)
                except OSError:
                    continue  # closed, or the process exited, while read
                if target.startswith("socket:[") and target.endswith("]"):
                    inode = int(target[8:-1]) if target[8:-1].isdigit() else -1
                    if inode in todo:
                        todo.discard(inode)
                        found[inode] = pid
            if links >= self.max_walk_fds:
                self.count("sctp_walk_cut")
                break
        named: set[int] = set()
        for inode, pid in found.items():
            process = self._process(pid)
            if process is not None:  # else it exited after the walk: looked for again
                self._processes[inode] = process
                self._tries.pop(inode, None)
                named.add(inode)
        for inode in wanted - named:
            tries = self._tries[inode] = self._tries.get(inode, 0) + 1
            if tries >= MAX_TRIES or inode == 0:
                self._processes[inode] = None
                self._tries.pop(inode, None)
                self.count("sctp_unnamed")

    def _process(self, pid: int) -> Process | None:
        """The pid's command name and cgroup (its id: the inode of its cgroup v2 directory, as eBPF
        reports it; its container from the path); None when it exited meanwhile."""
        base = self.proc / str(pid)
        try:
            comm = (base / "comm").read_text(errors="replace").rstrip("\n")
        except OSError:
            self.gone += 1
            return None
        try:
            cgroup = (base / "cgroup").read_text(errors="replace")
        except OSError:
            cgroup = ""
        cgroup_id = 0
        for line in cgroup.splitlines():
            if line.startswith("0::"):
                with contextlib.suppress(OSError):  # a cgroup removed meanwhile: no id
                    cgroup_id = os.stat(unified_root(self.cgroup_root) + line[3:].rstrip()).st_ino
        return Process(pid, comm, cgroup_id, containers.from_proc_cgroup(cgroup))

"""What this host's /proc says about network namespaces, their addresses and the sockets in them.

Rule: procfs is read, never trusted: a process or namespace that vanishes between two reads, a
file that cannot be opened or a line that does not parse is skipped. Reads are bounded (sockets
per scan) and run off the event loop.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from wiretide.common import containers
from wiretide.resolver.local import sockdiag

# A scan never takes more than this many sockets into account (a busy host has many more).
MAX_SOCKETS: Final = 20_000
# `ip -j addr` for a named namespace without processes; it answers in milliseconds.
IP_TIMEOUT_S: Final = 5.0
TCP_LISTEN: Final = "0A"
TCP_ESTABLISHED: Final = "01"
SKIP_ADDRESSES: Final = ("127.", "::1", "fe80:")


@dataclass(frozen=True, slots=True)
class Socket:
    ip: str
    port: int
    listening: bool
    inode: int


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    name: str
    container_id: str


@dataclass
class NetNs:
    inode: int
    name: str  # the /run/netns name, or "" for an unnamed one (a container's)
    is_host: bool
    addresses: set[tuple[str, str]] = field(default_factory=set)  # (ip, interface)
    pids: list[int] = field(default_factory=list)


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def parse_fib_trie(text: str) -> set[str]:
    """Local IPv4 addresses from /proc/<pid>/net/fib_trie (the `/32 host LOCAL` leaves)."""
    found: set[str] = set()
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:]
        elif stripped.startswith("/32 host LOCAL") and last:
            found.add(last)
    return found


def parse_if_inet6(text: str) -> set[tuple[str, str]]:
    """(address, interface) from /proc/<pid>/net/if_inet6."""
    found: set[tuple[str, str]] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and len(parts[0]) == 32:
            try:
                found.add((str(ipaddress.IPv6Address(bytes.fromhex(parts[0]))), parts[5]))
            except ValueError:
                continue
    return found


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6 in /proc is four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def parse_proc_net_tcp(text: str) -> list[Socket]:
    """Listening and established sockets from /proc/<pid>/net/tcp or tcp6."""
    out: list[Socket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] not in (TCP_LISTEN, TCP_ESTABLISHED):
            continue
        try:
            ip_hex, port_hex = parts[1].split(":")
            out.append(Socket(_hex_ip(ip_hex), int(port_hex, 16), parts[3] == TCP_LISTEN, int(parts[9])))
        except ValueError:
            continue
    return out


def container_id(cgroup_text: str) -> str:
    """The container of a process from its /proc/<pid>/cgroup text, or "" (see common.containers)."""
    return containers.from_proc_cgroup(cgroup_text)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def process(pid: int, proc: str = "/proc") -> Process:
    return Process(pid, _read(f"{proc}/{pid}/comm").strip(), container_id(_read(f"{proc}/{pid}/cgroup")))


def pids(proc: str = "/proc") -> list[int]:
    return sorted(int(d) for d in os.listdir(proc) if d.isdigit())


def socket_owners(pid_list: Iterable[int], proc: str = "/proc") -> dict[int, int]:
    """socket inode → pid, from each process's open file descriptors."""
    owners: dict[int, int] = {}
    for pid in pid_list:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(int(target[8:-1]), pid)
    return owners


def _ip_json_addresses(name: str) -> set[tuple[str, str]]:
    try:
        out = subprocess.run(
            ["ip", "-j", "-n", name, "addr", "show"], capture_output=True, timeout=IP_TIMEOUT_S, check=True
        ).stdout
        links = json.loads(out or b"[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return set()
    found: set[tuple[str, str]] = set()
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info") or []:
            if isinstance(info, dict) and isinstance(info.get("local"), str):
                found.add((info["local"], str(link.get("ifname", ""))))
    return found


def usable(ip: str) -> bool:
    return not ip.startswith(SKIP_ADDRESSES) and ip not in ("0.0.0.0", "::")


def scan_namespaces(proc: str = "/proc", run_netns: str = "/run/netns") -> list[NetNs]:
    """Every network namespace on the host: named ones and those only processes hold, with addresses."""
    host = ns_inode(f"{proc}/self/ns/net")  # the namespace the resolver runs in is "this host"
    spaces: dict[int, NetNs] = {host: NetNs(host, "", True)}
    named = Path(run_netns)
    if named.is_dir():
        for entry in sorted(named.iterdir()):
            try:
                inode = ns_inode(str(entry))
            except OSError:
                continue
            spaces.setdefault(inode, NetNs(inode, entry.name, False))
    for pid in pids(proc):
        try:
            inode = ns_inode(f"{proc}/{pid}/ns/net")
        except OSError:
            continue
        spaces.setdefault(inode, NetNs(inode, "", False)).pids.append(pid)
    for ns in spaces.values():
        if ns.pids:
            first = ns.pids[0]
            v4 = parse_fib_trie(_read(f"{proc}/{first}/net/fib_trie"))
            ns.addresses = {(ip, "") for ip in v4} | parse_if_inet6(_read(f"{proc}/{first}/net/if_inet6"))
        elif ns.name:
            ns.addresses = _ip_json_addresses(ns.name)
        ns.addresses = {(ip, ifname) for ip, ifname in ns.addresses if usable(ip)}
    return [ns for ns in spaces.values() if ns.addresses]


def tcp_sockets(pid: int, proc: str = "/proc") -> list[Socket]:
    """Listening and established TCP sockets of `pid`'s network namespace (at most MAX_SOCKETS): asked of
    the kernel over netlink (sockdiag), which skips the others before formatting them; read from
    /proc/<pid>/net/tcp{,6} where netlink cannot be used (no privilege to enter the namespace)."""
    if proc == "/proc":
        try:
            with sockdiag.open_in(f"{proc}/{pid}/ns/net") as diag:
                return [Socket(*found) for found in sockdiag.tcp_sockets(diag, MAX_SOCKETS)]
        except OSError:
            pass
    found = parse_proc_net_tcp(_read(f"{proc}/{pid}/net/tcp")) + parse_proc_net_tcp(
        _read(f"{proc}/{pid}/net/tcp6")
    )
    return found[:MAX_SOCKETS]


def sockets_of(ns: NetNs, proc: str = "/proc") -> list[tuple[Socket, Process]]:
    """Listening/established TCP sockets in `ns` with the process that holds each (bounded)."""
    if not ns.pids:
        return []
    found = tcp_sockets(ns.pids[0], proc)
    owners = socket_owners(ns.pids, proc)
    cache: dict[int, Process] = {}
    out: list[tuple[Socket, Process]] = []
    for sock in found:
        pid = owners.get(sock.inode)
        if pid is None:
            continue
        if pid not in cache:
            cache[pid] = process(pid, proc)
        out.append((sock, cache[pid]))
    return out

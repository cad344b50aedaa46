"""Network namespaces joined by veth pairs, made for one test and always removed afterwards.

Rule: every name carries the test process id and a per-process counter, so parallel runs never
collide; addresses (10.x) exist only inside the namespaces created here.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

CLONE_NEWNET: Final = 0x40000000
_counter = itertools.count()


def is_root() -> bool:
    return os.geteuid() == 0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True, slots=True)
class NetPair:
    """Two namespaces joined by one veth: `a` (client side) and `b` (server side)."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    ip_a: str
    ip_b: str

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)

    def run(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **kwargs)


def unique(prefix: str) -> str:
    """A short name unique to this process and call (interface names are limited to 15 bytes)."""
    return f"{prefix}{os.getpid() % 100000}{next(_counter)}"


@contextmanager
def veth_pair(subnet: str = "10.77.0", mtu: int = 1500, ipv6: bool = False) -> Iterator[NetPair]:
    """Create ns a/b with a veth between them (addresses .1 and .2 of subnet/24); remove on exit.
    IPv6 stays off unless asked, so router solicitations and MLD reports do not add stray packets."""
    tag = unique("w")
    pair = NetPair(f"{tag}A", f"{tag}B", f"{tag}a", f"{tag}b", f"{subnet}.1", f"{subnet}.2")
    created: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            ip("netns", "add", ns)
            created.append(ns)
            if not ipv6:
                subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "sysctl",
                        "-q",
                        "-w",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1",
                    ],
                    check=True,
                    capture_output=True,
                )
        ip(
            "link",
            "add",
            pair.if_a,
            "netns",
            pair.ns_a,
            "mtu",
            str(mtu),
            "type",
            "veth",
            "peer",
            "name",
            pair.if_b,
            "netns",
            pair.ns_b,
            "mtu",
            str(mtu),
        )
        for ns, ifname, addr in ((pair.ns_a, pair.if_a, pair.ip_a), (pair.ns_b, pair.if_b, pair.ip_b)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the calling thread inside namespace `ns`; sockets opened here stay in it after return."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)

"""Network namespaces joined by veth pairs, made for one test and always removed afterwards.

Rule: every name carries the test process id and a per-process counter, so parallel runs never
collide; addresses (10.x) exist only inside the namespaces created here and on the host side of the
veths made here, and go with them.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from tests.helpers.wait import DEFAULT_TIMEOUT_S, wait_for

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


@dataclass(frozen=True, slots=True)
class Served:
    """A server in namespace `ns`, reached from this host through the veth whose host side is `host_if`
    (address `host_ip`); the namespace's side holds `ips` (the first is where the server was probed)."""

    ns: str
    host_if: str
    host_ip: str
    ips: tuple[str, ...]

    @property
    def ip(self) -> str:
        return self.ips[0]


# How long one readiness probe may take, and how long a server may take to exit once asked.
PROBE_TIMEOUT_S: Final = 2.0
STOP_TIMEOUT_S: Final = 10.0


def _answers(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the server exited ({proc.returncode}) before answering {url}")
    try:
        return httpx.get(url, timeout=PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def served_behind_veth(
    server: Sequence[str],
    probe: str,
    *,
    prefix: str,
    net: str,
    addresses: int = 1,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Iterator[Served]:
    """A new namespace joined to this host by a veth (host side `net`.1, the namespace's eth0 `net`.2,
    `net`.3, … — `addresses` of them), `server` (argv) started inside it, ready once
    `http://net.2{probe}` answers 200; the server is stopped and both removed on exit.

    The host side is named PREFIX…h (never veth*/eth*, so no `auto` capture of another Wiretide on this
    machine picks it up) and has IPv6 off, so the host sends nothing of its own on it."""
    tag = unique(prefix)
    ns, host_if = f"{tag}ns", f"{tag}h"
    served = Served(ns, host_if, f"{net}.1", tuple(f"{net}.{2 + i}" for i in range(addresses)))
    proc: subprocess.Popen[bytes] | None = None
    try:
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        subprocess.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{host_if}.disable_ipv6=1"], capture_output=True)
        ip("addr", "add", f"{served.host_ip}/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        for address in served.ips:
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *server], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"http://{served.ip}{probe}"
        wait_for(f"{url} answers", lambda: _answers(url, proc), timeout=timeout)
        yield served
    finally:
        if proc is not None:
            proc.terminate()  # nginx's master takes its worker with it on SIGTERM, not on SIGKILL
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def http_behind_veth(directory: Path, *, prefix: str, net: str, addresses: int = 1) -> Iterator[Served]:
    """`served_behind_veth` with Python's http.server on port 80 serving `directory`/www, where `/ok`
    answers "ok"."""
    www = directory / "www"
    www.mkdir(exist_ok=True)
    (www / "ok").write_text("ok")
    server = [sys.executable, "-m", "http.server", "80", "-d", str(www)]
    with served_behind_veth(server, "/ok", prefix=prefix, net=net, addresses=addresses) as served:
        yield served

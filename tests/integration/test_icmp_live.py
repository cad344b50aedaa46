"""Live ICMP between network namespaces: `ping -c 3` gives three echo entries with their round trips,
and a UDP datagram to a closed port gives a port-unreachable entry naming that UDP flow, whose own entry
carries the error (captured by `wiretide capture` on the target's veth and dissected offline);
`traceroute` across a router namespace gives a time-exceeded entry from the router and a
port-unreachable one from the target, each naming (and marking) the probe's flow; `ping -6` gives
ICMPv6 echo entries, and its neighbour discovery is counted per type as tshark counts it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import ip, unique, veth_pair
from tests.helpers.tcpdump import Watched, tcpdump_argv
from tests.integration.test_http2_live import Capture
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

TSHARK = shutil.which("tshark")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and AF_PACKET"),
]

# Three echoes over a raw socket, each awaiting its reply: what `ping -c 3` does, where iputils-ping
# is not installed (Makefile APT_PACKAGES installs it).
RAW_PING = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
for seq in (1, 2, 3):
    body = struct.pack("!HH", 0x4242, seq) + bytes(56)
    head = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + bytes(56)
    total = sum(struct.unpack("!%dH" % (len(head) // 2), head))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    s.sendto(struct.pack("!BBH", 8, 0, ~total & 0xFFFF) + body, (sys.argv[1], 0))
    while s.recv(2048)[20] != 0:
        pass
"""
CLOSED_PORT = 9  # discard: nothing listens on it in a fresh namespace
SOURCE_PORT = 40123
SEND_UDP = (
    "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    f"s.bind(('', {SOURCE_PORT})); s.sendto(b'anyone?', (sys.argv[1], {CLOSED_PORT}))"
)


def dissect(path: Path) -> list[dict[str, Any]]:
    pipe = Pipeline(default_registry())
    docs: list[dict[str, Any]] = []
    for cols in read_batches(str(path), 4096):
        docs.extend(pipe.feed(cols))
    docs.extend(pipe.finish())
    return docs


def test_ping_gives_echo_entries_with_round_trips_and_a_closed_port_an_error_naming_the_flow(
    tmp_path: Path,
) -> None:
    out = tmp_path / "icmp.pcapng"
    with veth_pair("10.81.0") as pair:
        capture = Capture(pair, out)
        try:
            ping = shutil.which("ping")
            argv = [ping, "-c", "3", "-i", "0.2"] if ping else [sys.executable, "-c", RAW_PING]
            pair.run(pair.ns_a, [*argv, pair.ip_b], capture_output=True, timeout=30, check=True)
            pair.run(pair.ns_a, [sys.executable, "-c", SEND_UDP, pair.ip_b], timeout=30, check=True)
        finally:
            capture.stop()

    docs = dissect(out)
    found = [e for e in docs if e["protocol"] == "icmp"]
    echoes = [e for e in found if e["method"] == "echo"]
    assert len(echoes) == 3
    assert all(e["error"] is None and e["elapsed_us"] > 0 for e in echoes)
    assert {(e["src"]["ip"], e["dst"]["ip"]) for e in echoes} == {(pair.ip_a, pair.ip_b)}
    [error] = [e for e in found if e["method"] == "unreachable"]
    assert error["error"]["type"] == "unreachable" and error["status"] == 3
    assert error["request"]["quoted"]["src"] == {"ip": pair.ip_a, "port": SOURCE_PORT}
    assert error["request"]["quoted"]["dst"] == {"ip": pair.ip_b, "port": CLOSED_PORT}
    [udp] = [e for e in docs if e["protocol"] == "udp"]
    assert error["flow_id"] == udp["flow_id"]
    # The UDP flow's own entry carries the error that answered it.
    assert [(n["id"], n["reason"], n["from"]) for n in udp["icmp_errors"]] == [
        (error["id"], "port unreachable", pair.ip_b)
    ]


def ns_run(ns: str, *argv: str, timeout: float = 30) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, timeout=timeout, check=True
    )
    return done.stdout.decode()


@contextmanager
def router_chain(tag: str) -> Iterator[tuple[str, str, str, str, str, str]]:
    """Three namespaces — client, router, target — on two veths, the router forwarding between them:
    (client ns, client interface, client ip, router ip on the client's side, target ns, target ip)."""
    name = unique(tag)
    ns = [f"{name}C", f"{name}R", f"{name}T"]
    created: list[str] = []
    try:
        for n in ns:
            ip("netns", "add", n)
            created.append(n)
            ns_run(n, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
            ip("-n", n, "link", "set", "lo", "up")
        links = [(ns[0], f"{name}c", "10.84.1.1", ns[1], f"{name}r", "10.84.1.2"),
                 (ns[1], f"{name}s", "10.84.2.1", ns[2], f"{name}t", "10.84.2.2")]  # fmt: skip
        for left, lif, lip, right, rif, rip in links:
            ip("link", "add", lif, "netns", left, "type", "veth", "peer", "name", rif, "netns", right)
            for n, ifname, addr in ((left, lif, lip), (right, rif, rip)):
                ip("-n", n, "addr", "add", f"{addr}/24", "dev", ifname)
                ip("-n", n, "link", "set", ifname, "up")
        ip("-n", ns[0], "route", "add", "default", "via", "10.84.1.2")
        ip("-n", ns[2], "route", "add", "default", "via", "10.84.2.1")
        ns_run(ns[1], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield ns[0], f"{name}c", "10.84.1.1", "10.84.1.2", ns[2], "10.84.2.2"
    finally:
        for n in created:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@contextmanager
def tcpdump_in(ns: str, interface: str, pcap: Path) -> Iterator[None]:
    dump = Watched(
        subprocess.Popen(
            ["ip", "netns", "exec", ns, *tcpdump_argv(interface, pcap)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
    )
    try:
        dump.wait_for(b"listening on")
        yield
    finally:
        dump.stop()


@pytest.mark.skipif(
    shutil.which("traceroute") is None, reason="traceroute is not installed (Makefile APT_PACKAGES)"
)
def test_traceroute_across_a_router_gives_time_exceeded_then_port_unreachable_each_marking_its_probe(
    tmp_path: Path,
) -> None:
    out = tmp_path / "traceroute.pcap"
    with (
        router_chain("wq") as (client_ns, client_if, client_ip, router_ip, _target_ns, target_ip),
        tcpdump_in(client_ns, client_if, out),
    ):
        # One probe per hop, one at a time: hop 1 is the router, hop 2 the target (a closed port).
        text = ns_run(client_ns, "traceroute", "-n", "-q", "1", "-N", "1", "-w", "3", "-m", "4", target_ip)
    hops = [line.split()[1] for line in text.splitlines()[1:] if line.split()[1:2] != ["*"]]
    assert hops == [router_ip, target_ip], text

    found = dissect(out)
    icmp = [e for e in found if e["protocol"] == "icmp"]
    assert [(e["method"], e["src"]["ip"], e["status"]) for e in icmp] == [
        ("time_exceeded", router_ip, 0),
        ("unreachable", target_ip, 3),
    ]
    udp = {e["flow_id"]: e for e in found if e["protocol"] == "udp"}
    for e in icmp:
        q = e["request"]["quoted"]
        assert (q["protocol"], q["src"]["ip"], q["dst"]["ip"]) == ("udp", client_ip, target_ip)
        assert 33434 <= q["dst"]["port"] < 33534  # traceroute's UDP probe ports
        probe = udp[e["flow_id"]]
        assert [(n["id"], n["type"], n["from"]) for n in probe["icmp_errors"]] == [
            (e["id"], e["method"], e["src"]["ip"])
        ]
    assert icmp[0]["request"]["reason"] == "TTL exceeded in transit"


def tshark_icmpv6_types(path: Path) -> Counter[int]:
    assert TSHARK is not None
    lines = subprocess.run(
        [TSHARK, "-r", str(path), "-Y", "icmpv6", "-T", "fields", "-e", "icmpv6.type"],
        capture_output=True, check=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    return Counter(int(t.split(",")[0]) for t in lines)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_ping6_gives_icmpv6_echo_entries_and_neighbour_discovery_is_counted_per_type(tmp_path: Path) -> None:
    out = tmp_path / "icmp6.pcap"
    with veth_pair("10.85.0", ipv6=True) as pair:
        for ns, ifname, addr in ((pair.ns_a, pair.if_a, "fd85::1"), (pair.ns_b, pair.if_b, "fd85::2")):
            ip("-n", ns, "addr", "add", f"{addr}/64", "dev", ifname, "nodad")
        with tcpdump_in(pair.ns_b, pair.if_b, out):
            ns_run(pair.ns_a, "ping", "-6", "-c", "3", "-i", "0.2", "fd85::2")
    pipe = Pipeline(default_registry())
    docs: list[dict[str, Any]] = []
    for cols in read_batches(str(out), 4096):
        docs.extend(pipe.feed(cols))
    docs.extend(pipe.finish())
    echoes = [e for e in docs if e["protocol"] == "icmp" and e["method"] == "echo"]
    assert len(echoes) == 3
    assert all(e["version"] == "6" and e["error"] is None and e["elapsed_us"] > 0 for e in echoes)
    assert {(e["src"]["ip"], e["dst"]["ip"]) for e in echoes} == {("fd85::1", "fd85::2")}
    seen = tshark_icmpv6_types(out)
    assert seen[128] == 3 and seen[135] >= 1  # ping's requests; neighbour solicitation before the first
    names = {133: "router_solicitation", 134: "router_advertisement", 135: "neighbor_solicitation",
             136: "neighbor_advertisement", 143: "mldv2_report"}  # fmt: skip
    for mtype, name in names.items():
        assert pipe.stats[f"icmpv6_{name}"] == seen[mtype], name
    counted = sum(n for t, n in seen.items() if t not in (128, 129))
    assert pipe.undissected["icmpv6"] == counted

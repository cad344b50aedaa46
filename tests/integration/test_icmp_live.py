"""Live ICMP between two network namespaces: `ping -c 3` gives three echo entries with their round
trips, and a UDP datagram to a closed port gives a port-unreachable entry naming that UDP flow —
captured by `wiretide capture` on the target's veth and dissected offline."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import veth_pair
from tests.integration.test_http2_live import Capture
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

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

    found = [e for e in dissect(out) if e["protocol"] == "icmp"]
    echoes = [e for e in found if e["method"] == "echo"]
    assert len(echoes) == 3
    assert all(e["error"] is None and e["elapsed_us"] > 0 for e in echoes)
    assert {(e["src"]["ip"], e["dst"]["ip"]) for e in echoes} == {(pair.ip_a, pair.ip_b)}
    [error] = [e for e in found if e["method"] == "unreachable"]
    assert error["error"]["type"] == "unreachable" and error["status"] == 3
    assert error["request"]["quoted"]["src"] == {"ip": pair.ip_a, "port": SOURCE_PORT}
    assert error["request"]["quoted"]["dst"] == {"ip": pair.ip_b, "port": CLOSED_PORT}
    [udp] = [e for e in dissect(out) if e["protocol"] == "udp"]
    assert error["flow_id"] == udp["flow_id"]

"""Packets nothing dissects, end to end: a capture of ARP, GRE, IGMP, an ICMP redirect and one DNS
exchange replayed through the running stack (capture → dissector → gateway) is counted by protocol in
the dissector's stats, `/api/health` (`undissected`), `wiretide status` and the UI's status bar — the
same counts the dissector's pipeline gives for the file in this process. The capture also holds a UDP
datagram to a closed port and the port unreachable it drew: the UDP entry's detail names that error."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for
from tests.unit.dissector.builders import T0, ether, ipv4, udp_frame
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

QUERY = bytes.fromhex("1234010000010000000000000377777706676f6f676c6503636f6d0000010001")
ANSWER = bytes.fromhex(
    "1234818000010001000000000377777706676f6f676c6503636f6d0000010001c00c000100010000012c00040a000005"
)
ARP = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06" + bytes.fromhex("0001080006040001") + bytes(20)


PROBE = udp_frame("10.0.0.1", 40123, "10.0.0.2", 9, b"anyone?")
# What the host answers the probe (a closed port): the IP header and 8 bytes of it (RFC 792).
UNREACHABLE = ether(
    ipv4("10.0.0.2", "10.0.0.1", 1, struct.pack("!BBH", 3, 3, 0) + bytes(4) + PROBE[14 : 14 + 28])
)


def frames() -> list[bytes]:
    redirect = ipv4("10.0.0.254", "10.0.0.1", 1, struct.pack("!BBH", 5, 1, 0) + bytes(32))
    return [
        PROBE,
        UNREACHABLE,
        *([ARP] * 3),
        *[ether(ipv4("10.0.0.1", "10.0.0.2", 47, bytes(8))) for _ in range(4)],  # GRE
        *[ether(ipv4("10.0.0.1", "224.0.0.22", 2, bytes(8))) for _ in range(2)],  # IGMP
        ether(redirect),
        udp_frame("10.0.0.1", 40000, "10.0.0.2", 53, QUERY),
        udp_frame("10.0.0.2", 53, "10.0.0.1", 40000, ANSWER),
    ]


def write_pcap(path: Path) -> None:
    """A classic pcap file (Ethernet), one frame per millisecond."""
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, frame in enumerate(frames()):
            ts = T0 // 1000 + i * 1000  # µs
            fh.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)) + frame)


def counted_here(path: Path) -> dict[str, int]:
    pipe = Pipeline(default_registry())
    for cols in read_batches(str(path), 4096):
        pipe.feed(cols)
    pipe.finish()
    return dict(pipe.undissected)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, int]]]:
    tmp = tmp_path_factory.mktemp("undissected")
    pcap = tmp / "mixed.pcap"
    write_pcap(pcap)
    want = counted_here(pcap)
    s = Stack(tmp / "wt", pcap=pcap)
    try:
        s.wait_up()
        s.wait_entries(1)
        yield s, want
    finally:
        s.stop()


def health(base: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{base}/api/health", timeout=10).json()
    return doc


def test_api_health_counts_what_was_captured_but_not_dissected_by_protocol(
    stack: tuple[Stack, dict[str, int]],
) -> None:
    s, want = stack
    assert want == {"arp": 3, "gre": 4, "igmp": 2, "icmp": 1}
    doc = wait_for(
        "the gateway's undissected counts",
        lambda: health(s.base)["undissected"],
        lambda got: got["by_protocol"] == want,
    )
    assert doc["total"] == 10
    assert list(doc["by_protocol"]) == ["gre", "arp", "igmp", "icmp"]  # most first
    [dns] = s.entries("dns")
    assert dns["status"] == 0


def test_wiretide_status_prints_the_counted_protocols(stack: tuple[Stack, dict[str, int]]) -> None:
    s, want = stack
    wait_for("the counts", lambda: health(s.base)["undissected"]["by_protocol"], lambda got: got == want)
    done = subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "status", "--data-dir", str(s.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "counted, not dissected: gre 4, arp 3, igmp 2, icmp 1" in done.stdout, done.stdout + done.stderr


def test_the_status_bar_shows_the_undissected_packets_by_protocol(
    page: Any, stack: tuple[Stack, dict[str, int]]
) -> None:
    s, want = stack
    wait_for("the counts", lambda: health(s.base)["undissected"]["by_protocol"], lambda got: got == want)
    page.goto(s.base + "/")
    page.wait_for_selector("#undissected")
    assert page.inner_text("#undissected") == "undissected 10"
    title = page.get_attribute("#undissected", "title")
    assert title is not None and "gre: 4" in title and "arp: 3" in title and "icmp: 1" in title
    shot(page, "ui-undissected")


def test_the_detail_of_a_flow_an_icmp_error_quoted_names_the_error(
    page: Any, stack: tuple[Stack, dict[str, int]]
) -> None:
    s, _ = stack
    [udp] = wait_for("the probe's entry", lambda: s.entries("has(icmp_errors)"), lambda got: len(got) == 1)
    [icmp] = s.entries("icmp")
    assert udp["icmp_errors"][0]["id"] == icmp["id"] and udp["flow_id"] == icmp["flow_id"]
    page.goto(s.base + "/")
    page.wait_for_selector("#rows .row")
    page.fill("#kfl", "has(icmp_errors)")
    page.press("#kfl", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#rows .row').length === 1")
    page.click("#rows .row >> nth=0 >> span >> nth=0")
    page.wait_for_selector("#detail h2")
    assert "port unreachable from 10.0.0.2" in page.inner_text("#detail")
    shot(page, "ui-icmp-errors")

"""A recorded capture replayed through the running stack (`wiretide up --pcap`: capture → dissector →
NATS → gateway) yields the same entries as the offline pipeline (`wiretide analyze`), and the API
answers KFL over them exactly as the predicate does."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.helpers.pcaps import PCAPS, require_pcaps
from tests.helpers.stack import Stack, merged_capture
from wiretide.common.kfl import compile_predicate

FILES = [
    PCAPS / "http1.1" / "zeek_pipelined-requests.pcap",
    PCAPS / "http1.1" / "zeek_get.pcap",
    PCAPS / "http1.1" / "zeek_post.pcap",
    PCAPS / "http1.0" / "zeek_web.pcap",
    PCAPS / "dns" / "suricata_dns-udp-google.com-a-aaaa-mx.pcap",
]


def shape(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["protocol"], e.get("method"), e.get("path"), e.get("status"), e["timestamp"])


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[dict[str, Any]]]]:
    require_pcaps(*FILES)
    tmp = tmp_path_factory.mktemp("replay")
    pcap = merged_capture(tmp, FILES)
    offline = subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "analyze", str(pcap), "--format", "jsonl"],
        capture_output=True, check=True,
    )  # fmt: skip
    expected = [orjson.loads(line) for line in offline.stdout.splitlines()]
    assert len(expected) >= 10
    stack = Stack(tmp / "wt", pcap=pcap)
    try:
        stack.wait_up()
        yield stack, expected
    finally:
        stack.stop()


def test_the_live_pipeline_stores_what_the_offline_pipeline_finds(
    replayed: tuple[Stack, list[dict[str, Any]]],
) -> None:
    stack, expected = replayed
    got = stack.wait_entries(len(expected))
    assert Counter(map(shape, got)) == Counter(map(shape, expected))
    assert all(e["capture"]["source"] == "pcap" for e in got if e.get("capture"))


@pytest.mark.parametrize(
    "query",
    ['http && method == "GET"', "dns", "http && status_code == 200", 'path.contains(".png")', "!http"],
)
def test_kfl_over_replayed_traffic_matches_the_predicate(
    replayed: tuple[Stack, list[dict[str, Any]]], query: str
) -> None:
    stack, expected = replayed
    stack.wait_entries(len(expected))
    pred = compile_predicate(query)
    want = sorted((e["timestamp"], e.get("path")) for e in expected if pred(e))
    got = sorted((e["timestamp"], e.get("path")) for e in stack.entries(query))
    assert got == want

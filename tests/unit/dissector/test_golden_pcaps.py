"""Real captures: counts equal tshark's on the same file, and golden JSON for a few (Zeek btest shape).

Set WIRETIDE_UPDATE_GOLDEN=1 to rewrite the golden files after a reviewed change.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.pcaps import files_or_missing, needs_pcaps
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from .pcaps import PCAPS, read_columns

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "dissector"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
# Captures whose traffic another protocol owns (LDAP StartTLS, HTTP over SCTP): not counted here.
NOT_OURS = {"ldap", "sctp", "http2", "grpc", "kafka", "amqp", "redis", "radius", "diameter"}


def pcaps(*dirs: str) -> list[Path]:
    out = []
    for d in dirs:
        out.extend(sorted((PCAPS / d).glob("*.pcap*")))
    return files_or_missing(out)


def entries_of(path: Path) -> list[dict[str, Any]]:
    p = Pipeline(default_registry())
    return p.feed(read_columns(path)) + p.finish()


def tshark(path: Path, *args: str) -> str:
    assert TSHARK is not None
    return subprocess.run(
        [TSHARK, "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def _count(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


pytestmark = needs_pcaps


@needs_tshark
@pytest.mark.parametrize("path", pcaps("http1.0", "http1.1", "tcp", "websocket"), ids=lambda p: p.name)
def test_http_requests_and_responses_equal_tsharks(path: Path) -> None:
    out = tshark(path, "-q", "-z", "http,tree")
    http = [e for e in entries_of(path) if e["protocol"] == "http"]
    requests = sum(1 for e in http if e["request"])
    responses = sum(1 + len(e["response"].get("informational", [])) for e in http if e["response"])
    assert (requests, responses) == (
        _count(r"HTTP Request Packets\s+(\d+)", out),
        _count(r"HTTP Response Packets\s+(\d+)", out),
    )


@needs_tshark
@pytest.mark.parametrize(
    "path", [p for p in pcaps("dns", "udp") if "mdns" not in p.name], ids=lambda p: p.name
)
def test_dns_queries_and_responses_equal_tsharks(path: Path) -> None:
    out = tshark(path, "-q", "-z", "dns,tree")
    # tshark's DNS tree leaves out mDNS (5353) and LLMNR (5355), which it dissects separately.
    dns = [
        e
        for e in entries_of(path)
        if e["protocol"] == "dns"
        and 5353 not in (e["dst"]["port"], e["src"]["port"])
        and 5355 not in (e["dst"]["port"], e["src"]["port"])
    ]
    queries = sum(1 for e in dns if e["request"])
    responses = sum(1 for e in dns if e["response"])
    assert (queries, responses) == (_count(r"\n  Query\s+(\d+)", out), _count(r"\n  Response\s+(\d+)", out))


@needs_tshark
@pytest.mark.parametrize("path", pcaps("tls"), ids=lambda p: p.name)
def test_tls_hellos_and_ja3_equal_tsharks(path: Path) -> None:
    rows = tshark(
        path,
        "-Y",
        "tls.handshake.type == 1 || tls.handshake.type == 2",
        "-T",
        "fields",
        "-e",
        "tls.handshake.type",
        "-e",
        "tls.handshake.ja3",
    )
    types: list[str] = []
    ja3s: list[str] = []
    for line in rows.splitlines():
        kinds, _, ja3 = line.partition("\t")
        types.extend(k for k in kinds.split(",") if k)
        ja3s.extend(j for j in ja3.split(",") if j)
    tls = [e for e in entries_of(path) if e["protocol"] == "tls"]
    hellos = [e["request"] for e in tls if e["request"]]
    assert len(hellos) == types.count("1")
    assert sum(1 for e in tls if e["response"]) == types.count("2")
    assert sorted(h["ja3"] for h in hellos if h.get("ja3")) == sorted(ja3s)


@needs_tshark
@pytest.mark.parametrize("path", pcaps("websocket"), ids=lambda p: p.name)
def test_websocket_messages_equal_tsharks_final_frames(path: Path) -> None:
    rows = tshark(path, "-Y", "websocket", "-T", "fields", "-e", "websocket.fin")
    finals = sum(1 for line in rows.splitlines() for f in line.split(",") if f in ("1", "True"))
    ws = [e for e in entries_of(path) if e["protocol"] == "ws"]
    assert len(ws) == finals
    upgrade_ids = {e["id"] for e in entries_of(path) if e["protocol"] == "http" and e["status"] == 101}
    assert len(upgrade_ids) == 1


def test_the_known_chrome_fingerprint_is_found() -> None:
    """JA4 of Chrome's ClientHello as published with the JA4 specification (FoxIO's README)."""
    (e,) = [
        e
        for e in entries_of(PCAPS / "tls" / "zeek_chrome-1250-tls-x25519-kyber.pcap")
        if e["protocol"] == "tls"
    ]
    assert e["tls"]["ja4"] == "t13d1516h2_8daaf6152771_02713d6af862"


def _normalise(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        doc = orjson.loads(orjson.dumps(e))
        doc.pop("id")
        # The flow id is common's 5-tuple hash (its own tests own its value); here: its shape.
        assert re.fullmatch(r"[0-9a-f]{8}", doc.pop("flow_id"))
        for side in ("request", "response"):
            if isinstance(doc.get(side), dict):
                doc[side].pop("upgrade_id", None)
        out.append(doc)
    return out


GOLDEN_FILES = [
    "http1.1/zeek_post.pcap",
    "http1.1/zeek_100-continue.pcap",
    "http1.1/arkime_http-content-gzip.pcap",
    "http1.1/suricata_http-chunked_input.pcap",
    "dns/zeek_dns-https.pcap",
    "dns/zeek_ipv6-fragmented-dns.pcap",
    "tls/arkime_tls-alpn-h2.pcap",
    "tls/zeek_hrr.pcap",
    "websocket/zeek_two-binary-fragments.pcap",
    "tcp/zeek_missing-syn.pcap",
]


@pytest.mark.parametrize("rel", GOLDEN_FILES)
def test_entries_equal_the_golden_json(rel: str) -> None:
    got = _normalise(entries_of(PCAPS / rel))
    golden = GOLDEN / (rel.replace("/", "__") + ".json")
    if os.environ.get("WIRETIDE_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(orjson.dumps(got, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert golden.exists(), f"no golden file {golden.name}; run with WIRETIDE_UPDATE_GOLDEN=1 and review it"
    assert got == orjson.loads(golden.read_bytes())

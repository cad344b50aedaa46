"""Every capture in shared/pcaps/sctp and shared/pcaps/diameter against tshark: SCTP associations
(with their packet counts), DATA chunks, user messages (chunks with the E
bit), Diameter messages over TCP and SCTP, HTTP requests and responses over SCTP, M3UA messages."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.pcaps import files_or_missing, needs_pcaps, require_pcaps
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from .pcaps import PCAPS, read_columns

TSHARK = shutil.which("tshark")
pytestmark = [needs_pcaps, pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")]


def captures() -> list[Path]:
    found = sorted((PCAPS / "sctp").glob("*.*cap*")) + sorted((PCAPS / "diameter").glob("*.*cap*"))
    return files_or_missing(found)


# One tshark run per capture: per frame, its ends and the fields counted (a field a frame holds several
# times — chunks, bundled messages — comes as a comma-separated list).
FIELDS = ("ip.src", "ip.dst", "sctp.srcport", "sctp.dstport", "sctp.data_tsn", "sctp.data_e_bit",
          "diameter.cmd.code", "m3ua.message_type", "http.request", "http.response")  # fmt: skip


def tshark_counts(path: Path) -> tuple[Counter[tuple[str, int, str, int]], Counter[str]]:
    """(frames per SCTP association by its sorted ends, occurrences per field).

    Associations are counted from each frame's own addresses and ports rather than from `-z conv,sctp`:
    that table skips a frame on which a higher dissector raised (arkime_sctp-www.pcap's frame 65, a GIF
    tshark calls malformed), though the frame is SCTP all the same.
    """
    assert TSHARK is not None
    argv = [TSHARK, "-r", str(path), "-T", "fields", *(x for f in FIELDS for x in ("-e", f))]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=120).stdout.decode()
    frames: Counter[tuple[str, int, str, int]] = Counter()
    counts: Counter[str] = Counter()
    for line in out.splitlines():
        values = dict(zip(FIELDS, line.split("\t"), strict=False))
        for name in FIELDS[4:]:
            items = [v for v in values.get(name, "").split(",") if v]
            counts[name] += (
                sum(1 for v in items if v not in ("0", "False")) if name.endswith("_bit") else len(items)
            )
        if values.get("sctp.srcport"):
            ends = sorted([(values["ip.src"], int(values["sctp.srcport"])),
                           (values["ip.dst"], int(values["sctp.dstport"]))])  # fmt: skip
            frames[(ends[0][0], ends[0][1], ends[1][0], ends[1][1])] += 1
    return frames, counts


def dissect(path: Path) -> tuple[list[dict[str, Any]], Pipeline]:
    p = Pipeline(default_registry())
    return p.feed(read_columns(path)) + p.finish(), p


@pytest.mark.parametrize("path", captures(), ids=lambda p: p.name)
def test_associations_chunks_and_messages_equal_tsharks(path: Path) -> None:
    require_pcaps(path)
    entries, p = dissect(path)
    associations = [e for e in entries if e["protocol"] == "sctp"]
    ours: Counter[tuple[str, int, str, int]] = Counter()
    for e in associations:
        ends = sorted([(e["src"]["ip"], e["src"]["port"]), (e["dst"]["ip"], e["dst"]["port"])])
        ours[(ends[0][0], ends[0][1], ends[1][0], ends[1][1])] += (
            e["request"]["packets"] + e["response"]["packets"]
        )
    frames, counts = tshark_counts(path)
    assert ours == frames
    sides = [side for e in associations for side in (e["request"], e["response"])]
    assert sum(s["data_chunks"] for s in sides) == counts["sctp.data_tsn"]
    assert sum(s["messages"] for s in sides) == counts["sctp.data_e_bit"]
    assert p.stats["packet_errors"] == 0 and p.stats["violations"] == 0

    diameter = [e for e in entries if e["protocol"] == "diameter"]
    messages = sum((e["request"] is not None) + (e["response"] is not None) for e in diameter)
    assert messages == counts["diameter.cmd.code"]
    http = [e for e in entries if e["protocol"] == "http"]
    assert sum(e["request"] is not None for e in http) == counts["http.request"]
    assert sum(e["response"] is not None for e in http) == counts["http.response"]
    m3ua = sum(n for s in sides for n in (s.get("m3ua") or {}).values())
    assert m3ua == counts["m3ua.message_type"]
    assert associations or not frames


def test_the_diameter_captures_pair_every_message_they_hold() -> None:
    path = PCAPS / "diameter" / "arkime_diameter_synthetic.pcap"
    require_pcaps(path)
    entries, _ = dissect(path)
    found = [
        (e["transport"], e["method"], e["path"], e["status"]) for e in entries if e["protocol"] == "diameter"
    ]
    assert found == [
        ("tcp", "CER", "base", 2001), ("tcp", "CCR", "Gx", 2001), ("sctp", "ULR", "S6a", 2001),
        ("sctp", "ACR", "accounting", 2001),
    ]  # fmt: skip
    assert all(e["error"] is None for e in entries)
    credit = PCAPS / "diameter" / "ndpi_diameter.pcap"
    entries, _ = dissect(credit)
    assert [e["request"]["cc_request_type"] for e in entries] == [
        "INITIAL_REQUEST", "UPDATE_REQUEST", "TERMINATION_REQUEST",
    ]  # fmt: skip
    assert {e["request"]["hop_by_hop_id"] == e["response"]["hop_by_hop_id"] for e in entries} == {True}
    # A lone answer over SCTP (the capture holds nothing else): unmatched, named, its result read.
    (lone, assoc) = dissect(PCAPS / "diameter" / "pypacker_packets_diameter.pcap")[0]
    assert lone["request"] is None and lone["response"]["command"] == "CEA" and lone["status"] == 2001
    assert lone["error"]["type"] == "unmatched" and assoc["protocol"] == "sctp"


def test_http_over_sctp_and_its_unanswered_association() -> None:
    path = PCAPS / "sctp" / "arkime_sctp-www.pcap"
    require_pcaps(path)
    entries, _ = dissect(path)
    http = [(e["method"], e["path"], e["status"]) for e in entries if e["protocol"] == "http"]
    assert http == [
        ("GET", "/", 200), ("GET", "/images/CPL@KOREN_logo_menu.gif", 200),
        ("GET", "/images/protocols_small.gif", 200),
    ]  # fmt: skip
    lengths = [e["response"]["body"]["size"] for e in entries if e["protocol"] == "http"]
    assert lengths == [7486, 12800, 19071]  # each Content-Length, rebuilt from its fragments
    closes = sorted((e["request"]["close"], bool(e["error"])) for e in entries if e["protocol"] == "sctp")
    assert closes == [("end", True), ("shutdown", False), ("shutdown", False)]

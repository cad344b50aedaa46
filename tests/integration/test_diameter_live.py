"""Live Diameter over TCP between two network namespaces: a client that does a peer's whole session
(capabilities exchange, pipelined Gx credit control, an S6a Update-Location for an unknown subscriber, a
200 KB request, a watchdog, disconnect) against a peer that answers each request and sends a
Re-Auth-Request of its own. The peer is the small responder in tests/helpers/diameter.py, because the
stock freeDiameterd serves no application (test_diameter_freediameter.py runs the real daemon for what
it does answer): real sockets, real TCP, captured by tcpdump on the server's veth and dissected
offline. The entries must be what the client itself did, exchange by exchange. (SCTP is not tested
live: this kernel has no SCTP sockets; see test_sctp.py and test_sctp_pcaps.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.diameter_capture import PORT, capture_client, first_whole_capture
from tests.helpers.netns import NetPair, veth_pair
from tests.helpers.pcaps import REPO_ROOT
from tests.helpers.tcpdump import dissect

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and tcpdump"),
]

BIG = 200_000  # bytes of one request's AVP: beyond what the dissector keeps of a message


def _session(pair: NetPair, pcap: Path) -> tuple[dict[str, Any], int]:
    """The client's session against the responder, captured: (what the client recorded, drops)."""
    code = f"from tests.helpers.diameter import serve; serve({pair.ip_b!r}, {PORT})"
    argv = [sys.executable, "-c", code]
    peer = pair.popen(pair.ns_b, argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == b"listening"  # blocks until the socket listens
        run = capture_client(pair, pcap, "client", (pair.ip_b, PORT, BIG), timeout=120)
    finally:
        peer.kill()
        peer.wait(timeout=10)
        assert peer.stdout is not None
        peer.stdout.close()
    return run.record(), run.dropped


def test_a_diameter_session_over_tcp_becomes_one_entry_per_exchange(tmp_path: Path) -> None:
    with veth_pair("10.81.0") as pair:
        record, pcap = first_whole_capture(tmp_path, "diameter", lambda pcap: _session(pair, pcap))
    entries = dissect(pcap)

    found = [e for e in entries if e["protocol"] == "diameter"]
    assert [e for e in entries if e["transport"] == "tcp" and e["protocol"] != "diameter"] == []
    ours = sorted(
        [e["method"], int(e["request"]["hop_by_hop_id"], 16), e["status"]]
        for e in found
        if e["request"].get("sender") != "server"
    )
    assert ours == sorted(record["sent"])  # what the client sent, and the result it read
    assert record["sent"] == [["CER", 1, 2001], ["CCR", 2, 2001], ["CCR", 3, 2001], ["ULR", 4, 5001],
                              ["CCR", 5, 2001], ["DWR", 6, 2001], ["DPR", 7, 2001]]  # fmt: skip
    (rar,) = [e for e in found if e["request"].get("sender") == "server"]
    assert [rar["method"], int(rar["request"]["hop_by_hop_id"], 16), rar["status"]] == record["received"][0]
    assert rar["response"]["sender"] == "client"
    by_hbh = {int(e["request"]["hop_by_hop_id"], 16): e for e in found}
    assert by_hbh[4]["summary"] == "ULR S6a → DIAMETER_ERROR_USER_UNKNOWN (5001)"
    assert by_hbh[2]["request"]["cc_request_type"] == "INITIAL_REQUEST" and by_hbh[2]["path"] == "Gx"
    big = by_hbh[5]
    assert big["size"]["request"] > BIG and big["request"]["truncated"]  # kept in part, streamed past
    assert all(e["error"] is None for e in found)
    assert {e["src"]["ip"] for e in found} == {pair.ip_a}

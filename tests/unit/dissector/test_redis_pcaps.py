"""Real Redis captures (shared/pcaps/redis): commands and replies counted per file equal tshark's RESP
messages (top-level items of its `resp` tree, client side = packets to port 6379).

tshark 4.0's RESP dissector knows only RESP2: it reads RESP3 maps, attributes and pushes as loose
fragments, so for the two RESP3 captures only the commands are compared with it; their replies are
checked against what the capture holds (read with `tshark -z follow,tcp,ascii`).
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.pcaps import files_or_missing, needs_pcaps
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from .pcaps import PCAPS, read_columns

TSHARK = shutil.which("tshark")
REDIS_PORT = 6379
# Captures in RESP3, and the replies and pushes each holds (tshark 4.0 cannot count these).
RESP3_REPLIES = {"zeek_attr.pcap": 2, "zeek_pubsub-resp3.pcap": 13}

pytestmark = [needs_pcaps, pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")]


def captures() -> list[Path]:
    return files_or_missing(sorted((PCAPS / "redis").glob("*.pcap*")))


def tshark_counts(path: Path) -> tuple[int, int]:
    """(client, server) RESP messages as tshark dissects them."""
    assert TSHARK is not None
    pdml = subprocess.run(
        [TSHARK, "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path), "-Y", "resp", "-T", "pdml"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    client = server = 0
    for packet in ET.fromstring(pdml).iter("packet"):
        dport = next(int(f.get("show", "0")) for f in packet.iter("field") if f.get("name") == "tcp.dstport")
        items = sum(len(list(p)) for p in packet.findall("proto") if p.get("name") == "resp")
        if dport == REDIS_PORT:
            client += items
        else:
            server += items
    return client, server


def our_counts(path: Path) -> tuple[int, int, list[dict[str, Any]]]:
    p = Pipeline(default_registry())
    found = [e for e in p.feed(read_columns(path)) + p.finish() if e["protocol"] == "redis"]
    client = sum(1 for e in found if e["request"] is not None)
    server = sum(1 for e in found if e["response"] is not None)
    return client, server, found


@pytest.mark.parametrize("path", captures(), ids=lambda p: p.name)
def test_redis_commands_and_replies_equal_tsharks(path: Path) -> None:
    client, server, found = our_counts(path)
    t_client, t_server = tshark_counts(path)
    assert client == t_client
    assert server == RESP3_REPLIES.get(path.name, t_server)
    assert found, "the capture's Redis traffic became Redis entries"
    assert all(e["error"] is None or e["status"] == -1 for e in found)  # no dissection errors


def test_the_auth_capture_keeps_no_password_and_marks_wrong_ones_as_errors() -> None:
    path = PCAPS / "redis" / "zeek_auth.pcap"
    _, _, found = our_counts(path)
    assert "password" not in repr([e["request"] for e in found]).replace("[REDACTED]", "")
    assert [e["status"] for e in found] == [-1, 0, -1]
    assert {e["error"]["type"] for e in found if e["error"]} == {"WRONGPASS"}


def test_the_pubsub_capture_shows_pushes_as_their_own_entries() -> None:
    _, _, found = our_counts(PCAPS / "redis" / "zeek_pubsub.pcap")
    pushes = [(e["method"], e["path"]) for e in found if e["request"] is None]
    assert pushes == [
        ("SUBSCRIBE", "Foo"), ("PSUBSCRIBE", "F*"), ("MESSAGE", "Foo"), ("PMESSAGE", "Foo"),
        ("PMESSAGE", "FeeFooFiiFum"),
    ]  # fmt: skip

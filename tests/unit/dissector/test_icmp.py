"""ICMP/ICMPv6 (dissector/icmp.py): echo pairs with their round trip, errors naming the quoted flow,
everything else counted by type; packets of other protocols counted by name.

The captures in shared/pcaps/icmp and icmpv6 are compared with tshark: one entry per echo request
(answered or not), one per error message, and every other ICMP message counted, never an entry.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import files_or_missing, needs_pcaps
from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder, flow_id
from wiretide.dissector.icmp import ECHO_TIMEOUT_NS, MAX_PENDING
from wiretide.dissector.pipeline import MAX_ICMP_NOTES, Pipeline
from wiretide.dissector.registry import default_registry

from .builders import SYN, T0, columns, ether, ipv4, tcp_frame, udp_frame
from .pcaps import PCAPS, read_columns

TSHARK = shutil.which("tshark")
MS = 1_000_000
ERRORS_V4 = {3, 11, 12, 4}
ERRORS_V6 = {1, 2, 3, 4}


def icmp(mtype: int, code: int, rest: bytes) -> bytes:
    return struct.pack("!BBH", mtype, code, 0) + rest


def echo(src: str, dst: str, request: bool, ident: int, seq: int, data: bytes = b"x" * 56) -> bytes:
    return ether(ipv4(src, dst, 1, icmp(8 if request else 0, 0, struct.pack("!HH", ident, seq) + data)))


def run(
    frames: list[tuple[int, bytes]], pipeline: Pipeline | None = None
) -> tuple[Pipeline, list[dict[str, Any]]]:
    p = pipeline or Pipeline(default_registry())
    return p, p.feed(columns(frames)) + p.finish()


# ---- transcripts -----------------------------------------------------------------------------------


def test_an_echo_and_its_reply_are_one_entry_whose_elapsed_time_is_the_round_trip() -> None:
    _, out = run(
        [
            (T0, echo("10.0.0.1", "10.0.0.2", True, 7, 1)),
            (T0 + 3 * MS, echo("10.0.0.2", "10.0.0.1", False, 7, 1)),
        ]
    )
    [e] = out
    assert (e["protocol"], e["transport"], e["version"], e["method"], e["status"]) == (
        "icmp",
        "icmp",
        "4",
        "echo",
        0,
    )
    assert e["elapsed_us"] == 3000
    assert (e["src"]["ip"], e["dst"]["ip"]) == ("10.0.0.1", "10.0.0.2")
    assert e["request"]["seq"] == e["response"]["seq"] == 1
    assert e["error"] is None


def test_replies_pair_by_identifier_and_sequence_not_by_order() -> None:
    _, out = run(
        [
            (T0, echo("10.0.0.1", "10.0.0.2", True, 7, 1)),
            (T0 + 1 * MS, echo("10.0.0.1", "10.0.0.2", True, 7, 2)),
            (T0 + 2 * MS, echo("10.0.0.2", "10.0.0.1", False, 7, 2)),
            (T0 + 5 * MS, echo("10.0.0.2", "10.0.0.1", False, 7, 1)),
        ]
    )
    by_seq = {e["request"]["seq"]: e["elapsed_us"] for e in out}
    assert by_seq == {1: 5000, 2: 1000}


def test_an_unanswered_echo_is_a_timeout_entry_once_the_capture_moves_on_and_at_the_end() -> None:
    p = Pipeline(default_registry())
    early = p.feed(columns([(T0, echo("10.0.0.1", "10.0.0.2", True, 9, 1))]))
    assert early == []
    later = p.feed(columns([(T0 + ECHO_TIMEOUT_NS + 2_000 * MS, echo("10.0.0.1", "10.0.0.2", True, 9, 2))]))
    assert [(e["request"]["seq"], e["error"]["type"]) for e in later] == [(1, "timeout")]
    end = p.finish()
    assert [(e["request"]["seq"], e["error"]["type"]) for e in end] == [(2, "timeout")]


def test_a_reply_without_its_request_is_unmatched() -> None:
    _, [e] = run([(T0, echo("10.0.0.2", "10.0.0.1", False, 7, 1))])
    assert e["error"]["type"] == "unmatched"
    assert (e["src"]["ip"], e["dst"]["ip"]) == ("10.0.0.1", "10.0.0.2")


def test_a_port_unreachable_names_the_udp_flow_it_quotes_under_that_flows_id() -> None:
    probe = udp_frame("10.0.0.1", 40000, "10.0.0.2", 9, b"hello")
    quoted = probe[14 : 14 + 28]  # the IP header and the first 8 bytes of UDP (RFC 792)
    error = ether(ipv4("10.0.0.2", "10.0.0.1", 1, icmp(3, 3, b"\0\0\0\0" + quoted)))
    p, out = run([(T0, probe), (T0 + MS, error)])
    [err] = [e for e in out if e["protocol"] == "icmp"]
    [flow] = [e for e in out if e["protocol"] == "udp"]
    assert err["method"] == "unreachable" and err["status"] == 3
    assert err["error"]["type"] == "unreachable" and "port unreachable" in err["error"]["message"]
    q = err["request"]["quoted"]
    assert (q["protocol"], q["src"], q["dst"]) == (
        "udp",
        {"ip": "10.0.0.1", "port": 40000},
        {"ip": "10.0.0.2", "port": 9},
    )
    assert (
        err["flow_id"] == flow["flow_id"] == flow_id(bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 2]), 9, 17)
    )
    assert "10.0.0.1:40000 → 10.0.0.2:9" in err["summary"]


def port_unreachable(probe: bytes, router: str = "10.0.0.2") -> bytes:
    """What a host answers a UDP datagram to a closed port: the IP header and 8 bytes of it (RFC 792)."""
    return ether(ipv4(router, "10.0.0.1", 1, icmp(3, 3, b"\0\0\0\0" + probe[14 : 14 + 28])))


def test_the_quoted_udp_flow_s_entry_carries_the_error_as_an_icmp_errors_note() -> None:
    probe = udp_frame("10.0.0.1", 40000, "10.0.0.2", 9, b"hello")
    p, out = run([(T0, probe), (T0 + MS, port_unreachable(probe))])
    [err] = [e for e in out if e["protocol"] == "icmp"]
    [flow] = [e for e in out if e["protocol"] == "udp"]
    assert flow["icmp_errors"] == [
        {"id": err["id"], "type": "unreachable", "code": 3, "reason": "port unreachable", "from": "10.0.0.2"}
    ]
    assert "icmp_errors" not in err
    assert p.stats["icmp_errors_flow_marked"] == 1


def test_an_unanswered_dns_query_to_a_closed_port_names_the_port_unreachable_that_answered_it() -> None:
    query = bytes.fromhex("1234010000010000000000000377777706676f6f676c6503636f6d0000010001")
    probe = udp_frame("10.0.0.1", 40000, "10.0.0.2", 53, query)
    _, out = run([(T0, probe), (T0 + MS, port_unreachable(probe))])
    [dns] = [e for e in out if e["protocol"] == "dns"]
    assert dns["error"]["type"] == "timeout"
    assert [n["reason"] for n in dns["icmp_errors"]] == ["port unreachable"]


def test_an_error_quoting_a_flow_that_already_made_entries_names_its_last_entry() -> None:
    query = bytes.fromhex("1234010000010000000000000377777706676f6f676c6503636f6d0000010001")
    answer = bytearray(query)
    answer[2] = 0x81
    answer[3] = 0x80
    first = udp_frame("10.0.0.1", 40000, "10.0.0.2", 53, query)
    p = Pipeline(default_registry())
    done = p.feed(
        columns([(T0, first), (T0 + MS, udp_frame("10.0.0.2", 53, "10.0.0.1", 40000, bytes(answer)))])
    )
    [dns] = [e for e in done if e["protocol"] == "dns"]
    later = p.feed(columns([(T0 + 2 * MS, port_unreachable(first, router="10.0.0.254"))]))
    [err] = [e for e in later if e["protocol"] == "icmp"]
    assert err["request"]["quoted"]["entry_id"] == dns["id"]


def test_an_error_about_a_flow_never_seen_names_it_without_marking_anything() -> None:
    probe = udp_frame("10.0.0.1", 40000, "10.0.0.2", 9, b"hello")
    p, [err] = run([(T0, port_unreachable(probe))])
    assert "entry_id" not in err["request"]["quoted"]
    assert p.stats["icmp_errors_flow_unknown"] == 1


def test_a_flow_keeps_a_bounded_number_of_notes() -> None:
    probe = udp_frame("10.0.0.1", 40000, "10.0.0.2", 9, b"hello")
    frames = [(T0, probe)] + [(T0 + i * MS, port_unreachable(probe)) for i in range(1, 20)]
    p, out = run(frames)
    [flow] = [e for e in out if e["protocol"] == "udp"]
    assert len(flow["icmp_errors"]) == MAX_ICMP_NOTES
    assert p.stats["icmp_errors_notes_dropped"] == 19 - MAX_ICMP_NOTES


def test_a_tcp_connection_refused_by_an_administratively_prohibited_error_carries_it() -> None:
    syn = tcp_frame("10.0.0.1", 40001, "10.0.0.9", 443, 100, 0, SYN)
    prohibited = ether(ipv4("10.0.0.254", "10.0.0.1", 1, icmp(3, 13, b"\0\0\0\0" + syn[14 : 14 + 28])))
    _, out = run([(T0, syn), (T0 + MS, prohibited)])
    [conn] = [e for e in out if e["protocol"] == "tcp"]
    [note] = conn["icmp_errors"]
    assert (note["reason"], note["from"]) == ("communication administratively prohibited", "10.0.0.254")


def test_other_icmp_types_and_other_protocols_are_counted_not_entries() -> None:
    redirect = ether(ipv4("10.0.0.254", "10.0.0.1", 1, icmp(5, 1, b"\x0a\x00\x00\x01" + b"\0" * 28)))
    gre = ether(ipv4("10.0.0.1", "10.0.0.2", 47, b"\0" * 8))
    arp = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06" + b"\0" * 28
    p, out = run([(T0, redirect), (T0 + 1, gre), (T0 + 2, arp)])
    assert out == []
    assert p.undissected == Counter({"icmp": 1, "gre": 1, "arp": 1})
    assert p.stats["icmp_redirect"] == 1


def test_a_flood_of_unanswered_echoes_stays_within_the_pending_bound() -> None:
    p = Pipeline(default_registry())
    b = ColumnBuilder()
    iface = b.interface("t", LINKTYPE_ETHERNET)
    n = MAX_PENDING + 10
    for i in range(n):
        f = echo("10.0.0.1", "10.0.0.2", True, i >> 16, i & 0xFFFF, b"")
        b.append(f, len(f), T0 + i, iface)
    out = p.feed(b.take())
    assert len(p.icmp.pending) == MAX_PENDING
    assert len(out) == 10 and all(e["error"]["type"] == "timeout" for e in out)
    assert p.stats["icmp_pending_full"] == 10


def test_with_jobs_only_the_first_worker_handles_icmp_and_counts_other_protocols() -> None:
    frames = [
        (T0, echo("10.0.0.1", "10.0.0.2", True, 7, 1)),
        (T0 + 1, echo("10.0.0.2", "10.0.0.1", False, 7, 1)),
    ]
    found = []
    for index in range(3):
        _, out = run(frames, Pipeline(default_registry(), shard=(index, 3)))
        found += out
    assert len(found) == 1


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=120),
    mtype=st.integers(0, 255),
    code=st.integers(0, 255),
    v6=st.booleans(),
)
def test_random_icmp_messages_never_raise(body: bytes, mtype: int, code: int, v6: bool) -> None:
    message = bytes([mtype, code]) + body
    if v6:
        src, dst = b"\xfe\x80" + b"\0" * 13 + b"\x01", b"\xfe\x80" + b"\0" * 13 + b"\x02"
        ip = struct.pack("!IHBB", 0x60000000, len(message), 58, 64) + src + dst + message
        frame = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x86\xdd" + ip
    else:
        frame = ether(ipv4("10.0.0.1", "10.0.0.2", 1, message))
    p, _ = run([(T0, frame)])
    assert p.stats["packet_errors"] == 0


# ---- real captures against tshark --------------------------------------------------------------


def tshark_icmp(path: Path) -> tuple[int, int, int]:
    """(echo requests, error messages, other messages) as tshark reads the capture."""
    assert TSHARK is not None
    lines = subprocess.run(
        [
            TSHARK,
            "-r",
            str(path),
            "-Y",
            "icmp or icmpv6",
            "-T",
            "fields",
            "-e",
            "icmp.type",
            "-e",
            "icmpv6.type",
        ],
        capture_output=True,
        check=True,
        text=True,
        timeout=120,
    ).stdout.splitlines()
    requests = errors = other = 0
    for line in lines:
        v4, _, v6 = line.partition("\t")
        # An error quoting an ICMP packet shows both types: the first is the message's own.
        t4 = int(v4.split(",")[0]) if v4 else None
        t6 = int(v6.split(",")[0]) if v6 else None
        if t4 is not None:
            requests += t4 == 8
            errors += t4 in ERRORS_V4
            other += t4 not in ERRORS_V4 and t4 not in (0, 8)
        elif t6 is not None:
            requests += t6 == 128
            errors += t6 in ERRORS_V6
            other += t6 not in ERRORS_V6 and t6 not in (128, 129)
    return requests, errors, other


def icmp_captures() -> list[Path]:
    return files_or_missing(sorted([*(PCAPS / "icmp").glob("*.pcap*"), *(PCAPS / "icmpv6").glob("*.pcap*")]))


@needs_pcaps
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", icmp_captures(), ids=lambda p: p.name)
def test_each_icmp_capture_gives_tsharks_echoes_and_errors(path: Path) -> None:
    requests, errors, other = tshark_icmp(path)
    p = Pipeline(default_registry())
    out = [e for e in p.feed(read_columns(path)) + p.finish() if e["protocol"] == "icmp"]
    echoes = [e for e in out if e["method"] == "echo" and e["request"] is not None]
    failures = [e for e in out if e["method"] != "echo"]
    assert (len(echoes), len(failures)) == (requests, errors)
    assert all(e["elapsed_us"] > 0 for e in echoes if e["response"] is not None)
    assert all(e["request"].get("quoted") for e in failures)
    assert p.undissected["icmp"] + p.undissected["icmpv6"] == other

"""DNS transcripts over built messages: queries and answers matched by id, timeouts, bad input."""

from __future__ import annotations

import socket
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import needs_pcaps, pcap
from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Limits, Pipeline
from wiretide.dissector.protocols.dns import DnsSession, DnsTcpSession, parse, probe_tcp, probe_udp
from wiretide.dissector.registry import default_registry

from .builders import T0, Conversation, columns, udp_frame
from .pcaps import read_columns


def name(n: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"


def query(qid: int, qname: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name(qname) + struct.pack("!HH", qtype, 1)


def answer(qid: int, qname: str, ips: list[str], rcode: int = 0) -> bytes:
    head = (
        struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(ips), 0, 0)
        + name(qname)
        + struct.pack("!HH", 1, 1)
    )
    rrs = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(ip)
        for ip in ips  # pointer to the question
    )
    return head + rrs


def mdns_query(qname: str, qtype: int = 12) -> bytes:
    """RFC 6762 §18.1: multicast queries carry id 0."""
    return struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + name(qname) + struct.pack("!HH", qtype, 1)


def announcement(host: str, ip: str) -> bytes:
    """RFC 6762 §8.3: an unsolicited response — id 0, no question, cache-flush A record."""
    head = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0)
    return head + name(host) + struct.pack("!HHIH", 1, 0x8001, 120, 4) + socket.inet_aton(ip)


def mdns_answer(host: str, ip: str) -> bytes:
    """A multicast response: id 0 and no question (RFC 6762 §6), so it pairs by id alone."""
    return announcement(host, ip)


def test_an_a_query_and_its_answer_are_parsed_with_compression() -> None:
    msg = parse(answer(7, "api.example.com", ["192.0.2.1", "192.0.2.2"]))
    assert msg["id"] == 7 and msg["qr"] is True
    assert msg["questions"] == [{"name": "api.example.com", "type": "A", "class": "IN"}]
    assert [a["data"] for a in msg["answers"]] == ["192.0.2.1", "192.0.2.2"]
    assert msg["answers"][0]["name"] == "api.example.com" and msg["answers"][0]["ttl"] == 300


def test_a_udp_exchange_becomes_one_entry_with_rcode_and_answers() -> None:
    frames = [
        (T0, udp_frame("10.0.0.1", 5555, "10.0.0.53", 53, query(1, "a.example"))),
        (T0 + 2_000_000, udp_frame("10.0.0.53", 53, "10.0.0.1", 5555, answer(1, "a.example", ["192.0.2.9"]))),
        (T0 + 3_000_000, udp_frame("10.0.0.1", 5555, "10.0.0.53", 53, query(2, "nope.example"))),
        (
            T0 + 4_000_000,
            udp_frame("10.0.0.53", 53, "10.0.0.1", 5555, answer(2, "nope.example", [], rcode=3)),
        ),
    ]
    p = Pipeline(default_registry())
    entries = p.feed(columns(frames)) + p.finish()
    assert [(e["protocol"], e["path"], e["status"]) for e in entries] == [
        ("dns", "a.example", 0),
        ("dns", "nope.example", 3),
    ]
    assert entries[0]["response"]["answers"][0]["data"] == "192.0.2.9"
    assert entries[1]["response"]["rcode_name"] == "NXDOMAIN"
    assert entries[0]["elapsed_us"] == 2000
    assert entries[0]["src"]["port"] == 5555 and entries[0]["dst"]["port"] == 53


def test_an_unanswered_query_becomes_a_timeout_entry() -> None:
    frames = [
        (T0, udp_frame("10.0.0.1", 5556, "10.0.0.53", 53, query(9, "lost.example"))),
        (T0 + 60_000_000_000, udp_frame("10.0.0.7", 1, "10.0.0.8", 2, b"x")),  # time moves on
    ]
    p = Pipeline(default_registry(), limits=Limits(udp_idle_ns=5_000_000_000))
    entries = p.feed(columns(frames))
    (e,) = [e for e in entries if e["protocol"] == "dns"]
    assert e["error"]["type"] == "timeout" and e["response"] is None


def test_an_mdns_announcement_starting_a_flow_is_dns_and_an_entry_of_its_own() -> None:
    frames = [
        (T0, udp_frame("10.0.2.7", 5353, "224.0.0.251", 5353, announcement("printer.local", "10.0.2.7"))),
        (
            T0 + 1_000_000,
            udp_frame("10.0.2.7", 5353, "224.0.0.251", 5353, announcement("nas.local", "10.0.2.7")),
        ),
    ]
    p = Pipeline(default_registry())
    entries = p.feed(columns(frames)) + p.finish()
    assert [(e["protocol"], e["method"], e["path"], e["status"], e["error"]) for e in entries] == [
        ("dns", "A", "printer.local", 0, None),
        ("dns", "A", "nas.local", 0, None),
    ]
    assert entries[0]["request"] is None and entries[0]["response"]["unsolicited"] is True
    assert entries[0]["summary"] == "A printer.local announced"
    assert entries[0]["response"]["answers"][0]["data"] == "10.0.2.7"


def test_the_probe_accepts_an_announcement_but_not_a_question_less_query() -> None:
    assert probe_udp(b"", announcement("printer.local", "10.0.2.7")) == Verdict.YES
    no_question = struct.pack("!HHHHHH", 0, 0, 0, 1, 0, 0) + announcement("x.local", "10.0.0.1")[12:]
    assert probe_udp(no_question, b"") == Verdict.NO
    empty = struct.pack("!HHHHHH", 0, 0x8400, 0, 0, 0, 0)
    assert probe_udp(b"", empty) == Verdict.NO


def test_id_0_answers_pair_with_the_earliest_outstanding_query_and_repeats_are_retransmissions() -> None:
    mdns = ("10.0.2.7", 5353, "224.0.0.251", 5353)
    frames = [
        (T0, udp_frame(*mdns, mdns_query("_ipp._tcp.local"))),
        (T0 + 40_000_000, udp_frame(*mdns, mdns_query("printer.local", qtype=255))),  # same id 0
        (T0 + 700_000_000, udp_frame(*mdns, mdns_answer("printer.local", "10.0.2.7"))),
        (T0 + 800_000_000, udp_frame(*mdns, mdns_query("_ipp._tcp.local"))),  # a new transaction
        (T0 + 900_000_000, udp_frame(*mdns, mdns_answer("printer.local", "10.0.2.7"))),
    ]
    p = Pipeline(default_registry())
    entries = p.feed(columns(frames)) + p.finish()
    got = sorted(
        (e["timestamp"] - T0, e["elapsed_us"], e["summary"], e["error"])
        for e in entries
        if e["protocol"] == "dns"
    )
    assert got == [
        (0, 700_000, "PTR _ipp._tcp.local → NOERROR (1 answers)", None),
        (40_000_000, 0, "ANY printer.local (retransmission)", None),
        (800_000_000, 100_000, "PTR _ipp._tcp.local → NOERROR (1 answers)", None),
    ]


def test_a_query_repeated_after_the_retransmission_window_leaves_the_first_unanswered() -> None:
    conv = ("10.0.0.1", 5555, "10.0.0.53", 53)
    back = ("10.0.0.53", 53, "10.0.0.1", 5555)
    frames = [
        (T0, udp_frame(*conv, query(4, "slow.example"))),
        (T0 + 6_000_000_000, udp_frame(*conv, query(4, "slow.example"))),
        (T0 + 6_010_000_000, udp_frame(*back, answer(4, "slow.example", ["192.0.2.4"]))),
    ]
    p = Pipeline(default_registry())
    entries = p.feed(columns(frames)) + p.finish()
    assert [(e["timestamp"] - T0, e["elapsed_us"], (e["error"] or {}).get("type")) for e in entries] == [
        (0, 0, "timeout"),
        (6_000_000_000, 10_000, None),
    ]


# tshark 4.0 on zeek_mdns.pcap (`tshark -r zeek_mdns.pcap -Y mdns -T fields -e frame.number
# -e dns.response_to -e dns.retransmission`): 18 mDNS messages; these responses answer these queries,
# and these queries are retransmissions of an outstanding one.
TSHARK_MDNS_ANSWERS = {3: 1, 4: 2, 19: 10, 20: 9, 23: 22, 24: 21}
TSHARK_MDNS_RETRANSMISSIONS = {11, 12, 13, 14, 17, 18}


@needs_pcaps
def test_zeek_mdns_pairs_and_retransmissions_agree_with_tshark() -> None:
    path = pcap("dns/zeek_mdns.pcap")
    cols = read_columns(path)
    times = cols.timestamps_ns

    def frame_at(ns: int) -> int:
        """The number of the frame captured at `ns` (to the microsecond the entry keeps)."""
        return min(range(len(times)), key=lambda i: abs(times[i] - ns)) + 1

    p = Pipeline(default_registry())
    entries = [e for e in p.feed(cols) + p.finish() if e["protocol"] == "dns"]
    pairs: dict[int, int] = {}
    retransmissions: set[int] = set()
    for e in entries:
        assert e["error"] is None
        first = frame_at(e["timestamp"])
        if e["response"] is None:
            assert e["request"]["retransmission"] is True
            retransmissions.add(first)
        else:
            pairs[frame_at(e["timestamp"] + e["elapsed_us"] * 1000)] = first
    assert pairs == TSHARK_MDNS_ANSWERS
    assert retransmissions == TSHARK_MDNS_RETRANSMISSIONS


def test_dns_over_tcp_is_length_prefixed_and_split_anywhere() -> None:
    q = query(3, "tcp.example")
    a = answer(3, "tcp.example", ["192.0.2.3"])
    client = struct.pack("!H", len(q)) + q
    server = struct.pack("!H", len(a)) + a
    conv = Conversation(sport=53).handshake().send(True, client, mss=5).send(False, server, mss=7).close()
    p = Pipeline(default_registry())
    (e,) = p.feed(conv.columns()) + p.finish()
    assert (
        e["protocol"] == "dns"
        and e["transport"] == "tcp"
        and e["response"]["answers"][0]["data"] == "192.0.2.3"
    )


def test_a_compression_loop_is_a_violation_not_a_hang() -> None:
    looped = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c"
    (ev,) = DnsSession(SessionConfig()).feed(True, looped, 1)
    assert isinstance(ev, Violation)


def test_a_tcp_length_prefix_shorter_than_a_header_is_a_violation() -> None:
    (ev,) = DnsTcpSession(SessionConfig()).feed(True, b"\x00\x03abc", 1)
    assert isinstance(ev, Violation)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    for ev in DnsSession(SessionConfig()).feed(True, data, 1) + DnsTcpSession(SessionConfig()).feed(
        False, data, 1
    ):
        assert isinstance(ev, Message | Violation)


@settings(max_examples=400, deadline=None)
@given(client=st.binary(max_size=120), server=st.binary(max_size=120))
def test_the_probes_never_raise(client: bytes, server: bytes) -> None:
    assert probe_udp(client, server) in Verdict
    assert probe_tcp(client, server) in Verdict


@settings(max_examples=200, deadline=None)
@given(flip=st.integers(min_value=0, max_value=10_000), value=st.integers(min_value=0, max_value=255))
def test_corrupted_answers_never_raise(flip: int, value: int) -> None:
    raw = bytearray(answer(5, "x.example.org", ["192.0.2.1", "192.0.2.2"]))
    raw[flip % len(raw)] = value
    events: list[Any] = DnsSession(SessionConfig()).feed(False, bytes(raw), 1)
    assert len(events) == 1

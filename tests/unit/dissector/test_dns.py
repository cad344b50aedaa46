"""DNS transcripts over built messages: queries and answers matched by id, timeouts, bad input."""

from __future__ import annotations

import socket
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import Message, SessionConfig, Violation
from wiretide.dissector.pipeline import Limits, Pipeline
from wiretide.dissector.protocols.dns import DnsSession, DnsTcpSession, parse
from wiretide.dissector.registry import default_registry

from .builders import T0, Conversation, columns, udp_frame


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


@settings(max_examples=200, deadline=None)
@given(flip=st.integers(min_value=0, max_value=10_000), value=st.integers(min_value=0, max_value=255))
def test_corrupted_answers_never_raise(flip: int, value: int) -> None:
    raw = bytearray(answer(5, "x.example.org", ["192.0.2.1", "192.0.2.2"]))
    raw[flip % len(raw)] = value
    events: list[Any] = DnsSession(SessionConfig()).feed(False, bytes(raw), 1)
    assert len(events) == 1

"""The pipeline over built packets: reordering, loss, duplication, defragmentation, bounds, overrides."""

from __future__ import annotations

import os
import random
import socket
import struct

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import Presented, ProtocolSpec, Verdict
from wiretide.dissector.pipeline import Limits, Pipeline
from wiretide.dissector.registry import Registry, default_registry, parse_overrides

from .builders import SYN, T0, Conversation, columns, ether, ipv4, tcp_frame, udp_frame
from .test_dns import answer, query

BODY = bytes(range(256)) * 40  # 10 KiB, several segments


def exchange() -> Conversation:
    conv = Conversation().handshake()
    conv.send(
        True,
        b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY,
        mss=1000,
    )
    conv.send(False, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    return conv.close()


def dissect(frames: list[tuple[int, bytes]], **kw: object) -> tuple[list[dict[str, object]], Pipeline]:
    p = Pipeline(default_registry(), **kw)  # type: ignore[arg-type]
    return p.feed(columns(frames)) + p.finish(), p


def essentials(entries: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(e["protocol"], e["method"], e["path"], e["status"], e["size"], e["error"]) for e in entries]


def test_shuffled_and_duplicated_segments_give_the_same_entry() -> None:
    conv = exchange()
    reference, _ = dissect(conv.frames)
    frames = list(conv.frames)
    head, data, tail = frames[:3], frames[3:-3], frames[-3:]
    rnd = random.Random(7)
    data = data + rnd.sample(data, 4)
    rnd.shuffle(data)
    ts = sorted(t for t, _ in head + data + tail)
    reordered = [(t, f) for t, (_, f) in zip(ts, head + data + tail, strict=True)]
    got, p = dissect(reordered)
    assert essentials(got) == essentials(reference)
    assert got[0]["request"]["body"]["content"] == reference[0]["request"]["body"]["content"]  # type: ignore[index]
    assert p.stats["gaps"] == 0


def test_a_lost_segment_is_a_gap_and_the_entry_says_so() -> None:
    conv = exchange()
    frames = [f for i, f in enumerate(conv.frames) if i != 6]  # one body segment never captured
    (e,), p = dissect(frames)
    assert e["protocol"] == "http" and e["status"] == 201
    assert e["error"] == {"type": "dissection", "message": "message cut by a capture gap"}
    assert p.stats["gaps"] == 1


def test_capture_started_mid_connection_still_yields_the_next_exchange() -> None:
    conv = exchange()
    later = Conversation(cseq=conv.cseq - 1, sseq=conv.sseq - 1, ts=conv.ts)
    later.send(True, b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n").send(
        False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    (e,), _ = dissect(later.frames)  # no SYN at all
    assert (e["method"], e["path"], e["status"]) == ("GET", "/after", 200)
    assert e["src"] == {"ip": "10.0.0.1", "port": 40000}


def test_ip_fragments_are_reassembled_before_dissection() -> None:
    q = query(0x42, "fragmented.example")
    a = answer(0x42, "fragmented.example", [f"192.0.2.{i}" for i in range(1, 60)])
    udp = struct.pack("!HHHH", 53, 5353, 8 + len(a), 0) + a
    frags = [udp[:400], udp[400:800], udp[800:]]
    frames = [(T0, udp_frame("10.0.0.1", 5353, "10.0.0.53", 53, q))]
    offsets = [0, 400, 800]
    for i in (2, 0, 1):  # out of order
        pkt = ipv4("10.0.0.53", "10.0.0.1", 17, frags[i], ip_id=77, frag=offsets[i], more=i < 2)
        frames.append((T0 + 1000 + i, ether(pkt)))
    (e,), p = dissect(frames)
    assert e["protocol"] == "dns" and len(e["response"]["answers"]) == 59  # type: ignore[index]
    assert p.defrag.reassembled == 1


def test_the_flow_table_is_bounded_and_evictions_are_counted() -> None:
    frames = [(T0 + i, tcp_frame("10.1.0.1", 1000 + i, "10.1.0.2", 80, i, 0, SYN)) for i in range(50)]
    p = Pipeline(default_registry(), limits=Limits(max_flows=10))
    entries = p.feed(columns(frames))
    assert len(p.tcp) == 10
    assert p.drops["flow_table_full"] == 40
    entries += p.finish()
    assert len(entries) == 50  # every flow still shows up as a connection entry


def test_an_explicit_override_beats_the_probes() -> None:
    conv = Conversation(sport=7000).handshake().send(True, b"\x00\x01 opaque").close()
    reg = default_registry(parse_overrides("7000=http"))
    p = Pipeline(reg)
    (e,) = p.feed(conv.columns()) + p.finish()
    assert e["protocol"] == "tcp" and e["error"]["type"] == "dissection"  # forced to HTTP, HTTP said no


def test_a_bad_override_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="PORT=PROTOCOL"):
        parse_overrides("http")
    with pytest.raises(ValueError, match="no dissector named"):
        default_registry({8080: "gopher"})


def test_a_third_party_spec_takes_part_in_detection() -> None:
    class Echo:
        def __init__(self, config: object) -> None:
            pass

        def feed(self, from_client: bool, data: bytes, ts: int) -> list[object]:
            from wiretide.dissector.api import Message

            return [Message(from_client, ts, ts, len(data), {"line": data.decode(errors="replace")})]

        def gap(self, from_client: bool, size: int, ts: int) -> list[object]:
            return []

        def close(self, ts: int) -> list[object]:
            return []

    spec = ProtocolSpec(
        name="echo",
        transports=("tcp",),
        ports=(),
        probe=lambda c, s: Verdict.YES if c.startswith(b"ECHO ") else Verdict.NO,
        session=Echo,
        present=lambda q, r: Presented(summary="echo"),  # type: ignore[arg-type]
    )
    from wiretide.dissector.protocols import BUILTINS

    conv = Conversation(sport=7).handshake().send(True, b"ECHO hi").send(False, b"ECHO hi").close()
    p = Pipeline(Registry([*BUILTINS, spec]))
    (e,) = p.feed(conv.columns()) + p.finish()
    assert (
        e["protocol"] == "echo"
        and e["request"] == {"line": "ECHO hi"}
        and e["response"] == {"line": "ECHO hi"}
    )


@pytest.mark.slow
def test_100k_half_open_flows_and_random_payloads_keep_memory_bounded() -> None:
    """Bound: the default table (100k flows per transport) and random payloads grow RSS by < 400 MB."""
    proc = psutil.Process(os.getpid())
    before = proc.memory_info().rss
    p = Pipeline(default_registry())
    rnd = random.Random(1)
    total = 0
    for batch in range(20):
        frames = []
        for i in range(7500):
            n = batch * 7500 + i
            src = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            frames.append((T0 + n, tcp_frame(src, 1024 + n % 60000, "10.200.0.1", 80, n, 0, SYN)))
            if i % 3 == 0:
                payload = rnd.randbytes(rnd.randint(1, 1400))
                frames.append(
                    (T0 + n, tcp_frame(src, 1024 + n % 60000, "10.200.0.1", 80, n + 5000, 0, 0x18, payload))
                )
        total += len(p.feed(columns(frames)))
    growth = proc.memory_info().rss - before
    assert len(p.tcp) <= 100_000
    assert p.drops["flow_table_full"] == 150_000 - 100_000
    assert growth < 400 * 1024 * 1024, f"RSS grew by {growth / 1e6:.0f} MB"


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=200), max_size=30),
    payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=10),
    port=st.sampled_from([53, 80, 443, 8080, 12345]),
)
def test_random_frames_and_payloads_never_raise(
    frames: list[bytes], payloads: list[bytes], port: int
) -> None:
    conv = Conversation(sport=port).handshake()
    for i, p in enumerate(payloads):
        conv.send(i % 2 == 0, p)
    stream = [(T0 + i, f) for i, f in enumerate(frames)] + conv.close().frames
    stream += [(T0 + 10**9, udp_frame("10.0.0.9", 5000, "10.0.0.53", port, p)) for p in payloads]
    p = Pipeline(default_registry())
    for e in p.feed(columns(stream)) + p.finish():
        assert e["protocol"] and e["timestamp"] >= 0


def test_a_raw_ipv6_flow_summary_brackets_the_address_before_the_port() -> None:
    def udp6(src: str, dst: str, payload: bytes) -> bytes:
        dg = struct.pack("!HHHH", 40001, 9, 8 + len(payload), 0) + payload
        header = struct.pack("!IHBB", 6 << 28, len(dg), 17, 64)
        header += socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x86\xdd" + header + dg

    entries, _ = dissect([(T0, udp6("fd00::1", "fd00::2", b"\x00\x01 not a known protocol"))])
    assert [e["protocol"] for e in entries] == ["udp"]
    assert str(entries[0]["summary"]).startswith("udp [fd00::1]:40001 → [fd00::2]:9 ")

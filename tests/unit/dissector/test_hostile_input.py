"""Crafted traffic anyone in a cluster can send (issue #16): the pipeline never raises, counts what it
gives up, and spends bounded work per byte and bounded memory per flow.

Work is measured as Python line events in the pure-Python parsers (`sys.settrace`), memory with
tracemalloc — never wall-clock time.
"""

from __future__ import annotations

import gc
import struct
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import orjson

from wiretide.dissector.api import (
    Message,
    Presented,
    ProtocolSpec,
    SessionConfig,
    Upgrade,
    Verdict,
    Violation,
)
from wiretide.dissector.pipeline import MAX_UPGRADES, Pipeline
from wiretide.dissector.protocols import BUILTINS, grpc, http1, http2, protobuf, websocket
from wiretide.dissector.registry import Registry, default_registry

from .builders import MSS, SYN, T0, Conversation, columns, http_get, http_ok, tcp_frame

SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def h2_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 §4.1)."""
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", sid) + payload


def literal_status(value: bytes) -> bytes:
    """A header block holding only `:status: value`, a literal without indexing, raw (RFC 7541 §6.2.2)."""
    assert len(value) < 127  # a one-octet length (RFC 7541 §5.1)
    return bytes([0x08, len(value)]) + value


def grpc_trailer(name: bytes, value: bytes) -> bytes:
    """A literal header field with a new name, without indexing (RFC 7541 §6.2.2)."""
    return bytes([0x00, len(name)]) + name + bytes([len(value)]) + value


def upgrade_h2c_then(server_frames: bytes, sport: int = 80, cport: int = 40000) -> Conversation:
    """A client asks for h2c; the server's 101 and its first HTTP/2 frames travel in one segment."""
    conv = Conversation(sport=sport, cport=cport).handshake()
    conv.send(
        True,
        http_get(
            "/", extra="Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
        )
        + http2.PREFACE
        + SETTINGS_FRAME,
    )
    conv.send(
        False,
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        + SETTINGS_FRAME
        + server_frames,
        mss=60_000,
    )
    return conv


def plain_exchange(cport: int) -> Conversation:
    conv = Conversation(cport=cport, client="10.0.0.7").handshake()
    conv.send(True, http_get("/after")).send(False, http_ok(b"fine"))
    return conv.close()


def dissect(*convs: Conversation) -> tuple[list[dict[str, Any]], Pipeline]:
    frames = sorted((f for c in convs for f in c.frames), key=lambda f: f[0])
    p = Pipeline(default_registry())
    return p.feed(columns(frames)) + p.finish(), p


@contextmanager
def lines_run(*modules: Any) -> Iterator[list[int]]:
    """Counts the Python lines executed in `modules` while the block runs (an operation count)."""
    files = {m.__file__ for m in modules}
    count = [0]

    def local(frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        if event == "line":
            count[0] += 1
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        return local if frame.f_code.co_filename in files else None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield count
    finally:
        sys.settrace(old)


# ---- exceptions never escape `feed` -----------------------------------------------------------


def test_an_upgrade_and_a_malformed_first_frame_in_one_segment_never_raise() -> None:
    """The 101, then HTTP/2 whose `:status` is "1²³" (digits `int()` refuses), in one segment."""
    headers = h2_frame(http2.HEADERS, 0x5, 1, literal_status("1²³".encode()))
    bad = upgrade_h2c_then(headers).close()
    entries, p = dissect(bad, plain_exchange(41000))
    assert p.stats["upgrades_h2c"] == 1
    assert [e["status"] for e in entries if e["protocol"] == "http2"] == [None]
    after = [e for e in entries if e["path"] == "/after"]
    assert [(e["status"], e["error"]) for e in after] == [(200, None)]
    orjson.dumps(entries)


class _Raises:
    """A parser with a bug: it raises on the first bytes it is handed."""

    def __init__(self, config: SessionConfig) -> None:
        pass

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Any]:
        raise ValueError("bug")

    def gap(self, from_client: bool, size: int, ts: int) -> list[Any]:
        return []

    def close(self, ts: int) -> list[Any]:
        return []


def test_a_parser_raising_on_the_bytes_that_came_with_an_upgrade_is_a_counted_violation() -> None:
    buggy = ProtocolSpec(
        name="buggy",
        transports=("tcp",),
        ports=(),
        probe=lambda c, s: Verdict.NO,
        session=_Raises,
        present=lambda q, r: Presented(),
        detect=False,
    )
    conv = Conversation().handshake()
    conv.send(True, http_get("/", extra="Connection: upgrade\r\nUpgrade: buggy\r\n"))
    conv.send(False, b"HTTP/1.1 101 Switching\r\nUpgrade: buggy\r\n\r\nfirst bytes of the new protocol")
    conv.close()
    frames = sorted(conv.frames + plain_exchange(41000).frames, key=lambda f: f[0])
    p = Pipeline(Registry([*BUILTINS, buggy]))
    entries = p.feed(columns(frames)) + p.finish()
    assert p.stats["upgrades_buggy"] == 1
    assert p.drops["violation_buggy"] == 1
    assert [e["status"] for e in entries if e["path"] == "/"] == [101]
    assert [e["status"] for e in entries if e["path"] == "/after"] == [200]


def test_a_content_length_of_superscript_digits_is_a_violation_not_an_exception() -> None:
    for value in ("²", "1²", "٣", "12, ²"):
        session = http1.Http1Session(SessionConfig())
        events = session.feed(False, f"HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\nxx".encode(), T0)
        assert [e.reason for e in events if isinstance(e, Violation)] == ["http: invalid content-length"]
        events = http1.Http1Session(SessionConfig()).feed(
            True, f"POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n".encode(), T0
        )
        assert [e.reason for e in events if isinstance(e, Violation)] == ["http: invalid content-length"]


def test_status_and_grpc_status_that_are_not_ascii_digits_or_too_long_are_left_out() -> None:
    session = http2.Http2Session(SessionConfig())
    session.feed(True, http2.PREFACE + SETTINGS_FRAME, T0)
    request = bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"h"  # GET, http, /, :authority h
    responses: list[Message] = []
    for i, status in enumerate(["1²³".encode(), b"2" * 30, "٢٠٠".encode(), b"20", b"200"]):
        sid = 1 + 2 * i
        session.feed(True, h2_frame(http2.HEADERS, 0x5, sid, request), T0)
        block = literal_status(status) + grpc_trailer(b"content-type", b"application/grpc")
        block += grpc_trailer(b"grpc-status", b"9" * 30 if i < 4 else b"5")
        events = session.feed(False, h2_frame(http2.HEADERS, 0x5, sid, block), T0)
        assert not [e for e in events if isinstance(e, Violation)]
        responses += [e for e in events if isinstance(e, Message) and not e.is_request]
    got = [(m.fields["status"], m.fields["grpc_status"]) for m in responses]
    assert got == [(None, None), (None, None), (None, None), (None, None), (200, 5)]
    orjson.dumps([m.fields for m in responses])


def test_grpc_status_and_timeout_accept_only_ascii_digits() -> None:
    fields: dict[str, Any] = {"headers": {"grpc-status": "٣"}, "trailers": {}}
    grpc.enrich_response(fields, None, None, grpc.SchemaStore())
    assert fields["grpc_status"] is None
    fields = {"headers": {}, "trailers": {"grpc-status": "1" * 30}}
    grpc.enrich_response(fields, None, None, grpc.SchemaStore())
    assert fields["grpc_status"] is None
    assert grpc._timeout_ms("²S") is None
    assert grpc._timeout_ms("15S") == 15_000.0


def test_protobuf_varints_beyond_64_bits_never_reach_the_tree() -> None:
    ten_byte = b"\x08" + b"\xff" * 9 + b"\x7f"  # field 1, a varint with bits beyond 2^64
    tree = protobuf.decode(ten_byte)
    assert tree is not None and tree[0]["value"] < 1 << 64
    orjson.dumps(tree)
    huge_field = b"\xff" * 9 + b"\x01" + b"\x01"  # a key naming a field number beyond 2^29 - 1
    assert protobuf.decode(huge_field) is None


def test_nested_upgrades_in_one_segment_stop_at_the_bound_without_recursion() -> None:
    """1,800 back-to-back `101` answers, each upgrading to HTTP/1.1 again, in one 59 KB segment."""
    conv = Conversation().handshake()
    conv.send(True, http_get("/", extra="Connection: upgrade\r\nUpgrade: http\r\n"))
    conv.send(False, b"HTTP/1.1 101 \r\nUpgrade:http\r\n\r\n" * 1800, mss=65_000)
    conv.close()
    tracemalloc.start()
    try:
        entries, p = dissect(conv, plain_exchange(41000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert p.stats["upgrades_http"] == MAX_UPGRADES
    assert p.drops["violation_http"] == 1
    assert [e["status"] for e in entries if e["path"] == "/after"] == [200]
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_any_bytes_after_a_101_in_the_same_segment_never_raise() -> None:
    tails = [
        h2_frame(http2.HEADERS, 0x4, 1, b"\xff" * 40),
        h2_frame(http2.HEADERS, 0x5, 1, literal_status(b"9" * 13)),
        b"\x00" * 9 + b"garbage",
        b"HTTP/1.1 101 \r\nUpgrade: h2c\r\n\r\n" * 5,
    ]
    for i, tail in enumerate(tails):
        entries, p = dissect(upgrade_h2c_then(tail, cport=42000 + i).close())
        orjson.dumps(entries)
        assert entries


# ---- bounded work per byte ----------------------------------------------------------------------


def undecided_flow(total: int, segment: int) -> Conversation:
    """`total` bytes on an unhinted port, shaped like HTTP/2 frames so the probe keeps saying MAYBE."""
    conv = Conversation(sport=34567).handshake()
    data = (b"\x00\x40\x00\x00\x00\x00\x00\x00\x01" + b"\x00" * 0x4000) * (total // 0x4009 + 1)
    conv.send(True, data[:total], mss=segment)
    return conv


def test_an_undecided_flow_is_probed_a_bounded_number_of_times_whatever_its_segments() -> None:
    """64 KiB on an unhinted port in 107-byte segments: the probes' work does not grow with the
    number of segments (it re-ran over every early byte on every segment)."""
    counts = []
    for segment in (MSS, 107):
        conv = undecided_flow(64 * 1024, segment)
        p = Pipeline(default_registry())
        with lines_run(http2) as lines:
            p.feed(columns(conv.frames))
        counts.append(lines[0])
    assert counts[1] <= 2 * counts[0] + 10_000, counts
    assert counts[1] <= 8 * 64 * 1024, counts


def _after_a_gap(segments: list[bytes]) -> tuple[int, list[Any]]:
    session = http2.Http2Session(SessionConfig())
    session.feed(True, http2.PREFACE + SETTINGS_FRAME, T0)
    session.gap(True, 100, T0)
    events: list[Any] = []
    with lines_run(http2) as lines:
        for segment in segments:
            events += session.feed(True, segment, T0)
            if any(isinstance(e, Violation) for e in events):
                break  # the pipeline gives the flow up here
    return lines[0], events


def test_resynchronising_after_a_gap_scans_each_byte_a_bounded_number_of_times() -> None:
    """After a gap, one 64 KB segment: a junk byte, then 3,800 well-formed PING frames ending in a
    malformed header — every frame start used to walk the whole chain again (74 s)."""
    ping = h2_frame(http2.PING, 0, 0, b"12345678")
    hostile = b"\xff" + ping * 3800 + b"\x00\x00\x05\x03\x00\x00\x00\x00\x00"
    lines, _ = _after_a_gap([hostile])
    assert lines <= 16 * len(hostile), lines


def test_a_resynchronisation_that_never_finds_a_boundary_gives_up_within_its_budget() -> None:
    """Every 9th offset opens a 1 MB frame that runs past the buffer (never decided), in 100-byte
    segments: the scan is bounded and the direction given up as a violation."""
    hostile = b"x" + b"\x0f\xff\xff\x00\x00\x7f\xff\xff\xff" * 20_000
    lines, events = _after_a_gap([hostile[i : i + 100] for i in range(0, len(hostile), 100)])
    assert [e.reason for e in events if isinstance(e, Violation)] == [
        "http2: no frame boundary found after a gap"
    ]
    assert lines <= 16 * len(hostile), lines


# ---- bounded memory per flow --------------------------------------------------------------------


def _traced(fn: Callable[[], object]) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        kept = fn()
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current, kept


HALF_OPEN_FLOWS = 4000


def _half_open(port: int, payload: bytes) -> Callable[[], object]:
    frames = []
    for n in range(HALF_OPEN_FLOWS):
        src = f"10.9.{n >> 8}.{n & 255}"
        frames.append((T0 + n, tcp_frame(src, 20000 + n, "10.200.0.1", port, n, 0, SYN)))
        if payload:
            frames.append((T0 + n, tcp_frame(src, 20000 + n, "10.200.0.1", port, n + 1, 0, 0x18, payload)))
    cols = columns(frames)
    registry = default_registry()  # built once, outside the measurement: it is not a per-flow cost

    def run() -> object:
        p = Pipeline(registry)
        p.feed(cols)
        assert len(p.tcp) == HALF_OPEN_FLOWS
        return p

    return run


def test_half_open_flows_cost_little_memory_whatever_their_first_bytes() -> None:
    """The budget: 100k flows (the default table) within 300 MiB, so ≤ 3,145 B a flow, a request waiting
    for its answer included — and far less for a flow that is only a SYN or a few first bytes."""
    cases = {
        "syn only": (80, b"", 1100),
        "http request, unanswered": (80, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 300 * 2**20 // 100_000),
        # 2,100: the matcher's slot for responses held after a gap (2,010 B measured) and a little room
        "http/2 preface": (80, http2.PREFACE + SETTINGS_FRAME, 2100),
        "undecided bytes": (34567, b"\x00\x01" * 200, 2100),
    }
    registry = default_registry()
    fixed, _ = _traced(lambda: Pipeline(registry))  # the pipeline's own tables and caches, once
    for name, (port, payload, budget) in cases.items():
        used, _ = _traced(_half_open(port, payload))
        per_flow = (used - fixed) // HALF_OPEN_FLOWS
        assert per_flow <= budget, f"{name}: {per_flow} B per flow"


def test_a_websocket_frame_declaring_a_terabyte_keeps_only_the_cap() -> None:
    cap = 64 * 1024
    session = websocket.WebSocketSession(SessionConfig(body_cap=cap))
    head = bytes([0x82, 0x7F]) + struct.pack("!Q", 1 << 40)
    chunk = b"\xab" * 65536

    def run() -> object:
        session.feed(False, head, T0)
        for _ in range(64):  # 4 MiB of the frame's payload
            session.feed(False, chunk, T0)
        return session

    used, _ = _traced(run)
    assert used < 2 * cap + 64 * 1024, f"{used / 1e6:.1f} MB held"
    events = session.feed(False, b"", T0) + session.close(T0)
    assert not [e for e in events if isinstance(e, Upgrade)]


def test_a_streamed_websocket_frame_keeps_the_same_bytes_whatever_the_chunking() -> None:
    text = bytes(range(32, 127)) * 2000
    key = b"\x01\x82\x23\xc4"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(text))
    wire = bytes([0x81, 0xFE]) + struct.pack("!H", 65535) + key + masked[:65535]
    for step in (1, 7, 1000, len(wire)):
        session = websocket.WebSocketSession(SessionConfig(body_cap=1000))
        events: list[Any] = []
        for i in range(0, len(wire), step):
            events += session.feed(True, wire[i : i + step], T0)
        (msg,) = events
        assert msg.fields["text"] == text[:1000].decode()
        assert msg.fields["size"] == 65535 and msg.fields["truncated"]
        assert msg.size == len(wire)

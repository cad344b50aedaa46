"""A keep-alive HTTP/1 connection that crosses a capture gap (the capture restarted, a ring overflowed)
goes on pairing each request with its own response: the calls lost in the hole are lost, the ones
after it are whole and right.

When both directions have a hole, the response direction resynchronises first (its hole is given up
as soon as the client has acknowledged past it), so the first response after the hole reaches the
matcher before the request it answers, which is released a moment later from behind the client's
hole. The response waits for it; the request, stamped with the time it was captured rather than the
time it was released, started before the response and so pairs with it, and every later call with
its own response.
"""

from __future__ import annotations

from typing import Any

from tests.unit.dissector.builders import ACK, Conversation, columns, tcp_frame
from wiretide.dissector.api import Message
from wiretide.dissector.flows.tcp import TcpStream
from wiretide.dissector.matching import CLOCK_SKEW_NS, MAX_PENDING, Matcher
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

CALLS = 30
HOLE = range(10, 20)  # calls whose packets, both ways, the capture never saw


def keep_alive_with_a_hole() -> list[dict[str, Any]]:
    """GET /c/<i> answered with body r<i>, one connection, each call 200 ms apart, fed packet by packet."""
    conv = Conversation(step=200_000_000).handshake()
    seen = list(conv.frames)
    for i in range(CALLS):
        first = len(conv.frames)
        conv.send(True, f"GET /c/{i} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
        conv.send(False, b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n" + f"r{i:03d}".encode())
        ack = tcp_frame(conv.client, conv.cport, conv.server, conv.sport, conv.cseq, conv.sseq, ACK)
        conv.frames.append((conv._tick(), ack))
        if i not in HOLE:
            seen += conv.frames[first:]
    p = Pipeline(default_registry(), source="af_packet")
    out: list[dict[str, Any]] = []
    for frame in seen:
        out += p.feed(columns([frame]))
    return out + p.finish()


def pairs(entries: list[dict[str, Any]]) -> dict[str, str | None]:
    return {str(e["path"]): (e.get("response") or {}).get("body", {}).get("content") for e in entries}


def test_calls_before_the_hole_are_paired_right() -> None:
    got = pairs(keep_alive_with_a_hole())
    assert all(got[f"/c/{i}"] == f"r{i:03d}" for i in range(HOLE.start))


def test_calls_after_the_hole_are_each_paired_with_their_own_response() -> None:
    entries = keep_alive_with_a_hole()
    got = pairs(entries)
    assert {f"/c/{i}": got.get(f"/c/{i}") for i in range(HOLE.stop, CALLS)} == {
        f"/c/{i}": f"r{i:03d}" for i in range(HOLE.stop, CALLS)
    }
    assert not [e for e in entries if e.get("path") is None]  # no response emitted without its request


def test_a_request_released_from_behind_a_hole_keeps_the_time_it_was_captured() -> None:
    entries = {e["path"]: e for e in keep_alive_with_a_hole()}
    # Call i starts with its GET, frame 3 + 3i of the conversation (after the handshake's three).
    step, t0 = 200_000_000, Conversation().ts
    for i in (HOLE.stop, HOLE.stop + 1, CALLS - 1):
        assert entries[f"/c/{i}"]["timestamp"] == t0 + step * (4 + 3 * i)
        assert entries[f"/c/{i}"]["elapsed_us"] == step // 1000  # the response came one frame later


def test_reassembly_stamps_held_bytes_with_their_capture_time() -> None:
    s = TcpStream()
    assert s.segment(1, b"abc", ts=10) == (b"abc",)
    assert s.segment(7, b"ghi", ts=20) == ()
    assert s.segment(4, b"def", ts=30) == (b"def", b"ghi")
    assert list(s.stamps) == [30, 20]
    s.segment(20, b"xyz", ts=40)
    assert s.flush() == (10, b"xyz")
    assert list(s.stamps) == [40, 40]  # a gap is dated by the bytes after it


def msg(is_request: bool, ts: int, name: str) -> Message:
    return Message(is_request, ts, ts, 1, {"name": name})


def names(pairs: list[tuple[Message | None, Message | None]]) -> list[tuple[str | None, str | None]]:
    return [(q.fields["name"] if q else None, r.fields["name"] if r else None) for q, r in pairs]


MS = 1_000_000


def test_a_response_without_a_request_waits_for_one_that_started_before_it() -> None:
    m = Matcher("fifo")
    assert m.add(msg(False, 20 * MS, "r20")) == []
    assert names(m.add(msg(True, 10 * MS, "q20"))) == [("q20", "r20")]
    assert m.pending == 0


def test_a_response_older_than_the_next_request_leaves_alone_and_pairing_goes_on() -> None:
    m = Matcher("fifo")
    assert m.add(msg(False, 20 * MS, "r19")) == []  # answers a request lost in a hole
    assert names(m.add(msg(True, 30 * MS, "q20"))) == [(None, "r19")]
    assert names(m.add(msg(False, 40 * MS, "r20"))) == [("q20", "r20")]


def test_a_response_older_than_the_waiting_request_does_not_take_it() -> None:
    m = Matcher("fifo")
    m.add(msg(True, 30 * MS, "q20"))
    assert names(m.add(msg(False, 20 * MS, "r19"))) == [(None, "r19")]
    assert names(m.add(msg(False, 40 * MS, "r20"))) == [("q20", "r20")]


def test_capture_skew_below_the_tolerance_does_not_break_a_pair() -> None:
    m = Matcher("fifo")
    m.add(msg(True, 10 * MS + CLOCK_SKEW_NS // 2, "q1"))
    assert names(m.add(msg(False, 10 * MS, "r1"))) == [("q1", "r1")]
    m.add(msg(False, 20 * MS, "r2"))
    assert names(m.add(msg(True, 20 * MS + CLOCK_SKEW_NS // 2, "q2"))) == [("q2", "r2")]


def test_responses_without_requests_are_bounded_and_all_come_out() -> None:
    m = Matcher("fifo")
    out = []
    for i in range(MAX_PENDING + 10):
        out += m.add(msg(False, i * MS, f"r{i}"))
    assert names(out) == [(None, f"r{i}") for i in range(10)]
    assert m.pending == MAX_PENDING
    assert names(m.drain()) == [(None, f"r{i}") for i in range(10, MAX_PENDING + 10)]
    assert m.pending == 0


def test_a_response_only_connection_still_yields_every_response() -> None:
    """Asymmetric capture (only the server's side seen): each response is an orphan entry, none lost."""
    conv = Conversation().handshake()
    for i in range(5):
        conv.cseq += 40  # the client's bytes, never captured
        conv.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" + f"r{i:03d}".encode())
    server_side = [f for n, f in enumerate(conv.frames) if n >= 3]
    p = Pipeline(default_registry(), source="af_packet")
    entries = p.feed(columns(server_side)) + p.finish()
    bodies = [(e.get("response") or {}).get("body", {}).get("content") for e in entries if e["path"] is None]
    assert bodies == [f"r{i:03d}" for i in range(5)]
    assert all(e["error"]["type"] == "unmatched" for e in entries if e["path"] is None)

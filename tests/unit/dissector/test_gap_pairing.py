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

import pytest

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


# A capture killed and restarted under a keep-alive load (tests/integration/test_capture_restart.py):
# calls 25 ms apart on one connection, each response 1 ms after its request, the client's ACK of a
# response riding on its next request. Calls sent while no capture ran are simply not there; the
# restarted capture's first frame of the connection may be a request or a response whose request it
# missed. Every request it saw is an entry, from the first one on, each with its own response.
STEP_MS = 25
RESTART_AT = 12  # the restarted capture's first call (whole, or only its response)


def restarted_capture(
    first_seen: str, calls: int, last_seen: str = "response"
) -> tuple[list[dict[str, Any]], set[int]]:
    """Entries of a connection whose calls 4..RESTART_AT-1 (and, with `first_seen` "response", the
    request of call RESTART_AT; with `last_seen` "request", the response of call 3) the capture never
    saw, and the calls whose request it did see."""
    conv = Conversation(step=MS).handshake()
    frames: list[tuple[int, bytes, int, str]] = [(ts, f, -1, "handshake") for ts, f in conv.frames]
    start = conv.ts
    for i in range(calls):
        conv.ts = start + (i + 1) * STEP_MS * MS - MS
        (req,) = conv.segments(True, f"GET /c/{i} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
        (resp,) = conv.segments(False, b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n" + b"r%03d" % i)
        frames += [(*req, i, "request"), (*resp, i, "response")]
    conv.close()
    frames += [(ts, f, calls, "close") for ts, f in conv.frames[-3:]]

    def seen(i: int, kind: str) -> bool:
        if i == 3 and kind == "response":
            return last_seen == "response"
        return not 4 <= i < RESTART_AT and not (i == RESTART_AT and kind == "request" != first_seen)

    p = Pipeline(default_registry(), source="af_packet")
    out: list[dict[str, Any]] = []
    for ts, frame, i, kind in frames:
        if seen(i, kind):
            out += p.feed(columns([(ts, frame)]))
    requests = {i for _, _, i, kind in frames if kind == "request" and seen(i, kind)}
    return out + p.finish(), requests


@pytest.mark.parametrize("first_seen", ["request", "response"])
def test_every_request_the_restarted_capture_saw_is_an_entry_with_its_own_response(first_seen: str) -> None:
    entries, requests = restarted_capture(first_seen, calls=40)
    got = [e for e in entries if e["path"] is not None]
    assert sorted(int(e["path"].rsplit("/", 1)[1]) for e in got) == sorted(requests)
    assert pairs(got) == {f"/c/{i}": f"r{i:03d}" for i in requests}
    orphans = [e["response"]["body"]["content"] for e in entries if e["path"] is None]
    assert orphans == (["r012"] if first_seen == "response" else [])


@pytest.mark.parametrize("first_seen", ["request", "response"])
def test_the_first_calls_after_the_restart_are_entries_even_when_the_connection_then_goes_quiet(
    first_seen: str,
) -> None:
    """Within the 200 ms the reassembly waits before it gives a hole up, the connection falls silent
    (the client sends its next calls on other connections) and only closes later: held behind the
    hole until then, the calls come out at the close, none lost."""
    entries, requests = restarted_capture(first_seen, calls=RESTART_AT + 3)
    assert sorted(e["path"] for e in entries if e["path"]) == sorted(f"/c/{i}" for i in requests)


@pytest.mark.parametrize("first_seen", ["request", "response"])
def test_a_request_whose_response_went_in_the_hole_is_unanswered_and_takes_no_later_response(
    first_seen: str,
) -> None:
    """The capture went down between a request and its response. The request is an entry without a
    response; the calls after the restart keep their own responses (they used to take the next
    call's, every one of them, to the end of the connection)."""
    entries, requests = restarted_capture(first_seen, calls=40, last_seen="request")
    got = [e for e in entries if e["path"] is not None]
    assert pairs(got) == {f"/c/{i}": None if i == 3 else f"r{i:03d}" for i in requests}
    assert [e["error"]["message"] for e in got if e["path"] == "/c/3"] == ["no response seen"]


def test_waiting_requests_the_client_lost_bytes_after_leave_unanswered_at_a_gap_of_the_responses() -> None:
    m = Matcher("fifo")
    m.add(msg(True, 10 * MS, "q3"))  # its response, and call 4, go in a hole of both directions
    assert m.gap(requests=True, other_behind=False) == []
    m.add(msg(True, 30 * MS, "q5"))
    assert names(m.gap(requests=False, other_behind=False)) == [("q3", None)]
    assert names(m.add(msg(False, 31 * MS, "r5"))) == [("q5", "r5")]


def test_a_gap_of_the_responses_while_the_requests_are_held_behind_a_hole_ends_the_waiting_ones() -> None:
    m = Matcher("fifo")
    m.add(msg(True, 10 * MS, "q3"))
    assert names(m.gap(requests=False, other_behind=True)) == [("q3", None)]
    assert m.add(msg(False, 31 * MS, "r5")) == []  # waits for its request, released from the hole
    assert names(m.add(msg(True, 30 * MS, "q5"))) == [("q5", "r5")]


def test_a_gap_of_the_responses_alone_leaves_pipelined_requests_waiting() -> None:
    """Only response bytes lost (a cut in a body, a ring overflow one way): the client sent nothing
    that says a response was missed, so the requests keep their order."""
    m = Matcher("fifo")
    for i in range(3):
        m.add(msg(True, (10 + i) * MS, f"q{i}"))
    assert m.gap(requests=False, other_behind=False) == []
    assert names(m.add(msg(False, 20 * MS, "r0"))) == [("q0", "r0")]
    assert m.gap(requests=True, other_behind=False) == []  # q1, q2 sent before the requests' gap
    assert names(m.add(msg(False, 21 * MS, "r1"))) == [("q1", "r1")]
    assert names(m.gap(requests=False, other_behind=False)) == [("q2", None)]


def wire(calls: int) -> tuple[list[tuple[int, bytes]], dict[str, bytes]]:
    """One keep-alive connection's handshake, and its frames by name: call i's request "q<i>" and
    response "r<i>", and the bare ACKs that follow them from the client ("a<i>") and the server ("s<i>")."""
    conv = Conversation().handshake()
    frames: dict[str, bytes] = {}
    for i in range(calls):
        ((_, frames[f"q{i}"]),) = conv.segments(True, f"GET /c/{i} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
        resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n" + b"r%03d" % i
        ((_, frames[f"r{i}"]),) = conv.segments(False, resp)
        frames[f"a{i}"] = tcp_frame(
            conv.client, conv.cport, conv.server, conv.sport, conv.cseq, conv.sseq, ACK
        )
        frames[f"s{i}"] = tcp_frame(
            conv.server, conv.sport, conv.client, conv.cport, conv.sseq, conv.cseq, ACK
        )
    return conv.frames, frames


def killed_after_request_3(restart: list[tuple[int, str]]) -> dict[str, str | None]:
    """Calls 0-3 seen, but not call 3's response; calls 4-11 not at all; then the frames `restart`
    names, each at its time (ms after the restart). Each request's path → its response's body."""
    handshake, frames = wire(14)
    seen = [*handshake]
    t = seen[-1][0]
    for name in ("q0", "r0", "q1", "r1", "q2", "r2", "q3"):
        t += MS
        seen.append((t, frames[name]))
    t += 5_000 * MS
    seen += [(t + ms * MS, frames[name]) for ms, name in restart]
    p = Pipeline(default_registry(), source="af_packet")
    out: list[dict[str, Any]] = []
    for frame in seen:
        out += p.feed(columns([frame]))
    return pairs([e for e in out + p.finish() if e["path"] is not None])


def test_the_responses_give_their_hole_up_while_the_requests_are_still_held_behind_theirs() -> None:
    """The server's hole is given up (by a bare ACK) while call 12's request waits behind the client's
    hole: call 3, sent before that hole, is not what call 12's response answers."""
    got = killed_after_request_3([(0, "q12"), (1, "r12"), (2, "a12"), (300, "a12"), (600, "s12")])
    assert got == {"/c/0": "r000", "/c/1": "r001", "/c/2": "r002", "/c/3": None, "/c/12": "r012"}


def test_the_responses_give_their_hole_up_on_the_first_request_beyond_the_hole_of_the_requests() -> None:
    """The capture came back after call 12's request: the server's hole is given up by the ACK on call
    13's request, whose own bytes lie beyond the client's hole (not held yet when that ACK is read)."""
    got = killed_after_request_3([(1, "r12"), (2, "a12"), (300, "q13"), (301, "r13"), (600, "s13")])
    assert got == {"/c/0": "r000", "/c/1": "r001", "/c/2": "r002", "/c/3": None, "/c/13": "r013"}

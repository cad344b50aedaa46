"""HTTP/2 transcripts: a real `h2` client and server exchange bytes, the pipeline turns them into entries."""

from __future__ import annotations

import random
import struct
from typing import Any

import h2.errors
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.dissector.builders import Conversation
from tests.unit.dissector.test_http2_support import (
    H2Pair,
    classified,
    conversation,
    registry,
    run,
    session_events,
    streams,
)
from wiretide.dissector.api import Message, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import http2
from wiretide.dissector.protocols.http2 import MAX_CONTINUATIONS, PREFACE


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 §4.1), for the malformed cases a real peer will not send."""
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", sid) + payload


def frame_types(data: bytes) -> list[int]:
    out = []
    pos = 0
    while pos + 9 <= len(data):
        out.append(data[pos + 3])
        pos += 9 + int.from_bytes(data[pos : pos + 3], "big")
    return out


def by_stream(docs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(d["stream"]): d for d in streams(docs)}


def test_concurrent_streams_answered_out_of_order_pair_by_stream_id() -> None:
    p = H2Pair()
    sids = [p.request(f"/item/{i}?color=red&size={i}") for i in range(3)]
    for i, sid in reversed(list(enumerate(sids))):
        p.respond(sid, 200 + i, body=f"item {i}".encode(), headers=[("content-type", "text/plain")])
    docs = run(conversation(p.wire))
    got = by_stream(docs)
    assert sorted(got) == sids
    for i, sid in enumerate(sids):
        d = got[sid]
        assert (d["protocol"], d["version"], d["method"], d["path"], d["status"]) == (
            "http2",
            "2",
            "GET",
            f"/item/{i}",
            200 + i,
        )
        assert d["request"]["query"] == {"color": ["red"], "size": [str(i)]}
        assert d["request"]["http_version"] == "2"
        assert d["response"]["body"]["content"] == f"item {i}"
        assert d["error"] is None
        assert d["stream"] == str(sid)


def test_bodies_cookies_and_trailers_are_kept() -> None:
    p = H2Pair()
    sid = p.request(
        "/upload",
        "POST",
        body=b'{"a": 1}',
        headers=[("content-type", "application/json"), ("cookie", "a=1"), ("cookie", "b=2")],
    )
    p.respond(
        sid,
        201,
        body=b"done",
        headers=[("content-type", "text/plain"), ("set-cookie", "s=9; HttpOnly"), ("set-cookie", "t=1")],
        trailers=[("x-checksum", "9")],
    )
    (d,) = streams(run(conversation(p.wire)))
    assert d["request"]["cookies"] == {"a": "1", "b": "2"}
    assert d["request"]["headers"]["cookie"] == "a=1; b=2"  # RFC 9113 §8.2.3
    assert d["request"]["body"] == {
        "size": 8,
        "mime": "application/json",
        "encoding": "json",
        "content": '{"a": 1}',
        "truncated": False,
    }
    assert d["response"]["trailers"] == {"x-checksum": "9"}
    assert d["response"]["cookies"] == {"s": "9", "t": "1"}
    assert d["request"]["url"] == "http://svc.test/upload"


def test_a_header_block_split_into_continuation_frames_is_joined() -> None:
    p = H2Pair()
    big = [(f"x-long-{i}", "v" * 4000) for i in range(8)]  # > 16384 octets: HEADERS + CONTINUATION
    sid = p.request("/big", headers=big)
    p.respond(sid, 204)
    client_bytes = b"".join(data for from_client, data in p.wire if from_client)
    assert http2.CONTINUATION in frame_types(client_bytes[len(PREFACE) :])
    (d,) = streams(run(conversation(p.wire)))
    assert all(d["request"]["headers"][k] == v for k, v in big)
    assert d["status"] == 204


def test_padded_data_is_unpadded() -> None:
    p = H2Pair()
    sid = p.request("/pad")
    p.server.send_headers(sid, [(":status", "200")])
    p.server.send_data(sid, b"padded body", end_stream=True, pad_length=17)
    p.flush()
    (d,) = streams(run(conversation(p.wire)))
    assert d["response"]["body"]["content"] == "padded body"
    assert d["response"]["body"]["size"] == len("padded body")


def test_a_pushed_stream_is_an_entry_of_its_own() -> None:
    p = H2Pair()
    sid = p.request("/")
    p.server.push_stream(
        sid, 2, [(":method", "GET"), (":path", "/style.css"), (":scheme", "http"), (":authority", "svc.test")]
    )
    p.server.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    p.server.send_data(2, b"body{}", end_stream=True)
    p.respond(sid, 200, body=b"<html>")
    got = by_stream(run(conversation(p.wire)))
    assert got[2]["path"] == "/style.css"
    assert got[2]["request"]["pushed"] is True
    assert got[2]["response"]["body"]["content"] == "body{}"
    assert got[1]["path"] == "/"


def test_a_reset_stream_is_an_entry_with_a_connection_error() -> None:
    p = H2Pair()
    sid = p.request("/slow")
    p.client.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
    p.flush()
    (d,) = streams(run(conversation(p.wire)))
    assert d["error"] == {"type": "connection", "message": "CANCEL from the client on stream 1"}
    assert d["path"] == "/slow"
    assert d["response"]["reset"]["name"] == "CANCEL"


def test_frames_arriving_after_a_reset_do_not_make_another_entry() -> None:
    p = H2Pair()
    sid = p.request("/slow")
    p.client.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
    p.flush()
    # The server had not seen the reset yet: its answer crosses it on the wire (RFC 9113 §5.1).
    late = H2Pair()
    late.respond(late.request("/slow"), 200, body=b"too late", trailers=[("grpc-status", "0")])
    server_late = [chunk for from_client, chunk in late.wire[3:] if not from_client]
    docs = run(conversation(p.wire + [(False, b) for b in server_late]))
    (d,) = streams(docs)
    assert d["path"] == "/slow" and d["error"]["type"] == "connection"


def _pipeline_run(wire: list[tuple[bool, bytes]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    pipe = Pipeline(registry())
    docs = pipe.feed(conversation(wire)) + pipe.finish()
    return docs, dict(pipe.stats)


def test_a_graceful_goaway_is_counted_on_the_connection_and_is_no_entry() -> None:
    p = H2Pair()
    for path in ("/one", "/two"):
        p.respond(p.request(path), 200, body=b"ok")
    p.server.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=3)
    p.flush()
    docs, stats = _pipeline_run(p.wire)
    assert [(d["protocol"], d["path"], d["error"]) for d in docs] == [
        ("http2", "/one", None),
        ("http2", "/two", None),
    ]
    assert stats["http2_goaway_no_error"] == 1
    assert stats.get("http2_goaway_errors", 0) == 0


def test_a_graceful_goaway_still_refuses_the_streams_above_its_last_id() -> None:
    p = H2Pair()
    done = p.request("/one")
    p.respond(done, 200)
    refused = p.request("/two")
    p.server.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=done)
    p.flush()
    got = by_stream(run(conversation(p.wire)))
    assert sorted(got) == [done, refused]
    assert got[done]["error"] is None
    assert got[refused]["error"] == {
        "type": "connection",
        "message": f"GOAWAY NO_ERROR from the server: stream {refused} refused "
        f"(above last stream {done}, not processed)",
    }
    assert got[refused]["summary"] == "GET /two GOAWAY NO_ERROR"


def test_an_error_goaway_marks_the_streams_it_ends_and_makes_no_entry_of_its_own() -> None:
    p = H2Pair()
    done = p.request("/one")
    p.respond(done, 200)
    open_ = p.request("/slow")  # processed (at or below last_stream_id) but never answered
    refused = p.request("/two")
    p.server.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=open_)
    p.flush()
    docs, stats = _pipeline_run(p.wire)
    assert all(d["method"] != "GOAWAY" for d in docs)
    assert stats["http2_goaway_errors"] == 1
    got = by_stream([classified(d) for d in docs])
    assert sorted(got) == [done, open_, refused]
    assert got[done]["error"] is None
    assert got[refused]["error"]["message"].startswith(
        f"GOAWAY ENHANCE_YOUR_CALM from the server: stream {refused} refused"
    )
    assert got[open_]["error"] == {
        "type": "connection",
        "message": f"GOAWAY ENHANCE_YOUR_CALM from the server: stream {open_} still open when the "
        "connection ended",
    }


def test_rst_stream_error_codes_are_named_in_the_error() -> None:
    p = H2Pair()
    sid = p.request("/busy")
    p.server.reset_stream(sid, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
    p.flush()
    (d,) = streams(run(conversation(p.wire)))
    assert d["error"] == {"type": "connection", "message": f"REFUSED_STREAM from the server on stream {sid}"}
    assert d["summary"] == "GET /busy RST REFUSED_STREAM"


def test_rst_stream_no_error_after_a_complete_response_is_not_an_error() -> None:
    p = H2Pair()
    sid = p.client.get_next_available_stream_id()
    hdrs = [(":method", "POST"), (":path", "/upload"), (":scheme", "http"), (":authority", "svc.test")]
    p.client.send_headers(sid, hdrs)
    p.client.send_data(sid, b"part of a large upload")
    p.flush()
    # RFC 9113 §8.1: the server answers before the whole request arrived and stops the rest.
    p.server.send_headers(sid, [(":status", "413")], end_stream=True)
    p.server.reset_stream(sid, error_code=h2.errors.ErrorCodes.NO_ERROR)
    p.flush()
    (d,) = streams(run(conversation(p.wire)))
    assert d["status"] == 413 and d["error"] is None


def test_mid_stream_pickup_still_yields_entries_and_counts_unknown_headers() -> None:
    p = H2Pair()
    same = [("user-agent", "wiretide-test/1"), ("x-tenant", "blue")]
    for i in range(12):
        sid = p.request(f"/poll/{i}", headers=same)
        p.respond(sid, 200, body=b"ok", headers=[("content-type", "text/plain"), ("server", "h2-test")])
    full = streams(run(conversation(p.wire)))
    assert len(full) == 12
    assert all("headers_unknown" not in d["request"] for d in full)
    # The capture starts late: handshake, preface, SETTINGS and the first requests are gone.
    skip = 3 + 2 + 4 * 2
    late = streams(run(conversation(p.wire, skip=skip)))
    seen = [int(d["path"].rsplit("/", 1)[1]) for d in late]
    assert seen == sorted(seen) and seen[-1] == 11 and len(late) < 12
    assert all(d["method"] == "GET" and d["status"] == 200 for d in late)
    assert sum(d["request"].get("headers_unknown", 0) for d in late) > 0
    assert any(k.startswith(":unknown-") for d in late for k in d["request"]["headers"])


def test_pickup_counters_say_how_much_was_unknown() -> None:
    p = H2Pair()
    p.respond(p.request("/r/0", headers=[("x-k", "same")]), 200)
    cut = len(p.wire)
    for i in range(1, 4):
        p.respond(p.request(f"/r/{i}", headers=[("x-k", "same")]), 200)
    wire = p.wire[cut:]  # prefaces, SETTINGS and the first exchange (which filled the tables) lost
    sess = http2.Http2Session(http2.SessionConfig())
    for from_client, data in wire:
        sess.feed(from_client, data, 1)
    assert sess.counters["midstream_pickups"] == 2
    assert sess.counters.get("hpack_unknown", 0) > 0


# ---- bad input -----------------------------------------------------------------------------------


def _violations(wire: list[tuple[bool, bytes]]) -> list[str]:
    return [e.reason for e in session_events(wire) if isinstance(e, Violation)]


def _client_start() -> list[tuple[bool, bytes]]:
    return [(True, PREFACE + frame(http2.SETTINGS, 0, 0)), (False, frame(http2.SETTINGS, 0, 0))]


def test_malformed_frames_are_violations_not_exceptions() -> None:
    cases = {
        "SETTINGS of 5 bytes": frame(http2.SETTINGS, 0, 0, b"\x00" * 5),
        "PING on stream 1": frame(http2.PING, 0, 1, b"\x00" * 8),
        "DATA on stream 0": frame(http2.DATA, 0, 0, b"x"),
        "RST_STREAM of 3 bytes": frame(http2.RST_STREAM, 0, 1, b"\x00" * 3),
        "DATA padding": frame(http2.DATA, http2.PADDED, 1, b"\x09abc"),
        "frame of": frame(http2.DATA, 0, 1, b"\x00" * 20_000),
        "HEADERS on even stream": frame(http2.HEADERS, http2.END_HEADERS, 2, b"\x82"),
    }
    for expected, bad in cases.items():
        reasons = _violations([*_client_start(), (True, bad)])
        assert len(reasons) == 1 and expected.split(" of")[0] in reasons[0], (expected, reasons)


def test_stream_id_reuse_is_a_violation() -> None:
    p = H2Pair()
    p.respond(p.request("/a"), 200)
    replay = frame(http2.HEADERS, http2.END_HEADERS | http2.END_STREAM, 1, bytes([0x82, 0x84, 0x86]))
    reasons = _violations([*p.wire, (True, replay)])
    assert reasons == ["http2: stream id 1 reused"]


def test_a_continuation_flood_is_cut_off() -> None:
    flood = frame(http2.HEADERS, 0, 1, b"\x82") + frame(http2.CONTINUATION, 0, 1) * (MAX_CONTINUATIONS + 5)
    reasons = _violations([*_client_start(), (True, flood)])
    assert reasons == ["http2: header block too large (CONTINUATION flood)"]


def test_a_frame_inside_a_header_block_is_a_violation() -> None:
    bad = frame(http2.HEADERS, 0, 1, b"\x82") + frame(http2.PING, 0, 0, b"\x00" * 8)
    assert _violations([*_client_start(), (True, bad)]) == ["http2: frame interleaved inside a header block"]


def test_an_hpack_bomb_degrades_the_flow_to_raw_and_is_counted() -> None:
    big = b"\x40\x05x-big" + bytes([0x7F, 0x81, 0x17]) + b"b" * 3000  # literal, indexed: 3000-byte value
    bomb = bytes([0x80 | 62]) * 200
    wire = [
        *_client_start(),
        (True, frame(http2.HEADERS, http2.END_HEADERS, 1, b"\x82\x84\x86" + big)),
        (True, frame(http2.HEADERS, http2.END_HEADERS, 3, b"\x82\x84\x86" + bomb)),
    ]
    conv = conversation(wire)
    pipe = Pipeline(registry())
    docs = pipe.feed(conv) + pipe.finish()
    assert pipe.stats["violations"] == 1
    assert pipe.drops["violation_http2"] == 1
    assert any(d["protocol"] == "tcp" and "HPACK" in (d["error"] or {}).get("message", "") for d in docs)


def test_a_capture_gap_resumes_at_the_next_frame_and_flags_the_cut_streams() -> None:
    p = H2Pair()
    sid = p.request("/stream")
    p.server.send_headers(sid, [(":status", "200")])
    p.flush()
    for i in range(3):
        p.server.send_data(sid, f"chunk {i};".encode())
        p.flush()
    p.server.send_data(sid, b"end", end_stream=True)
    p.flush()
    lost = next(i for i, (fc, data) in enumerate(p.wire) if not fc and b"chunk 1;" in data)
    conv = Conversation(sport=50051)
    conv.handshake()
    for n, (from_client, data) in enumerate(p.wire):
        packets = conv.segments(from_client, data)  # sequence numbers advance either way
        if n != lost:
            conv.frames.extend(packets)
    conv.close()
    (d,) = streams(run(conv.columns()))
    assert d["path"] == "/stream" and d["status"] == 200
    assert d["error"] == {"type": "dissection", "message": "message cut by a capture gap"}
    assert d["response"]["body"]["content"] == "chunk 0;chunk 2;end"


# ---- properties ----------------------------------------------------------------------------------


def _transcript() -> list[tuple[bool, bytes]]:
    p = H2Pair()
    for i in range(4):
        sid = p.request(f"/p/{i}", "POST", body=b"x" * (i * 700), headers=[("content-type", "text/plain")])
        p.respond(sid, 200, body=b"y" * (i * 900), trailers=[("x-n", str(i))])
    return p.wire


def _messages(events: list[Any]) -> list[tuple[bool, Any, dict[str, Any]]]:
    return [(e.is_request, e.key, e.fields) for e in events if isinstance(e, Message)]


TRANSCRIPT = _transcript()


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=300))
def test_any_rechunking_gives_the_same_messages(seed: int, largest: int) -> None:
    rnd = random.Random(seed)
    chunks: list[tuple[bool, bytes]] = []
    for from_client, data in TRANSCRIPT:
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, largest)
            chunks.append((from_client, data[pos : pos + n]))
            pos += n
    assert _messages(session_events(chunks)) == _messages(session_events(TRANSCRIPT))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=8), st.booleans())
def test_random_bytes_never_raise(chunks: list[tuple[bool, bytes]], with_preface: bool) -> None:
    if with_preface:
        chunks = [(True, PREFACE), *chunks]
    session_events(chunks)
    http2.probe(chunks[0][1] if chunks else b"", b"")


def _grpc_transcript() -> list[tuple[bool, bytes]]:
    p = H2Pair()
    head = [("content-type", "application/grpc"), ("te", "trailers")]
    for i in range(3):
        sid = p.request("/pkg.Svc/Call", "POST", body=b"\x00\x00\x00\x00\x02\x08" + bytes([i]), headers=head)
        p.respond(sid, 200, body=b"\x00\x00\x00\x00\x00", headers=head[:1], trailers=[("grpc-status", "0")])
    return p.wire


GRPC_TRANSCRIPT = _grpc_transcript()


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=4000), st.integers(min_value=0, max_value=4000))
def test_a_capture_starting_anywhere_never_raises(client_skip: int, server_skip: int) -> None:
    """Mid-stream pickup at any byte offset of either direction: events, never an exception."""
    c = b"".join(d for fc, d in GRPC_TRANSCRIPT if fc)[client_skip:]
    s = b"".join(d for fc, d in GRPC_TRANSCRIPT if not fc)[server_skip:]
    events = session_events([(True, c[: len(c) // 2]), (False, s), (True, c[len(c) // 2 :])])
    for e in events:
        assert isinstance(e, (Message, Violation))


def test_the_probe_says_yes_to_a_preface_and_no_to_http1_and_tls() -> None:
    """Without a preface the probe needs both sides: one side may start inside a long frame."""
    assert http2.probe(PREFACE, b"") == Verdict.YES
    assert http2.probe(PREFACE[:10], b"") == Verdict.MAYBE
    assert http2.probe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n") == Verdict.NO
    hello = bytes.fromhex("16030100c8010000c40303") + bytes(32)
    server_hello = bytes.fromhex("160303005a020000560303") + bytes(40)
    assert http2.probe(hello, server_hello) == Verdict.NO

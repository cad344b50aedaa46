"""HTTP/1.x transcripts: client sends these bytes, server answers these, these messages come out."""

from __future__ import annotations

import gzip
import itertools
import zlib
from typing import Any

import brotli
from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import Message, SessionConfig, Upgrade, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols.http1 import MAX_HEAD_BYTES, Http1Session, probe
from wiretide.dissector.registry import default_registry

from .builders import Conversation, http_get, http_ok


def run(client: bytes, server: bytes, cap: int = 64 * 1024, chunk: int = 0) -> list[Any]:
    s = Http1Session(SessionConfig(body_cap=cap))
    out: list[Any] = []
    step = chunk or max(1, len(client), len(server))
    for i in range(0, len(client), step):
        out += s.feed(True, client[i : i + step], 1)
    for i in range(0, len(server), step):
        out += s.feed(False, server[i : i + step], 2)
    out += s.close(3)
    return out


def msgs(events: list[Any], request: bool) -> list[dict[str, Any]]:
    return [e.fields for e in events if isinstance(e, Message) and e.is_request == request]


def test_a_get_and_its_200_become_one_request_and_one_response() -> None:
    ev = run(http_get("/a/b%20c?x=1&x=2&y=", extra="Cookie: sid=42; theme=dark\r\n"), http_ok(b"hi"))
    (req,) = msgs(ev, True)
    (resp,) = msgs(ev, False)
    assert (
        req["method"] == "GET"
        and req["path"] == "/a/b%20c"
        and req["url"] == "http://example.test/a/b%20c?x=1&x=2&y="
    )
    assert req["path_segments"] == ["a", "b c"]
    assert req["query"] == {"x": ["1", "2"], "y": [""]} and req["query_string"] == "x=1&x=2&y="
    assert req["cookies"] == {"sid": "42", "theme": "dark"}
    assert req["headers"]["user-agent"] == "test"
    assert resp["status"] == 200 and resp["body"]["content"] == "hi" and resp["body"]["encoding"] == "text"


def test_repeated_headers_are_joined_with_a_comma() -> None:
    ev = run(http_get(extra="Accept: a\r\nAccept: b\r\n"), b"")
    assert msgs(ev, True)[0]["headers"]["accept"] == "a, b"


def test_pipelined_requests_come_out_in_order() -> None:
    client = http_get("/1") + http_get("/2") + http_get("/3")
    server = http_ok(b"one") + http_ok(b"two") + http_ok(b"three")
    ev = run(client, server)
    assert [r["path"] for r in msgs(ev, True)] == ["/1", "/2", "/3"]
    assert [r["body"]["content"] for r in msgs(ev, False)] == ["one", "two", "three"]


def test_chunked_bodies_with_extensions_and_trailers_are_joined() -> None:
    server = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
    )
    (resp,) = msgs(run(http_get(), server), False)
    assert resp["body"]["content"] == "hello world" and resp["body"]["size"] == 11
    assert resp["trailers"] == {"x-checksum": "abc"}


def test_a_response_to_head_has_no_body_even_with_content_length() -> None:
    client = b"HEAD /f HTTP/1.1\r\nHost: h\r\n\r\n" + http_get("/next")
    server = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + http_ok(b"second")
    resps = msgs(run(client, server), False)
    assert [r["status"] for r in resps] == [200, 200]
    assert resps[0]["body"]["size"] == 0 and resps[1]["body"]["content"] == "second"


def test_204_and_304_end_with_their_headers() -> None:
    server = (
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"
        + http_ok(b"x")
    )
    resps = msgs(run(http_get() * 3, server), False)
    assert [r["status"] for r in resps] == [204, 304, 200]


def test_expect_100_continue_keeps_the_interim_response_on_the_final_one() -> None:
    client = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nDATA"
    server = b"HTTP/1.1 100 Continue\r\n\r\n" + http_ok(b"done")
    ev = run(client, server)
    (req,) = msgs(ev, True)
    (resp,) = msgs(ev, False)
    assert req["body"]["content"] == "DATA"
    assert resp["status"] == 200 and resp["informational"][0]["status"] == 100


def test_a_body_delimited_by_close_ends_when_the_connection_does() -> None:
    server = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    (resp,) = msgs(run(http_get(), server), False)
    assert resp["body"]["content"] == "until the end" and resp["http_version"] == "1.0"


def test_gzip_deflate_and_brotli_bodies_are_decoded() -> None:
    text = b'{"k": "' + b"v" * 500 + b'"}'
    for coding, packed in (
        ("gzip", gzip.compress(text)),
        ("deflate", zlib.compress(text)),
        ("br", brotli.compress(text)),
    ):
        (resp,) = msgs(
            run(http_get(), http_ok(packed, "application/json", f"Content-Encoding: {coding}\r\n")), False
        )
        assert resp["body"]["encoding"] == "json", coding
        assert resp["body"]["content"].encode() == text, coding


def test_bodies_beyond_the_cap_are_truncated_and_flagged() -> None:
    (resp,) = msgs(run(http_get(), http_ok(b"x" * 5000), cap=1000), False)
    assert resp["body"]["truncated"] is True and resp["body"]["size"] == 5000
    assert len(resp["body"]["content"]) == 1000


def test_a_decompression_bomb_costs_at_most_the_cap() -> None:
    bomb = gzip.compress(b"\0" * 20_000_000)
    (resp,) = msgs(
        run(http_get(), http_ok(bomb, "application/octet-stream", "Content-Encoding: gzip\r\n"), cap=4096),
        False,
    )
    assert resp["body"]["truncated"] is True
    assert len(resp["body"]["content"]) <= 4096 * 4 // 3 + 4


def test_a_websocket_upgrade_hands_over_the_bytes_after_the_101() -> None:
    client = http_get("/ws", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n") + b"\x81\x80abcd"
    server = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi"
    )
    ev = run(client, server)
    up = [e for e in ev if isinstance(e, Upgrade)]
    assert up == [Upgrade("ws", b"\x81\x80abcd", b"\x81\x02hi")]
    assert msgs(ev, False)[0]["status"] == 101


def test_garbage_after_a_valid_request_is_a_violation() -> None:
    ev = run(http_get() + b"\x00\x01\x02 not http at all\r\n\r\n", b"")
    assert len(msgs(ev, True)) == 1
    assert any(isinstance(e, Violation) for e in ev)


def test_an_invalid_chunk_size_is_a_violation() -> None:
    server = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ev = run(http_get(), server)
    assert [str(e.reason) for e in ev if isinstance(e, Violation)] == ["http: invalid chunk size"]


def test_a_10_mb_header_line_is_a_violation_and_buffers_stay_bounded() -> None:
    s = Http1Session(SessionConfig())
    out = s.feed(True, b"GET / HTTP/1.1\r\nX-Big: ", 1)
    piece = b"a" * 65536
    for _ in range(160):  # 10 MiB
        out += s.feed(True, piece, 1)
        assert len(s.client.buf) <= MAX_HEAD_BYTES + len(piece)
    assert [e.reason for e in out if isinstance(e, Violation)] == ["http: header block too large"]


def test_a_header_flood_keeps_the_first_headers_and_counts_the_rest() -> None:
    flood = "".join(f"X-{i}: {i}\r\n" for i in range(1000))
    (req,) = msgs(run(http_get(extra=flood), b""), True)
    assert len(req["headers"]) == 256 and req["headers_dropped"] == 1000 + 2 - 256


def test_conflicting_content_lengths_are_a_violation() -> None:
    ev = run(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", b"")
    assert any(isinstance(e, Violation) for e in ev)


def test_the_probe_answers_yes_maybe_and_no() -> None:
    assert probe(b"GET / HTTP/1.1\r\n", b"") == Verdict.YES
    assert probe(b"", b"HTTP/1.1 200 OK\r\n") == Verdict.YES
    assert probe(b"GE", b"") == Verdict.MAYBE
    assert probe(b"\x16\x03\x01\x02\x00\x01", b"") == Verdict.NO
    assert probe(b"SSH-2.0-OpenSSH", b"") == Verdict.NO


EXCHANGE = (
    http_get("/x?q=1")
    + b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    http_ok(b"first") + b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nmade\r\n0\r\n\r\n",
)


@settings(max_examples=200, deadline=None)
@given(
    cuts_c=st.lists(st.integers(min_value=1, max_value=200), max_size=15),
    cuts_s=st.lists(st.integers(min_value=1, max_value=200), max_size=15),
)
def test_any_rechunking_of_the_stream_gives_the_same_messages(cuts_c: list[int], cuts_s: list[int]) -> None:
    expected = run(*EXCHANGE)
    s = Http1Session(SessionConfig())
    got: list[Any] = []
    for data, cuts, side in ((EXCHANGE[0], cuts_c, True), (EXCHANGE[1], cuts_s, False)):
        points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
        for a, b in itertools.pairwise(points):
            got += s.feed(side, data[a:b], 1 if side else 2)
    got += s.close(3)
    assert [e.fields for e in got] == [e.fields for e in expected]


@settings(max_examples=300, deadline=None)
@given(
    client=st.binary(max_size=600), server=st.binary(max_size=600), gap=st.integers(min_value=0, max_value=50)
)
def test_random_bytes_never_raise(client: bytes, server: bytes, gap: int) -> None:
    s = Http1Session(SessionConfig(body_cap=100))
    s.feed(True, b"GET / HTTP/1.1\r\n" + client, 1)
    s.feed(False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + server, 2)
    if gap:
        s.gap(False, gap, 3)
        s.feed(False, server, 4)
    s.close(5)


def test_http_is_found_on_any_port_by_its_content() -> None:
    conv = (
        Conversation(sport=18080).handshake().send(True, http_get("/odd-port")).send(False, http_ok()).close()
    )
    p = Pipeline(default_registry())
    entries = p.feed(conv.columns()) + p.finish()
    (e,) = entries
    assert e["protocol"] == "http" and e["path"] == "/odd-port" and e["status"] == 200
    assert e["src"] == {"ip": "10.0.0.1", "port": 40000} and e["dst"] == {"ip": "10.0.0.2", "port": 18080}
    assert e["error"] is None and e["elapsed_us"] > 0


def test_random_bytes_on_port_80_become_a_raw_tcp_entry_with_the_violation() -> None:
    conv = Conversation(sport=80).handshake().send(True, b"GET \x00\xff\xfe garbage\r\n\r\n").close()
    p = Pipeline(default_registry())
    (e,) = p.feed(conv.columns()) + p.finish()
    assert e["protocol"] == "tcp" and e["error"]["type"] == "dissection"
    assert p.stats["violations"] == 1

"""The per-call path of HTTP/2 and gRPC: its fast paths (schemaless protobuf read in place, text
fields never tried as messages, header blocks decoded straight into lists) give exactly the entries
the straightforward code gave."""

from __future__ import annotations

import random
from typing import Any

from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.dissector.test_http2_support import H2Pair, grpc_frame, session_events
from wiretide.dissector.api import Message
from wiretide.dissector.protocols import grpc, hpack, protobuf

from . import grpc_framer_reference, protobuf_reference


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _len(field: int, raw: bytes) -> bytes:
    return _key(field, 2) + _varint(len(raw)) + raw


def _same(data: bytes) -> None:
    assert protobuf.decode(data) == protobuf_reference.decode(data)


_FIELD = st.integers(min_value=1, max_value=40) | st.sampled_from([0, 1 << 29, (1 << 29) - 1])
_TEXT = st.text(max_size=12) | st.sampled_from(["", "a", "ab", "é", "a\tb", "x\x00y", "\x7f", "\u2028"])
_SCALAR = st.one_of(
    st.builds(lambda f, v: _key(f, 0) + _varint(v), _FIELD, st.integers(0, (1 << 64) - 1)),
    st.builds(lambda f, v: _key(f, 1) + v, _FIELD, st.binary(min_size=0, max_size=9)),
    st.builds(lambda f, v: _key(f, 5) + v, _FIELD, st.binary(min_size=0, max_size=5)),
    st.builds(lambda f, t: _len(f, t.encode()), _FIELD, _TEXT),
    st.builds(_len, _FIELD, st.binary(max_size=12)),
)


def _nest(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    joined = st.lists(children, max_size=4).map(b"".join)
    return st.one_of(
        st.builds(_len, _FIELD, joined),
        st.builds(lambda f, body: _key(f, 3) + body + _key(f, 4), _FIELD, joined),  # a group
        st.builds(lambda f, body: _key(f, 3) + body + _key(f + 1, 4), _FIELD, joined),  # a wrong end
    )


_MESSAGE = st.lists(st.recursive(_SCALAR, _nest, max_leaves=20), max_size=6).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(_MESSAGE)
def test_generated_messages_decode_to_the_very_tree_of_the_straightforward_decoder(data: bytes) -> None:
    _same(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 8))
def test_random_and_cut_bytes_decode_as_the_straightforward_decoder_does(data: bytes, cut: int) -> None:
    _same(data)
    _same(data[: max(len(data) - cut, 0)])


def test_edge_messages_decode_as_the_straightforward_decoder_does() -> None:
    cases = [
        b"",
        _len(1, b""),
        _len(1, b"A"),  # one printable byte: never a message
        _len(1, b"\x08"),  # one byte that is not text either
        _len(1, b"ab"),  # "ab" parses as field 12 = 98, and is still text
        _len(1, _key(2, 0) + b"\x01"),  # a nested message
        _len(1, "héllo".encode()),
        _len(1, b"line\r\nnext\ttab"),
        _len(1, b"\xff\xfe\x00"),
        _len(1, b"x" * (protobuf.MAX_SHOWN + 10)),
        _len(1, "é".encode() * protobuf.MAX_SHOWN),
        _len(1, bytes(range(256))),
        _key(1, 0) + b"\xff" * 9 + b"\x01",  # a 10-byte varint: -1 as int64
        _key(1, 0) + b"\xff" * 10 + b"\x01",  # 11 bytes: not a varint
        _key(1, 3) + _key(2, 0) + b"\x05" + _key(1, 4),
        _key(1, 4),  # an end-group without its start
        _key(1, 6) + b"\x00",  # wire types 6 and 7 do not exist
        _key(1, 1) + b"\x01" * 8 + _key(2, 5) + b"\x02" * 4,
    ]
    deep = b""
    for _ in range(protobuf.MAX_DEPTH + 5):
        deep = _len(1, deep + _key(2, 0) + b"\x01")
    cases.append(deep)
    groups = _key(1, 0) + b"\x01"
    for depth in range(protobuf.MAX_DEPTH + 3):
        groups = _key(depth + 1, 3) + groups + _key(depth + 1, 4)
    cases.append(groups)
    for data in cases:
        _same(data)


def test_the_field_budget_counts_and_restores_as_the_straightforward_decoder_does() -> None:
    many = _key(1, 0) + b"\x01"
    inner = many * 30
    near = many * (protobuf.MAX_FIELDS - 20)
    # Nested messages spend the budget; the one that runs it out is shown as bytes (its spending undone).
    for extra in (0, 5, 10, 19, 20, 21, 40):
        _same(near + _len(2, inner) + many * extra)
        _same(near + _len(2, inner + b"\x00") + many * extra)  # a nested attempt that fails late
        _same(_len(3, near + _len(2, inner)) + many * extra)
    _same(many * (protobuf.MAX_FIELDS + 1))
    _same(many * protobuf.MAX_FIELDS)


# ---- the gRPC message framer ---------------------------------------------------------------------


def _framer_state(f: grpc.MessageFramer | grpc_framer_reference.MessageFramer) -> tuple[Any, ...]:
    listed = [(m.compressed, m.size, bytes(m.data), m.complete) for m in f.messages]
    return (listed, f.count, f.total, f.kept, f.dropped, f.realigned, f.remaining, f.payloads())


def _feed_both(cap: int, steps: list[bytes | None]) -> None:
    """Each step a DATA payload, or None for a capture gap; both framers must agree after each."""
    new, old = grpc.MessageFramer(cap), grpc_framer_reference.MessageFramer(cap)
    for step in steps:
        if step is None:
            new.lost()
            old.lost()
        else:
            new.feed(step)
            old.feed(step)
        assert _framer_state(new) == _framer_state(old)


_GRPC_MESSAGE = st.builds(
    lambda flag, payload: bytes([flag]) + len(payload).to_bytes(4, "big") + payload,
    st.sampled_from([0, 1, 0x80, 2]),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_GRPC_MESSAGE, max_size=12),
    st.lists(st.integers(1, 50), min_size=1, max_size=30),
    st.lists(st.integers(0, 6), max_size=4),
    st.integers(0, 120),
)
def test_messages_split_anyhow_and_cut_by_gaps_frame_as_the_straightforward_framer_did(
    messages: list[bytes], sizes: list[int], gaps: list[int], cap: int
) -> None:
    data = b"".join(messages)
    steps: list[bytes | None] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        steps.append(data[pos : pos + n])
        if i in gaps:
            steps.append(None)
        pos += n
        i += 1
    _feed_both(cap, steps)


def test_beyond_the_listed_messages_one_equal_to_the_last_listed_is_still_kept_as_before() -> None:
    # The last listed message's prefix ends a DATA frame and a gap follows: it stays empty and open.
    first = b"".join(b"\x00\x00\x00\x00\x01" + bytes([i]) for i in range(grpc.MAX_LISTED - 1))
    steps: list[bytes | None] = [first + b"\x00\x00\x00\x00\x03", None]
    # After the gap, an unlisted message of the same shape: compared by value, it counts as listed.
    steps += [b"\x00\x00\x00\x00\x03abc", b"\x00\x00\x00\x00\x02de"]
    _feed_both(1 << 16, steps)
    framer = grpc.MessageFramer(1 << 16)
    for step in steps:
        if step is None:
            framer.lost()
        else:
            framer.feed(step)
    assert framer.count == grpc.MAX_LISTED + 2
    assert framer.kept == grpc.MAX_LISTED - 1 + 3  # "abc" kept (as ever); "de" not
    assert framer.dropped == 2


# ---- HTTP/2 sessions -----------------------------------------------------------------------------


def _grpc_transcript() -> list[tuple[bool, bytes]]:
    p = H2Pair()
    for i in range(3):
        request = _len(1, f"user-{i}".encode()) + _key(2, 0) + _varint(i)
        sid = p.request(
            "/shop.CartService/GetCart",
            "POST",
            body=grpc_frame(request) + grpc_frame(b"\x08\x01"),
            headers=[("content-type", "application/grpc"), ("grpc-timeout", f"{i + 1}S")],
        )
        reply = b"".join(_len(1, f"product-{k}".encode()) for k in range(i * 40))
        p.respond(
            sid,
            200,
            body=grpc_frame(reply) + grpc_frame(_len(2, b"\x00\xff")),
            headers=[("content-type", "application/grpc")],
            trailers=[("grpc-status", str(i)), ("grpc-message", "a%20b")],
        )
    sid = p.request("/plain", "POST", body=b"x" * 3000, headers=[("content-type", "text/plain")])
    p.server.send_headers(sid, [(":status", "103"), ("link", "</a>")])  # an interim response
    p.flush()
    p.respond(sid, 200, body=b"y" * 5000, headers=[("Set-Cookie", "a=1; Path=/"), ("cookie", "c=3")])
    return p.wire


GRPC_TRANSCRIPT = _grpc_transcript()


def _messages(events: list[Any]) -> list[tuple[bool, Any, bool, dict[str, Any]]]:
    return [(e.is_request, e.key, e.truncated, e.fields) for e in events if isinstance(e, Message)]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=400))
def test_grpc_calls_rechunked_anyhow_give_the_same_messages(seed: int, largest: int) -> None:
    # Segments that start on a frame boundary are framed in place; the others go through the buffer.
    rnd = random.Random(seed)
    chunks: list[tuple[bool, bytes]] = []
    for from_client, data in GRPC_TRANSCRIPT:
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, largest)
            chunks.append((from_client, data[pos : pos + n]))
            pos += n
    assert _messages(session_events(chunks)) == _messages(session_events(GRPC_TRANSCRIPT))


def test_a_grpc_transcript_gives_the_entries_it_always_gave() -> None:
    got = _messages(session_events(GRPC_TRANSCRIPT))
    assert len(got) == 8
    req, resp = got[0][3], got[1][3]
    assert list(req) == [
        "method", "url", "path", "query_string", "query", "http_version", "headers", "cookies", "body",
        "stream", "http_method", "service", "grpc_web", "messages", "message_count", "timeout_ms",
    ]  # fmt: skip
    assert req["body"] == {
        "size": 22,
        "mime": "application/grpc",
        "encoding": "base64",
        "content": "",
        "truncated": False,
    }
    assert req["messages"][0]["fields"] == [
        {"field": 1, "wire": "len", "size": 6, "string": "user-0"},
        {"field": 2, "wire": "varint", "value": 0},
    ]
    assert list(resp) == [
        "status", "http_version", "headers", "trailers", "cookies", "body", "stream",
        "grpc_status", "grpc_message", "grpc_status_name", "messages", "message_count",
    ]  # fmt: skip
    assert (resp["grpc_status"], resp["grpc_message"], resp["trailers"]["grpc-status"]) == (0, "a b", "0")
    assert resp["messages"][1]["fields"] == [{"field": 2, "wire": "len", "size": 2, "bytes": "AP8="}]
    plain_req, plain_resp = got[6][3], got[7][3]
    assert plain_req["body"]["content"] == "x" * 3000 and "messages" not in plain_req
    assert plain_resp["informational"] == [{"status": 103, "headers": {"link": "</a>"}}]
    assert plain_resp["cookies"] == {"a": "1"} and plain_resp["headers"]["cookie"] == "c=3"


# ---- HPACK Huffman strings -----------------------------------------------------------------------


def _library_huffman(raw: bytes) -> bytes | None:
    try:
        return decode_huffman(raw)
    except HPACKDecodingError:
        return None


def _our_huffman(raw: bytes) -> bytes | None:
    try:
        return hpack._huffman(raw)
    except hpack.HpackError:
        return None


_ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=3))
def test_huffman_strings_decode_as_the_hpack_package_decodes_them(plain: bytes, tail: bytes) -> None:
    coded = _ENCODER.encode(plain)
    assert _our_huffman(coded) == plain
    for raw in (plain, coded + tail, coded[:-1], tail + coded, coded + b"\xff", coded[: len(coded) // 2]):
        assert _our_huffman(raw) == _library_huffman(raw)


def test_huffman_padding_and_eos_are_refused_as_the_hpack_package_refuses_them() -> None:
    eos = (1 << 30) - 1  # 30 one bits
    cases = [
        b"",
        b"\xff",  # eight bits of padding
        b"\xfe",  # padding that is not all ones
        b"\x1f",  # "a" (00011) and three ones of padding
        (eos << 2 | 0b11).to_bytes(4, "big"),  # EOS, then padding
        ((0b00011 << 30 | eos) << 3 | 0b111).to_bytes(5, "big"),  # "a" then EOS
        bytes(range(256)),
    ]
    for raw in cases:
        assert _our_huffman(raw) == _library_huffman(raw)

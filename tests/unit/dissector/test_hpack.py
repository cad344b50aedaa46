"""HPACK decoding: the RFC 7541 Appendix C transcripts, a real encoder's output, and hostile blocks."""

from __future__ import annotations

import contextlib

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.protocols.hpack import (
    MAX_HEADER_LIST,
    MAX_TABLE_SIZE,
    HpackDecoder,
    HpackError,
)

# RFC 7541 C.3: three requests on one connection, no Huffman coding.
C3 = (
    "828684410f7777772e6578616d706c652e636f6d",
    "828684be58086e6f2d6361636865",
    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
)
# RFC 7541 C.4: the same requests, Huffman-coded.
C4 = (
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
)
EXPECTED = (
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
    [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
)
# Table sizes after each request (RFC 7541 C.3.1-C.3.3).
SIZES = (57, 110, 164)


@pytest.mark.parametrize("blocks", [C3, C4], ids=["raw", "huffman"])
def test_the_rfc_request_transcripts_decode_with_the_table_sizes_the_rfc_gives(
    blocks: tuple[str, ...],
) -> None:
    dec = HpackDecoder()
    for hexblock, want, size in zip(blocks, EXPECTED, SIZES, strict=True):
        block = dec.decode(bytes.fromhex(hexblock))
        assert list(block.fields) == want
        assert dec.size == size
        assert block.unknown == 0


def test_a_real_encoders_blocks_decode_back_to_its_headers_through_evictions() -> None:
    enc = hpack.Encoder()
    enc.header_table_size = 256  # small table: entries are evicted all the time
    dec = HpackDecoder()
    for i in range(200):
        headers = [(":status", "200"), ("x-request-id", f"req-{i}"), ("x-shared", "v" * (i % 40))]
        assert list(dec.decode(enc.encode(headers)).fields) == headers
    assert dec.size <= 256


def test_a_table_size_update_above_the_advertised_limit_is_refused() -> None:
    dec = HpackDecoder()
    dec.set_limit(1024)
    with pytest.raises(HpackError, match="table size update"):
        dec.decode(bytes([0x3F, 0xE1, 0x1F]))  # size update to 4096 (RFC 7541 §6.3)


def test_an_advertised_table_size_is_clamped_to_our_own_bound() -> None:
    dec = HpackDecoder()
    dec.set_limit(1 << 30)
    assert dec.limit == MAX_TABLE_SIZE


def test_a_size_update_after_a_header_field_is_refused() -> None:
    with pytest.raises(HpackError, match="after a header field"):
        HpackDecoder().decode(bytes([0x82, 0x20]))


def test_an_hpack_bomb_referencing_one_big_entry_many_times_is_stopped() -> None:
    enc = hpack.Encoder()
    big = ("x-big", "b" * 3000)
    first = enc.encode([big])
    dec = HpackDecoder()
    dec.decode(first)
    bomb = bytes([0x80 | 62]) * (MAX_HEADER_LIST // 3000 + 10)  # index 62 = the big entry
    with pytest.raises(HpackError, match="header list too large"):
        dec.decode(bomb)


def test_an_overlong_integer_is_refused() -> None:
    with pytest.raises(HpackError, match="integer"):
        HpackDecoder().decode(bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))


def test_a_string_running_past_the_block_is_refused() -> None:
    with pytest.raises(HpackError, match="past the block"):
        HpackDecoder().decode(bytes([0x40, 0x0A]) + b"abc")


def test_an_index_beyond_a_known_table_is_an_error() -> None:
    with pytest.raises(HpackError, match="beyond"):
        HpackDecoder().decode(bytes([0x80 | 70]))


def test_mid_stream_unknown_indexes_become_unknown_headers_and_are_counted() -> None:
    enc = hpack.Encoder()
    enc.encode([("x-seen-before-capture", "1"), ("server", "early")])  # the capture missed this block
    block = enc.encode([(":status", "200"), ("x-seen-before-capture", "1"), ("server", "late")])
    dec = HpackDecoder(complete=False)
    got = dec.decode(block)
    assert got.fields[0] == (":status", "200")
    assert got.unknown >= 1
    assert any(name.startswith(":unknown-") for name, _ in got.fields)
    assert ("server", "late") in got.fields  # a literal with a static name is still recovered
    assert dec.unknown_total == got.unknown


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_blocks_only_ever_raise_hpack_error(data: bytes) -> None:
    for complete in (True, False):
        with contextlib.suppress(HpackError):
            HpackDecoder(complete=complete).decode(data)

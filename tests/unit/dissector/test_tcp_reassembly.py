"""TCP reassembly of one direction: order, retransmissions, overlaps, holes and wrap-around."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.flows.tcp import MAX_BUFFERED_BYTES, REORDER_WINDOW_NS, TcpStream


def collect(stream: TcpStream, segments: list[tuple[int, bytes]]) -> list[bytes | int]:
    out: list[bytes | int] = []
    for seq, data in segments:
        out.extend(stream.segment(seq & 0xFFFFFFFF, data))
    out.extend(stream.flush())
    return out


def joined(chunks: list[bytes | int]) -> bytes:
    return b"".join(c for c in chunks if isinstance(c, bytes))


def test_in_order_segments_come_out_as_they_went_in() -> None:
    s = TcpStream()
    s.syn(99)
    assert collect(s, [(100, b"abc"), (103, b"def")]) == [b"abc", b"def"]


def test_an_out_of_order_segment_waits_for_the_hole_to_fill() -> None:
    s = TcpStream()
    s.syn(99)
    assert s.segment(103, b"def") == ()
    assert s.segment(100, b"abc") == (b"abc", b"def")
    assert s.out_of_order == 1


def test_a_retransmission_is_delivered_once_and_counted() -> None:
    s = TcpStream()
    s.syn(0)
    assert joined(collect(s, [(1, b"hello"), (1, b"hello"), (6, b"!")])) == b"hello!"
    assert s.retransmissions == 1


def test_overlapping_bytes_keep_the_first_copy() -> None:
    s = TcpStream()
    s.syn(0)
    out = collect(s, [(1, b"abcd"), (3, b"XXef")])
    assert joined(out) == b"abcdef"
    assert s.overlaps == 1


def test_sequence_numbers_wrap_around_2_to_the_32() -> None:
    s = TcpStream()
    s.syn(0xFFFFFFFD)
    out = collect(s, [(0xFFFFFFFE, b"ab"), (0, b"cd"), (2, b"ef")])
    assert joined(out) == b"abcdef"
    assert s.gaps == 0


def test_a_hole_the_peer_acknowledged_is_a_gap_once_the_reorder_window_passes() -> None:
    s = TcpStream()
    s.syn(0)
    assert s.segment(1, b"abc") == (b"abc",)
    assert s.segment(10, b"xyz") == ()
    assert s.acked(13, ts=1) == ()
    assert s.acked(13, ts=1 + REORDER_WINDOW_NS // 2) == ()  # may still arrive: captures reorder
    assert s.acked(13, ts=1 + REORDER_WINDOW_NS) == (6, b"xyz")
    assert s.gaps == 1 and s.gap_bytes == 6


def test_a_hole_filled_within_the_reorder_window_is_no_gap() -> None:
    s = TcpStream()
    s.syn(0)
    s.segment(4, b"def")
    s.acked(7, ts=1)
    assert s.segment(1, b"abc") == (b"abc", b"def")
    assert s.gaps == 0 and s.lost_at == 0


def test_a_hole_never_filled_becomes_a_gap_at_the_end() -> None:
    s = TcpStream()
    s.syn(0)
    out = collect(s, [(1, b"ab"), (5, b"ef")])
    assert out == [b"ab", 2, b"ef"]


def test_buffering_beyond_the_bound_gives_up_on_the_hole() -> None:
    s = TcpStream()
    s.syn(0)
    s.segment(1, b"a")
    out: list[bytes | int] = []
    chunk = b"x" * 60_000
    seq = 100
    while not out:
        out.extend(s.segment(seq, chunk))
        seq += len(chunk)
    assert isinstance(out[0], int) and out[0] == 98
    assert s.buffered <= MAX_BUFFERED_BYTES


def test_syn_less_pickup_starts_at_the_first_segment_seen() -> None:
    s = TcpStream()
    assert collect(s, [(5000, b"mid"), (5003, b"stream")]) == [b"mid", b"stream"]


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=3000), max_size=20),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    isn=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_order_and_duplication_of_segments_gives_back_the_same_bytes(
    data: bytes, cuts: list[int], seed: int, isn: int
) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    segs = [((isn + 1 + a) & 0xFFFFFFFF, data[a:b]) for a, b in itertools.pairwise(points)]
    rnd = random.Random(seed)
    shuffled = segs + rnd.sample(segs, k=min(len(segs), 3))
    rnd.shuffle(shuffled)
    s = TcpStream()
    s.syn(isn)
    out = collect(s, shuffled)
    assert joined(out) == data
    assert all(isinstance(c, bytes) for c in out)

"""Flow sharding over real frames: both directions and every fragment of a flow land on one endpoint;
losing an endpoint moves only its own flows."""

from __future__ import annotations

import random
import socket

import dpkt

from wiretide.capture.shard import MAX_PENDING_FRAGMENTS, HashRing, Sharder
from wiretide.common.packets import LINKTYPE_ETHERNET, decode_headers, flow_hash

ENDPOINTS = [f"10.0.0.{i}:50052" for i in range(1, 5)]
MAC = b"\x02\x00\x00\x00\x00\x01"


def addr(i: int) -> bytes:
    return socket.inet_aton(f"10.{(i >> 8) & 255}.{i & 255}.9")


def udp_frame(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes = b"q" * 20) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = 8 + len(payload)
    return bytes(dpkt.ethernet.Ethernet(src=MAC, dst=MAC, data=dpkt.ip.IP(src=src, dst=dst, p=17, data=udp)))


def fragments(src: bytes, dst: bytes, ip_id: int, sport: int, dport: int, size: int = 3000) -> list[bytes]:
    """A UDP datagram split into 1480-byte IPv4 fragments, as a host would send it."""
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=b"f" * size)
    udp.ulen = 8 + size
    body = bytes(udp)
    out = []
    for off in range(0, len(body), 1480):
        piece = body[off : off + 1480]
        ip = dpkt.ip.IP(src=src, dst=dst, p=17, id=ip_id, data=piece)
        ip.offset = off // 8
        ip.mf = 1 if off + 1480 < len(body) else 0
        out.append(bytes(dpkt.ethernet.Ethernet(src=MAC, dst=MAC, data=ip)))
    return out


def owner_of_each(sharder: Sharder) -> dict[bytes, str]:
    """frame bytes -> endpoint it was batched for."""
    where = {}
    for ep, cols in sharder.take():
        for off, caplen, *_ in cols.iter_packets():
            where[cols.data[off : off + caplen]] = ep
    return where


def feed(sharder: Sharder, frames: list[bytes]) -> None:
    for frame in frames:
        mv = memoryview(frame)
        sharder.add(mv, 0, len(frame), len(frame), 1, 0)


def test_both_directions_of_every_flow_go_to_one_endpoint_and_all_endpoints_get_work() -> None:
    sharder = Sharder(HashRing.of(ENDPOINTS), [("eth0", LINKTYPE_ETHERNET)])
    flows = [(addr(i), 10000 + i, addr(5000 + i), 53) for i in range(400)]
    frames = []
    for a, sp, b, dp in flows:
        frames += [udp_frame(a, sp, b, dp, b"req%d" % sp), udp_frame(b, dp, a, sp, b"resp%d" % sp)]
    feed(sharder, frames)
    where = owner_of_each(sharder)
    assert len(where) == len(frames)
    for a, sp, b, dp in flows:
        assert where[udp_frame(a, sp, b, dp, b"req%d" % sp)] == where[udp_frame(b, dp, a, sp, b"resp%d" % sp)]
    shares = {ep: list(where.values()).count(ep) for ep in ENDPOINTS}
    assert all(s > len(frames) / 8 for s in shares.values()), shares


def test_fragments_follow_their_first_fragment_even_when_it_arrives_last() -> None:
    sharder = Sharder(HashRing.of(ENDPOINTS), [("eth0", LINKTYPE_ETHERNET)])
    expected = {}
    all_frames = []
    for i in range(60):
        a, b = addr(i), addr(900 + i)
        frags = fragments(a, b, 1000 + i, 20000 + i, 53)
        unfragmented = udp_frame(a, 20000 + i, b, 53, b"small%d" % i)
        if i % 3 == 0:
            frags = frags[1:] + frags[:1]  # first fragment last
        all_frames += [unfragmented, *frags]
        expected[i] = (unfragmented, frags)
    feed(sharder, all_frames)
    where = owner_of_each(sharder)
    assert len(where) == len(all_frames)
    for unfragmented, frags in expected.values():
        assert {where[f] for f in frags} == {where[unfragmented]}
    assert sharder.counters.fragments_orphaned == 0
    assert sharder.counters.fragments_held == 20 * 2  # two later fragments held for each reordered datagram


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fragments_whose_first_piece_never_comes_are_released_by_address_pair_and_counted() -> None:
    clock = Clock()
    sharder = Sharder(HashRing.of(ENDPOINTS), [("eth0", LINKTYPE_ETHERNET)], hold_s=1.0, clock=clock)
    a, b = addr(1), addr(2)
    later = fragments(a, b, 77, 1, 2, size=5000)[1:]
    feed(sharder, later)
    clock.now += 0.9
    assert sharder.take() == []  # held while the first may still come
    assert sharder.counters.fragments_orphaned == 0
    clock.now += 0.2
    ((ep, cols),) = sharder.take()
    assert ep == HashRing.of(ENDPOINTS).owner(flow_hash(a, 0, b, 0, 17))
    assert len(cols) == len(later) == 3
    assert sharder.counters.fragments_orphaned == 3


def test_held_fragments_are_bounded() -> None:
    sharder = Sharder(HashRing.of(ENDPOINTS), [("eth0", LINKTYPE_ETHERNET)])
    frames = [fragments(addr(i % 50), addr(7), i, 1, 2)[1] for i in range(MAX_PENDING_FRAGMENTS + 300)]
    feed(sharder, frames)
    assert sharder.buffered == MAX_PENDING_FRAGMENTS + 300
    assert sharder.counters.fragments_orphaned == 300


def test_losing_an_endpoint_moves_only_its_own_flows() -> None:
    full = HashRing.of(ENDPOINTS)
    smaller = HashRing.of(ENDPOINTS[:-1])
    rng = random.Random(3)
    moved = stayed = 0
    for _ in range(5000):
        h = rng.getrandbits(32)
        before, after = full.owner(h), smaller.owner(h)
        if before == ENDPOINTS[-1]:
            assert after != before
            moved += 1
        else:
            assert after == before
            stayed += 1
    assert 0.15 < moved / 5000 < 0.35 and stayed


def test_without_endpoints_packets_are_kept_under_the_empty_key_for_recording_and_counting() -> None:
    sharder = Sharder(HashRing.of([]), [("eth0", LINKTYPE_ETHERNET)])
    feed(sharder, [udp_frame(addr(1), 1, addr(2), 2)])
    batches = sharder.take()
    assert [(ep, len(c)) for ep, c in batches] == [("", 1)]


def test_rebalancing_hands_back_what_was_batched_for_a_departed_endpoint() -> None:
    sharder = Sharder(HashRing.of(ENDPOINTS), [("eth0", LINKTYPE_ETHERNET)])
    feed(sharder, [udp_frame(addr(i), 1000 + i, addr(99), 53) for i in range(200)])
    sharder.set_ring(HashRing.of(ENDPOINTS[:2]))
    orphans = sum(len(c) for c in sharder.orphaned())
    kept = sum(len(c) for _ep, c in sharder.take())
    assert orphans > 0 and orphans + kept == 200


def test_undecodable_frames_are_counted_and_still_forwarded() -> None:
    sharder = Sharder(HashRing.of(ENDPOINTS), [("eth0", LINKTYPE_ETHERNET)])
    arp = MAC + MAC + b"\x08\x06" + b"\x00" * 28
    feed(sharder, [arp, b"\x01\x02", udp_frame(addr(1), 1, addr(2), 2)])
    assert sharder.counters.undecodable == 2
    assert sum(len(c) for _ep, c in sharder.take()) == 3


def test_a_frame_decoded_by_the_sharder_and_by_packets_agree_on_the_flow() -> None:
    frame = udp_frame(addr(1), 1234, addr(2), 53)
    h = decode_headers(memoryview(frame), 0, len(frame), LINKTYPE_ETHERNET)
    assert h is not None
    sharder = Sharder(HashRing.of(ENDPOINTS), [("eth0", LINKTYPE_ETHERNET)])
    feed(sharder, [frame])
    ((ep, _cols),) = sharder.take()
    assert ep == HashRing.of(ENDPOINTS).owner(flow_hash(h[1], h[4], h[2], h[5], h[3]))


def test_the_in_place_hot_path_places_frames_exactly_as_flow_hash_does() -> None:
    rng = random.Random(11)
    ring = HashRing.of(ENDPOINTS)
    sharder = Sharder(ring, [("eth0", LINKTYPE_ETHERNET)])
    expected = {}
    for _ in range(500):
        a, b = addr(rng.randrange(1 << 16)), addr(rng.randrange(1 << 16))
        if rng.random() < 0.1:
            b = a  # same address both ends: the ports decide the order
        sp, dp = rng.randrange(1, 65536), rng.randrange(1, 65536)
        if rng.random() < 0.5:
            frame = udp_frame(a, sp, b, dp, b"%d" % rng.getrandbits(40))
            proto = 17
        else:
            tcp = dpkt.tcp.TCP(sport=sp, dport=dp, flags=0x10, data=b"%d" % rng.getrandbits(40))
            frame = bytes(
                dpkt.ethernet.Ethernet(src=MAC, dst=MAC, data=dpkt.ip.IP(src=a, dst=b, p=6, data=tcp))
            )
            proto = 6
        expected[frame] = ring.owner(flow_hash(a, sp, b, dp, proto))
    feed(sharder, list(expected))
    assert owner_of_each(sharder) == expected


def test_a_batch_hands_back_columns_that_agree_with_each_other_in_arrival_order() -> None:
    ring = HashRing.of(ENDPOINTS[:1])
    sharder = Sharder(ring, [("eth0", LINKTYPE_ETHERNET), ("eth1", LINKTYPE_ETHERNET)])
    sent = [udp_frame(addr(i), 1000 + i, addr(99), 53, b"p" * i) for i in range(50)]
    for i, frame in enumerate(sent):
        sharder.add(memoryview(b"pad" + frame), 3, 3 + len(frame), len(frame) + i, 7_000 + i, i % 2)
    ((ep, cols),) = sharder.take()
    assert ep == ENDPOINTS[0] and cols.consistent()
    assert [cols.data[o : o + c] for o, c, *_ in cols.iter_packets()] == sent
    assert cols.origlens == [len(f) + i for i, f in enumerate(sent)]
    assert cols.timestamps_ns == [7_000 + i for i in range(50)]
    assert cols.interface_ids == [i % 2 for i in range(50)]
    assert cols.interfaces == [("eth0", LINKTYPE_ETHERNET), ("eth1", LINKTYPE_ETHERNET)]
    assert sharder.take() == [] and sharder.buffered == 0

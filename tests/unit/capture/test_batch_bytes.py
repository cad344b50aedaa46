"""Batches are bounded by bytes as well as packets: a replayed capture of 64 KiB super-frames (a large
body through TSO/GRO) never makes a batch of thousands of such frames, fragments held for their first
piece are bounded by bytes as well as by count, and the queue to a dissector charges small frames
what they hold (their columns too)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from tests.unit.dissector.builders import ACK, SYN, T0, ether, ipv4, tcp_frame
from wiretide.capture.pcapng import PcapngWriter
from wiretide.capture.sender import PACKET_OVERHEAD, QUEUE_FULL, Drops, EndpointSender
from wiretide.capture.shard import MAX_PENDING_FRAGMENT_BYTES, HashRing, Sharder
from wiretide.capture.sources.pcapfile import DEFAULT_BATCH_BYTES, read_batches, read_stream
from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder

SUPER = 65_000  # payload of one TSO super-frame, as a capture on the sending host records it


def super_frames(n: int) -> list[bytes]:
    return [
        tcp_frame("10.0.0.2", 80, "10.0.0.1", 40000, i * SUPER, 1, ACK, bytes([i % 251]) * SUPER)
        for i in range(n)
    ]


def pcap_bytes(frames: list[bytes]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000, i, len(f), len(f)) + f)
    return b"".join(out)


def pcapng_file(path: Path, frames: list[bytes]) -> None:
    b = ColumnBuilder()
    iface = b.interface("eth0", LINKTYPE_ETHERNET)
    for i, f in enumerate(frames):
        b.append(f, len(f), T0 + i, iface)
    with path.open("wb") as fh:
        writer = PcapngWriter(fh, "node-a")
        writer.write(b.take())


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "stream"])
def test_a_capture_of_super_frames_is_read_in_batches_of_at_most_a_mebibyte_of_frames(
    kind: str, tmp_path: Path
) -> None:
    frames = super_frames(100)  # 6.5 MB: one batch of 2,048 packets before
    path = tmp_path / "big.pcap"
    if kind == "pcapng":
        pcapng_file(path, frames)
    else:
        path.write_bytes(pcap_bytes(frames))
    batches = (
        list(read_stream(io.BytesIO(path.read_bytes()), "pipe", 2048))
        if kind == "stream"
        else list(read_batches(path, 2048))
    )
    assert all(len(b.data) <= DEFAULT_BATCH_BYTES for b in batches)
    assert len(batches) >= 100 * len(frames[0]) // DEFAULT_BATCH_BYTES
    got = [b.data[o : o + n] for b in batches for o, n, *_ in b.iter_packets()]
    assert got == frames  # nothing lost or reordered by the cut


def test_a_frame_larger_than_the_byte_cap_is_a_batch_of_its_own(tmp_path: Path) -> None:
    frames = super_frames(3)
    path = tmp_path / "big.pcap"
    path.write_bytes(pcap_bytes(frames))
    batches = list(read_batches(path, 2048, batch_bytes=1000))
    assert [len(b) for b in batches] == [1, 1, 1]
    assert [bytes(b.data) for b in batches] == frames


def test_a_batch_size_or_byte_cap_below_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(super_frames(1)))
    with pytest.raises(ValueError, match="batch_bytes"):
        list(read_batches(path, 10, batch_bytes=0))
    with pytest.raises(ValueError, match="batch_size"):
        list(read_stream(io.BytesIO(path.read_bytes()), "pipe", 0))


def test_held_fragments_are_bounded_by_bytes_and_the_rest_counted_as_orphaned() -> None:
    sharder = Sharder(HashRing.of(["a:1", "b:1"]), [("eth0", LINKTYPE_ETHERNET)])
    payload = b"\x00" * 60_000  # hostile later fragments: near the largest an IP datagram allows
    n = 400  # 24 MB of fragments whose first piece never comes; the count bound alone allows 2,048
    for i in range(n):
        frame = ether(ipv4("10.9.0.1", "10.9.0.2", 17, payload, ip_id=i, frag=1480))
        sharder.add(memoryview(frame), 0, len(frame), len(frame), T0 + i, 0)
    held = sharder._pending_bytes
    assert 0 < held <= MAX_PENDING_FRAGMENT_BYTES
    assert sharder.counters.fragments_held == n
    orphaned = sharder.counters.fragments_orphaned
    assert orphaned >= n - MAX_PENDING_FRAGMENT_BYTES // len(frame)
    # Released fragments were routed (by address pair), not lost: they are in the endpoint batches.
    routed = sum(len(cols) for _ep, cols in sharder.take())
    assert routed == orphaned
    sharder.release_held()
    assert sharder._pending_bytes == 0 and sharder.counters.fragments_orphaned == n


def test_a_queue_of_small_frames_is_charged_their_columns_too_and_refuses_past_its_bound() -> None:
    drops = Drops({})
    sender = EndpointSender("127.0.0.1:1", "node-a", 0, drops, lambda: None, max_bytes=120_000)
    sender.up = True  # as once its stream is open (nothing is sent here: the task is not started)
    syn = tcp_frame("10.66.0.1", 1024, "10.66.9.9", 80, 1, 0, SYN)
    b = ColumnBuilder()
    iface = b.interface("eth0", LINKTYPE_ETHERNET)
    for i in range(1_000):
        b.append(syn, len(syn), T0 + i, iface)
    cols = b.take()
    assert sender.offer(cols)
    assert sender.queued_bytes == len(cols.data) + PACKET_OVERHEAD * len(cols)
    # Two batches of frames alone (108 KB) would fit 120 KB; what they hold does not.
    assert 2 * len(cols.data) < sender.max_bytes
    assert not sender.offer(cols)
    assert drops.counts == {QUEUE_FULL: 1_000}

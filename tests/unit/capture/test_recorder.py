"""The pcapng recorder ring keeps within its size and age bounds; snapshots open in tshark with the
packets that match their window, BPF filter and flow."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import dpkt
import pytest

from wiretide.capture.bpf import FilterError
from wiretide.capture.recorder import Recorder, RecorderLimits
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder, PacketColumns, flow_id

TSHARK = Path("/usr/bin/tshark")
MAC = b"\x02\x00\x00\x00\x00\x01"
A = socket.inet_aton("10.1.0.1")
B = socket.inet_aton("10.1.0.2")


def frame(proto: str, sport: int, dport: int, size: int = 100) -> bytes:
    l4: dpkt.Packet
    if proto == "tcp":
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=0x18, data=b"t" * size)
        p = 6
    else:
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=b"u" * size)
        l4.ulen = 8 + size
        p = 17
    return bytes(dpkt.ethernet.Ethernet(src=MAC, dst=MAC, data=dpkt.ip.IP(src=A, dst=B, p=p, data=l4)))


def batch(start_ns: int, n: int, step_ns: int = 1_000_000) -> PacketColumns:
    b = ColumnBuilder()
    i = b.interface("veth-pod1", LINKTYPE_ETHERNET)
    for k in range(n):
        f = frame("tcp", 40000 + k % 5, 80) if k % 2 == 0 else frame("udp", 5353, 53)
        b.append(f, len(f), start_ns + k * step_ns, i)
    return b.take()


def tshark_count(path: Path, display: str = "") -> int:
    argv = [str(TSHARK), "-r", str(path), "-T", "fields", "-e", "frame.number"]
    if display:
        argv += ["-Y", display]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return len(out.stdout.split())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_ring_rotates_by_size_and_never_holds_more_than_its_bound(tmp_path: Path) -> None:
    limits = RecorderLimits(file_bytes=40_000, file_age_s=1e6, max_bytes=150_000, max_age_s=1e6)
    rec = Recorder(tmp_path / "rec", "node-a", limits)
    written = 0
    for k in range(60):
        cols = batch(k * 10**9, 50)
        rec.write(cols)
        written += len(cols)
        assert rec.total_bytes <= limits.max_bytes + len(cols.data) + 32 * len(cols) + 4096
    rec.close()
    files = rec.files()
    assert rec.rotations > 3 and rec.deleted > 0
    assert sum(p.stat().st_size for p in files) <= limits.max_bytes
    for p in files:
        assert p.stat().st_size <= limits.file_bytes
    kept = sum(len(c) for p in files for c in read_batches(p))
    assert 0 < kept < written
    # The newest packets are the ones kept.
    last = [c for c in read_batches(files[-1])][-1]
    assert last.timestamps_ns[-1] == 59 * 10**9 + 49 * 1_000_000


def test_files_rotate_by_age_and_old_files_expire(tmp_path: Path) -> None:
    clock = Clock()
    limits = RecorderLimits(file_bytes=10**9, file_age_s=10, max_bytes=10**10, max_age_s=60)
    rec = Recorder(tmp_path / "rec", "node-a", limits, clock=clock)
    for _ in range(5):
        rec.write(batch(0, 3))
        clock.now += 11
    assert len(rec.files()) == 5
    # Age the closed files on disk; the next write expires them.
    for p in rec.files()[:-1]:
        os.utime(p, (clock.now - 120, clock.now - 120))
    rec.write(batch(0, 3))
    rec.close()
    assert len(rec.files()) == 2


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        RecorderLimits(file_bytes=10, max_bytes=5).check()
    with pytest.raises(ValueError, match="positive"):
        RecorderLimits(file_age_s=0).check()


@pytest.mark.skipif(not TSHARK.exists(), reason="tshark is not installed")
def test_recordings_and_snapshots_open_in_tshark_with_the_expected_packets(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "rec", "node-a", RecorderLimits(file_bytes=30_000, max_bytes=10**9))
    base = 1_700_000_000 * 10**9
    for k in range(10):
        rec.write(batch(base + k * 10**9, 40))  # 400 packets, 200 tcp, 200 udp, over 10 s
    files = rec.files()
    assert len(files) > 1
    assert sum(tshark_count(p) for p in files) == 400
    names = subprocess.run(
        [
            str(TSHARK),
            "-r",
            str(files[0]),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.interface_description",
            "-c",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert names == "veth-pod1\tveth-pod1 on node-a"

    everything = rec.snapshot(tmp_path / "snap" / "all.pcapng")
    assert everything.packets == 400 and tshark_count(everything.path) == 400

    window = rec.snapshot(tmp_path / "snap" / "win.pcapng", base + 2 * 10**9, base + 5 * 10**9)
    assert window.packets == 120 and tshark_count(window.path) == 120

    tcp_only = rec.snapshot(tmp_path / "snap" / "tcp.pcapng", bpf="tcp port 80")
    assert tcp_only.packets == 200 and tshark_count(tcp_only.path, "tcp.port == 80") == 200

    one_flow = flow_id(B, 80, A, 40001, 6)  # written A:40001 -> B:80; named from the other side
    flow = rec.snapshot(tmp_path / "snap" / "flow.pcapng", flow=one_flow)
    assert flow.packets == 40 and tshark_count(flow.path, "tcp.srcport == 40001") == 40
    rec.close()


def test_a_snapshot_with_a_bad_filter_is_a_clear_error(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "rec", "n")
    rec.write(batch(0, 2))
    with pytest.raises(FilterError, match="bad filter"):
        rec.snapshot(tmp_path / "x.pcapng", bpf="tcp port")
    rec.close()


def test_a_recorder_continues_numbering_after_a_restart(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "rec", "n")
    rec.write(batch(0, 2))
    rec.close()
    rec2 = Recorder(tmp_path / "rec", "n")
    rec2.write(batch(0, 2))
    rec2.close()
    assert [p.name for p in rec2.files()] == ["rec-00000001.pcapng", "rec-00000002.pcapng"]

"""Capture rate of the AF_PACKET TPACKET_V3 ring under a UDP flood on a veth between two namespaces.

Prints: packets sent and captured, kernel drops, packets/s while the flood ran, and CPU µs per packet
of the capture loop (ring walk + flow hashing onto a 4-endpoint ring + batching into PacketColumns);
then a burst: the ring is filled while nobody reads and drained flat out (the loop's own ceiling,
since on 2 shared cores the Python flood senders are slower than the capture).
Needs root. Usage:

    .venv/bin/python bench/capture_rate.py [--seconds 5] [--senders 2] [--flows 256] [--payload 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.netns import inside, veth_pair
from wiretide.capture.shard import HashRing, Sharder
from wiretide.capture.sources.afpacket import RingConfig, RingSocket

SENDER = """
import socket, sys, time
dst, seconds, flows, payload = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
data = b"x" * payload
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s in socks:
        for _ in range(16):
            s.sendto(data, (dst, 9))
        sent += 16
print(sent)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--flows", type=int, default=64, help="UDP sockets (source ports) per sender")
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--ring-mb", type=int, default=64)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    with veth_pair("10.79.0") as pair:
        with inside(pair.ns_b):
            ring = RingSocket(pair.if_b, RingConfig(ring_bytes=args.ring_mb << 20, bpf="udp port 9"))
        interfaces = [(pair.if_b, ring.link_type)]
        ring.interface_id = 0
        sharder = Sharder(HashRing.of([f"10.0.0.{i}:50052" for i in range(1, 5)]), interfaces)
        senders = [
            pair.popen(
                pair.ns_a,
                [
                    sys.executable,
                    "-c",
                    SENDER,
                    pair.ip_b,
                    str(args.seconds),
                    str(args.flows),
                    str(args.payload),
                ],
                stdout=subprocess.PIPE,
            )
            for _ in range(args.senders)
        ]
        captured = 0
        batches = 0
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        first = last = 0.0
        poller = select.poll()
        poller.register(ring.fileno(), select.POLLIN)
        while any(s.poll() is None for s in senders) or time.monotonic() - last < 0.3:
            if not poller.poll(100):
                if all(s.poll() is not None for s in senders) and captured:
                    break
                continue
            n = ring.drain(sharder)
            if n:
                now = time.monotonic()
                first = first or now
                last = now
                captured += n
                batches += len(sharder.take())
        time.sleep(0.12)
        captured += ring.drain(sharder)
        sharder.take()
        cpu = time.process_time() - cpu0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - wall0
        sent = sum(int(s.communicate()[0] or 0) for s in senders)
        stats = ring.stats()
        # Burst: let the flood fill the ring while we do not read, then drain it flat out. This is the
        # rate the capture loop sustains on one core when packets are waiting (no poll wake-ups).
        burst_senders = [
            pair.popen(
                pair.ns_a,
                [sys.executable, "-c", SENDER, pair.ip_b, "1.0", str(args.flows), str(args.payload)],
                stdout=subprocess.PIPE,
            )
            for _ in range(args.senders)
        ]
        burst_sent = sum(int(s.communicate()[0] or 0) for s in burst_senders)
        time.sleep(0.15)
        cpu_b0, wall_b0 = time.process_time(), time.monotonic()
        drained = 0
        while True:
            n = ring.drain(sharder)
            if not n:
                break
            drained += n
            sharder.take()
        burst_wall, burst_cpu = time.monotonic() - wall_b0, time.process_time() - cpu_b0
        burst_stats = ring.stats()
        ring.close()
    span = max(last - first, 1e-9)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"sent {sent} packets ({args.payload} B UDP payload) from {args.senders} senders"
        f" in {args.seconds:.1f} s"
    )
    print(
        f"captured {captured} packets in {batches} batches; kernel: {stats.packets} seen,"
        f" {stats.drops} dropped, {stats.freezes} ring-full events"
    )
    print(f"capture rate while the flood ran: {captured / span:,.0f} packets/s")
    print(
        f"capture CPU: {cpu:.2f} s over {wall:.1f} s wall = {cpu / max(captured, 1) * 1e6:.2f} µs per packet"
        f" ({captured / max(cpu, 1e-9):,.0f} packets per CPU-second;"
        f" user {ru1.ru_utime - ru0.ru_utime:.2f} s, system {ru1.ru_stime - ru0.ru_stime:.2f} s)"
    )
    print(
        f"burst: {burst_sent} packets queued in the ring, {drained} drained in {burst_wall:.3f} s ="
        f" {drained / max(burst_wall, 1e-9):,.0f} packets/s wall on one core,"
        f" {burst_cpu / max(drained, 1) * 1e6:.2f} µs CPU per packet"
        f" ({drained / max(burst_cpu, 1e-9):,.0f} packets per CPU-second), kernel drops"
        f" {burst_stats.drops - stats.drops}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

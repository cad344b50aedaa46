"""Benchmark: RADIUS dissection against tshark's radius dissector on the same generated capture.

Generates NAS flows that each send Access-Requests (PAP, with the usual NAS attributes; every fourth
carrying an EAP-Message and a Message-Authenticator) answered by Access-Accept or Access-Reject, and
accounting Start/Stop requests answered by Accounting-Responses, writes them as one pcap, then runs
the whole pipeline (`Pipeline.feed` over the file's batches) and `tshark -Y radius` on it. Prints the
RADIUS packets each decoded per CPU-second (ours: this process's CPU time; tshark's: its child CPU
time) and checks that both counted the same packets. Figures are printed, never asserted.

    .venv/bin/python bench/analyze_radius.py [--flows 40] [--exchanges 1000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.dissector import test_radius as rad
from tests.unit.dissector.builders import T0, udp_frame
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)  # nanosecond pcap, Ethernet
RECORD = struct.Struct("<IIII")
EAP_IDENTITY = bytes([2, 7, 0, 10, 1]) + b"alice"


def flow(index: int, exchanges: int) -> list[tuple[int, bytes]]:
    """One NAS's datagrams to the server (auth on 1812, accounting on 1813), a ms apart."""
    nas, port = f"10.1.{index // 250}.{index % 250 + 1}", 30000 + index
    frames: list[tuple[int, bytes]] = []
    ts = T0 + index * 1000
    for i in range(exchanges):
        ident = i % 256
        if i % 3 == 2:
            status = 1 if i % 2 else 2
            attrs = rad.attr(40, status) + rad.attr(1, f"user{i}") + rad.attr(44, f"s-{index}-{i}")
            req = rad.request(4, ident, attrs + rad.attr(4, bytes([10, 1, 0, 1])) + rad.attr(46, i))
            frames.append((ts, udp_frame(nas, port + 10000, "10.0.0.2", 1813, req)))
            frames.append((ts + 300_000, udp_frame("10.0.0.2", 1813, nas, port + 10000, rad.answer(5, req))))
        else:
            extra = rad.attr(79, EAP_IDENTITY) + rad.attr(80, bytes(16)) if i % 4 == 0 else b""
            req = rad.access_request(ident, user=f"user{i}", extra=extra)
            code = 3 if i % 10 == 1 else 2
            reply = rad.answer(code, req, rad.attr(18, "Welcome") + rad.attr(27, 3600))
            frames.append((ts, udp_frame(nas, port, "10.0.0.2", 1812, req)))
            frames.append((ts + 300_000, udp_frame("10.0.0.2", 1812, nas, port, reply)))
        ts += 1_000_000
    return frames


def write_pcap(path: Path, frames: list[tuple[int, bytes]]) -> None:
    with path.open("wb") as fh:
        fh.write(PCAP_HEADER)
        for ts, frame in sorted(frames, key=lambda f: f[0]):
            fh.write(RECORD.pack(ts // 1_000_000_000, ts % 1_000_000_000, len(frame), len(frame)))
            fh.write(frame)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=40)
    ap.add_argument("--exchanges", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="write the capture here (kept)")
    args = ap.parse_args()
    frames = [f for i in range(args.flows) for f in flow(i, args.exchanges)]
    packets = len(frames)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "radius.pcap"
        write_pcap(path, frames)
        batches = list(read_batches(path))
        pipeline = Pipeline(default_registry(plugins=False))
        t0 = time.process_time()
        entries = [e for b in batches for e in pipeline.feed(b)] + pipeline.finish()
        ours = time.process_time() - t0
        before = children_cpu()
        out = subprocess.run(
            ["tshark", "-r", str(path), "-Y", "radius", "-T", "fields", "-e", "radius.code"],
            capture_output=True, check=True,
        )  # fmt: skip
        theirs = children_cpu() - before
    seen = len(out.stdout.split())
    found = [e for e in entries if e["protocol"] == "radius"]
    paired = sum(1 for e in found if e["request"] is not None and e["response"] is not None)
    print(f"capture: {args.flows} NAS flows, {packets} RADIUS packets")
    rate = packets / ours
    print(f"wiretide: {ours:.2f} s CPU, {rate:,.0f} packets/CPU-s, {len(found)} entries ({paired} paired)")
    print(f"tshark:   {theirs:.2f} s CPU, {seen / theirs:,.0f} packets/CPU-s, {seen} packets")
    print(f"ratio: {(packets / ours) / (seen / theirs):.1f}x")


if __name__ == "__main__":
    main()

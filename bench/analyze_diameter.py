"""Benchmark: Diameter dissection over TCP and over SCTP against tshark, on the same captures.

Each workload is one long-lived peer connection of Gx credit-control exchanges — a CCR (Session-Id,
Origin-Host/Realm, Destination-Realm, CC-Request-Type and -Number, a grouped Subscription-Id, a
3GPP RAT-Type) and its CCA (Result-Code) — built with the tests' builders: over TCP (one segment per
message, each acknowledged) and over SCTP (one DATA chunk per message, PPID 46, SACKs bundled as a
real stack sends them). The bench writes each as a pcap, runs the whole pipeline on it in this process
(reading the file included) and `tshark -n -r FILE -Y diameter -T fields -e diameter.cmd.code`, and
prints Diameter messages decoded per CPU-second: ours from this process's CPU time, tshark's from its
child CPU time (its start-up, about 0.3 s, included). Both divide the same count, which tshark prints
and the entries must match. Figures are printed, never asserted; say whether the machine was quiet.

    .venv/bin/python bench/analyze_diameter.py [--exchanges 20000] [--keep DIR]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import diameter as dia  # noqa: E402
from tests.unit.dissector.builders import Conversation  # noqa: E402
from tests.unit.dissector.test_sctp import Assoc, sack  # noqa: E402
from wiretide.capture.sources.pcapfile import read_batches  # noqa: E402
from wiretide.dissector import native  # noqa: E402
from wiretide.dissector.pipeline import Pipeline  # noqa: E402
from wiretide.dissector.registry import default_registry  # noqa: E402

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)  # nanosecond pcap, Ethernet
RECORD = struct.Struct("<IIII")
GX = 16777238


def ccr(n: int) -> bytes:
    return dia.message(272, GX, True, n, n, [
        dia.utf8(dia.SESSION_ID, f"pcef.example.net;1;{n // 3}"),
        dia.utf8(dia.ORIGIN_HOST, "pcef.example.net"), dia.utf8(dia.ORIGIN_REALM, "example.net"),
        dia.utf8(dia.DESTINATION_REALM, "example.net"),
        dia.u32(dia.AUTH_APPLICATION_ID, GX), dia.u32(dia.CC_REQUEST_TYPE, 1 + n % 3),
        dia.u32(dia.CC_REQUEST_NUMBER, n % 3),
        dia.grouped(dia.SUBSCRIPTION_ID, [dia.u32(dia.SUBSCRIPTION_ID_TYPE, 1),
                                          dia.utf8(dia.SUBSCRIPTION_ID_DATA, f"00101{n:010d}")]),
        dia.u32(1032, 1004, vendor=dia.VENDOR_3GPP),
    ])  # fmt: skip


def cca(n: int) -> bytes:
    return dia.message(272, GX, False, n, n, [
        dia.utf8(dia.SESSION_ID, f"pcef.example.net;1;{n // 3}"), dia.u32(dia.RESULT_CODE, 2001),
        dia.utf8(dia.ORIGIN_HOST, "pcrf.example.net"), dia.utf8(dia.ORIGIN_REALM, "example.net"),
        dia.u32(dia.CC_REQUEST_TYPE, 1 + n % 3), dia.u32(dia.CC_REQUEST_NUMBER, n % 3),
    ])  # fmt: skip


def over_tcp(exchanges: int) -> list[tuple[int, bytes]]:
    conv = Conversation(sport=3868, step=20_000).handshake()
    for n in range(exchanges):
        conv.send(True, ccr(n)).send(False, cca(n))
    return conv.close().frames


def over_sctp(exchanges: int) -> list[tuple[int, bytes]]:
    a = Assoc(sport=3868).handshake()
    for n in range(exchanges):
        (req,) = a.chunks(True, ccr(n), ppid=46)
        a.raw(True, req)
        (ans,) = a.chunks(False, cca(n), ppid=46)
        a.raw(False, sack(a.ctsn - 1), ans)  # the answer carries the SACK of the request
    return a.shutdown().frames


def write_pcap(path: Path, frames: list[tuple[int, bytes]]) -> None:
    with path.open("wb") as fh:
        fh.write(PCAP_HEADER)
        for ts, frame in frames:
            fh.write(RECORD.pack(ts // 1_000_000_000, ts % 1_000_000_000, len(frame), len(frame)))
            fh.write(frame)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def ours(path: Path) -> tuple[float, int]:
    """CPU seconds of the whole pipeline on the file, and the Diameter messages in its entries."""
    start = time.process_time()
    p = Pipeline(default_registry())
    entries = []
    for cols in read_batches(str(path), 4096):
        entries.extend(p.feed(cols))
    entries.extend(p.finish())
    cpu = time.process_time() - start
    found = [e for e in entries if e["protocol"] == "diameter"]
    return cpu, sum((e["request"] is not None) + (e["response"] is not None) for e in found)


def tshark(path: Path) -> tuple[float, int]:
    before = children_cpu()
    argv = ["tshark", "-n", "-r", str(path), "-Y", "diameter", "-T", "fields", "-e", "diameter.cmd.code"]
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    return children_cpu() - before, sum(len([v for v in line.split(b",") if v]) for line in out.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=20_000)
    parser.add_argument("--keep", type=Path, help="write the captures here (default: a temporary directory)")
    args = parser.parse_args()
    print(f"dissector modules: {'compiled (mypyc)' if native.ACTIVE else 'pure Python'} ({native.STATUS})")
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for name, build in (("tcp", over_tcp), ("sctp", over_sctp)):
            path = where / f"diameter-{name}.pcap"
            write_pcap(path, build(args.exchanges))
            our_cpu, our_count = ours(path)
            their_cpu, their_count = tshark(path)
            rate, theirs = our_count / our_cpu, their_count / their_cpu
            print(
                f"diameter over {name:<4} {their_count:>7} messages: wiretide {rate:>9,.0f} msg/CPU-s"
                f" ({our_cpu:.2f} s), tshark {theirs:>9,.0f} msg/CPU-s ({their_cpu:.2f} s)"
                + ("" if our_count == their_count else f"  MISMATCH: ours {our_count}")
            )


if __name__ == "__main__":
    main()

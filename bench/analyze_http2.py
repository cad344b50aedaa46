"""Benchmark: HTTP/2 and gRPC dissection against tshark on the same generated captures.

Generates two captures with real HTTP/2 peers (the `h2` library on both ends, so framing and HPACK
are what a real stack emits): an h2load-like one (many concurrent streams per connection) and a gRPC
one (unary calls with protobuf messages, grpc-status trailers). Runs `wiretide analyze --format
jsonl` and tshark (`-T fields` with the HTTP/2 method and gRPC message length) on each, alternately,
and prints CPU seconds (user + sys, what a shared machine's load distorts least), wall seconds and
the ratios. Figures are printed, never asserted.

    .venv/bin/python bench/analyze_http2.py [--streams 20000] [--calls 10000] [--rounds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import orjson

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)  # nanosecond pcap, Ethernet
RECORD = struct.Struct("<IIII")
ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
MSS = 1448
STREAMS_PER_CONNECTION = 500  # h2load -m style: many streams multiplexed on one connection
CONCURRENT = 20  # streams in flight at once per connection
CALLS_PER_CONNECTION = 250
H2_PORT = 8080
GRPC_PORT = 50051
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10


class PcapWriter:
    """Ethernet/IPv4/TCP frames of one connection after another, in a nanosecond pcap."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("wb")
        self.fh.write(PCAP_HEADER)
        self.ts = 1_700_000_000 * 10**9
        self.packets = 0

    def put(
        self, src: bytes, sport: int, dst: bytes, dport: int, seq: int, ack: int, flags: int, data: bytes
    ) -> None:
        tcp = struct.pack(
            "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0
        )
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(data), 0, 0x4000, 64, 6, 0, src, dst)
        frame = ETH + ip + tcp + data
        self.ts += 10_000
        self.fh.write(RECORD.pack(self.ts // 10**9, self.ts % 10**9, len(frame), len(frame)) + frame)
        self.packets += 1

    def connection(self, n: int, port: int, wire: list[tuple[bool, bytes]]) -> None:
        cip = socket.inet_aton(f"10.1.{n // 250}.{n % 250 + 1}")
        sip = socket.inet_aton("10.2.0.1")
        cport = 20000 + n % 40000
        cseq, sseq = 1000, 9000
        self.put(cip, cport, sip, port, cseq, 0, SYN, b"")
        self.put(sip, port, cip, cport, sseq, cseq + 1, SYN | ACK, b"")
        cseq += 1
        sseq += 1
        self.put(cip, cport, sip, port, cseq, sseq, ACK, b"")
        for from_client, data in wire:
            for i in range(0, len(data), MSS):
                piece = data[i : i + MSS]
                if from_client:
                    self.put(cip, cport, sip, port, cseq, sseq, ACK | PSH, piece)
                    cseq += len(piece)
                else:
                    self.put(sip, port, cip, cport, sseq, cseq, ACK | PSH, piece)
                    sseq += len(piece)
        self.put(cip, cport, sip, port, cseq, sseq, FIN | ACK, b"")
        self.put(sip, port, cip, cport, sseq, cseq + 1, FIN | ACK, b"")
        self.put(cip, cport, sip, port, cseq + 1, sseq + 1, ACK, b"")

    def close(self) -> None:
        self.fh.close()


class Peers:
    """An h2 client and server back to back, recording what each sends."""

    def __init__(self) -> None:
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.wire: list[tuple[bool, bytes]] = []
        self.c.initiate_connection()
        self.flush()
        self.s.initiate_connection()
        self.flush()

    def flush(self) -> None:
        while True:
            a = self.c.data_to_send()
            if a:
                self.wire.append((True, a))
                self._ack(self.s, self.s.receive_data(a))
            b = self.s.data_to_send()
            if b:
                self.wire.append((False, b))
                self._ack(self.c, self.c.receive_data(b))
            if not a and not b:
                return

    @staticmethod
    def _ack(conn: h2.connection.H2Connection, events: list[h2.events.Event]) -> None:
        """Hand flow-control credit back (WINDOW_UPDATE), as a reading application does."""
        for ev in events:
            if isinstance(ev, h2.events.DataReceived) and ev.flow_controlled_length:
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)


def h2load_connection(streams: int) -> list[tuple[bool, bytes]]:
    p = Peers()
    body = b'{"items": [' + b",".join(b'{"id": %d, "name": "item"}' % i for i in range(12)) + b"]}"
    done = 0
    while done < streams:
        batch = []
        for _ in range(min(CONCURRENT, streams - done)):
            sid = p.c.get_next_available_stream_id()
            p.c.send_headers(
                sid,
                [
                    (":method", "GET"),
                    (":path", f"/api/items/{done + len(batch)}?page=1"),
                    (":scheme", "http"),
                    (":authority", "bench.test"),
                    ("user-agent", "h2load-like/1.0"),
                    ("accept", "application/json"),
                ],
                end_stream=True,
            )
            batch.append(sid)
        p.flush()
        for sid in batch:
            p.s.send_headers(
                sid, [(":status", "200"), ("content-type", "application/json"), ("server", "bench")]
            )
            p.s.send_data(sid, body, end_stream=True)
        p.flush()
        done += len(batch)
    return p.wire


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_string(field: int, text: str) -> bytes:
    raw = text.encode()
    return _varint(field << 3 | 2) + _varint(len(raw)) + raw


def grpc_connection(calls: int) -> list[tuple[bool, bytes]]:
    p = Peers()
    for i in range(calls):
        sid = p.c.get_next_available_stream_id()
        p.c.send_headers(
            sid,
            [
                (":method", "POST"),
                (":path", "/shop.CartService/GetCart"),
                (":scheme", "http"),
                (":authority", "cart:50051"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", "999m"),
            ],
        )
        msg = _pb_string(1, f"user-{i}") + _varint(2 << 3) + _varint(i)
        p.c.send_data(sid, b"\x00" + len(msg).to_bytes(4, "big") + msg, end_stream=True)
        p.flush()
        reply = b"".join(_pb_string(1, f"product-{k}") for k in range(5))
        p.s.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        p.s.send_data(sid, b"\x00" + len(reply).to_bytes(4, "big") + reply)
        p.s.send_headers(sid, [("grpc-status", "0")], end_stream=True)
        p.flush()
    return p.wire


def generate(
    path: Path, total: int, per_conn: int, port: int, make: Callable[[int], list[tuple[bool, bytes]]]
) -> int:
    w = PcapWriter(path)
    n = 0
    left = total
    while left > 0:
        k = min(per_conn, left)
        w.connection(n, port, make(k))
        left -= k
        n += 1
    w.close()
    return w.packets


def measure(argv: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + sys of the process and the children it waited for) of one
    run with stdout written to `out` (read afterwards, outside the measured process)."""
    start = time.perf_counter()
    with out.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{argv[0]} exited {code}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def ours(path: Path, out: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, request streams) for `wiretide analyze --format jsonl` on the capture: the whole
    command (start-up, reading, dissection, JSON lines out), as a user runs it."""
    argv = [sys.executable, "-m", "wiretide.cli.main", "analyze", "--format", "jsonl", "--quiet", str(path)]
    wall, cpu = measure(argv, out)
    n = 0
    with out.open("rb") as fh:
        for line in fh:
            n += orjson.loads(line)["protocol"] in ("http2", "grpc")
    return wall, cpu, n


def theirs(path: Path, port: int, grpc: bool, out: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, request streams) for tshark dissecting the same file as HTTP/2 (and gRPC): one
    run that prints every request's :method (and each gRPC message length), counted afterwards."""
    fields = ["-e", "http2.headers.method"] + (["-e", "grpc.message_length"] if grpc else [])
    argv = ["tshark", "-r", str(path), "-d", f"tcp.port=={port},http2", "-T", "fields", *fields]
    argv += ["-E", "occurrence=a", "-E", "aggregator=|"]
    wall, cpu = measure(argv, out)
    count = 0
    for line in out.read_text().splitlines():
        methods = line.split("\t", 1)[0]
        count += len([m for m in methods.split("|") if m])
    return wall, cpu, count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=20000, help="HTTP/2 streams in the h2load-like capture")
    ap.add_argument("--calls", type=int, default=10000, help="unary gRPC calls in the gRPC capture")
    ap.add_argument("--keep", metavar="DIR", help="keep the generated captures in DIR")
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool, alternated; the best is reported")
    args = ap.parse_args()
    if shutil.which("tshark") is None:
        print("tshark not found", file=sys.stderr)
        return 1
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="wt-h2bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cases = [
        (
            "http2 (h2load-like)",
            tmp / "h2load.pcap",
            args.streams,
            STREAMS_PER_CONNECTION,
            H2_PORT,
            h2load_connection,
            False,
        ),
        ("grpc unary", tmp / "grpc.pcap", args.calls, CALLS_PER_CONNECTION, GRPC_PORT, grpc_connection, True),
    ]
    try:
        for name, path, total, per_conn, port, make, is_grpc in cases:
            t0 = time.perf_counter()
            packets = generate(path, total, per_conn, port, make)
            gen_s = time.perf_counter() - t0
            size_mb = path.stat().st_size / 1e6
            print(f"{name}: {packets} packets, {size_mb:.1f} MB (generated in {gen_s:.1f} s)")
            best: dict[str, tuple[float, float]] = {}
            counts: dict[str, int] = {}
            loads: list[float] = []
            out = tmp / "out.txt"
            for _ in range(args.rounds):  # alternated, so that load swings hit both tools
                for tool in ("wiretide", "tshark"):
                    loads.append(os.getloadavg()[0])
                    wall, cpu, n = ours(path, out) if tool == "wiretide" else theirs(path, port, is_grpc, out)
                    old = best.get(tool, (wall, cpu))
                    best[tool] = (min(old[0], wall), min(old[1], cpu))
                    counts[tool] = n
            print(
                f"  best of {args.rounds} alternated rounds; load average {min(loads):.2f}–{max(loads):.2f}"
            )
            for tool, what in (("wiretide", "entries"), ("tshark", "streams")):
                wall, cpu = best[tool]
                print(
                    f"  {tool + ':':<9} {wall:6.2f} s wall {cpu:6.2f} s CPU"
                    f"  {packets / cpu:9.0f} packets/CPU-s"
                    f"  ({counts[tool]} {what})"
                )
            ratio = best["tshark"][1] / best["wiretide"][1]
            wall_ratio = best["tshark"][0] / best["wiretide"][0]
            print(
                f"  ratio wiretide/tshark: per CPU-second {ratio:.2f}x, wall {wall_ratio:.2f}x"
                " (target >= 2.00x)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

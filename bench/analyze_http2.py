"""Benchmark: HTTP/2 and gRPC dissection against tshark on the same generated captures.

Generates two captures with real HTTP/2 peers (the `h2` library on both ends, so framing and HPACK
are what a real stack emits): an h2load-like one (many concurrent streams per connection) and a gRPC
one (unary calls with protobuf messages, grpc-status trailers). Runs the dissection pipeline (with
the HTTP/2 specs) and tshark on each, and prints packets/s and entries/s. Figures are printed, never
asserted.

    .venv/bin/python bench/analyze_http2.py [--streams 20000] [--calls 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def ours(path: Path) -> tuple[float, int, int]:
    """(seconds, packets, stream entries) for the pipeline with the HTTP/2 specs, entries as JSON lines."""
    from tests.unit.dissector.test_http2_support import classified, registry
    from wiretide.capture.sources.pcapfile import read_batches
    from wiretide.dissector.pipeline import Pipeline

    start = time.perf_counter()
    pipe = Pipeline(registry())
    n = 0
    sink = bytearray()
    for cols in read_batches(str(path), 4096):
        for d in pipe.feed(cols):
            sink += orjson.dumps(classified(d))
            n += d["protocol"] in ("http2", "grpc")
        sink.clear()
    for d in pipe.finish():
        n += d["protocol"] in ("http2", "grpc")
    return time.perf_counter() - start, int(pipe.stats["packets"]), n


def theirs(path: Path, port: int, grpc: bool) -> tuple[float, int]:
    """(seconds, request streams) for tshark dissecting the same file as HTTP/2 (and gRPC): one run that
    prints every request's :method (and each gRPC message length), counted afterwards."""
    fields = ["-e", "http2.headers.method"] + (["-e", "grpc.message_length"] if grpc else [])
    argv = ["tshark", "-r", str(path), "-d", f"tcp.port=={port},http2", "-T", "fields", *fields]
    argv += ["-E", "occurrence=a", "-E", "aggregator=|"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    secs = time.perf_counter() - start
    count = 0
    for line in out.splitlines():
        methods = line.split("\t", 1)[0]
        count += len([m for m in methods.split("|") if m])
    return secs, count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=20000, help="HTTP/2 streams in the h2load-like capture")
    ap.add_argument("--calls", type=int, default=10000, help="unary gRPC calls in the gRPC capture")
    ap.add_argument("--keep", metavar="DIR", help="keep the generated captures in DIR")
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
            secs, pk, entries = ours(path)
            t_secs, t_count = theirs(path, port, is_grpc)
            size_mb = path.stat().st_size / 1e6
            print(f"{name}: {packets} packets, {size_mb:.1f} MB (generated in {gen_s:.1f} s)")
            print(
                f"  wiretide: {secs:6.2f} s  {pk / secs:9.0f} packets/s"
                f"  {entries / secs:8.0f} entries/s  ({entries} entries)"
            )
            print(
                f"  tshark:   {t_secs:6.2f} s  {packets / t_secs:9.0f} packets/s"
                f"  {t_count / t_secs:8.0f} streams/s  ({t_count} streams)"
            )
            print(f"  ratio wiretide/tshark packets/s: {(pk / secs) / (packets / t_secs):.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: Redis, Kafka, AMQP, PostgreSQL, MySQL and MongoDB dissection against tshark, same captures.

Two kinds of workload, side by side:

- **shared** (redis, kafka, amqp): every capture in `../shared/pcaps/<protocol>/` — real clients and
  servers, mostly short connections of a few messages, several without their handshake — replicated
  until the capture is large enough to measure: each copy gets its own addresses (10.x.y.z, per copy
  and file), gaps between packets are shortened to at most 1 ms, and copies start 0.2 ms apart so
  about a hundred connections are open at once. Checksums are not recomputed (neither tool checks
  them).
- **keep-alive** (all six): long connections of many calls each, built from the protocols' real bytes
  with the unit tests' builders (pika's marshalling for AMQP, the driver's `bson` for MongoDB, a Java
  client's frames for Kafka): login, then queries / commands / produce-and-fetch / publish-deliver-ack.

For each workload the bench writes one pcap, runs the whole pipeline on it in this process (reading the
file included; `Pipeline.feed` over its batches, then `finish`; the cyclic garbage collector spaced as
the dissector service spaces it) and `tshark -n -r FILE -Y <proto> -T fields -e <one field per
message>` on it, and prints the protocol messages each decoded per CPU-second: ours from this
process's CPU time, tshark's from its child CPU time (its start-up, about 0.3 s, included — at
`--messages 40000` that is half of tshark's time on the Redis keep-alive capture; the default size
makes it a small part). "Messages" are what tshark counts
on the capture — Kafka requests and responses, AMQP frames, PostgreSQL and MySQL packets, MongoDB
messages; for Redis (tshark has no per-message field, and reads RESP3 only as fragments) they are the
commands, replies and pushes, which `test_redis_pcaps.py` holds equal to tshark's on RESP2. Both
tools' figures divide the same number. The bench also prints the entries each workload gave, to check
the work was done. Figures are printed, never asserted; run it on a quiet machine, or say it was not.

    .venv/bin/python bench/analyze_protocols.py [--messages 150000] [--only redis,kafka] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dpkt  # type: ignore[import-untyped]  # noqa: E402

from tests.helpers.pcaps import PCAPS  # noqa: E402
from tests.unit.dissector.builders import Conversation  # noqa: E402
from wiretide.capture.sources.pcapfile import read_batches  # noqa: E402
from wiretide.common.collector import collect_rarely  # noqa: E402
from wiretide.dissector import native  # noqa: E402
from wiretide.dissector.pipeline import Pipeline  # noqa: E402
from wiretide.dissector.registry import default_registry  # noqa: E402

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)  # nanosecond pcap, Ethernet
RECORD = struct.Struct("<IIII")
ETH_IP4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
MAX_GAP_NS = 1_000_000  # longest gap kept between two packets of a replicated capture
COPY_SPACING_NS = 200_000  # start of one copy to the next
Frames = list[tuple[int, bytes]]


# ---- tshark ------------------------------------------------------------------------------------


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def tshark(path: Path, display: str, field: str, decode_as: tuple[str, ...]) -> tuple[float, int]:
    """tshark's CPU seconds on the capture, and the values of `field` it printed (one per message)."""
    argv = ["tshark", "-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path)]
    for rule in decode_as:
        argv += ["-d", rule]
    argv += ["-Y", display, "-T", "fields", "-E", "occurrence=a", "-e", field]
    before = children_cpu()
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    cpu = children_cpu() - before
    values = sum(len([v for v in line.split(b",") if v]) for line in out.splitlines())
    return cpu, values


# ---- captures ----------------------------------------------------------------------------------


def link_payload(linktype: int, buf: bytes) -> bytes | None:
    """The IPv4 packet inside a frame of the capture's link type (None: not IPv4)."""
    if linktype == 1:  # Ethernet, one VLAN tag at most
        kind, off = buf[12:14], 14
        if kind == b"\x81\x00":
            kind, off = buf[16:18], 18
        return buf[off:] if kind == b"\x08\x00" else None
    if linktype == 113:  # Linux cooked v1
        return buf[16:] if buf[14:16] == b"\x08\x00" else None
    if linktype == 276:  # Linux cooked v2
        return buf[20:] if buf[0:2] == b"\x08\x00" else None
    if linktype == 0:  # BSD loopback: a host-order address family
        return buf[4:] if buf[:4] in (b"\x02\x00\x00\x00", b"\x00\x00\x00\x02") else None
    if linktype in (12, 14, 101):  # raw IP
        return buf if buf[:1] and buf[0] >> 4 == 4 else None
    return None


def read_ipv4(path: Path) -> Frames:
    """The IPv4 packets of a pcap/pcapng file as Ethernet frames, gaps shortened, time from 0."""
    with path.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader: Any = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        out: Frames = []
        last: int | None = None
        t = 0
        for ts, buf in reader:
            ns = int(ts * 1e9)
            t += 0 if last is None else max(0, min(ns - last, MAX_GAP_NS))
            last = ns
            ip = link_payload(linktype, bytes(buf))
            if ip is not None and len(ip) >= 20:
                out.append((t, ETH_IP4 + ip))
    return out


def readdress(frames: Frames, unit: int) -> Frames:
    """The frames with each distinct IPv4 address replaced by 10.a.b.n (a.b = `unit`, n per address)."""
    hi, mid, lo = 10 + (unit >> 16), (unit >> 8) & 0xFF, unit & 0xFF
    names: dict[bytes, bytes] = {}

    def name(addr: bytes) -> bytes:
        new = names.get(addr)
        if new is None:
            new = names[addr] = bytes((hi, mid, lo, len(names) + 1))
        return new

    out: Frames = []
    for t, frame in frames:
        src, dst = frame[26:30], frame[30:34]
        out.append((t, frame[:26] + name(src) + name(dst) + frame[34:]))
    return out


def write_pcap(path: Path, frames: Iterator[tuple[int, bytes]]) -> int:
    count = 0
    with path.open("wb") as fh:
        fh.write(PCAP_HEADER)
        for ts, frame in frames:
            fh.write(RECORD.pack(ts // 1_000_000_000, ts % 1_000_000_000, len(frame), len(frame)))
            fh.write(frame)
            count += 1
    return count


def replicate(units: list[Frames], copies: int) -> Iterator[tuple[int, bytes]]:
    """`copies` of every unit, each copy with its own addresses, interleaved in time order."""
    t0 = 1_700_000_000 * 10**9
    everything: list[tuple[int, bytes]] = []
    for copy in range(copies):
        for u, frames in enumerate(units):
            start = t0 + copy * COPY_SPACING_NS
            everything.extend((start + t, f) for t, f in readdress(frames, copy * len(units) + u))
    everything.sort(key=lambda item: item[0])
    return iter(everything)


def conversations_frames(convs: list[Conversation]) -> Frames:
    frames = sorted((f for c in convs for f in c.frames), key=lambda f: f[0])
    base = frames[0][0] if frames else 0
    return [(t - base, f) for t, f in frames]


# ---- keep-alive workloads (real protocol bytes from the unit tests' builders) -------------------


def redis_keepalive(conv: Conversation, calls: int) -> None:
    def cmd(*args: str) -> bytes:
        return f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)

    value = "v" * 64
    for i in range(0, calls, 10):  # pipelines of 10 commands, as a client library batches them
        reqs, reps = [], []
        for j in range(i, i + 10):
            if j % 3 == 0:
                reqs.append(cmd("SET", f"user:{j}", value))
                reps.append(b"+OK\r\n")
            elif j % 3 == 1:
                reqs.append(cmd("GET", f"user:{j - 1}"))
                reps.append(f"${len(value)}\r\n{value}\r\n".encode())
            else:
                reqs.append(cmd("INCR", "hits"))
                reps.append(f":{j}\r\n".encode())
        conv.send(True, b"".join(reqs)).send(False, b"".join(reps))


def kafka_keepalive(conv: Conversation, calls: int) -> None:
    from tests.unit.dissector import test_kafka as k

    for from_client, hexed in k.JAVA_CLIENT:  # the Java producer's start: ApiVersions … Produce
        conv.send(from_client, bytes.fromhex(hexed))
    corr = 100
    for i in range(calls // 2):
        records = k.batch([k.record(n, f"k{n}".encode(), b'{"order": %d}' % n) for n in range(5)], 0, i * 5)
        conv.send(True, k.produce(corr, "orders", records)).send(False, k.produce_ok(corr, "orders"))
        corr += 1


def amqp_keepalive(conv: Conversation, calls: int) -> None:
    from tests.unit.dissector import test_amqp as a

    ps = a.ps
    for from_client, data in a.handshake():
        conv.send(from_client, data)
    conv.send(True, a.m(1, ps.Basic.Consume(queue="orders", consumer_tag="c1")))
    conv.send(False, a.m(1, ps.Basic.ConsumeOk(consumer_tag="c1")))
    props = ps.BasicProperties(content_type="application/json", delivery_mode=2, message_id="m")
    body = b'{"id": 1, "sku": "book", "qty": 3}'
    for tag in range(1, calls // 2 + 1):
        conv.send(True, a.content(1, ps.Basic.Publish(exchange="shop", routing_key="orders"), body, props))
        conv.send(False, a.content(1, ps.Basic.Deliver("c1", tag, False, "shop", "orders"), body, props))
        conv.send(True, a.m(1, ps.Basic.Ack(delivery_tag=tag)))


def postgresql_keepalive(conv: Conversation, calls: int) -> None:
    from tests.unit.dissector import test_postgresql as pg

    conv.send(True, pg.HELLO).send(False, pg.WELCOME[:9]).send(True, pg.SCRAM_FIRST + pg.SCRAM_FINAL)
    conv.send(False, pg.WELCOME[9:])
    conv.send(True, pg.parse("SELECT name, price FROM items WHERE id = $1", "s1", 1) + pg.SYNC)
    conv.send(False, pg.PARSE_OK + pg.ready())
    for i in range(calls):
        if i % 2:
            conv.send(True, pg.query(f"SELECT id, name FROM users WHERE team = {i}"))
            rows = pg.data_row(str(i), "alice") * 5
            conv.send(False, pg.row_desc("id", "name") + rows + pg.complete("SELECT 5") + pg.ready())
        else:
            conv.send(True, pg.bind([str(i).encode()], "s1") + pg.execute() + pg.SYNC)
            conv.send(
                False, pg.BIND_OK + pg.data_row("widget", "9.99") + pg.complete("SELECT 1") + pg.ready()
            )


def mysql_keepalive(conv: Conversation, calls: int) -> None:
    from tests.unit.dissector import test_mysql as my

    for from_client, data in my.LOGIN:
        conv.send(from_client, data)
    names = [b"id", b"name", b"price"]
    rows = [[str(n).encode(), b"widget", b"9.99"] for n in range(5)]
    for i in range(calls):
        if i % 2:
            conv.send(True, my.query(f"SELECT id, name, price FROM items WHERE team = {i}"))
            conv.send(False, my.result(names, rows, classic=False))
        else:
            conv.send(True, my.query(f"UPDATE items SET qty = qty - 1 WHERE id = {i}"))
            conv.send(False, my.ok(1, affected=1))


def mongodb_keepalive(conv: Conversation, calls: int) -> None:
    from tests.unit.dissector import test_mongodb as mo

    rid = 1
    for i in range(calls):
        if i % 2:
            req = mo.op_msg(rid, 0, {"find": "orders", "filter": {"sku": f"s{i}"}, "limit": 5, "$db": "shop"})
            docs = [{"_id": n, "sku": f"s{i}", "qty": n} for n in range(5)]
            rep = mo.op_msg(
                rid + 1, rid, {"cursor": {"firstBatch": docs, "id": 0, "ns": "shop.orders"}, "ok": 1.0}
            )
        else:
            req = mo.op_msg(
                rid, 0, {"insert": "orders", "$db": "shop"}, documents=[{"sku": f"s{i}", "qty": 1}]
            )
            rep = mo.op_msg(rid + 1, rid, {"n": 1, "ok": 1.0})
        conv.send(True, req).send(False, rep)
        rid += 2


@dataclass(frozen=True)
class Workload:
    name: str
    protocol: str  # the Entry `protocol`
    display: str  # tshark's display filter
    field: str  # a tshark field with one value per message
    port: int = 0  # keep-alive: the server port
    build: Callable[[Conversation, int], None] | None = None  # keep-alive: one connection's calls
    decode_as: tuple[str, ...] = ()


CALLS_PER_CONNECTION = 200
CONNECTIONS_PER_UNIT = 4
WORKLOADS = (
    Workload("redis shared", "redis", "resp", "frame.number", decode_as=()),
    Workload("redis keep-alive", "redis", "resp", "frame.number", 6379, redis_keepalive),
    Workload("kafka shared", "kafka", "kafka", "kafka.correlation_id",
             decode_as=("tcp.port==9092,kafka", "tcp.port==36333,kafka")),
    Workload("kafka keep-alive", "kafka", "kafka", "kafka.correlation_id", 9092, kafka_keepalive,
             ("tcp.port==9092,kafka",)),
    Workload("amqp shared", "amqp", "amqp", "amqp.type"),
    Workload("amqp keep-alive", "amqp", "amqp", "amqp.type", 5672, amqp_keepalive),
    Workload("postgresql keep-alive", "postgresql", "pgsql", "pgsql.type", 5432, postgresql_keepalive),
    Workload("mysql keep-alive", "mysql", "mysql", "mysql.packet_number", 3306, mysql_keepalive),
    Workload("mongodb keep-alive", "mongodb", "mongo", "mongo.opcode", 27017, mongodb_keepalive,
             ("tcp.port==27017,mongo",)),  # tshark 4.0 takes 27017 for TLS unless told
)  # fmt: skip


def unit_of(w: Workload) -> list[Frames]:
    """One unit of the workload: the shared captures, or a few keep-alive connections."""
    if w.build is None:
        return [read_ipv4(p) for p in sorted((PCAPS / w.protocol).glob("*.pcap*"))]
    convs = []
    for c in range(CONNECTIONS_PER_UNIT):
        conv = Conversation(cport=40000 + c, sport=w.port, step=20_000).handshake()
        w.build(conv, CALLS_PER_CONNECTION)
        convs.append(conv.close())
    return [conversations_frames(convs)]


def redis_messages(path: Path) -> int:
    """Commands, replies and pushes in a Redis capture (as test_redis_pcaps counts them)."""
    p = Pipeline(default_registry(plugins=False))
    found = [e for b in read_batches(path) for e in p.feed(b)] + p.finish()
    found = [e for e in found if e["protocol"] == "redis"]
    return sum((e["request"] is not None) + (e["response"] is not None) for e in found)


def ours(path: Path, protocol: str) -> tuple[float, int]:
    """This process's CPU seconds for the whole pipeline on the file, and the entries of `protocol`."""
    pipeline = Pipeline(default_registry(plugins=False))
    count = 0
    t0 = time.process_time()
    for batch in read_batches(path):
        count += sum(1 for e in pipeline.feed(batch) if e["protocol"] == protocol)
    count += sum(1 for e in pipeline.finish() if e["protocol"] == protocol)
    return time.process_time() - t0, count


def run(w: Workload, target: int, tmp: Path) -> dict[str, Any]:
    units = unit_of(w)
    one = tmp / f"{w.name.replace(' ', '-')}-unit.pcap"
    write_pcap(one, replicate(units, 1))
    if w.protocol == "redis":
        per_unit = redis_messages(one)
    else:
        per_unit = tshark(one, w.display, w.field, w.decode_as)[1]
    if per_unit == 0:
        raise SystemExit(f"{w.name}: tshark finds no {w.display} message in the workload's unit")
    _, unit_entries = ours(one, w.protocol)
    copies = max(1, math.ceil(target / max(per_unit, 1)))
    path = tmp / f"{w.name.replace(' ', '-')}.pcap"
    packets = write_pcap(path, replicate(units, copies))
    our_cpu, entries = ours(path, w.protocol)
    their_cpu, their_values = tshark(path, w.display, w.field, w.decode_as)
    messages = per_unit * copies
    if w.protocol != "redis" and their_values != messages:
        print(f"  note: tshark counted {their_values} on the whole capture, {messages} by its unit")
    return {
        "workload": w.name, "packets": packets, "messages": messages, "entries": entries,
        "expected_entries": unit_entries * copies, "ours": our_cpu, "tshark": their_cpu,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=150_000, help="protocol messages per workload (about)")
    ap.add_argument("--only", default="", help="comma-separated protocols or workload names")
    ap.add_argument("--keep", type=Path, help="write the captures into this directory (kept)")
    args = ap.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    collect_rarely()  # the cyclic collector spaced as the dissector service and `wiretide analyze` do
    chosen = [w for w in WORKLOADS if not wanted or w.protocol in wanted or w.name in wanted]
    print(f"native={native.ACTIVE} ({native.STATUS}); CPU seconds: user + system")
    print(f"{'workload':24} {'packets':>9} {'messages':>9} {'entries':>8} {'ours s':>7} "
          f"{'msg/CPU-s':>10} {'tshark s':>8} {'msg/CPU-s':>10} {'ratio':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        for w in chosen:
            r = run(w, args.messages, tmp)
            mine, theirs = r["messages"] / r["ours"], r["messages"] / r["tshark"]
            flag = (
                ""
                if r["entries"] == r["expected_entries"]
                else f"  (expected {r['expected_entries']} entries)"
            )
            counts = f"{r['packets']:>9,} {r['messages']:>9,} {r['entries']:>8,}"
            print(f"{r['workload']:24} {counts} {r['ours']:>7.2f} {mine:>10,.0f} {r['tshark']:>8.2f} "
                  f"{theirs:>10,.0f} {mine / theirs:>5.1f}x{flag}")  # fmt: skip


if __name__ == "__main__":
    main()

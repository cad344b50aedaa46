"""Benchmark: PostgreSQL dissection against tshark's pgsql dissector on the same generated capture.

Generates connections that each log in and then run simple queries (a few rows each) and executions
of a prepared statement (extended protocol), writes them as one pcap, then runs the whole pipeline
(`Pipeline.feed` over the file's batches) and `tshark -Y pgsql` on it. Prints the protocol messages
each decoded per CPU-second (ours: this process's CPU time; tshark's: its child CPU time) and checks
that both counted the same queries. Figures are printed, never asserted.

    .venv/bin/python bench/analyze_postgresql.py [--connections 40] [--queries 500] [--keep FILE]
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

from tests.unit.dissector import test_postgresql as pg
from tests.unit.dissector.builders import Conversation
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector import native
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)  # nanosecond pcap, Ethernet
RECORD = struct.Struct("<IIII")
ROWS = 5  # rows per simple query


def conversation(index: int, queries: int) -> tuple[Conversation, int]:
    """One connection; returns it and the protocol messages it carries."""
    conv = Conversation(cport=20000 + index, sport=5432)
    conv.handshake()
    conv.send(True, pg.HELLO).send(False, pg.WELCOME[:9]).send(True, pg.SCRAM_FIRST + pg.SCRAM_FINAL)
    conv.send(False, pg.WELCOME[9:])
    messages = 1 + 4 + 2 + 1 + 1 + 1  # startup, 4 auth requests, SASL x2, status, key data, ready
    sql = "SELECT name, price FROM items WHERE id = $1"
    conv.send(True, pg.parse(sql, "s1", 1) + pg.SYNC).send(False, pg.PARSE_OK + pg.ready())
    messages += 4
    for i in range(queries):
        if i % 2:
            conv.send(True, pg.query(f"SELECT id, name FROM users WHERE team = {i}"))
            rows = pg.data_row(str(i), "alice") * ROWS
            conv.send(False, pg.row_desc("id", "name") + rows + pg.complete(f"SELECT {ROWS}") + pg.ready())
            messages += 1 + 1 + ROWS + 2
        else:
            conv.send(True, pg.bind([str(i).encode()], "s1") + pg.execute() + pg.SYNC)
            row = pg.data_row("widget", "9.99")
            conv.send(False, pg.BIND_OK + row + pg.complete("SELECT 1") + pg.ready())
            messages += 3 + 4
    conv.close()
    return conv, messages


def write_pcap(path: Path, convs: list[Conversation]) -> None:
    frames = sorted((f for c in convs for f in c.frames), key=lambda f: f[0])
    with path.open("wb") as fh:
        fh.write(PCAP_HEADER)
        for ts, frame in frames:
            fh.write(RECORD.pack(ts // 1_000_000_000, ts % 1_000_000_000, len(frame), len(frame)))
            fh.write(frame)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=40)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--keep", type=Path, help="write the capture here (kept)")
    args = ap.parse_args()
    convs, messages = [], 0
    for i in range(args.connections):
        conv, n = conversation(i, args.queries)
        convs.append(conv)
        messages += n
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "postgresql.pcap"
        write_pcap(path, convs)
        batches = list(read_batches(path))
        pipeline = Pipeline(default_registry(plugins=False))
        t0 = time.process_time()
        entries = [e for b in batches for e in pipeline.feed(b)] + pipeline.finish()
        ours = time.process_time() - t0
        before = children_cpu()
        out = subprocess.run(
            ["tshark", "-r", str(path), "-Y", "pgsql", "-T", "fields", "-e", "pgsql.type"],
            capture_output=True, check=True,
        )  # fmt: skip
        theirs = children_cpu() - before
    kinds = [k for line in out.stdout.decode().splitlines() for k in line.split(",") if k]
    queries = sum(1 for k in kinds if k in ("Simple query", "Execute"))
    entries_pg = [e for e in entries if e["protocol"] == "postgresql" and e["method"] != "STARTUP"]
    print(f"capture: {args.connections} connections, {messages} PostgreSQL messages, native={native.ACTIVE}")
    print(f"wiretide: {ours:.2f} s CPU, {messages / ours:,.0f} messages/CPU-s, {len(entries_pg)} entries")
    print(f"tshark:   {theirs:.2f} s CPU, {len(kinds) / theirs:,.0f} messages/CPU-s, {queries} queries")
    print(f"ratio: {(messages / ours) / (len(kinds) / theirs):.1f}x")


if __name__ == "__main__":
    main()

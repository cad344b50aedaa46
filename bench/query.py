"""Store benchmark: load N entries (default 1,000,000) into SQLite and time the queries users run.

Prints the insert rate of the store (the writer's path: batches of 1,000 in one transaction, each entry
with its JSON as it came off the wire; `--input dicts` hands documents only, which the store must
encode itself) and p50/p95 latency of: latest 100, `http && status_code >= 500` over the whole store,
a namespace filter, `path.contains("/api/")`, a sparse filter (about 1 entry in 90) and one that
matches no entry (what the group indexes are for).
Run: `.venv/bin/python bench/query.py [--entries N] [--runs R] [--input wire|dicts]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.entries import entries
from wiretide.gateway.store import SqliteStore

QUERIES = {
    "latest 100": ("", 100),
    "http && status_code >= 500 (100)": ("http && status_code >= 500", 100),
    'dst.namespace == "payments" (100)': ('dst.namespace == "payments"', 100),
    'path.contains("/api/") (100)': ('path.contains("/api/")', 100),
    "5xx in payments, last 5 min (100)": (
        'status_code >= 500 && dst.namespace == "payments" && timestamp > now() - duration("5m")',
        100,
    ),
    "sparse: grpc to db from kube-system (100)": (
        'grpc && dst.name == "db" && src.namespace == "kube-system"',
        100,
    ),
    "none: status_code == 418 (100)": ("status_code == 418", 100),
}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--input", choices=("wire", "dicts"), default="wire")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.sqlite3")
        batch = 1_000
        made = 0
        insert_s = 0.0
        t_span = args.entries * 1_000_000  # one entry per ms of history
        start_ns = time.time_ns() - t_span
        insert_cpu = 0.0
        while made < args.entries:
            docs = entries(batch, seed=made, start_ns=start_ns + made * 1_000_000, step_ns=1_000_000)
            raw = [orjson.dumps(d) for d in docs] if args.input == "wire" else None  # the producer's work
            t0, c0 = time.perf_counter(), time.process_time()
            store.insert_many(docs, raw)
            insert_s += time.perf_counter() - t0
            insert_cpu += time.process_time() - c0
            made += batch
        store.maintain()  # what the gateway's retention loop does every round
        print(f"entries: {made:,}  store size: {store.used_bytes() / 1e6:.0f} MB")
        print(
            f"insert: {made / insert_s:,.0f} entries/s wall, {made / insert_cpu:,.0f} entries per CPU-second"
            f" (store.insert_many, batches of {batch}, input {args.input};"
            f" load average {os.getloadavg()[0]:.1f})"
        )
        for name, (q, limit) in QUERIES.items():
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                page = store.scan(q, limit=limit)
                times.append((time.perf_counter() - t0) * 1000)
            print(
                f"{name:<45} p50 {pct(times, 0.5):7.1f} ms  p95 {pct(times, 0.95):7.1f} ms"
                f"  (returned {len(page.docs)}, scanned {page.scanned}, mean {statistics.mean(times):.1f} ms)"
            )
        store.close()


if __name__ == "__main__":
    main()

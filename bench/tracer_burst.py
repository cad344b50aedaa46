"""Benchmark: the tracer's engine in a burst of one call repeated (what `ab -k` makes), in-process.

A burst of N keep-alive HTTP calls at RATE calls/s of packet time from 16 connections to one server
holds more calls inside the assembly window (2 s) than an instance's timeline keeps (20,000), so the
timelines run at their cap. Two shapes of the same burst: every call the same duration (a server
answering one request the same way, to the microsecond), and durations spread over 100–800 µs.
Prints CPU µs per entry of `Engine.ingest` (256 entries a call, as the service ingests a fetch).

    .venv/bin/python bench/tracer_burst.py [--entries 60000] [--rate 20000]
    WIRETIDE_NATIVE=0 .venv/bin/python bench/tracer_burst.py    # the pure-Python modules
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from wiretide.common.collector import collect_rarely
from wiretide.common.entry import UlidGenerator
from wiretide.tracer import native
from wiretide.tracer.engine import Engine

BODY = '{"id":12345,"ok":true,"name":"widget"}'
CONNECTIONS = 16


def call(gen: UlidGenerator, i: int, t0: int, rate: float, same: bool) -> dict[str, Any]:
    ts = t0 + int(i * 1e9 / rate)
    c = i % CONNECTIONS
    elapsed = 300 if same else 100 + (i * 7919) % 700
    request_headers = {"host": "10.200.0.2", "user-agent": "ApacheBench/2.3", "accept": "*/*"}
    response_headers = {"server": "nginx/1.22.1", "content-type": "application/json"}
    return {
        "id": gen.new(ts), "timestamp": ts, "elapsed_us": elapsed, "node": "bench", "protocol": "http",
        "transport": "tcp", "flow_id": f"{0xABC000 + c:08x}", "method": "GET", "path": "/small",
        "status": 200, "summary": "GET /small → 200", "error": None, "trace": None, "tls": None,
        "src": {"ip": "10.200.0.1", "port": 40000 + c}, "dst": {"ip": "10.200.0.2", "port": 80},
        "request": {"method": "GET", "path": "/small", "http_version": "1.0", "headers": request_headers,
                    "query": {}, "cookies": {}, "body": {"content": "", "size": 0, "truncated": False}},
        "response": {"status": 200, "http_version": "1.1", "headers": response_headers, "cookies": {},
                     "body": {"content": BODY, "size": len(BODY), "truncated": False}},
        "size": {"request": 95, "response": 200},
    }  # fmt: skip


def run(n: int, rate: float, same: bool) -> float:
    gen = UlidGenerator()
    t0 = time.time_ns() - 100 * 10**9
    texts = [orjson.dumps(call(gen, i, t0, rate, same)) for i in range(n)]
    docs = [orjson.loads(t) for t in texts]
    engine = Engine()
    c0 = time.process_time()
    for s in range(0, n, 256):
        engine.ingest(docs[s : s + 256], 0, texts[s : s + 256])
    return (time.process_time() - c0) * 1e6 / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=60_000)
    ap.add_argument("--rate", type=float, default=20_000.0, help="calls per second of packet time")
    args = ap.parse_args()
    collect_rarely()
    print(f"tracer modules: {native.STATUS}; {args.entries:,} calls at {args.rate:,.0f}/s")
    for same in (True, False):
        shape = "one duration" if same else "durations spread"
        print(f"  {shape:<17} {run(args.entries, args.rate, same):9.1f} µs CPU per entry")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark KFL: parse+compile time per query, Python predicate evaluations/s over a mix of entries
(the live-stream path), and SQLite/MongoDB plan compile time.

Run: .venv/bin/python bench/kfl.py [--entries 20000] [--rounds 5]
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from wiretide.common.kfl import compile_mongo, compile_predicate, compile_sql, parse_query

T0 = 1_767_225_600_000_000_000
STEP_NS = 20_000_000  # one entry every 20 ms
QUERIES = [
    "http && status_code >= 500",
    'dst.pod.namespace == "payments" && method == "POST"',
    'path.startsWith("/api") && !path.contains("/health")',
    'elapsed_time > duration("250ms")',
    'timestamp > now() - duration("5m") && http',
    'dns && "example.com" in dns_questions',
    'request.headers["content-type"] == "application/json"',
    'method in ["GET", "HEAD", "OPTIONS"] || status_code == 404',
    'http and response.status == r"5.*"',
    'dns_answers.exists(a, a.startsWith("10."))',
]
COLUMNS = {
    "timestamp": "ts",
    "protocol": "protocol",
    "status_code": "status",
    "method": "method",
    "path": "path",
    "src.namespace": "src_ns",
    "dst.namespace": "dst_ns",
    "node_name": "node",
}


def make_entries(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        protocol = rng.choice(["http", "http", "http", "grpc", "dns", "kafka", "redis"])
        entry: dict[str, Any] = {
            "id": f"{i:026d}",
            "timestamp": T0 + i * STEP_NS,
            "elapsed_us": rng.randint(100, 900_000),
            "protocol": protocol,
            "status": rng.choice([200, 200, 200, 201, 404, 500, 503]),
            "method": rng.choice(["GET", "POST", "PUT"]),
            "path": rng.choice(["/api/v1/users", "/healthz", "/api/v1/orders/7", "/"]),
            "src": {"ip": "10.0.0.5", "namespace": "shop", "name": "frontend", "pod": {"name": "frontend-1"}},
            "dst": {
                "ip": "10.0.1.9",
                "namespace": rng.choice(["payments", "shop"]),
                "pod": {"namespace": "payments"},
            },
            "request": {"headers": {"content-type": rng.choice(["application/json", "text/plain"])}},
            "response": {"status": 200, "headers": {}},
        }
        if protocol == "dns":
            entry["request"] = {
                "questions": [{"name": rng.choice(["example.com", "svc.local"]), "type": "A"}]
            }
            entry["response"] = {"answers": [{"data": rng.choice(["10.0.0.7", "93.184.216.34"])}]}
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    entries = make_entries(args.entries)
    print(f"{len(entries)} entries, best of {args.rounds} rounds, one core")
    print(f"{'query':62} {'compile µs':>10} {'evals/s':>11} {'match %':>8}")
    rates = []
    for text in QUERIES:
        start = time.perf_counter()
        for _ in range(200):
            predicate = compile_predicate(text, now_ns=T0 + len(entries) * STEP_NS)
        compile_us = (time.perf_counter() - start) / 200 * 1e6
        best = float("inf")
        matched = 0
        for _ in range(args.rounds):
            start = time.perf_counter()
            matched = sum(1 for e in entries if predicate(e))
            best = min(best, time.perf_counter() - start)
        rate = len(entries) / best
        rates.append(rate)
        print(f"{text:62} {compile_us:10.1f} {rate:11,.0f} {100 * matched / len(entries):7.1f}%")
    rates.sort()
    print(f"median predicate rate: {rates[len(rates) // 2]:,.0f} evaluations/s")
    query = parse_query(QUERIES[0])
    start = time.perf_counter()
    for _ in range(2_000):
        compile_sql(query, COLUMNS)
        compile_mongo(query)
    print(f"SQL + MongoDB plan from a parsed query: {(time.perf_counter() - start) / 2_000 * 1e6:.1f} µs")


if __name__ == "__main__":
    main()

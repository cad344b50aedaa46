"""Benchmark: the CPU cost of redaction at the source, per entry, on realistic and unfavourable entries.

Builds entries as the dissector emits them (HTTP/1 calls with and without credentials, JSON bodies
small and large, a 64 KiB HTML page, a gRPC call with a schema-decoded message, a WebSocket JSON
message) and times `Redactor.redact` with the default rules on fresh copies (made before the clock starts;
every string a new object, as the parsers make them, so no hash is cached), printing CPU µs per entry
(process time). Also prints whether the
compiled (mypyc) build is the one running. Figures are printed, never asserted.

    .venv/bin/python bench/redact.py [--rounds 5] [--n 2000] [--analyze 48000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wiretide.dissector import native
from wiretide.dissector.redact import DEFAULT_REDACTOR


def _http(req_headers: dict[str, str], body: str = "", mime: str = "", resp_body: str = "") -> dict[str, Any]:
    def body_of(content: str, m: str) -> dict[str, Any]:
        enc = "json" if "json" in m and content else "text"
        return {"size": len(content), "mime": m, "encoding": enc, "content": content, "truncated": False}

    return {
        "id": "01J0000000000000000000000",
        "timestamp": 1,
        "protocol": "http",
        "path": "/api/v1/items/42",
        "summary": "GET /api/v1/items/42 → 200",
        "request": {
            "method": "GET",
            "url": "http://shop/api/v1/items/42?page=2&sort=name",
            "path": "/api/v1/items/42",
            "path_segments": ["api", "v1", "items", "42"],
            "query_string": "page=2&sort=name",
            "query": {"page": ["2"], "sort": ["name"]},
            "http_version": "1.1",
            "headers": {
                "host": "shop",
                "user-agent": "bench/1.0",
                "accept": "application/json",
                **req_headers,
            },
            "cookies": {},
            "body": body_of(body, mime),
        },
        "response": {
            "status": 200,
            "reason": "OK",
            "http_version": "1.1",
            "headers": {
                "content-type": "application/json",
                "content-length": str(len(resp_body)),
                "date": "Tue, 19 Mar 2024 16:05:11 GMT",
                "server": "gunicorn",
            },
            "cookies": {},
            "body": body_of(resp_body, "application/json"),
        },
    }


def cases() -> dict[str, dict[str, Any]]:
    item = {"id": 42, "name": "widget", "price": 9.99, "tags": ["a", "b"], "stock": 17, "sku": "W-42"}
    small = json.dumps(item)
    large = json.dumps({"items": [dict(item, id=i) for i in range(200)], "total": 200})  # ~16 KiB
    login = json.dumps({"user": "bob", "password": "hunter2", "remember": True})
    html = "<html><body>" + "<p>Lorem ipsum dolor sit amet, basic text.</p>" * 1450 + "</body></html>"
    authed = _http(
        {"authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"}, resp_body=small
    )
    authed["request"]["cookies"] = {"session": "abc123", "theme": "dark"}
    authed["request"]["headers"]["cookie"] = "session=abc123; theme=dark"
    page = _http({}, resp_body="")
    page["response"]["body"] = {"size": len(html), "mime": "text/html", "encoding": "text", "content": html}
    grpc = {
        "id": "01J",
        "timestamp": 1,
        "protocol": "grpc",
        "path": "/shop.Cart/Add",
        "request": {
            "headers": {"content-type": "application/grpc", "te": "trailers", "user-agent": "grpc-go/1.6"},
            "cookies": {},
            "query": {},
            "messages": [{"size": 40, "compressed": False, "json": {"cartId": "c-1", "item": item}}],
            "body": {"size": 45, "mime": "application/grpc", "encoding": "base64", "content": ""},
        },
        "response": {
            "headers": {"content-type": "application/grpc"},
            "trailers": {"grpc-status": "0"},
            "messages": [{"size": 4, "compressed": False, "json": {"ok": True}}],
        },
    }
    ws = {
        "id": "01J",
        "timestamp": 1,
        "protocol": "ws",
        "request": {
            "type": "text",
            "text": json.dumps({"op": "subscribe", "channel": "prices", "token": "t0k"}),
        },
        "summary": "→ text",
    }
    return {
        "GET, small JSON reply, no secret": _http({}, resp_body=small),
        "GET + bearer JWT + cookies": authed,
        "POST login JSON (password)": _http(
            {"content-type": "application/json"}, login, "application/json", small
        ),
        "GET, 16 KiB JSON reply": _http({}, resp_body=large),
        "GET, 64 KiB HTML page": page,
        "gRPC, schema-decoded messages": grpc,
        "WebSocket JSON message (token)": ws,
    }


def fresh(value: Any) -> Any:
    """A deep copy whose strings are new objects too (`copy.deepcopy` shares them, hashes included)."""
    if type(value) is str:
        return (value + " ")[:-1] if value else value
    if type(value) is dict:
        return {fresh(k): fresh(v) for k, v in value.items()}
    if type(value) is list:
        return [fresh(v) for v in value]
    return value


def cpu_per_call(
    take: Callable[[], dict[str, Any]], n: int, redact: Callable[[dict[str, Any]], object]
) -> float:
    """CPU µs per `redact(take())`, over n calls."""
    start = time.process_time()
    for _ in range(n):
        redact(take())
    return (time.process_time() - start) / n * 1e6


def analyze_cost(exchanges: int, rounds: int) -> None:
    """CPU seconds of `wiretide analyze` (child process: user + sys) with and without redaction."""
    import importlib.util
    import resource
    import subprocess
    import tempfile

    spec = importlib.util.spec_from_file_location("avt", Path(__file__).with_name("analyze_vs_tshark.py"))
    assert spec is not None and spec.loader is not None
    avt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(avt)
    wiretide = str(Path(sys.executable).parent / "wiretide")
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "keepalive.pcap"
        avt.generate(pcap, exchanges)
        best = {"default rules": float("inf"), "--no-redact": float("inf")}
        for _ in range(rounds):  # alternate, so that load swings hit both
            for name in list(best):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                argv = [wiretide, "analyze", str(pcap), "--quiet"] + (["--no-redact"] if "no" in name else [])
                subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                best[name] = min(best[name], cpu)
    for name, cpu in best.items():
        print(f"wiretide analyze, {name:14} {cpu:6.2f} CPU s  {cpu / exchanges * 1e6:6.1f} µs/exchange")
    extra = (best["default rules"] - best["--no-redact"]) / exchanges * 1e6
    print(f"redaction adds {extra:.1f} CPU µs per exchange (best of {rounds})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5, help="rounds per case; the best is reported")
    ap.add_argument("--n", type=int, default=2000, help="entries per round (fewer for the large cases)")
    ap.add_argument(
        "--analyze",
        type=int,
        default=0,
        metavar="EXCHANGES",
        help="also time `wiretide analyze` with and without redaction, in alternation, on the capture of "
        "bench/analyze_vs_tshark.py with this many exchanges (a cookie on every request)",
    )
    args = ap.parse_args()
    if args.analyze:
        analyze_cost(args.analyze, args.rounds)
    redact = DEFAULT_REDACTOR.redact
    print(f"redact.py: {'compiled (mypyc)' if native.ACTIVE else 'pure Python'} ({native.STATUS})")
    print(f"{'entry':38} {'CPU µs/entry':>13} {'places redacted':>16}")
    for name, entry in cases().items():
        n = max(50, args.n // (40 if "KiB" in name else 1))
        best = float("inf")
        for _ in range(args.rounds):
            batch = [fresh(entry) for _ in range(n)]
            best = min(best, cpu_per_call(iter(batch).__next__, n, redact))
        marks = redact(fresh(entry))
        print(f"{name:38} {best:13.2f} {len(marks):>16}")
    load = os.getloadavg()[0]
    print(f"best of {args.rounds} rounds; load average now {load:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

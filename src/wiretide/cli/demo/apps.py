"""The demo's workloads: small real servers that call each other over real sockets.

    frontend (HTTP) → api (HTTP) → redis-server (RESP) and db (HTTP)
    loadgen → frontend: a steady mix of good, slow and failing requests

Run one role per network namespace: `python -m wiretide.cli.demo.apps ROLE --listen IP:PORT [--upstream …]`.
Rule: every role is stdlib only and exits when its parent (the demo) goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import random
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Final

PR_SET_PDEATHSIG: Final = 1
UPSTREAM_TIMEOUT_S: Final = 5.0
LOAD_INTERVAL_S: Final = 0.25  # loadgen: about four requests a second
SLOW_CALL_S: Final = (0.3, 0.9)  # the api's deliberately slow path
# loadgen's mix: path → weight
LOAD_MIX: Final = {"/": 60, "/products": 15, "/slow": 10, "/error": 10, "/missing": 5}


def die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=UPSTREAM_TIMEOUT_S) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 502, str(exc).encode()


def redis_command(addr: str, *args: str) -> bytes:
    host, port = addr.rsplit(":", 1)
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection((host, int(port)), timeout=UPSTREAM_TIMEOUT_S) as s:
        s.sendall(payload.encode())
        return s.recv(4096)


class Handler(BaseHTTPRequestHandler):
    role = ""
    upstreams: ClassVar[dict[str, str]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        getattr(self, f"_{self.role}")()

    def _frontend(self) -> None:
        api = self.upstreams["api"]
        path = {
            "/": "/api/items",
            "/products": "/api/items?limit=5",
            "/slow": "/api/slow",
            "/error": "/api/fail",
        }
        target = path.get(self.path.split("?")[0])
        if target is None:
            self.reply(404, {"error": "no such page"})
            return
        status, body = http_get(f"http://{api}{target}", {"traceparent": self.headers.get("traceparent", "")})
        self.reply(
            200 if status < 500 else 502, {"page": self.path, "api_status": status, "bytes": len(body)}
        )

    def _api(self) -> None:
        route = self.path.split("?")[0]
        if route == "/api/fail":
            self.reply(500, {"error": "inventory backend exploded"})
            return
        if route == "/api/slow":
            time.sleep(random.uniform(*SLOW_CALL_S))
        hits = b""
        if "redis" in self.upstreams:
            try:
                hits = redis_command(self.upstreams["redis"], "INCR", "hits")
            except OSError:
                hits = b"-unavailable"
        status, body = http_get(f"http://{self.upstreams['db']}/rows")
        self.reply(
            200 if status == 200 else 503, {"hits": hits.decode(errors="replace").strip(), "db": status}
        )

    def _db(self) -> None:
        if self.path.startswith("/rows"):
            self.reply(200, {"rows": [{"id": i, "name": f"item-{i}"} for i in range(random.randint(1, 8))]})
        else:
            self.reply(404, {"error": "no such table"})


def serve(role: str, listen: str, upstreams: dict[str, str]) -> None:
    host, port = listen.rsplit(":", 1)
    handler = type(f"{role.capitalize()}Handler", (Handler,), {"role": role, "upstreams": upstreams})
    server = ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    server.serve_forever()


def loadgen(target: str) -> None:
    paths, weights = list(LOAD_MIX), list(LOAD_MIX.values())
    sent = 0
    while True:
        path = random.choices(paths, weights)[0]
        http_get(f"http://{target}{path}")
        sent += 1
        if sent % 100 == 0:
            print(f"loadgen: {sent} requests sent", flush=True)
        time.sleep(LOAD_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wiretide-demo-app")
    parser.add_argument("role", choices=["frontend", "api", "db", "loadgen"])
    parser.add_argument("--listen", default="", help="IP:PORT to serve on")
    parser.add_argument("--upstream", action="append", default=[], help="NAME=IP:PORT, repeatable")
    args = parser.parse_args(argv)
    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    upstreams = dict(u.split("=", 1) for u in args.upstream)
    if args.role == "loadgen":
        loadgen(upstreams["frontend"])
    else:
        serve(args.role, args.listen, upstreams)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

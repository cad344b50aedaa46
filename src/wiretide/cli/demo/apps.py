"""The demo's workloads: small real servers that call each other over real sockets.

    frontend (HTTP) → api (HTTP) → redis-server (RESP) and db (HTTP) → postgres (PostgreSQL)
    loadgen → frontend: a steady mix of good, slow and failing requests

The db reads its rows from PostgreSQL (simple queries over one kept connection, and now and then a
query that fails, as real code has) when the demo could start one, else it makes them up.

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
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Final

PR_SET_PDEATHSIG: Final = 1
UPSTREAM_TIMEOUT_S: Final = 5.0
LOAD_INTERVAL_S: Final = 0.25  # loadgen: about four requests a second
SLOW_CALL_S: Final = (0.3, 0.9)  # the api's deliberately slow path
POSTGRES_USER: Final = "demo"  # cluster.POSTGRES_USER (trusted: the server lives in its own namespace)
FAILING_QUERY_EVERY: Final = 10  # the db's audit query, against a table that does not exist
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


class Postgres:
    """A minimal PostgreSQL client (protocol 3, trust authentication, simple queries) over one kept
    connection, reconnected after an error; enough for the demo's db, which is stdlib only."""

    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.addr = (host, int(port))
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def _read(self, n: int) -> bytes:
        assert self.sock is not None
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise OSError("postgres closed the connection")
            out += chunk
        return out

    def _until_ready(self) -> tuple[list[list[str | None]], str]:
        """Messages up to ReadyForQuery: the rows and the error's SQLSTATE ("" for none)."""
        rows: list[list[str | None]] = []
        error = ""
        while True:
            kind, size = struct.unpack("!ci", self._read(5))
            body = self._read(size - 4)
            if kind == b"D":
                values: list[str | None] = []
                pos = 2
                for _ in range(struct.unpack_from("!h", body)[0]):
                    (n,) = struct.unpack_from("!i", body, pos)
                    pos += 4
                    values.append(None if n < 0 else body[pos : pos + n].decode())
                    pos += max(n, 0)
                rows.append(values)
            elif kind == b"E":
                fields = {f[:1]: f[1:].decode() for f in body.split(b"\0") if f}
                error = fields.get(b"C", "XX000")
            elif kind == b"Z":
                return rows, error

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.addr, timeout=UPSTREAM_TIMEOUT_S)
        params = f"user\0{POSTGRES_USER}\0database\0postgres\0application_name\0demo-db\0\0".encode()
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        _, error = self._until_ready()
        if error:
            raise OSError(f"postgres refused the login ({error})")

    def query(self, sql: str) -> tuple[list[list[str | None]], str]:
        with self.lock:
            try:
                if self.sock is None:
                    self._connect()
                assert self.sock is not None
                data = sql.encode() + b"\0"
                self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(data)) + data)
                return self._until_ready()
            except (OSError, struct.error):
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                raise


class Handler(BaseHTTPRequestHandler):
    role = ""
    upstreams: ClassVar[dict[str, str]] = {}
    postgres: ClassVar[Postgres | None] = None

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
        if not self.path.startswith("/rows"):
            self.reply(404, {"error": "no such table"})
            return
        n = random.randint(1, 8)
        if self.postgres is None:
            self.reply(200, {"rows": [{"id": i, "name": f"item-{i}"} for i in range(n)]})
            return
        try:
            rows, _ = self.postgres.query(f"SELECT n, 'item-' || n AS name FROM generate_series(1, {n}) AS n")
            if random.randrange(FAILING_QUERY_EVERY) == 0:
                self.postgres.query("SELECT count(*) FROM audit_log")  # fails: 42P01, and the db goes on
        except OSError as exc:
            self.reply(503, {"error": f"postgres: {exc}"})
            return
        self.reply(200, {"rows": [{"id": int(r[0] or 0), "name": r[1]} for r in rows]})


def serve(role: str, listen: str, upstreams: dict[str, str]) -> None:
    host, port = listen.rsplit(":", 1)
    pg = Postgres(upstreams["postgres"]) if "postgres" in upstreams else None
    handler = type(
        f"{role.capitalize()}Handler", (Handler,), {"role": role, "upstreams": upstreams, "postgres": pg}
    )
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

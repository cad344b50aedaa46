"""The demo's workloads: small real servers that call each other over real sockets.

    frontend (HTTP) → api (HTTP) → redis-server (RESP) and db (HTTP) → postgres (PostgreSQL)
                      api → rabbitmq-server (AMQP: an order event on the `orders` queue) → worker
                      api → payments (HTTPS: a charge for each order; OpenSSL on both ends)
    loadgen → frontend: a steady mix of good, slow and failing requests, and checkouts

The db reads its rows from PostgreSQL (simple queries over one kept connection, and now and then a
query that fails, as real code has) when the demo could start one, else it makes them up. A checkout
makes the api charge the order at payments over HTTPS first (a new TLS connection per charge, with the
Service's name as SNI, the server's certificate checked against the demo's CA; about one charge in
eight is declined: 402, and nothing is published), then publish an order event (publisher confirms
on) that the worker consumes and acks; until the broker listens (or when it never does) the api
answers `queued: false` and the worker retries.

Run one role per network namespace: `python -m wiretide.cli.demo.apps ROLE --listen IP:PORT [--upstream …]`.
Rule: every role is stdlib only and exits when its parent (the demo) goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import random
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Final

PR_SET_PDEATHSIG: Final = 1
UPSTREAM_TIMEOUT_S: Final = 5.0
LOAD_INTERVAL_S: Final = 0.25  # loadgen: about four requests a second
SLOW_CALL_S: Final = (0.3, 0.9)  # the api's deliberately slow path
POSTGRES_USER: Final = "demo"  # cluster.POSTGRES_USER (trusted: the server lives in its own namespace)
FAILING_QUERY_EVERY: Final = 10  # the db's audit query, against a table that does not exist
# loadgen's mix: path → weight
LOAD_MIX: Final = {"/": 50, "/products": 15, "/checkout": 10, "/slow": 10, "/error": 10, "/missing": 5}
ITEMS: Final = ("tea", "mug", "kettle", "teapot", "strainer")
# The broker: the demo's user (cluster.RABBITMQ_USER; its broker lives only in its namespace), the
# queue the api publishes order events to and the worker consumes.
AMQP_USER: Final = "demo"
ORDERS_QUEUE: Final = "orders"
WORKER_PREFETCH: Final = 16  # deliveries in flight to the worker before it acks
RETRY_S: Final = (0.2, 2.0)  # the worker's reconnect backoff: first and longest wait
MAX_POST_BODY: Final = 64 * 1024  # an order is a few dozen bytes
# The api's broker connection is recycled after this long, as a pool with a maximum lifetime does (so a
# capture that started after it opened soon sees a whole one: login, confirm mode, publish → ack, close).
PUBLISHER_MAX_AGE_S: Final = 30.0
# The TLS hop: the name the api asks for (SNI, Host) and checks the certificate against; the share of
# charges payments declines (402), so that checkout traces hold a failed TLS call too.
PAYMENTS_SNI: Final = "payments.shop.svc.cluster.local"
DECLINE_EVERY: Final = 8
TLS_HANDSHAKE_TIMEOUT_S: Final = 5.0  # a client that never finishes its handshake holds one thread


def die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def http_get(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    """GET `url` (POST when there is a body); the status and the answer, 502 when nothing answered."""
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=UPSTREAM_TIMEOUT_S) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 502, str(exc).encode()


class TlsConnection(http.client.HTTPConnection):
    """HTTP over TLS to an address, asking for (and checking the certificate against) `server_name`:
    the pods have no DNS, so the address and the name are given apart."""

    def __init__(self, addr: str, context: ssl.SSLContext, server_name: str) -> None:
        host, port = addr.rsplit(":", 1)
        super().__init__(host, int(port), timeout=UPSTREAM_TIMEOUT_S)
        self.context = context
        self.server_name = server_name

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.server_name)


def https_post(
    addr: str, context: ssl.SSLContext, server_name: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """POST over a new TLS connection; the status and the answer, 502 when nothing answered."""
    conn = TlsConnection(addr, context, server_name)
    try:
        conn.request("POST", path, body, {"Host": server_name, **headers})
        resp = conn.getresponse()
        return int(resp.status), resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return 502, str(exc).encode()
    finally:
        conn.close()


def recv_exactly(sock: socket.socket, n: int, closed: OSError) -> bytes:
    """Exactly `n` bytes from `sock`; `closed` is raised if the peer closes first."""
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise closed
        out += chunk
    return out


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
        return recv_exactly(self.sock, n, OSError("postgres closed the connection"))

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


class AmqpClosed(OSError):
    """The broker closed the channel or the connection (its reply code and text), or the socket ended."""


def _shortstr(s: str) -> bytes:
    raw = s.encode()[:255]
    return bytes([len(raw)]) + raw


def _longstr(raw: bytes) -> bytes:
    return struct.pack("!I", len(raw)) + raw


def _table(doc: Mapping[str, object]) -> bytes:
    """An AMQP field table of strings, integers, booleans and nested tables (the types RabbitMQ reads)."""
    out = b""
    for key, value in doc.items():
        out += _shortstr(key)
        if isinstance(value, bool):
            out += b"t" + bytes([value])
        elif isinstance(value, int):
            out += b"l" + struct.pack("!q", value)
        elif isinstance(value, Mapping):
            out += b"F" + _table(value)
        else:
            out += b"S" + _longstr(str(value).encode())
    return _longstr(out)


# Content-header properties in wire order (AMQP 0-9-1 §4.2.6.1, class basic): name, flag bit, type.
_PROPERTIES: Final = (
    ("content_type", 15, "S"), ("content_encoding", 14, "S"), ("headers", 13, "T"),
    ("delivery_mode", 12, "o"), ("priority", 11, "o"), ("correlation_id", 10, "S"), ("reply_to", 9, "S"),
    ("expiration", 8, "S"), ("message_id", 7, "S"), ("timestamp", 6, "t"), ("type", 5, "S"),
    ("user_id", 4, "S"), ("app_id", 3, "S"),
)  # fmt: skip


def _properties(props: dict[str, Any]) -> tuple[int, bytes]:
    flags, out = 0, b""
    for name, bit, kind in _PROPERTIES:
        if name not in props:
            continue
        flags |= 1 << bit
        value = props[name]
        if kind == "S":
            out += _shortstr(str(value))
        elif kind == "T":
            out += _table(value)
        elif kind == "o":
            out += bytes([int(value)])
        else:
            out += struct.pack("!Q", int(value))
    return flags, out


class Amqp:
    """A minimal AMQP 0-9-1 client over one connection and one channel (PLAIN login, no heartbeats):
    declare a queue, publish with publisher confirms, consume and ack; enough for the demo's api and
    worker, which are stdlib only. Any protocol surprise closes the connection (raises OSError)."""

    CHANNEL: Final = 1

    def __init__(self, addr: str, name: str, timeout: float | None = UPSTREAM_TIMEOUT_S) -> None:
        host, port = addr.rsplit(":", 1)
        self.addr = (host, int(port))
        self.name = name
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.frame_max = 131072
        self.confirms = 0  # publisher confirms: the last publish's sequence number (0: not in confirm mode)

    # -- frames ---------------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        assert self.sock is not None
        return recv_exactly(self.sock, n, AmqpClosed("the broker closed the connection"))

    def _frame(self) -> tuple[int, int, bytes]:
        kind, channel, size = struct.unpack("!BHI", self._read(7))
        if size > self.frame_max:
            raise AmqpClosed(f"a frame of {size} bytes (frame_max {self.frame_max})")
        payload = self._read(size + 1)
        if payload[-1] != 0xCE:
            raise AmqpClosed("a frame without its end octet")
        return kind, channel, payload[:-1]

    def _send(self, kind: int, channel: int, payload: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(struct.pack("!BHI", kind, channel, len(payload)) + payload + b"\xce")

    def _method(self, channel: int, class_id: int, method_id: int, args: bytes = b"") -> None:
        self._send(1, channel, struct.pack("!HH", class_id, method_id) + args)

    def _expect(self, class_id: int, method_id: int) -> bytes:
        """The arguments of the next method, which must be (class_id, method_id)."""
        while True:
            kind, _, payload = self._frame()
            if kind == 8:  # heartbeat
                continue
            if kind != 1:
                raise AmqpClosed(f"frame type {kind} where a method was expected")
            got = struct.unpack_from("!HH", payload)
            if got in ((10, 50), (20, 40)):  # connection.close / channel.close: the broker refuses
                code, text = struct.unpack_from("!H", payload, 4)[0], payload[7 : 7 + payload[6]].decode()
                if got == (10, 50):
                    self._method(0, 10, 51)  # connection.close-ok
                raise AmqpClosed(f"{code} {text}")
            if got != (class_id, method_id):
                raise AmqpClosed(f"method {got} where {(class_id, method_id)} was expected")
            return payload[4:]

    # -- connection -----------------------------------------------------------------------------
    def connect(self, queue: str) -> None:
        """Log in, open channel 1 and declare `queue` (not durable, not exclusive)."""
        self.sock = socket.create_connection(self.addr, timeout=UPSTREAM_TIMEOUT_S)
        try:
            self.sock.sendall(b"AMQP\x00\x00\x09\x01")
            self._expect(10, 10)  # connection.start
            props = {"product": "wiretide-demo", "connection_name": self.name}
            login = f"\0{AMQP_USER}\0{AMQP_USER}".encode()
            self._method(0, 10, 11, _table(props) + _shortstr("PLAIN") + _longstr(login) + _shortstr("en_US"))
            channel_max, frame_max, _ = struct.unpack_from("!HIH", self._expect(10, 30))  # connection.tune
            self.frame_max = frame_max or self.frame_max
            self._method(
                0, 10, 31, struct.pack("!HIH", channel_max, self.frame_max, 0)
            )  # tune-ok, no heartbeats
            self._method(0, 10, 40, _shortstr("/") + _shortstr("") + b"\0")  # connection.open
            self._expect(10, 41)
            self._method(self.CHANNEL, 20, 10, _shortstr(""))  # channel.open
            self._expect(20, 11)
            self._method(self.CHANNEL, 50, 10, struct.pack("!H", 0) + _shortstr(queue) + b"\0" + _table({}))
            self._expect(50, 11)  # queue.declare-ok
            self.sock.settimeout(self.timeout)
        except (OSError, struct.error, IndexError) as exc:
            self.close()
            raise AmqpClosed(f"login to the broker failed: {exc}") from exc

    def close(self, reason: str = "") -> None:
        """Drop the connection; with a reason, first close it properly (connection.close → close-ok)."""
        if self.sock is not None:
            with contextlib.suppress(OSError, struct.error, IndexError):
                if reason:
                    self._method(
                        0, 10, 50, struct.pack("!H", 200) + _shortstr(reason) + struct.pack("!HH", 0, 0)
                    )
                    self._expect(10, 51)
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.confirms = 0

    # -- publishing -----------------------------------------------------------------------------
    def confirm_select(self) -> None:
        self._method(self.CHANNEL, 85, 10, b"\0")
        self._expect(85, 11)
        self.confirms = 0

    def publish(self, routing_key: str, body: bytes, props: dict[str, Any], exchange: str = "") -> bool:
        """basic.publish with its content (after `confirm_select`): True when the broker acked it."""
        self._method(
            self.CHANNEL, 60, 40, struct.pack("!H", 0) + _shortstr(exchange) + _shortstr(routing_key) + b"\0"
        )
        flags, encoded = _properties(props)
        self._send(2, self.CHANNEL, struct.pack("!HHQH", 60, 0, len(body), flags) + encoded)
        step = self.frame_max - 8
        for start in range(0, len(body), step):
            self._send(3, self.CHANNEL, body[start : start + step])
        self.confirms += 1
        while True:  # the broker's basic.ack or basic.nack for this publish (or an earlier one, `multiple`)
            kind, _, payload = self._frame()
            if kind != 1:
                continue
            method = struct.unpack_from("!HH", payload)
            if method in ((60, 80), (60, 120)):
                tag = struct.unpack_from("!Q", payload, 4)[0]
                if tag >= self.confirms:
                    return method == (60, 80)
            elif method in ((10, 50), (20, 40)):
                raise AmqpClosed(f"the broker closed the channel ({struct.unpack_from('!H', payload, 4)[0]})")

    # -- consuming ------------------------------------------------------------------------------
    def consume(self, queue: str, prefetch: int) -> None:
        self._method(self.CHANNEL, 60, 10, struct.pack("!IHB", 0, prefetch, 0))  # basic.qos
        self._expect(60, 11)
        args = struct.pack("!H", 0) + _shortstr(queue) + _shortstr("") + b"\0" + _table({})
        self._method(self.CHANNEL, 60, 20, args)  # basic.consume (acks on)
        self._expect(60, 21)

    def delivery(self) -> tuple[int, bytes]:
        """The next basic.deliver: its delivery tag and body."""
        payload = self._expect(60, 60)
        pos = 1 + payload[0]  # consumer tag
        (tag,) = struct.unpack_from("!Q", payload, pos)
        kind, _, header = self._frame()
        if kind != 2:
            raise AmqpClosed("a delivery without its content header")
        (size,) = struct.unpack_from("!Q", header, 4)
        body = b""
        while len(body) < size:
            kind, _, piece = self._frame()
            if kind != 3:
                raise AmqpClosed("a delivery's body cut short")
            body += piece
        return tag, body

    def ack(self, tag: int) -> None:
        self._method(self.CHANNEL, 60, 80, struct.pack("!QB", tag, 0))


class OrderEvents:
    """The api's side of the orders queue: one kept connection in confirm mode, opened on demand and
    dropped after an error (the next order tries again)."""

    def __init__(self, addr: str) -> None:
        self.amqp = Amqp(addr, "shop/api")
        self.lock = threading.Lock()
        self.opened = 0.0  # time.monotonic() of the connection's login

    def publish(self, order: dict[str, Any], traceparent: str) -> bool:
        props: dict[str, Any] = {
            "content_type": "application/json",
            "delivery_mode": 2,
            "message_id": order["order_id"],
            "correlation_id": order["order_id"],
            "timestamp": int(time.time()),
            "type": "order.created",
            "app_id": "api",
        }
        if traceparent:
            props["headers"] = {"traceparent": traceparent}
        with self.lock:
            try:
                if self.amqp.sock is not None and time.monotonic() - self.opened > PUBLISHER_MAX_AGE_S:
                    self.amqp.close("recycled")
                if self.amqp.sock is None:
                    self.amqp.connect(ORDERS_QUEUE)
                    self.amqp.confirm_select()
                    self.opened = time.monotonic()
                return self.amqp.publish(ORDERS_QUEUE, json.dumps(order).encode(), props)
            except (OSError, struct.error, IndexError):
                self.amqp.close()
                return False


class Handler(BaseHTTPRequestHandler):
    role = ""
    upstreams: ClassVar[dict[str, str]] = {}
    postgres: ClassVar[Postgres | None] = None
    orders: ClassVar[OrderEvents | None] = None
    payments_tls: ClassVar[ssl.SSLContext | None] = None  # the api's client context (the demo's CA)
    timeout = TLS_HANDSHAKE_TIMEOUT_S  # per connection: an idle or stuck client frees its thread
    body = b""

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

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(min(size, MAX_POST_BODY))
        getattr(self, f"_{self.role}")()

    def _frontend(self) -> None:
        api = self.upstreams["api"]
        path = {
            "/": "/api/items",
            "/products": "/api/items?limit=5",
            "/slow": "/api/slow",
            "/error": "/api/fail",
        }
        page = self.path.split("?")[0]
        headers = {"traceparent": self.headers.get("traceparent", "")}
        if page == "/checkout":
            order = {"item": random.choice(ITEMS), "qty": random.randint(1, 3)}
            headers["Content-Type"] = "application/json"
            status, body = http_get(f"http://{api}/api/orders", headers, json.dumps(order).encode())
            self.reply(
                status if status in (201, 402) else 502,
                {"page": page, "api_status": status, "bytes": len(body)},
            )
            return
        target = path.get(page)
        if target is None:
            self.reply(404, {"error": "no such page"})
            return
        status, body = http_get(f"http://{api}{target}", headers)
        self.reply(
            200 if status < 500 else 502, {"page": self.path, "api_status": status, "bytes": len(body)}
        )

    def _api(self) -> None:
        route = self.path.split("?")[0]
        if route == "/api/orders" and self.command == "POST":
            self._api_order()
            return
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

    def _api_order(self) -> None:
        """A checkout: the order event goes to the orders queue; the worker fulfils it later."""
        try:
            doc = json.loads(self.body or b"{}")
            order = {"item": str(doc["item"]), "qty": int(doc["qty"])}
        except (ValueError, KeyError, TypeError):
            self.reply(400, {"error": "an order is {item, qty}"})
            return
        order["order_id"] = f"order-{random.getrandbits(48):012x}"
        if "payments" in self.upstreams and self.payments_tls is not None:
            headers = {"Content-Type": "application/json", "traceparent": self.headers.get("traceparent", "")}
            status, answer = https_post(
                self.upstreams["payments"], self.payments_tls, PAYMENTS_SNI, "/v1/charges",
                json.dumps(order).encode(), headers,
            )  # fmt: skip
            if status == 402:
                self.reply(402, {**order, "error": "payment declined"})
                return
            if status != 201:
                self.reply(502, {**order, "error": f"payments answered {status}"})
                return
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                order["charge_id"] = str(json.loads(answer).get("charge_id", ""))
        queued = self.orders is not None and self.orders.publish(order, self.headers.get("traceparent", ""))
        self.reply(201, {**order, "queued": queued})

    def _payments(self) -> None:
        """POST /v1/charges {order_id, item, qty}: 201 with a charge id, or 402 now and then."""
        if self.path.split("?")[0] != "/v1/charges" or self.command != "POST":
            self.reply(404, {"error": "no such resource"})
            return
        try:
            doc = json.loads(self.body or b"{}")
            order_id, qty = str(doc["order_id"]), int(doc["qty"])
        except (ValueError, KeyError, TypeError):
            self.reply(400, {"error": "a charge is {order_id, item, qty}"})
            return
        if random.randrange(DECLINE_EVERY) == 0:
            self.reply(402, {"order_id": order_id, "status": "declined", "reason": "insufficient_funds"})
            return
        charge = f"ch_{random.getrandbits(64):016x}"
        self.reply(201, {"charge_id": charge, "order_id": order_id, "amount_cents": 1250 * qty})

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


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that failed its TLS handshake, hung up or stalled is the peer's problem: no trace."""
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def serve(
    role: str, listen: str, upstreams: dict[str, str], tls: tuple[str, str] | None = None, ca: str = ""
) -> None:
    """Serve `role` on `listen` (over TLS with `tls` = (certificate, key)); `ca` checks the upstreams
    called over TLS."""
    host, port = listen.rsplit(":", 1)
    pg = Postgres(upstreams["postgres"]) if "postgres" in upstreams else None
    orders = OrderEvents(upstreams["rabbitmq"]) if "rabbitmq" in upstreams else None
    client_tls = ssl.create_default_context(cafile=ca) if ca else None
    handler = type(
        f"{role.capitalize()}Handler",
        (Handler,),
        {"role": role, "upstreams": upstreams, "postgres": pg, "orders": orders, "payments_tls": client_tls},
    )
    server = Server((host, int(port)), handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        # The handshake happens in the connection's own thread (its first read), not in accept().
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
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


def worker(broker: str) -> None:
    """Consume order events and ack each once handled; reconnect with a capped backoff while the broker
    is away (still starting, or never started), saying so once per outage."""
    wait, fulfilled, away = RETRY_S[0], 0, ""
    while True:
        amqp = Amqp(broker, "shop/worker", timeout=None)
        try:
            amqp.connect(ORDERS_QUEUE)
            amqp.consume(ORDERS_QUEUE, WORKER_PREFETCH)
            print(f"worker: consuming {ORDERS_QUEUE} at {broker}", flush=True)
            wait, away = RETRY_S[0], ""
            while True:
                tag, body = amqp.delivery()
                with contextlib.suppress(ValueError):
                    json.loads(body)  # "fulfil" the order; a malformed one is acked all the same
                amqp.ack(tag)
                fulfilled += 1
                if fulfilled % 100 == 0:
                    print(f"worker: {fulfilled} orders fulfilled", flush=True)
        except (OSError, struct.error, IndexError) as exc:
            if str(exc) != away:
                away = str(exc)
                print(f"worker: broker at {broker} unavailable ({exc}); retrying", flush=True)
        finally:
            amqp.close()
        time.sleep(wait)  # backoff between reconnects, not a wait for a condition
        wait = min(wait * 2, RETRY_S[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wiretide-demo-app")
    parser.add_argument("role", choices=["frontend", "api", "db", "loadgen", "worker", "payments"])
    parser.add_argument("--listen", default="", help="IP:PORT to serve on")
    parser.add_argument("--upstream", action="append", default=[], help="NAME=IP:PORT, repeatable")
    parser.add_argument("--tls-cert", default="", help="serve over TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", default="", help="… and this key (PEM)")
    parser.add_argument("--tls-ca", default="", help="the CA that signs the upstreams called over TLS")
    args = parser.parse_args(argv)
    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    upstreams = dict(u.split("=", 1) for u in args.upstream)
    if args.role == "loadgen":
        loadgen(upstreams["frontend"])
    elif args.role == "worker":
        worker(upstreams["rabbitmq"])
    else:
        tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
        serve(args.role, args.listen, upstreams, tls, args.tls_ca)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

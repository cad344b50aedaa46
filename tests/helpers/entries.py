"""A small builder of Entry documents with realistic variety, for store and query tests."""

from __future__ import annotations

import random
import time
from typing import Any

from wiretide.common.entry import UlidGenerator

NAMESPACES = ("shop", "payments", "kube-system")
SERVICES = ("web", "api", "db", "cache", "auth")
PATHS = ("/", "/api/orders", "/api/orders/7", "/api/users", "/health", "/static/app.js")


def entry(gen: UlidGenerator, ts: int, rnd: random.Random, **over: Any) -> dict[str, Any]:
    protocol = rnd.choice(("http", "http", "http", "dns", "grpc", "tcp"))
    doc: dict[str, Any] = {
        "id": gen.new(ts),
        "node": rnd.choice(("node-a", "node-b")),
        "timestamp": ts,
        "elapsed_us": rnd.randint(50, 900_000),
        "protocol": protocol,
        "transport": "udp" if protocol == "dns" else "tcp",
        "src": {"ip": f"10.1.0.{rnd.randint(1, 30)}", "port": rnd.randint(30000, 60000),
                "name": rnd.choice(SERVICES), "namespace": rnd.choice(NAMESPACES)},
        "dst": {"ip": f"10.2.0.{rnd.randint(1, 30)}", "port": 8080,
                "name": rnd.choice(SERVICES), "namespace": rnd.choice(NAMESPACES)},
        "size": {"request": rnd.randint(0, 4000), "response": rnd.randint(0, 40000)},
        "error": None,
    }  # fmt: skip
    if protocol == "http":
        method = rnd.choice(("GET", "GET", "POST", "PUT", "DELETE"))
        path = rnd.choice(PATHS)
        status = rnd.choice((200, 200, 200, 201, 204, 301, 404, 500, 503))
        doc.update(method=method, path=path, status=status, summary=f"{method} {path}", version="1.1")
        headers = {"host": "api", "user-agent": "curl/8"}
        doc["request"] = {"method": method, "path": path, "url": path, "headers": headers,
                          "cookies": {}, "query": {}, "query_string": ""}  # fmt: skip
        doc["response"] = {"status": status, "reason": "OK", "headers": {"content-type": "application/json"}}
    elif protocol == "dns":
        name = rnd.choice(("example.com", "api.shop.svc.cluster.local", "nope.invalid"))
        doc.update(
            method="QUERY", path=name, status=3 if name.endswith(".invalid") else 0, summary=f"A {name}"
        )
        doc["request"] = {
            "id": rnd.randint(0, 65535),
            "questions": [{"name": name, "type": "A", "class": "IN"}],
        }
        doc["response"] = {
            "rcode": doc["status"],
            "answers": [] if doc["status"] else [{"name": name, "type": "A", "ttl": 30, "data": "10.9.9.9"}],
        }
    elif protocol == "grpc":
        doc.update(method="POST", path="/shop.Orders/Get", status=200, version="2", summary="shop.Orders/Get")
        doc["request"] = {"service": "shop.Orders", "method": "Get", "headers": {}}
        doc["response"] = {"grpc_status": rnd.choice((0, 0, 5, 14)), "headers": {}}
    else:
        doc.update(summary="tcp connection")
    doc.update(over)
    return doc


def entries(
    n: int, seed: int = 1, start_ns: int | None = None, step_ns: int = 1_000_000
) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    gen = UlidGenerator()
    t0 = time.time_ns() - n * step_ns if start_ns is None else start_ns
    return [entry(gen, t0 + i * step_ns, rnd) for i in range(n)]

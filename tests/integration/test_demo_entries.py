"""`wiretide demo` end to end: live packets on the demo bridge become entries in the store with the
Kubernetes identity of both ends (pod, namespace, workload) from the resolver's Kubernetes path; the
api's Redis calls are Redis entries and the db's PostgreSQL queries PostgreSQL entries."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.demo import running_demo
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")


def named(e: dict[str, Any], side: str) -> tuple[str, str, str]:
    end = e.get(side) or {}
    workload = end.get("workload") or {}
    return (str(end.get("namespace")), str(workload.get("kind")), str(workload.get("name")))


def test_demo_traffic_is_stored_with_kubernetes_names_on_both_ends(tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        base = demo.base
        deadline = time.monotonic() + 120
        edges: set[tuple[tuple[str, str, str], tuple[str, str, str]]] = set()
        want = {
            (("load", "Deployment", "loadgen"), ("shop", "Deployment", "frontend")),
            (("shop", "Deployment", "frontend"), ("shop", "Deployment", "api")),
            (("shop", "Deployment", "api"), ("data", "StatefulSet", "db")),
        }
        while time.monotonic() < deadline and not want <= edges:
            try:
                docs = httpx.get(f"{base}/api/entries", params={"q": "http", "limit": 500}, timeout=5).json()[
                    "entries"
                ]
                edges |= {(named(e, "src"), named(e, "dst")) for e in docs}
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(1)
        assert want <= edges, sorted(edges)
        one = httpx.get(
            f"{base}/api/entries",
            params={"q": 'dst.namespace == "shop" && src.namespace == "load"', "limit": 1},
        ).json()["entries"][0]
        assert one["src"]["resolution"] == "ip" and one["dst"]["pod"]["name"].startswith("frontend-")
        assert one["dst"]["service"]["name"] == "frontend"

        def query(q: str) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = httpx.get(
                f"{base}/api/entries", params={"q": q, "limit": 5}, timeout=5
            ).json()["entries"]
            return found

        # The api's Redis calls are Redis entries (command, key, reply), not raw TCP rows.
        def redis_calls() -> list[dict[str, Any]]:
            return query('redis && redis_command == "INCR"')

        calls = wait_for("redis entries from the api", redis_calls, timeout=60)
        assert calls[0]["path"] == "hits" and calls[0]["response"]["type"] == "integer"
        assert named(calls[0], "src") == ("shop", "Deployment", "api")
        assert named(calls[0], "dst") == ("data", "StatefulSet", "redis")

        # The db reads its rows from PostgreSQL: queries with their rows, and the failing audit query.
        queries = wait_for(
            "postgresql queries from the db", lambda: query('postgresql && method == "SELECT"'), timeout=60
        )
        assert queries[0]["request"]["query"].startswith("SELECT n, 'item-' || n")
        assert 1 <= queries[0]["response"]["rows"] <= 8 and queries[0]["status"] == 0
        assert named(queries[0], "src") == ("data", "StatefulSet", "db")
        assert named(queries[0], "dst") == ("data", "StatefulSet", "postgres")
        failed = wait_for(
            "the failing audit query", lambda: query('postgresql && pg_sqlstate == "42P01"'), timeout=60
        )
        assert failed[0]["error"]["type"] == "42P01" and "audit_log" in failed[0]["error"]["message"]

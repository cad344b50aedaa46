"""`wiretide demo` end to end: live packets on the demo bridge become entries in the store with the
Kubernetes identity of both ends (pod, namespace, workload) from the resolver's Kubernetes path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.nats import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")


def named(e: dict[str, Any], side: str) -> tuple[str, str, str]:
    end = e.get(side) or {}
    workload = end.get("workload") or {}
    return (str(end.get("namespace")), str(workload.get("kind")), str(workload.get("name")))


def test_demo_traffic_is_stored_with_kubernetes_names_on_both_ends(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    log = (tmp_path / "demo.log").open("wb")
    argv = [
        sys.executable,
        "-m",
        "wiretide.cli",
        "demo",
        "--data-dir",
        str(tmp_path / "wt"),
        "--ui-port",
        str(port),
    ]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
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
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "demo.log").read_text()[-3000:]

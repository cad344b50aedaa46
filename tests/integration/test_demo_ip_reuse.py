"""IP reuse, end to end: in a running `wiretide demo`, a new pod takes over the database's address
through the Kubernetes API; live entries to that address are named by who held it at their time."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.demo import running_demo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")

DB_IP = "10.244.0.21"


def db_entries(base: str) -> list[dict[str, Any]]:
    q = f'dst.ip == "{DB_IP}" && http'
    docs: list[dict[str, Any]] = httpx.get(
        f"{base}/api/entries", params={"q": q, "limit": 1000}, timeout=5
    ).json()["entries"]
    return docs


def test_entries_are_named_by_who_held_the_address_at_their_time(tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        base, log_path = demo.base, demo.log
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if any(e["dst"].get("name") == "db-0" for e in db_entries(base)):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(1)
        match = re.search(r"Kubernetes API emulator (http://\S+)", log_path.read_text())
        assert match, log_path.read_text()[-2000:]
        kube = match.group(1)
        headers = {"authorization": "Bearer wiretide-emulator"}
        old = httpx.get(f"{kube}/api/v1/namespaces/data/pods/db-0", headers=headers).json()
        assert old["status"]["podIP"] == DB_IP
        # the old pod is replaced: a new pod (another workload) now holds the same address
        new = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "db-b-0", "namespace": "data", "labels": {"app": "db-b"}, "uid": "reuse-1"},
            "spec": old["spec"],
            "status": {**old["status"], "podIP": DB_IP, "podIPs": [{"ip": DB_IP}]},
        }
        time.sleep(4)  # traffic to the old holder, named
        switched = time.time_ns()
        r = httpx.post(f"{kube}/api/v1/namespaces/data/pods", json=new, headers=headers)
        assert r.status_code == 201, r.text
        settle = switched + 5_000_000_000  # the new holder has reached every dissector by then
        deadline = time.monotonic() + 90
        docs = db_entries(base)
        while time.monotonic() < deadline and not any(e["timestamp"] > settle for e in docs):
            time.sleep(1)
            docs = db_entries(base)
        # from the moment the dissectors' copy knew the old pod until just before the switch
        known = min(e["timestamp"] for e in docs if e["dst"].get("name") == "db-0")
        before = [e for e in docs if known <= e["timestamp"] < switched - 1_000_000_000]
        after = [e for e in docs if e["timestamp"] > settle]
        assert before and after, (len(before), len(after))
        assert {e["dst"]["name"] for e in before} == {"db-0"}
        assert {e["dst"]["name"] for e in after} == {"db-b-0"}

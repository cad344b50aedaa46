"""Agents on the netns demo's live traffic, as a user sets them up: `wiretide agents put --data-dir`
finds the running demo; the shipped 5xx template posts the demo's real server errors to a real webhook
receiver on loopback; an agent of one's own names the demo's workloads from the entries' Kubernetes
identities (its job's lines read back with `wiretide agents logs`), and its `onItemQueried` marks come
back on stored entries."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.demo import running_demo
from tests.helpers.wait import wait_for
from tests.integration.test_agents_service import Receiver
from wiretide.agents.templates import TEMPLATES

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")

EDGES = """var edges = {};
function who(end) {
  return (end.namespace || "?") + "/" + ((end.workload && end.workload.name) || "?");
}
function onItemCaptured(entry) {
  if (!kfl.match("http", entry)) return;
  var edge = who(entry.src) + " -> " + who(entry.dst);
  edges[edge] = (edges[edge] || 0) + 1;
}
jobs.schedule("report", "* * * * * *", function () {
  Object.keys(edges).sort().forEach(function (edge) { console.log(edge); });
  edges = {};
});
function onItemQueried(entry) {
  if (entry.protocol !== "http") return;
  entry.status >= 500 ? test.fail(entry, "server error") : test.pass(entry);
}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    return subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "agents", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def status(entry: dict[str, Any]) -> int:
    return int(entry.get("status") or 0)  # a call without an answer has none


def up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/agents", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_agents_alert_on_and_name_the_demo_s_live_traffic(tmp_path: Path, receiver: Receiver) -> None:
    (template,) = [t for t in TEMPLATES if t.name == "alert-5xx-webhook"]
    alert = tmp_path / "alert.js"
    alert.write_text(template.source)
    edges = tmp_path / "edges.js"
    edges.write_text(EDGES)
    with running_demo(tmp_path) as demo:
        data = tmp_path / "wt"
        wait_for("the demo's API", lambda: up(demo.base), timeout=180)
        put = cli(data, "put", str(alert), "--env", f"WEBHOOK_URL={receiver.url}")
        assert put.returncode == 0, put.stderr
        assert cli(data, "put", str(edges)).returncode == 0

        def posted() -> list[dict[str, Any]]:
            return [orjson.loads(b) for b in list(receiver.bodies)]

        wait_for("the api's 500s posted", posted, lambda ds: any(d["path"] == "/api/fail" for d in ds))
        assert all(d["text"].startswith("Wiretide: ") and d["entry"] and d["status"] >= 500 for d in posted())

        def logged() -> set[str]:
            return set(cli(data, "logs", "edges").stdout.splitlines())

        want = {"load/loadgen -> shop/frontend", "shop/frontend -> shop/api", "shop/api -> data/db"}
        wait_for("the demo's workloads named by the agent", logged, lambda lines: want <= lines)

        def recent() -> list[dict[str, Any]]:
            return list(
                httpx.get(f"{demo.base}/api/entries", params={"q": "http", "limit": 200}, timeout=10).json()[
                    "entries"
                ]
            )

        both = wait_for(
            "stored server errors and successes",
            recent,
            lambda es: any(status(e) >= 500 for e in es) and any(status(e) == 200 for e in es),
        )
        stored = [e for e in both if status(e) >= 500][:5]
        ok = [e for e in both if status(e) == 200][:5]
        ids = [e["id"] for e in stored + ok]
        marks = httpx.post(f"{demo.base}/api/agents/annotations", json={"ids": ids}, timeout=30).json()[
            "marks"
        ]
        for e in stored:
            assert marks[e["id"]] == [{"agent": "edges", "result": "fail", "note": "server error"}]
        for e in ok:
            assert marks[e["id"]] == [{"agent": "edges", "result": "pass", "note": ""}]
        listed = cli(data, "list").stdout
        assert any(row.startswith("alert ") and "running" in row for row in listed.splitlines())

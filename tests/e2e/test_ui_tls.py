"""The decryptability report through the whole stack (`wiretide up` capturing loopback, eBPF off):
`/api/tls`, `wiretide tls` and the UI's TLS tab name each process that uses TLS — the stack's own
Python services (OpenSSL) and nats-server (Go crypto/tls) — and say why its plaintext is not read."""

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

from tests.e2e.conftest import shot
from tests.helpers.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("tls-ui")
    s = Stack(tmp / "wt", None, WIRETIDE_CAPTURE_INTERFACES="lo", WIRETIDE_NODE_NAME="node-tls")
    try:
        s.wait_up()
        yield s
    finally:
        s.stop()


def _token(s: Stack) -> str:
    path = s.data_dir / "service-token"
    return path.read_text().strip() if path.is_file() else ""


def _report(s: Stack) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {_token(s)}"} if _token(s) else {}
    answer = httpx.get(f"{s.base}/api/tls", headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def _pids(s: Stack) -> dict[str, int]:
    run = orjson.loads((s.data_dir / "run.json").read_bytes())
    return {name: int(info["pid"]) for name, info in run["services"].items() if "pid" in info}


def test_the_report_names_the_stack_s_own_tls_processes_and_why_they_are_not_read(stack: Stack) -> None:
    [node] = _report(stack)["nodes"]
    assert node["node"] == "node-tls"
    assert node["ebpf_running"] is False and "off" in node["ebpf_state"]
    by_pid = {p["pid"]: p for p in node["processes"]}
    gateway = by_pid[_pids(stack)["gateway"]]  # a Python service: OpenSSL through the ssl module
    [openssl] = [lib for lib in gateway["libraries"] if lib["kind"] == "openssl"]
    assert openssl["version"][:1].isdigit()
    assert (openssl["hooked"], openssl["reason"]) == (False, node["ebpf_state"])
    nats = by_pid[_pids(stack)["nats"]]  # this stack's own nats-server (others may run on the node)
    assert nats["comm"] == "nats-server"
    [go] = nats["libraries"]
    assert go["kind"] == "go" and go["version"].startswith("go1.") and not go["hooked"] and go["reason"]
    assert node["summary"]["readable"] == 0 and node["summary"]["processes"] == len(node["processes"])


def test_wiretide_tls_prints_the_report(stack: Stack) -> None:
    env = {**os.environ, "WIRETIDE_GATEWAY_TOKEN": _token(stack)}
    env = {k: v for k, v in env.items() if not k.startswith("WIRETIDE_") or k == "WIRETIDE_GATEWAY_TOKEN"}
    cli = [sys.executable, "-m", "wiretide.cli", "tls", "--data-dir", str(stack.data_dir)]
    done = subprocess.run([*cli, "--unread"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "NODE" in done.stdout and "nats-server" in done.stdout and "go" in done.stdout
    assert "node-tls: 0/" in done.stdout
    as_json = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert orjson.loads(as_json.stdout)["nodes"][0]["node"] == "node-tls"
    nowhere = subprocess.run(
        [*cli, "--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60, env=env
    )
    assert nowhere.returncode == 1 and "did not answer" in nowhere.stderr


def test_the_tls_tab_shows_each_process_and_filters_to_what_is_not_read(page: Any, stack: Stack) -> None:
    page.goto(stack.base + "/")
    page.click("button[data-view=tls]")
    page.wait_for_selector("#tls-nodes tr[data-kind=go]")
    heading = page.inner_text("#tls-nodes h3[data-node=node-tls]")
    assert "TLS processes read" in heading and "off" in heading
    rows = page.locator("#tls-nodes tbody tr").count()
    assert rows >= 2
    page.check("#tls-unread")
    assert page.locator("#tls-nodes tbody tr").count() == rows  # nothing is read with eBPF off
    shot(page, "ui-tls")

"""`wiretide demo` as a subprocess for tests (root): started, waited for, and always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.nats import free_port


@dataclass
class Demo:
    base: str  # the UI/API URL
    log: Path  # what the demo printed


@contextmanager
def running_demo(tmp: Path, *flags: str) -> Iterator[Demo]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    log_path = tmp / "demo.log"
    log = log_path.open("wb")
    argv = [
        sys.executable,
        "-m",
        "wiretide.cli",
        "demo",
        "--data-dir",
        str(tmp / "wt"),
        "--ui-port",
        str(port),
        *flags,
    ]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Demo(f"http://127.0.0.1:{port}", log_path)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, log_path.read_text()[-3000:]


def query(base: str, q: str, limit: int = 5) -> list[dict[str, Any]]:
    """The demo's stored entries matching KFL `q` (none while the API is not answering yet)."""
    try:
        found: list[dict[str, Any]] = httpx.get(
            f"{base}/api/entries", params={"q": q, "limit": limit}, timeout=5
        ).json()["entries"]
    except (httpx.HTTPError, ValueError, KeyError):
        return []
    return found


def pod_of(e: dict[str, Any], side: str) -> str:
    """The pod name of an entry's end ("None" when unnamed)."""
    return str(((e.get(side) or {}).get("pod") or {}).get("name"))


def trace_with_client_call(
    base: str, q: str, is_call: Callable[[str], bool], parent: str = "POST /api/orders"
) -> list[dict[str, Any]]:
    """The spans of a trace (among those matching KFL `q`) holding a client span whose name passes
    `is_call`, under the server span named `parent`; [] while there is none."""
    try:
        found = httpx.get(f"{base}/api/traces", params={"q": q, "limit": 20}, timeout=10).json()["traces"]
        for summary in found:
            spans = httpx.get(f"{base}/api/traces/{summary['trace_id']}", timeout=10).json()["spans"]
            by_id = {s["span_id"]: s for s in spans}
            for s in spans:
                up = by_id.get(s.get("parent_span_id") or "")
                if (
                    is_call(s["name"])
                    and s["kind"] == "client"
                    and up is not None
                    and up["name"] == parent
                    and up["kind"] == "server"
                ):
                    return list(spans)
    except (httpx.HTTPError, ValueError, KeyError):
        pass
    return []

"""`wiretide up` as a subprocess for tests: the whole stack, optionally replaying a capture."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.nats import free_port


def merged_capture(tmp: Path, files: list[Path]) -> Path:
    """One pcapng of several real captures (mergecap keeps each file's link type)."""
    out = tmp / "merged.pcapng"
    mergecap = shutil.which("mergecap")
    assert mergecap, "mergecap (from the tshark package) is needed"
    subprocess.run([mergecap, "-F", "pcapng", "-w", str(out), *map(str, files)], check=True)
    return out


class Stack:
    def __init__(
        self, data_dir: Path, pcap: Path | list[Path] | None = None, *up_args: str, **env: str
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "wiretide.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--ui-port",
            str(self.port),
        ]
        if pcap is not None:
            args += ["--pcap", *map(str, pcap if isinstance(pcap, list) else [pcap])]
        args += up_args
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
        full_env.update(env)
        self.log = (data_dir.parent / f"up-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(args, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"wiretide up exited {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base}/api/health", timeout=2).json()["status"] == "SERVING":
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise AssertionError("wiretide up did not become SERVING")

    def entries(self, q: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.base}/api/entries", params={"q": q, "limit": limit}, timeout=10).json()
        docs: list[dict[str, Any]] = body["entries"]
        return docs

    def wait_entries(self, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = self.entries()
            if len(got) >= n:
                return got
            time.sleep(0.3)
        return got

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

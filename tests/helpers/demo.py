"""`wiretide demo` as a subprocess for tests (root): started, waited for, and always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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

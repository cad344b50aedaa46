"""A server that speaks the MongoDB wire protocol, for the MongoDB store's tests.

No mongod can be installed on these machines; nx-27017 (MongoDB wire protocol over SQLite, from
PyPI) is the most faithful local stand-in. The store's client code (pymongo) is the real one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.nats import free_port


class WireMongo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.prefix) / "bin" / "nx-27017"
        self.proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "-p", str(self.port), "--db", str(self.workdir / "mongo.db"),
             "--log-file", str(self.workdir / "nx.log"), "--pid-file", str(self.workdir / "nx.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nx-27017 did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

"""Run one Wiretide service as a real subprocess (`python -m wiretide.<name>`) and watch its health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers.nats import free_port
from wiretide.common.types import GRPC_SERVICE, SERVICES


def service_env(nats_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIRETIDE_", "OTEL_"))}
    env.update({"WIRETIDE_NATS_URL": nats_url, "WIRETIDE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    for name in SERVICES:
        env[f"WIRETIDE_{name.upper()}_GRPC"] = f"127.0.0.1:{free_port()}"
    env.update(extra)
    return env


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc(self) -> str:
        return self.env[f"WIRETIDE_{self.name.upper()}_GRPC"]

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"wiretide.{self.name}"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def health(self) -> str:
        """grpc.health.v1 status, asked synchronously (callers may run inside someone else's event loop)."""
        with grpc.insecure_channel(self.grpc) as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=GRPC_SERVICE[self.name]), timeout=1.0
                )
            except grpc.RpcError:
                return "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def wait_health(self, want: str = "SERVING", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            state = self.health()
            if state == want:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} is {state}, not {want}, after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

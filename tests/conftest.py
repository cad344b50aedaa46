"""Shared fixtures: a real nats-server per test, and service subprocesses that are always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.nats import NatsServer
from tests.helpers.pcaps import pcaps_present  # noqa: F401  (a fixture: `needs_pcaps` uses it)
from tests.helpers.services import ServiceProcess, service_env


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """spawn(name, nats_url, **env) -> a started ServiceProcess, terminated after the test."""
    started: list[ServiceProcess] = []

    def _spawn(name: str, nats_url: str, **extra: str) -> ServiceProcess:
        env = service_env(nats_url, tmp_path / "data", **extra)
        proc = ServiceProcess(name, env, tmp_path / f"{name}-{len(started)}.log")
        proc.start()
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        proc.kill()

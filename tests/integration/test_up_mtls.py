"""`wiretide up` makes a CA and one certificate per process on first run, and the whole stack talks
over mutual TLS: gRPC between services, and NATS. A client without a certificate of that CA gets
nothing from any port."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
import pytest

from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for_async
from wiretide.cli import certs
from wiretide.common.bus import connect_with_retry
from wiretide.common.rpc import check_health
from wiretide.common.tls import Transport
from wiretide.common.types import GRPC_SERVICE, SERVICES


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "wt")
    try:
        s.wait_up()
        yield s
    finally:
        s.stop()


async def test_up_generates_certificates_and_every_service_serves_mutual_tls_only(
    stack: Stack, tmp_path: Path
) -> None:
    tls = stack.data_dir / "tls"
    assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
    for name in certs.LOCAL_PROCESSES:
        assert (tls / f"{name}.crt").is_file()
        assert stat.S_IMODE(os.stat(tls / f"{name}.key").st_mode) == 0o600
    run = orjson.loads((stack.data_dir / "run.json").read_bytes())
    mine = Transport(certs.files_for(tls, certs.CLI))
    stranger = Transport(certs.ensure(tmp_path / "other-ca", certs.local_leaves())[certs.CLI])
    for name in SERVICES:
        address = run["services"][name]["grpc"]

        async def with_certificate(name: str = name, address: str = address) -> str:
            return await check_health(address, GRPC_SERVICE[name], timeout=5, transport=mine, peer=name)

        # Reachable over mutual TLS at once; SERVING once its readiness holds (a loaded machine can
        # make a service's NATS connection flap after the stack was first all SERVING).
        assert await with_certificate() != "UNREACHABLE"
        await wait_for_async(f"{name} SERVING over mutual TLS", with_certificate, lambda s: s == "SERVING")
        assert await check_health(address, GRPC_SERVICE[name], timeout=5) == "UNREACHABLE"  # plaintext
        assert await check_health(address, timeout=5, transport=stranger, peer=name) == "UNREACHABLE"
        log = (stack.data_dir / "logs" / f"{name}.log").read_text()
        assert "gRPC serves mutual TLS" in log


async def test_up_runs_nats_over_tls_and_refuses_clients_without_a_certificate(stack: Stack) -> None:
    run = orjson.loads((stack.data_dir / "run.json").read_bytes())
    url = run["nats_url"]
    assert url.startswith("tls://127.0.0.1:")
    with pytest.raises(Exception):  # noqa: B017 - nats-py raises several types for a refused client
        await nats.connect(url.replace("tls://", "nats://"), connect_timeout=2, allow_reconnect=False)
    mine = Transport(certs.files_for(stack.data_dir / "tls", certs.CLI))
    bus = await connect_with_retry(url, "test-mtls", tls=mine.nats_context(url))
    try:
        assert bus.connected
    finally:
        await bus.close()

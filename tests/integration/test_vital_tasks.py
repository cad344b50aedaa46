"""A defect met by some input costs those entries, counted and said, never the service; a task a
service cannot work without that dies anyway stops the process with a non-zero exit (`Service.vital`,
`Lifecycle.fail`) instead of leaving health SERVING with the work dead."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_tracer_service import publish
from tests.unit.tracer.test_assemble import three_hops
from wiretide.common.rpc import check_health
from wiretide.common.service import serve
from wiretide.dissector.service import DissectorService, DissectorSettings
from wiretide.tracer.service import TracerService, TracerSettings


class Wrapped:
    """The engine (a compiled class: its methods cannot be replaced) behind a stand-in that can."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


HEALTH = "wiretide.proto.v1.TracerService"


def tracer(url: str, tag: str) -> TracerService:
    return TracerService(
        TracerSettings(
            nats_url=url,
            tracer_grpc="127.0.0.1:0",
            tracer_durable=f"{tag}-{os.getpid()}",
            tracer_window_s=0.1,
        )
    )


async def serving(svc: TracerService) -> None:
    await wait_for_async(
        "the tracer serves",
        lambda: (
            svc.grpc_port and check_health(f"127.0.0.1:{svc.grpc_port}", "wiretide.proto.v1.TracerService")
        ),
        lambda state: state == "SERVING",
    )


async def test_a_batch_the_tracer_fails_on_is_counted_and_skipped_and_the_next_is_traced(
    nats_server: NatsServer,
) -> None:
    svc = tracer(nats_server.url, "tracer-defect")
    real = svc.engine.ingest
    calls = 0
    wrapped = Wrapped(svc.engine)

    def flaky(entries: list[dict[str, Any]], wall_ns: int = 0, texts: list[bytes] | None = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a defect")
        return real(entries, wall_ns, texts)

    wrapped.ingest = flaky
    svc.engine = wrapped  # type: ignore[assignment]
    task = asyncio.create_task(serve(svc, handle_signals=False))
    try:
        await serving(svc)
        first = three_hops(headers=False)
        await publish(nats_server.url, first)
        await wait_for_async("the first batch failed", lambda: svc.failed_entries, lambda n: n == len(first))
        second = [{**e, "id": e["id"] + "-2", "timestamp": e["timestamp"] + 10**9} for e in first]
        await publish(nats_server.url, second)
        await wait_for_async(
            "the second batch traced", lambda: len(svc.engine.store.spans()), lambda n: n == 6
        )
        assert "KeyError" in svc.failure and not task.done()
    finally:
        assert svc.lifecycle is not None
        svc.lifecycle.request_stop("test done")
        await asyncio.wait_for(task, 30)
    assert svc.lifecycle.failed is None


async def test_a_vital_task_that_dies_stops_the_service_with_the_reason(nats_server: NatsServer) -> None:
    svc = tracer(nats_server.url, "tracer-vital")

    def broken(wall_ns: int) -> Any:
        raise RuntimeError("idle broke")

    wrapped = Wrapped(svc.engine)
    svc.engine = wrapped  # type: ignore[assignment]
    task = asyncio.create_task(serve(svc, handle_signals=False))
    await serving(svc)
    wrapped.idle = broken  # the idle task calls it every 0.25 s
    await asyncio.wait_for(task, 30)
    assert svc.lifecycle is not None and svc.lifecycle.failed is not None
    assert "tracer-idle" in svc.lifecycle.failed and "idle broke" in svc.lifecycle.failed


async def test_a_sweep_the_dissector_fails_on_is_counted_and_the_next_one_runs(tmp_path: Path) -> None:
    svc = DissectorService(DissectorSettings(node_name="n1", data_dir=tmp_path))
    runs = 0

    def sweep() -> None:
        nonlocal runs
        runs += 1
        raise ValueError("a defect")

    svc._sweep = sweep  # type: ignore[method-assign]
    loop = asyncio.create_task(svc._sweep_loop())
    try:
        await wait_for_async("two sweeps", lambda: runs, lambda n: n >= 2, timeout=30)
        assert svc.drops["sweep_failed"] >= 2 and not loop.done()
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop

"""Run one service inside the test's own event loop (no subprocess): fast, and its objects are inspectable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wiretide.common.rpc import check_health
from wiretide.common.service import Service, serve
from wiretide.common.types import GRPC_SERVICE


@asynccontextmanager
async def running(service: Service, timeout: float = 30.0) -> AsyncIterator[Service]:
    """Start `service`, wait until it reports SERVING, and stop it (gracefully) on exit."""
    task = asyncio.create_task(serve(service, handle_signals=False))
    deadline = time.monotonic() + timeout
    address = ""
    while True:
        if task.done():
            task.result()  # re-raise why it stopped
            raise AssertionError(f"{service.name} stopped before SERVING")
        if service.grpc_port:
            host = service.listen_address().rsplit(":", 1)[0]
            address = f"{host}:{service.grpc_port}"
            if await check_health(address, GRPC_SERVICE[service.name], timeout=0.5) == "SERVING":
                break
        if time.monotonic() > deadline:
            raise AssertionError(f"{service.name} not SERVING after {timeout}s")
        await asyncio.sleep(0.05)
    try:
        yield service
    finally:
        assert service.lifecycle is not None
        service.lifecycle.request_stop("test done")
        await asyncio.wait_for(task, timeout)

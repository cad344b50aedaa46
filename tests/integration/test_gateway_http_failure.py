"""A gateway whose HTTP server dies must not live on half alive (gRPC health SERVING, every browser and
API call refused): it stops and reports the failure, so that `wiretide up` or Kubernetes starts it
again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_gateway_api import make_gateway
from wiretide.common.rpc import check_health
from wiretide.common.service import serve
from wiretide.gateway.service import GatewayService

HEALTH = "wiretide.proto.v1.GatewayService"


async def serving(gw: GatewayService) -> None:
    await wait_for_async(
        "the gateway serves",
        lambda: gw.grpc_port and check_health(f"127.0.0.1:{gw.grpc_port}", HEALTH),
        lambda state: state == "SERVING",
    )


async def test_a_gateway_whose_http_server_fails_stops_and_says_why(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    gw = make_gateway(nats_server.url, tmp_path)
    task = asyncio.create_task(serve(gw, handle_signals=False))
    try:
        await serving(gw)
        base = f"http://{gw.gs.gateway_http}"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{base}/api/health")).status_code == 200
        assert gw._http is not None

        async def broken(counter: int) -> bool:
            raise RuntimeError("the HTTP server's loop broke")

        gw._http.on_tick = broken  # type: ignore[method-assign]  # uvicorn calls it every 0.1 s
        await asyncio.wait_for(task, 30)
        assert gw.lifecycle is not None
        assert gw.lifecycle.failed is not None and "loop broke" in gw.lifecycle.failed
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{base}/api/health", timeout=2)
    finally:
        if not task.done():
            assert gw.lifecycle is not None
            gw.lifecycle.request_stop("test done")
            await asyncio.wait_for(task, 30)


async def test_a_gateway_stopped_on_request_is_not_a_failure(nats_server: NatsServer, tmp_path: Path) -> None:
    gw = make_gateway(nats_server.url, tmp_path)
    task = asyncio.create_task(serve(gw, handle_signals=False))
    await serving(gw)
    assert gw.lifecycle is not None
    gw.lifecycle.request_stop("test done")
    await asyncio.wait_for(task, 30)
    assert gw.lifecycle.failed is None

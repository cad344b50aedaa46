"""The live feed reads the bus only while someone watches: a gateway nobody streams from spends nothing
per entry on it, the first stream client subscribes it before its hello (so nothing published after
the hello is missed), and it lets go a while after the last client left."""

from __future__ import annotations

from pathlib import Path

import orjson
import websockets

from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_gateway_api import make_gateway, wait_stored
from tests.integration.test_store_writer import publish


async def stream_ids(url: str, nats_url: str, seed: int) -> tuple[list[str], list[str]]:
    """Connect, publish fresh entries once hello came, and read them back: (sent ids, received ids)."""
    fresh = entries(60, seed=seed)
    async with websockets.connect(url) as ws:
        assert orjson.loads(await ws.recv())["type"] == "hello"
        await publish(nats_url, [fresh])
        got: list[str] = []
        while len(got) < len(fresh):
            msg = orjson.loads(await ws.recv())
            assert msg["type"] == "entry", msg
            got.append(msg["entry"]["id"])
    return [d["id"] for d in fresh], got


async def test_the_feed_is_read_only_while_a_client_streams(nats_server: NatsServer, tmp_path: Path) -> None:
    gw = make_gateway(nats_server.url, tmp_path)
    gw.live.idle_unsubscribe_s = 0.2
    async with running(gw):
        await publish(nats_server.url, [entries(50, seed=1)])
        await wait_stored(gw, 50)
        assert not gw.live.feeding, "subscribed to the live feed with no client"
        url = f"ws://{gw.gs.gateway_http}/api/stream"
        for round_ in range(2):  # subscribed again after it let go
            sent, got = await stream_ids(url, nats_server.url, seed=10 + round_)
            assert got == sent
            await wait_for_async("the feed let go after the last client", lambda: not gw.live.feeding)
        stored = 50 + 2 * 60
        await wait_stored(gw, stored)  # the store writer never depended on the feed


async def test_a_client_arriving_while_the_feed_lingers_keeps_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    gw = make_gateway(nats_server.url, tmp_path)
    gw.live.idle_unsubscribe_s = 3600.0  # lingers for the whole test
    async with running(gw):
        url = f"ws://{gw.gs.gateway_http}/api/stream"
        sent, got = await stream_ids(url, nats_server.url, seed=20)
        assert got == sent
        await wait_for_async("the client gone", lambda: not gw.live.subscribers)
        assert gw.live.feeding  # still subscribed: a reloading UI comes back at once
        sent, got = await stream_ids(url, nats_server.url, seed=21)
        assert got == sent

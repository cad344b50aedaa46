"""A service embedded in the test's event loop behaves like the process: the gateway stores entries."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer, free_port
from tests.integration.test_store_writer import make_entries, publish
from wiretide.common.entry import UlidGenerator
from wiretide.common.settings import load_settings
from wiretide.gateway.service import GatewayService, GatewaySettings


async def test_an_embedded_gateway_stores_published_entries(nats_server: NatsServer, tmp_path: Path) -> None:
    settings = load_settings(
        GatewaySettings,
        "gateway",
        {
            "WIRETIDE_NATS_URL": nats_server.url,
            "WIRETIDE_DATA_DIR": str(tmp_path),
            "WIRETIDE_GATEWAY_GRPC": "127.0.0.1:0",
            "WIRETIDE_GATEWAY_HTTP": f"127.0.0.1:{free_port()}",
        },
    )
    gw = GatewayService(settings)
    async with running(gw):
        docs = make_entries(20, UlidGenerator())
        await publish(nats_server.url, [docs[:10], docs[10:]])
        for _ in range(200):
            if gw.writer is not None and gw.writer.stored == 20:
                break
            await asyncio.sleep(0.05)
        assert gw.store is not None
        latest = await asyncio.to_thread(gw.store.latest, 20)
    assert [d["id"] for d in latest] == [d["id"] for d in reversed(docs)]

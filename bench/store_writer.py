"""End-to-end store writer rate: EntryBatches published on JetStream → the gateway's durable consumer →
SQLite, measured from the first publish to the last row committed.

Run: `.venv/bin/python bench/store_writer.py [--entries N] [--batch 500]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats

from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer, free_port
from wiretide.common.bus import entries_subject
from wiretide.common.bus.connection import ensure_stream
from wiretide.common.bus.subjects import ENTRIES_STREAM
from wiretide.common.entry import encode_batch
from wiretide.common.settings import load_settings
from wiretide.gateway.service import GatewayService, GatewaySettings


async def main(n: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            docs = entries(n, seed=1)
            payloads = [encode_batch(docs[i : i + batch], "bench", "bench", i) for i in range(0, n, batch)]
            # The bench's own documents are not the gateway's heap: without this, every collection the
            # writer's allocations trigger would walk n documents the gateway never holds.
            del docs
            gc.collect()
            gc.freeze()
            env = {
                "WIRETIDE_NATS_URL": server.url,
                "WIRETIDE_DATA_DIR": tmp,
                "WIRETIDE_GATEWAY_GRPC": f"127.0.0.1:{free_port()}",
                "WIRETIDE_GATEWAY_HTTP": f"127.0.0.1:{free_port()}",
            }
            gw = GatewayService(load_settings(GatewaySettings, "gateway", env))
            async with running(gw):
                nc = await nats.connect(server.url)
                js = nc.jetstream()
                await ensure_stream(js, ENTRIES_STREAM)
                t0 = time.perf_counter()
                for p in payloads:
                    await js.publish(entries_subject("bench"), p)
                t_pub = time.perf_counter() - t0
                while gw.writer is not None and gw.writer.stored < n:  # noqa: ASYNC110 - polling a counter
                    await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - t0
                await nc.close()
            print(f"entries: {n:,} in batches of {batch}")
            rate = n / elapsed
            print(f"published in {t_pub:.2f}s; stored in {elapsed:.2f}s → {rate:,.0f} entries/s end to end")
        finally:
            server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()
    asyncio.run(main(a.entries, a.batch))

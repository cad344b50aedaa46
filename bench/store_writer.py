"""Store writer rate: EntryBatches on JetStream → the gateway's durable consumer → SQLite.

Two figures, each for batches of the current entry contract (version 3: entries packed, the indexed
fields lifted, the JSON never decoded by the writer), of version 2 (the same, unpacked) and of version 1
(as older dissectors write them: the writer decodes every entry's JSON), in alternation in the same run:
- drain: the stream already holds N entries (a backlog: a burst, a gateway restarted after an outage)
  when the gateway starts; measured from the first stored batch to the last row committed — the
  writer's own rate (fetch, decode, validate, insert, ack), the publisher not competing for the CPU;
- end to end: the gateway runs while the bench publishes N entries from the same process, measured
  from the first publish to the last row committed.

Entries are ~640 bytes of JSON as built; `--size 1200` pads each one (a response body) to the size
of a small HTTP call captured from the wire (bench/e2e.py's keep-alive load stores ~1.2 KB entries).

Run: `.venv/bin/python bench/store_writer.py [--entries N] [--batch 500] [--rounds 2] [--size BYTES]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import orjson

from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer, free_port
from wiretide.common.bus import entries_subject
from wiretide.common.bus.connection import ensure_stream
from wiretide.common.bus.entries import encode_entries
from wiretide.common.bus.subjects import ENTRIES_STREAM
from wiretide.common.entry import encode_batch
from wiretide.common.settings import load_settings
from wiretide.gateway.service import GatewayService, GatewaySettings
from wiretide.gateway.writer import FETCH_BATCH


def _gateway(server: NatsServer, tmp: str) -> GatewayService:
    env = {
        "WIRETIDE_NATS_URL": server.url,
        "WIRETIDE_DATA_DIR": tmp,
        "WIRETIDE_GATEWAY_GRPC": f"127.0.0.1:{free_port()}",
        "WIRETIDE_GATEWAY_HTTP": f"127.0.0.1:{free_port()}",
    }
    return GatewayService(load_settings(GatewaySettings, "gateway", env))


async def _publish(url: str, payloads: list[bytes]) -> float:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, ENTRIES_STREAM)
        t0 = time.perf_counter()
        for p in payloads:
            await js.publish(entries_subject("bench"), p)
        return time.perf_counter() - t0
    finally:
        await nc.close()


async def drain(n: int, payloads: list[bytes], label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            await _publish(server.url, payloads)
            gw = _gateway(server, tmp)
            async with running(gw):
                first = None
                while gw.writer is None or gw.writer.stored < n:
                    if first is None and gw.writer is not None and gw.writer.stored:
                        first = (time.perf_counter(), time.process_time(), gw.writer.stored)
                    await asyncio.sleep(0.002)
                end, cpu_end = time.perf_counter(), time.process_time()
                assert gw.store is not None
                on_disk = gw.store.used_bytes() / n
            if first is None or first[2] >= n:
                raise SystemExit(f"stored in one write: give more than {FETCH_BATCH} batches (--entries)")
            rate = (n - first[2]) / (end - first[0])
            cpu_us = (cpu_end - first[1]) / (n - first[2]) * 1e6
            print(
                f"drain [{label}]: {n:,} entries waiting in JetStream → stored at {rate:,.0f} entries/s,"
                f" {cpu_us:.1f} µs CPU per entry (the gateway process), {on_disk:,.0f} bytes per entry stored"
            )
        finally:
            server.stop()


async def end_to_end(n: int, payloads: list[bytes], label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            gw = _gateway(server, tmp)
            async with running(gw):
                t0, nats0 = time.perf_counter(), _cpu_s(server)
                t_pub = await _publish(server.url, payloads)
                while gw.writer is not None and gw.writer.stored < n:  # noqa: ASYNC110 - polling a counter
                    await asyncio.sleep(0.01)
                elapsed, nats_us = time.perf_counter() - t0, (_cpu_s(server) - nats0) / n * 1e6
            print(
                f"end to end [{label}]: published in {t_pub:.2f}s; stored in {elapsed:.2f}s"
                f" → {n / elapsed:,.0f} entries/s (publisher in the same process);"
                f" nats-server {nats_us:.1f} µs CPU per entry"
            )
        finally:
            server.stop()


def _cpu_s(server: NatsServer) -> float:
    """CPU time (utime + stime) of the nats-server process so far."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pad(docs: list[dict[str, Any]], size: int) -> None:
    """Give each document a response body that brings its JSON to about `size` bytes. The body is hex
    (4 bits per byte): it compresses about as well as an entry's JSON does (~45%), not to nothing."""
    rnd = random.Random(7)
    for d in docs:
        short = size - len(orjson.dumps(d)) - 30
        if short > 0:
            text = rnd.randbytes(short // 2 + 1).hex()[:short]
            d.setdefault("response", {})["body"] = {"text": text, "encoding": "text"}


def main(n: int, batch: int, rounds: int, size: int) -> None:
    docs = entries(n, seed=1)
    pad(docs, size)
    median = sorted(len(orjson.dumps(d)) for d in docs)[n // 2]
    versions = {
        "contract v3, packed": [
            encode_entries(docs[i : i + batch], "bench", "bench", i) for i in range(0, n, batch)
        ],
        "contract v2": [
            encode_entries(docs[i : i + batch], "bench", "bench", i, pack=False) for i in range(0, n, batch)
        ],
        "contract v1": [encode_batch(docs[i : i + batch], "bench", "bench", i) for i in range(0, n, batch)],
    }
    # The bench's own documents are not the gateway's heap: without this, every collection the
    # writer's allocations trigger would walk n documents the gateway never holds.
    del docs
    gc.collect()
    gc.freeze()
    print(f"entries: {n:,} in batches of {batch}, {median:,} bytes of JSON each (median)")
    for label, payloads in versions.items():
        print(f"  {label}: {sum(map(len, payloads)) / n:,.0f} bytes per entry on the bus")
    for _ in range(rounds):  # alternated: the machine's speed drifts
        for label, payloads in versions.items():
            asyncio.run(drain(n, payloads, label))
    for label, payloads in versions.items():
        asyncio.run(end_to_end(n, payloads, label))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2, help="drain runs per contract version, alternated")
    ap.add_argument("--size", type=int, default=0, help="pad each entry's JSON to about this many bytes")
    a = ap.parse_args()
    main(a.entries, a.batch, a.rounds, a.size)

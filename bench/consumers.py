"""Benchmark: what an entries consumer pays per entry off a real JetStream durable, decoding the entries
(what the tracer and an agents service with an `onItemCaptured` agent do) or only counting them (an
agents service with no such agent deployed).

The stream already holds N entries in EntryBatches of `--batch` entries; one durable pull consumer
fetches 64 messages at a time with `fetch_entries`, as the tracer and agents services do, and
acknowledges every message. CPU time of this process (the consumer's side: fetch, decode or count,
ack), per entry; the two modes alternate, each on its own durable, `--rounds` times.

    .venv/bin/python bench/consumers.py [--entries 20000] [--batch 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats

from tests.helpers.entries import entries
from tests.helpers.nats import NatsServer
from wiretide.common.bus import ENTRIES_ALL, ENTRIES_STREAM, durable_pull, entries_subject
from wiretide.common.bus.connection import ensure_stream
from wiretide.common.bus.entries import encode_entries, fetch_entries

FETCH = 64  # messages per pull, as the tracer and agents services fetch


async def consume(url: str, durable: str, n: int, decode: bool) -> float:
    """CPU seconds to fetch, decode (or count) and acknowledge `n` entries."""
    nc = await nats.connect(url)
    try:
        sub = await durable_pull(nc.jetstream(), ENTRIES_STREAM.name, ENTRIES_ALL, durable)
        seen = 0
        c0 = time.process_time()
        while seen < n:
            got = await fetch_entries(sub, FETCH, 1.0, decode=decode)
            seen += got.count
            await got.ack()
        return time.process_time() - c0
    finally:
        await nc.close()


async def main(n: int, batch: int, rounds: int) -> None:
    docs = entries(n, seed=1)
    size = len(encode_entries(docs[:batch], "b", "b", 0)) // batch
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp))
        server.start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_stream(js, ENTRIES_STREAM)
            for i in range(0, n, batch):
                await js.publish(entries_subject("bench"), encode_entries(docs[i : i + batch], "b", "b", i))
            await nc.close()
            load = os.getloadavg()[0]
            print(f"{n} entries of ~{size} bytes in batches of {batch}; load average {load:.2f}")
            per: dict[bool, list[float]] = {True: [], False: []}
            for r in range(rounds):
                for decode in (True, False):
                    cpu = await consume(server.url, f"bench-{int(decode)}-{r}", n, decode)
                    per[decode].append(cpu / n * 1e6)
            for decode, label in ((True, "decoded (JSON documents)"), (False, "counted only")):
                best = sorted(per[decode])
                median = best[len(best) // 2]
                print(
                    f"  {label:26s} {best[0]:6.1f} µs CPU per entry (best of {rounds}; median {median:.1f})"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entries", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    asyncio.run(main(a.entries, a.batch, a.rounds))

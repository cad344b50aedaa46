"""The store writer holds about FETCH_BYTES of EntryBatches per fetch, however large each batch is: a
keep-alive burst of large batches is written a few at a time, every entry stored once. Sizes are what
the batches hold unpacked (their entries travel packed: a batch of repetitive bodies is a few KB on the
bus and hundreds once unpacked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.entries import entries
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from wiretide.common.bus import STORE_WRITER_DURABLE, connect_with_retry, entries_subject
from wiretide.common.bus.entries import encode_entries, unpacked_bytes
from wiretide.gateway.store.sqlite import SqliteStore
from wiretide.gateway.writer import FETCH_BATCH, FETCH_BYTES, Batch, StoreWriter

PER_BATCH = 64  # entries per EntryBatch
BODY = "x" * 8_000  # each entry ~9 KB of JSON: a batch of ~0.6 MB, as large batches of a burst are
BATCHES = 40  # ~24 MB waiting on the bus when the writer starts: 64 a fetch would take them at once


class Recording(StoreWriter):
    """The writer as the gateway runs it, noting the unpacked EntryBatch bytes of each batch it writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written: list[tuple[int, int]] = []  # (messages, bytes) per batch written

    def _write(self, batch: Batch) -> int:
        self.written.append((len(batch.messages), sum(unpacked_bytes(msg.data) for msg in batch.messages)))
        return super()._write(batch)


async def test_a_burst_of_large_batches_is_fetched_about_fetch_bytes_at_a_time(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    bus = await connect_with_retry(nats_server.url, "test")
    docs = [doc for doc in entries(4 * PER_BATCH * BATCHES, seed=7) if doc["protocol"] == "http"]
    docs = docs[: PER_BATCH * BATCHES]
    for doc in docs:
        doc["response"]["body"] = {"content": BODY, "size": len(BODY), "truncated": False}
    sizes = []
    for seq in range(BATCHES):
        data = encode_entries(docs[seq * PER_BATCH : (seq + 1) * PER_BATCH], "node-a", "test", seq)
        sizes.append(unpacked_bytes(data))
        await bus.js.publish(entries_subject("node-a"), data)
    assert FETCH_BATCH * min(sizes) > 4 * FETCH_BYTES  # a fetch by messages alone would exceed the bound
    store = SqliteStore(tmp_path / "entries.sqlite3")
    writer = Recording(bus, store, STORE_WRITER_DURABLE, ack_wait_s=30.0)
    await writer.start()
    try:
        await wait_for_async("entries stored", store.count, lambda n: n >= len(docs))
    finally:
        await writer.stop()
        await bus.close()
    assert store.count() == len(docs)
    store.close()
    largest = max(sizes)
    # The first fetch, before any size is known, takes one message; each later one about FETCH_BYTES.
    assert writer.written[0][0] == 1
    assert all(nbytes <= FETCH_BYTES + largest for _, nbytes in writer.written), writer.written
    assert sum(n for n, _ in writer.written) == BATCHES

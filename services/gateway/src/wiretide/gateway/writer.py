"""The store writer: a durable JetStream pull consumer on wt.entries.> that persists EntryBatches.

Rule: a message is acknowledged only after its entries are committed. When the store fails, the
writer stops acknowledging (JetStream keeps and redelivers), says why, and reports not ready.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter

from wiretide.common.bus import ENTRIES_ALL, ENTRIES_STREAM, Bus, durable_pull
from wiretide.common.bus.entries import fetch_entries
from wiretide.common.telemetry import tracer
from wiretide.gateway.query import Completeness
from wiretide.gateway.store import EntryStore, StoreError

log = logging.getLogger(__name__)
TRACER = tracer(__name__)

STORED = Counter("wiretide_gateway_entries_stored_total", "Entries written to the store (new rows)")
INVALID_ENTRIES = Counter(
    "wiretide_gateway_invalid_entries_total", "Entries skipped as not valid Entry documents"
)

FETCH_BATCH = 64  # NATS messages (each an EntryBatch of many entries) per fetch
FETCH_TIMEOUT_S = 1.0
RETRY_MAX_S = 5.0


class StoreWriter:
    def __init__(
        self,
        bus: Bus,
        store: EntryStore,
        durable: str,
        ack_wait_s: float,
        completeness: Completeness | None = None,
    ) -> None:
        self.bus = bus
        self.completeness = completeness or Completeness()
        self.store = store
        self.durable = durable
        self.ack_wait_s = ack_wait_s
        self.healthy = False
        self.last_error: str | None = None
        self.stored = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self._sub = await durable_pull(
            self.bus.js, ENTRIES_STREAM.name, ENTRIES_ALL, self.durable, ack_wait_s=self.ack_wait_s
        )
        self.healthy = True
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            got = await fetch_entries(self._sub, FETCH_BATCH, FETCH_TIMEOUT_S)
            if got.invalid:
                INVALID_ENTRIES.inc(got.invalid)
                self.completeness.invalid_skipped += got.invalid
            docs, msgs = got.entries, got.messages
            while not self._stop.is_set():
                try:
                    if docs:
                        with TRACER.start_as_current_span(
                            "store.write",
                            attributes={"wiretide.entries": len(docs), "wiretide.messages": len(msgs)},
                        ):
                            new = await asyncio.to_thread(self.store.insert_many, docs)
                        self.stored += new
                        STORED.inc(new)
                    break
                except StoreError as exc:
                    if self.healthy or self.last_error != str(exc):
                        log.error("store write failed; not acknowledging", extra={"error": str(exc)})
                    self.healthy = False
                    self.last_error = str(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
            else:
                return  # stopping with an uncommitted batch: JetStream redelivers it
            if not self.healthy:
                log.info("store writes recovered")
            self.healthy, self.last_error, delay = True, None, 0.2
            await got.ack()

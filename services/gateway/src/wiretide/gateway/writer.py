"""The store writer: a durable JetStream pull consumer on wt.entries.> that persists EntryBatches.

Rule: a message is acknowledged only after its entries are committed. When the store fails, the
writer stops acknowledging (JetStream keeps and redelivers), says why, and reports not ready. A message
of a newer contract version than this gateway reads is never acknowledged either: JetStream keeps it for
an upgraded gateway, and until then the writer reports not ready, naming both versions.

Two batches are in flight at most: while one is decoded and written in a worker thread (SQLite
releases the GIL while it writes), the event loop fetches the next. Decoding happens in that thread
too, off the event loop. It reads the fields the store indexes as the producer lifted them and keeps
each entry's JSON as it arrived: the writer never decodes a document (nor the store, unless it needs
the document: MongoDB). A batch is sized by bytes (`FetchSize`: about FETCH_BYTES of EntryBatches, at
most FETCH_BATCH messages), so what a burst makes the writer hold does not grow with its messages' size.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from prometheus_client import Counter

from wiretide.common.bus import ENTRIES_ALL, ENTRIES_STREAM, Bus, durable_pull
from wiretide.common.bus.entries import Indexed, NewerContract, Skipped, indexed_entries, unpacked_bytes
from wiretide.common.bus.fetch import FetchSize
from wiretide.common.telemetry import tracer
from wiretide.gateway.query import Completeness
from wiretide.gateway.store import EntryStore, StoreError

log = logging.getLogger(__name__)
TRACER = tracer(__name__)

STORED = Counter("wiretide_gateway_entries_stored_total", "Entries written to the store (new rows)")
INVALID_ENTRIES = Counter(
    "wiretide_gateway_invalid_entries_total", "Entries skipped as not valid Entry documents"
)

FETCH_BATCH = 64  # NATS messages (each an EntryBatch of many entries) per fetch at most
# EntryBatch bytes per fetch, about: a fetch is sized from the messages of the last one. In a keep-alive
# burst a batch is as full as a NATS message allows (~800 KB): two fetches of 64 were 100 MB of payload,
# each entry's JSON copied out of them again, most of the gateway's 466 MB peak (docs/reliability.md).
FETCH_BYTES = 4 << 20
FETCH_TIMEOUT_S = 1.0
RETRY_MAX_S = 5.0
RETRY_AFTER_FETCH_ERROR_S = 0.5  # pause after a failed fetch; the client reconnects by itself meanwhile


@dataclass(slots=True)
class Batch:
    """The messages of one fetch and, once decoded, their valid entries as the store takes them."""

    messages: list[Any]
    entries: list[Indexed] = field(default_factory=list)
    readable: list[Any] = field(default_factory=list)  # the messages decoded: acknowledged once committed
    refused: str = ""  # why some messages were left unread (a newer contract version)
    invalid: int = 0
    decoded: bool = False


def decode(batch: Batch) -> None:
    """Decode and validate every entry; undecodable messages and invalid entries are counted and skipped,
    messages of a newer contract version left unread."""
    if batch.decoded:
        return
    skipped = Skipped()
    out = batch.entries
    for msg in batch.messages:
        try:
            out.extend(indexed_entries((msg,), skipped))  # raises before any entry of a newer message
        except NewerContract as exc:
            batch.refused = str(exc)
            continue
        batch.readable.append(msg)
    batch.invalid += skipped.entries
    batch.decoded = True


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
        self._delay = 0.2
        self.fetch_size = FetchSize(FETCH_BATCH, FETCH_BYTES)

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

    async def _fetch(self) -> list[Any]:
        try:
            msgs: list[Any] = await self._sub.fetch(self.fetch_size.messages, timeout=FETCH_TIMEOUT_S)
        except (TimeoutError, NatsTimeout):
            return []
        except Exception as exc:  # connection trouble: the client reconnects by itself
            log.warning("fetch failed", extra={"error": str(exc)})
            await asyncio.sleep(RETRY_AFTER_FETCH_ERROR_S)
            return []
        self.fetch_size.seen([unpacked_bytes(msg.data) for msg in msgs])  # what they hold unpacked
        return msgs

    def _write(self, batch: Batch) -> int:
        """Decode (once) and store a batch; runs in a worker thread. Raises StoreError."""
        decode(batch)
        if not batch.entries:
            return 0
        with TRACER.start_as_current_span(
            "store.write",
            attributes={"wiretide.entries": len(batch.entries), "wiretide.messages": len(batch.messages)},
        ):
            return self.store.insert_indexed(batch.entries)

    async def _run(self) -> None:
        in_flight: tuple[Batch, asyncio.Future[int]] | None = None
        task = asyncio.current_task()
        while not self._stop.is_set():
            # A cancellation the NATS client swallowed (it can surface as a fetch error or a timeout,
            # both caught below) must still end the loop, or a process told to exit never does.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            msgs = await self._fetch()  # meanwhile the previous batch is being written
            batch = Batch(msgs) if msgs else None
            # Decoded in another thread while the previous batch is still being written: SQLite lets go
            # of the GIL while it steps, so the two overlap.
            decoding = asyncio.ensure_future(asyncio.to_thread(decode, batch)) if batch is not None else None
            settled = in_flight is None or await self._settle(*in_flight)
            in_flight = None
            if decoding is not None:
                await decoding
            if not settled:
                return  # stopping with an uncommitted batch: JetStream redelivers it (and the next)
            if batch is not None:
                in_flight = (batch, asyncio.ensure_future(asyncio.to_thread(self._write, batch)))
        if in_flight is not None:
            await self._settle(*in_flight)

    async def _settle(self, batch: Batch, write: asyncio.Future[int]) -> bool:
        """Wait for a batch's write, retrying while the store fails; acknowledge it once committed.
        False when asked to stop before it could be committed."""
        while True:
            try:
                new = await write
                break
            except StoreError as exc:
                if self.healthy or self.last_error != str(exc):
                    log.error("store write failed; not acknowledging", extra={"error": str(exc)})
                self.healthy = False
                self.last_error = str(exc)
                self._count_invalid(batch)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self._delay)
                    return False
                except TimeoutError:
                    pass
                self._delay = min(self._delay * 2, RETRY_MAX_S)
                write = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
        self._count_invalid(batch)
        self.stored += new
        STORED.inc(new)
        previous = self.last_error
        if not self.healthy and not batch.refused:
            log.info("store writes recovered")
        self.healthy, self.last_error, self._delay = True, None, 0.2
        if batch.refused:  # left unacknowledged: JetStream redelivers them to an upgraded gateway
            if previous != batch.refused:
                log.error("entries left on the bus unread", extra={"error": batch.refused})
            self.healthy, self.last_error = False, batch.refused
        for msg in batch.readable:
            await msg.ack()
        return True

    def _count_invalid(self, batch: Batch) -> None:
        if batch.invalid:
            INVALID_ENTRIES.inc(batch.invalid)
            self.completeness.invalid_skipped += batch.invalid
            batch.invalid = 0  # counted once, however often the write is retried

"""Batched publishing: many items per NATS message, bounded buffering, counted drops.

Items are appended to a buffer; a flusher sends a message as soon as a message's worth is buffered
(under load: full messages) and otherwise every `max_delay_s` (the bound on what waiting adds to an
item's latency). A message's worth is `max_items`, or fewer when that many would not fit in a NATS
message: the publisher learns the encoded size of an item from each message it encodes and fills a
message to FILL of the server's max_payload (a message carries a fixed cost at the server and at every
consumer — a JetStream store, a delivery and an ack each — so fewer, fuller messages cost less per item).
While NATS is away the buffer fills up to `max_buffered` items. Without a spool the
oldest items are then dropped and counted (wiretide_bus_dropped_total{reason="buffer_full"}). With one,
what comes next is encoded, a message's worth at a time, into the on-disk spool (`spool.py`) up to its
budget, and what does not fit is dropped and counted (reason "spool_full"). Order is kept: the memory
buffer holds the oldest items, the spool the next, and items that arrive while the spool holds
messages queue behind it; the flusher sends in that order once NATS is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from wiretide.common.bus.connection import Bus
from wiretide.common.bus.spool import Spool
from wiretide.common.metrics import BUS_DROPPED, BUS_PUBLISHED

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default, used until the server's INFO says otherwise
# Share of max_payload a message is filled to: items vary in size, and a message that turns out too
# large is encoded again with fewer items (wasted work), so aim below the limit.
FILL = 0.8
SPOOLED_ID_SUFFIX = "-spooled"
CLOSE_FLUSH_S = 2.0  # how long close() keeps trying to send; the rest goes to the spool (or is lost)


class BatchPublisher(Generic[T]):
    def __init__(
        self,
        bus: Bus,
        subject: str,
        encode: Callable[[Sequence[T], int], tuple[bytes, str] | tuple[bytes, str, int]],
        *,
        jetstream: bool = True,
        max_items: int = 500,
        max_delay_s: float = 0.05,
        max_buffered: int = 100_000,
        spool: Spool | None = None,
    ) -> None:
        """`encode(items, seq)` returns (payload, message id for JetStream de-duplication), and for a
        payload that packs its items, a third value: the bytes they hold unpacked. A message is filled
        by that size (consumers hold the items unpacked), its payload only has to fit NATS."""
        self.bus = bus
        self.subject = subject
        self.encode = encode
        self.jetstream = jetstream
        self.max_items = max_items
        self.max_delay_s = max_delay_s
        self.max_buffered = max_buffered
        self.spool = spool
        self.buffer: deque[T] = deque(maxlen=max_buffered if spool is None else None)
        self._tail: list[T] = []  # items behind the spool, spooled a message's worth at a time
        self.spooled_items = 0
        self.seq = 0
        self.dropped = 0
        self.published_items = 0
        self.batch = max_items  # items per message: max_items, or as many as fit (see _learn)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # The message last handed to NATS and not confirmed (a publish that timed out may still reach
        # the server): sent again exactly, under its id, so JetStream drops it if it had arrived. A
        # message id always names one content; reused for more items, the server would drop those.
        self._unconfirmed: tuple[bytes, str, int] | None = None

    @property
    def backed_up(self) -> bool:
        """More is waiting than a few messages' worth and nowhere else takes it: senders should slow."""
        if len(self.buffer) <= self.batch * 4:
            return False
        return self.spool is None or self.spool.budget.used >= self.spool.budget.max_bytes

    @property
    def waiting(self) -> int:
        """Items not yet published: in memory and (as messages) in the spool."""
        return len(self.buffer) + len(self._tail) + (self.spool.messages if self.spool is not None else 0)

    def add(self, item: T) -> None:
        spool = self.spool
        if spool is not None:
            if self._tail or spool.messages or len(self.buffer) >= self.max_buffered:
                self._tail.append(item)
                if len(self._tail) >= self.batch:
                    self._spill()
                return
        elif len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
            BUS_DROPPED.labels(self.subject, "buffer_full").inc()
        self.buffer.append(item)
        if len(self.buffer) >= self.batch:
            self._wake.set()

    def extend(self, items: Sequence[T]) -> None:
        for item in items:
            self.add(item)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"publisher:{self.subject}")

    async def close(self) -> None:
        """Flush what is buffered (best effort while connected) and stop; what is left goes to the
        spool when there is one (the next process delivers it)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        spool = self.spool
        if spool is not None:
            # The memory buffer is older than what the spool holds, the tail newer: keep that order.
            sent = self._unconfirmed  # its items lead the buffer: spooled under the id it went out with
            older = [] if sent is None else [(sent[1], sent[0], sent[2])]
            older += self._messages(list(self.buffer)[sent[2] if sent else 0 :])
            self._unconfirmed = None
            self.buffer.clear()
            kept = spool.prepend([(msg_id, payload) for msg_id, payload, _ in older])
            for _, _, n in older[kept:]:
                self.dropped += n
                BUS_DROPPED.labels(self.subject, "spool_full").inc(n)
            self.spooled_items += sum(n for _, _, n in older[:kept])
            while self._tail:
                self._spill()
            spool.close()

    def _messages(self, items: list[T]) -> list[tuple[str, bytes, int]]:
        """`items` encoded as spooled messages (id, payload, items in it); oversized items dropped."""
        out = []
        while items:
            fit = self._fitting(items[: self.batch])
            if fit is None:
                self.dropped += 1
                BUS_DROPPED.labels(self.subject, "too_large").inc()
                del items[0]
                continue
            payload, msg_id, n = fit
            self.seq += 1
            # Its own id space: a message in flight meanwhile may have been encoded with the same seq.
            out.append((f"{msg_id}{SPOOLED_ID_SUFFIX}", payload, n))
            del items[:n]
        return out

    def _fitting(self, items: Sequence[T]) -> tuple[bytes, str, int] | None:
        """The message of as many of `items` (from the first) as fit the server's max_payload, and how
        many that is; None when the first alone does not fit."""
        n = len(items)
        limit = self.bus.nc.max_payload or DEFAULT_MAX_PAYLOAD
        while True:
            encoded = self.encode(items[:n], self.seq + 1)
            payload, msg_id = encoded[0], encoded[1]
            size = max(len(payload), encoded[2]) if len(encoded) == 3 else len(payload)
            if size <= limit or (n == 1 and len(payload) <= limit):
                if n >= self.batch or n < len(items):  # a full message, or one cut down to fit
                    self._learn(size, n, limit)
                return payload, msg_id, n
            if n == 1:
                return None
            # As many as would fill FILL of a message at this message's bytes per item (fewer each time).
            n = max(1, min(n - 1, int(n * limit * FILL / size)))

    def _learn(self, size: int, n: int, limit: int) -> None:
        """Items per message from a message of `n` items and `size` bytes: as many as fill FILL of the
        limit, at most max_items. Only full messages teach (a small one is mostly framing)."""
        self.batch = max(1, min(self.max_items, int(limit * FILL * n / size)))

    def _spill(self) -> None:
        """A message's worth of the tail's oldest items into the spool; what it cannot take is counted."""
        assert self.spool is not None
        items = self._tail[: self.batch]
        del self._tail[: self.batch]
        for msg_id, payload, n in self._messages(items):
            if self.spool.append(msg_id, payload):
                self.spooled_items += n
            else:
                self.dropped += n
                BUS_DROPPED.labels(self.subject, "spool_full").inc(n)

    async def flush(self, *, whole: bool = True) -> None:
        """Send what is buffered: all of it, or (`whole` false) the full messages' worth, the rest waiting
        for more items or for the linger to run out."""
        least = 1 if whole else self.batch
        while self._unconfirmed is not None or len(self.buffer) >= least:
            await self._send_one()
        spool = self.spool
        if spool is None:
            return
        while (spooled := spool.peek()) is not None:
            msg_id, payload = spooled
            if self.jetstream:
                await self.bus.js.publish(self.subject, payload, headers={"Nats-Msg-Id": msg_id})
            else:
                await self.bus.nc.publish(self.subject, payload)
            spool.pop()
            BUS_PUBLISHED.labels(self.subject).inc()
        if self._tail:  # the spool is empty: the items behind it are next
            self.buffer.extend(self._tail)
            self._tail.clear()
            while self.buffer:
                await self._send_one()

    async def _run(self) -> None:
        while True:
            lingered = False
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.max_delay_s)
            except TimeoutError:
                lingered = True
            self._wake.clear()
            try:
                # Woken by a message's worth: full messages only. An item left over waits at most one
                # more linger, so none waits more than two.
                await self.flush(whole=lingered or self._closing)
            except Exception as exc:  # NATS away: keep buffering within the bound
                log.warning("publish failed, buffering", extra={"subject": self.subject, "error": str(exc)})
                await asyncio.sleep(0.5)
            if self._closing:
                try:
                    await asyncio.wait_for(self.flush(), timeout=CLOSE_FLUSH_S)
                except Exception as exc:
                    log.warning("could not flush on close", extra={"error": str(exc), "left": self.waiting})
                return

    async def _send_one(self) -> None:
        fit = self._unconfirmed or self._fitting(
            [self.buffer[i] for i in range(min(self.batch, len(self.buffer)))]
        )
        if fit is None:  # one item larger than a NATS message can carry: drop it, counted
            self.buffer.popleft()
            self.dropped += 1
            BUS_DROPPED.labels(self.subject, "too_large").inc()
            return
        payload, msg_id, n = fit
        if self.jetstream:
            self._unconfirmed = fit
            await self.bus.js.publish(self.subject, payload, headers={"Nats-Msg-Id": msg_id})
            self._unconfirmed = None
        else:
            await self.bus.nc.publish(self.subject, payload)
        # Only now that the server has it do the items leave the buffer.
        for _ in range(n):
            self.buffer.popleft()
        self.seq += 1
        self.published_items += n
        BUS_PUBLISHED.labels(self.subject).inc()

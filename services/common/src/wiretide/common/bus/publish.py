"""Batched publishing: many items per NATS message, bounded buffering, counted drops.

Items are appended to a buffer; a flusher sends one message per `max_items` (or every
`max_delay_s`). While NATS is away the buffer fills up to `max_buffered` items. Without a spool the
oldest items are then dropped and counted (wiretide_bus_dropped_total{reason="buffer_full"}). With one,
what comes next is encoded, `max_items` to a message, into the on-disk spool (`spool.py`) up to its
budget, and what does not fit is dropped and counted (reason "spool_full"). Order is kept: the memory
buffer holds the oldest items, the spool the next, and items that arrive while the spool holds
messages queue behind it; the flusher sends in that order once NATS is back.
"""

from __future__ import annotations

import asyncio
import contextlib
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
SPOOLED_ID_SUFFIX = "-spooled"
CLOSE_FLUSH_S = 2.0  # how long close() keeps trying to send; the rest goes to the spool (or is lost)


class BatchPublisher(Generic[T]):
    def __init__(
        self,
        bus: Bus,
        subject: str,
        encode: Callable[[Sequence[T], int], tuple[bytes, str]],
        *,
        jetstream: bool = True,
        max_items: int = 500,
        max_delay_s: float = 0.05,
        max_buffered: int = 100_000,
        spool: Spool | None = None,
    ) -> None:
        """`encode(items, seq)` returns (payload, message id for JetStream de-duplication)."""
        self.bus = bus
        self.subject = subject
        self.encode = encode
        self.jetstream = jetstream
        self.max_items = max_items
        self.max_delay_s = max_delay_s
        self.max_buffered = max_buffered
        self.spool = spool
        self.buffer: deque[T] = deque(maxlen=max_buffered if spool is None else None)
        self._tail: list[T] = []  # items behind the spool, spooled `max_items` at a time
        self.spooled_items = 0
        self.seq = 0
        self.dropped = 0
        self.published_items = 0
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
        if len(self.buffer) <= self.max_items * 4:
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
                if len(self._tail) >= self.max_items:
                    self._spill()
                return
        elif len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
            BUS_DROPPED.labels(self.subject, "buffer_full").inc()
        self.buffer.append(item)
        if len(self.buffer) >= self.max_items:
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
            fit = self._fitting(items[: self.max_items])
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
            payload, msg_id = self.encode(items[:n], self.seq + 1)
            if len(payload) <= limit:
                return payload, msg_id, n
            if n == 1:
                return None
            n //= 2  # halve until the message fits

    def _spill(self) -> None:
        """The oldest `max_items` of the tail into the spool as messages; what it cannot take is counted."""
        assert self.spool is not None
        items = self._tail[: self.max_items]
        del self._tail[: self.max_items]
        for msg_id, payload, n in self._messages(items):
            if self.spool.append(msg_id, payload):
                self.spooled_items += n
            else:
                self.dropped += n
                BUS_DROPPED.labels(self.subject, "spool_full").inc(n)

    async def flush(self) -> None:
        while self.buffer:
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.max_delay_s)
            self._wake.clear()
            try:
                await self.flush()
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
            [self.buffer[i] for i in range(min(self.max_items, len(self.buffer)))]
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

"""Batched publishing: many items per NATS message, bounded buffering, counted drops.

Items are appended to a buffer; a flusher sends one message per `max_items` (or every
`max_delay_s`). While NATS is away the buffer fills up to `max_buffered`, then the oldest
items are dropped and counted (wiretide_bus_dropped_total{reason="buffer_full"}).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from wiretide.common.bus.connection import Bus
from wiretide.common.metrics import BUS_DROPPED, BUS_PUBLISHED

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default, used until the server's INFO says otherwise


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
    ) -> None:
        """`encode(items, seq)` returns (payload, message id for JetStream de-duplication)."""
        self.bus = bus
        self.subject = subject
        self.encode = encode
        self.jetstream = jetstream
        self.max_items = max_items
        self.max_delay_s = max_delay_s
        self.buffer: deque[T] = deque(maxlen=max_buffered)
        self.seq = 0
        self.dropped = 0
        self.published_items = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def add(self, item: T) -> None:
        if len(self.buffer) == self.buffer.maxlen:
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
        """Flush what is buffered (best effort while connected) and stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def flush(self) -> None:
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
                    await asyncio.wait_for(self.flush(), timeout=2.0)
                except Exception as exc:
                    log.warning(
                        "could not flush on close", extra={"error": str(exc), "left": len(self.buffer)}
                    )
                return

    async def _send_one(self) -> None:
        n = min(self.max_items, len(self.buffer))
        limit = self.bus.nc.max_payload or DEFAULT_MAX_PAYLOAD
        while True:
            items = [self.buffer[i] for i in range(n)]
            payload, msg_id = self.encode(items, self.seq + 1)
            if len(payload) <= limit:
                break
            if n == 1:  # one item larger than a NATS message can carry: drop it, counted
                self.buffer.popleft()
                self.dropped += 1
                BUS_DROPPED.labels(self.subject, "too_large").inc()
                return
            n //= 2  # halve until the message fits the server's max_payload
        if self.jetstream:
            await self.bus.js.publish(self.subject, payload, headers={"Nats-Msg-Id": msg_id})
        else:
            await self.bus.nc.publish(self.subject, payload)
        # Only now that the server has it do the items leave the buffer.
        for _ in range(n):
            self.buffer.popleft()
        self.seq += 1
        self.published_items += n
        BUS_PUBLISHED.labels(self.subject).inc()

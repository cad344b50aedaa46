"""The live stream: every entry that reaches this gateway, fanned out to subscribers that each hold a
KFL predicate and a bounded queue.

Rule: a slow subscriber never blocks the others or the feed — when its queue is full it is cut off
(with a reason that says how much it missed), never waited for. A subscriber receives only entries
in its namespace scope, whatever its predicate says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from wiretide.common.auth import ALL_NAMESPACES, NamespaceScope
from wiretide.common.bus import ENTRIES_ALL, Bus, decode_or_count
from wiretide.common.entry import InvalidEntry, from_proto
from wiretide.proto.v1 import entries_pb2

log = logging.getLogger(__name__)

SUBSCRIBERS = Gauge("wiretide_gateway_stream_subscribers", "Live stream subscribers connected")
CUT_OFF = Counter("wiretide_gateway_stream_slow_subscribers_total", "Subscribers cut off for falling behind")

QUEUE_BOUND = 2_000  # entries a subscriber may fall behind before it is cut off


@dataclass(eq=False)
class Subscriber:
    predicate: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_BOUND))
    delivered: int = 0
    missed: int = 0
    closed_reason: str | None = None


class LiveHub:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self._sub: Any = None

    async def start(self, bus: Bus) -> None:
        """An ephemeral core subscription: every gateway replica sees every entry for its own clients."""
        self._sub = await bus.nc.subscribe(ENTRIES_ALL, cb=self._on_message)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        for s in list(self.subscribers):
            self.close(s, "gateway stopping")

    async def _on_message(self, msg: Any) -> None:
        if not self.subscribers:
            return
        batch = decode_or_count(entries_pb2.EntryBatch, msg.data, msg.subject)
        if batch is None:
            return
        docs = []
        for e in batch.entries:
            try:
                docs.append(from_proto(e))
            except InvalidEntry:
                continue  # counted by the store writer
        self.publish(docs)

    def publish(self, docs: list[dict[str, Any]]) -> None:
        for s in list(self.subscribers):
            for doc in docs:
                try:
                    if not s.predicate(doc):
                        continue
                except Exception:  # a predicate must not stop the feed
                    continue
                try:
                    s.queue.put_nowait(doc)
                    s.delivered += 1
                except asyncio.QueueFull:
                    s.missed += 1
                    self.close(s, f"slow consumer: fell {QUEUE_BOUND} entries behind")
                    CUT_OFF.inc()
                    break

    def subscribe(
        self, predicate: Callable[[dict[str, Any]], bool], scope: NamespaceScope = ALL_NAMESPACES
    ) -> Subscriber:
        s = Subscriber(scope.predicate(predicate))
        self.subscribers.add(s)
        SUBSCRIBERS.set(len(self.subscribers))
        return s

    def close(self, s: Subscriber, reason: str) -> None:
        if s in self.subscribers:
            self.subscribers.discard(s)
            SUBSCRIBERS.set(len(self.subscribers))
            s.closed_reason = reason
            # Wake the reader even when the queue is full: drop one queued entry to make room.
            if s.queue.full():
                s.queue.get_nowait()
            s.queue.put_nowait(None)

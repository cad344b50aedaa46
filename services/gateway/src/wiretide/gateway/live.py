"""The live stream: every entry that reaches this gateway, fanned out to subscribers that each hold a
KFL predicate and a bounded queue.

Rule: a slow subscriber never blocks the others or the feed — when its queue is full it is cut off
(with a reason that says how much it missed), never waited for. A subscriber receives only entries
in its namespace scope, whatever its predicate says. The hub reads the bus only while someone
watches: its subscription is made for the first subscriber (confirmed by the server before that
subscriber is told it is live) and dropped a while after the last one leaves, so a gateway nobody
streams from spends nothing per entry on the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from wiretide.common.auth import ALL_NAMESPACES, NamespaceScope
from wiretide.common.bus import ENTRIES_ALL, Bus
from wiretide.common.bus.entries import NewerContract, open_batch
from wiretide.common.entry import InvalidEntry, from_proto

log = logging.getLogger(__name__)

SUBSCRIBERS = Gauge("wiretide_gateway_stream_subscribers", "Live stream subscribers connected")
CUT_OFF = Counter("wiretide_gateway_stream_slow_subscribers_total", "Subscribers cut off for falling behind")

QUEUE_BOUND = 2_000  # entries a subscriber may fall behind before it is cut off
# How long the feed stays subscribed after its last subscriber left (a reloading UI comes back).
IDLE_UNSUBSCRIBE_S = 30.0


@dataclass(eq=False)
class Subscriber:
    predicate: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_BOUND))
    delivered: int = 0
    missed: int = 0
    closed_reason: str | None = None


class LiveHub:
    def __init__(self, idle_unsubscribe_s: float = IDLE_UNSUBSCRIBE_S) -> None:
        self.subscribers: set[Subscriber] = set()
        self.idle_unsubscribe_s = idle_unsubscribe_s
        self._bus: Bus | None = None
        self._sub: Any = None
        self._lock = asyncio.Lock()
        self._idle: asyncio.Task[None] | None = None
        self._pending: asyncio.Task[None] | None = None

    @property
    def feeding(self) -> bool:
        """Whether the hub reads the bus now."""
        return self._sub is not None

    async def start(self, bus: Bus) -> None:
        """Ready to feed subscribers from `bus`; nothing is read until the first one comes (or,
        when some subscribed before the bus was there, now)."""
        self._bus = bus
        if self.subscribers:
            await self.ready()

    async def stop(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._pending is not None:
            self._pending.cancel()
        await self._unsubscribe()
        for s in list(self.subscribers):
            self.close(s, "gateway stopping")

    async def ready(self) -> None:
        """Return once the feed's subscription is in place on the server (an ephemeral core
        subscription: every gateway replica sees every entry for its own clients). Call it right
        before `subscribe` (no await between them) and tell the client it is live after: nothing
        published afterwards is missed."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._sub is not None or self._bus is None:
            return
        async with self._lock:
            if self._sub is None:
                sub = await self._bus.nc.subscribe(ENTRIES_ALL, cb=self._on_message)
                await self._bus.nc.flush()  # the server has the subscription once it answers
                self._sub = sub

    async def _unsubscribe(self) -> None:
        async with self._lock:
            sub, self._sub = self._sub, None
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception as exc:  # the connection is gone: so is the subscription
                    log.debug("live feed not unsubscribed", extra={"error": str(exc)})

    async def _unsubscribe_when_idle(self) -> None:
        await asyncio.sleep(self.idle_unsubscribe_s)
        if not self.subscribers:
            await self._unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        if not self.subscribers:
            return
        try:
            batch = open_batch(msg.data, msg.subject)
        except NewerContract:  # the store writer says so (and keeps the batch for an upgraded gateway)
            return
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
        """Add a subscriber. Streams await `ready` just before (no await between), recording
        triggers just after; should a caller do neither, the feed is subscribed in the background,
        so no subscriber is left unfed (it sees what is published once the server has the
        subscription)."""
        s = Subscriber(scope.predicate(predicate))
        self.subscribers.add(s)
        SUBSCRIBERS.set(len(self.subscribers))
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._sub is None and self._bus is not None and self._pending is None:
            with contextlib.suppress(RuntimeError):  # no running loop: `ready` is called later
                self._pending = asyncio.get_running_loop().create_task(self._subscribe_in_background())
        return s

    async def _subscribe_in_background(self) -> None:
        try:
            await self.ready()
        except Exception as exc:  # the bus is down: the next subscriber tries again
            log.warning("live feed not subscribed", extra={"error": str(exc)})
        finally:
            self._pending = None

    def close(self, s: Subscriber, reason: str) -> None:
        if s in self.subscribers:
            self.subscribers.discard(s)
            SUBSCRIBERS.set(len(self.subscribers))
            s.closed_reason = reason
            if not self.subscribers and self._sub is not None and self._idle is None:
                with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule
                    self._idle = asyncio.get_running_loop().create_task(self._unsubscribe_when_idle())
                    self._idle.add_done_callback(self._idle_done)
            # Wake the reader even when the queue is full: drop one queued entry to make room.
            if s.queue.full():
                s.queue.get_nowait()
            s.queue.put_nowait(None)

    def _idle_done(self, task: asyncio.Task[None]) -> None:
        if self._idle is task:
            self._idle = None

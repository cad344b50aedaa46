"""Outbound work of agents (webhooks, kfl.query, pcap.snapshot): off the hook path, bounded, timed out.

Rule: a hook never waits for the network. Work is queued (at most `max_queue` items; beyond that it
is dropped and counted per agent, and an asynchronous caller's promise is rejected), a few workers
run it with a timeout each, and a failure is reported to the agent (its log, or its promise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter

from wiretide.agents.helpers import Host

log = logging.getLogger(__name__)

OUTBOUND_DROPPED: Final = Counter(
    "wiretide_agents_outbound_dropped_total", "Agent outbound calls dropped: the queue was full", ["agent"]
)
OUTBOUND_FAILED: Final = Counter(
    "wiretide_agents_outbound_failed_total", "Agent outbound calls that failed or timed out", ["agent"]
)
OUTBOUND_SENT: Final = Counter(
    "wiretide_agents_outbound_done_total", "Agent outbound calls completed", ["agent"]
)


@dataclass(frozen=True, slots=True)
class Work:
    host: Host
    what: str
    run: Callable[[], Awaitable[Any]]
    done: Callable[[bool, Any], None] | None


class Outbound:
    def __init__(self, max_queue: int, timeout_s: float, workers: int) -> None:
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[Work] = asyncio.Queue(max_queue)
        self.loop = asyncio.get_running_loop()
        self.dropped = 0
        self.failed = 0
        self.completed = 0
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"agents-outbound-{i}") for i in range(workers)
        ]

    def submit(self, work: Work) -> None:
        """Queue `work`; safe from any thread."""
        self.loop.call_soon_threadsafe(self._enqueue, work)

    def _enqueue(self, work: Work) -> None:
        try:
            self.queue.put_nowait(work)
        except asyncio.QueueFull:
            self.dropped += 1
            OUTBOUND_DROPPED.labels(work.host.agent).inc()
            counters = getattr(work.host, "counters", None)
            if counters is not None:
                counters.outbound_dropped += 1
            if work.done is not None:
                work.done(False, f"{work.what}: dropped, the outbound queue is full")

    async def _worker(self) -> None:
        while True:
            work = await self.queue.get()
            try:
                value = await asyncio.wait_for(work.run(), timeout=self.timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed += 1
                OUTBOUND_FAILED.labels(work.host.agent).inc()
                reason = (
                    f"timed out after {self.timeout_s:g} s"
                    if isinstance(exc, TimeoutError)
                    else str(exc) or type(exc).__name__
                )
                if work.done is not None:
                    work.done(False, f"{work.what}: {reason}")
                else:
                    work.host.log("error", f"{work.what} failed: {reason}")
            else:
                self.completed += 1
                OUTBOUND_SENT.labels(work.host.agent).inc()
                if work.done is not None:
                    work.done(True, value)
            finally:
                self.queue.task_done()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

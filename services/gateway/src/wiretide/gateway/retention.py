"""Retention: entries older than the age bound and the oldest beyond the size bound are deleted,
continuously, and every deletion is counted by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from prometheus_client import Counter

from wiretide.gateway.store import EntryStore, StoreError

log = logging.getLogger(__name__)

DELETED = Counter("wiretide_gateway_retention_deleted_total", "Entries deleted by retention", ["reason"])
SIZE_STEP = 5_000  # entries deleted per round while the store is over its size bound


class Retention:
    def __init__(self, store: EntryStore, max_age_s: float, max_bytes: int, interval_s: float) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.deleted: dict[str, int] = {"age": 0, "size": 0}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def enforce(self, now_ns: int | None = None) -> dict[str, int]:
        """One round (blocking; run it in a thread). Returns what it deleted by reason."""
        now = time.time_ns() if now_ns is None else now_ns
        done = {"age": 0, "size": 0}
        if self.max_age_s > 0:
            done["age"] = self.store.delete_older_than(now - int(self.max_age_s * 1e9))
        if self.max_bytes > 0:
            while self.store.used_bytes() > self.max_bytes:
                n = self.store.delete_oldest(SIZE_STEP)
                done["size"] += n
                if n == 0:
                    break
        self.store.maintain()
        for reason, n in done.items():
            if n:
                DELETED.labels(reason).inc(n)
                self.deleted[reason] += n
        return done

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                done = await asyncio.to_thread(self.enforce)
                if any(done.values()):
                    log.info("retention deleted entries", extra=done)
            except StoreError as exc:
                log.warning("retention round failed", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)

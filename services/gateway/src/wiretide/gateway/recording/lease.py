"""Which gateway replica runs the recording jobs: the holder of a lease in a JetStream KV bucket.

Every replica serves the jobs' API (the jobs and the runs' status are in KV), but exactly one runs
them — two replicas cutting the same run would write two bundles. The lease is one key in a bucket
whose values live `TTL_S`: the holder renews it every `RENEW_S` with a compare-and-set on the
revision it last wrote, so a holder that stops renewing (killed, partitioned, stalled) loses it when
its value expires and another replica's `create` succeeds; a holder that stops cleanly deletes the
key, and the next replica takes over at its next try.

Rule: a replica runs jobs only while `held` is true, and `held` turns false as soon as a renewal is
refused or has not succeeded for `TTL_S` (its own clock, counted from the last success) — never
later than the moment another replica can take the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson

log = logging.getLogger(__name__)

BUCKET: Final = "wiretide_recording_lease"
KEY: Final = "holder"
TTL_S: Final = 15.0  # a dead holder's lease is taken over within this (plus one try)
RENEW_S: Final = TTL_S / 5  # renewals (and, for the others, tries) this often

Transition = Callable[[bool], Awaitable[None]]


def replica_name() -> str:
    """This process among the gateway replicas: its host (pod) name and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def open_bucket(js: Any, ttl_s: float = TTL_S) -> Any:
    from nats.js.api import StorageType

    from wiretide.common.bus.kv import open_kv

    return await open_kv(
        js,
        BUCKET,
        description="Wiretide: the gateway replica that runs recording jobs",
        storage=StorageType.MEMORY,
        ttl=ttl_s,
    )


class Lease:
    def __init__(
        self,
        kv: Any,
        replica: str,
        url: str,
        on_change: Transition,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.replica = replica
        self.url = url
        self.on_change = on_change
        self.ttl_s = ttl_s
        self.renew_s = ttl_s / 5
        self.clock = clock
        self.held = False
        self.revision = 0
        self.renewed_at = 0.0
        self.holder: dict[str, Any] = {}  # the last holder seen (this replica or another)
        self.takeovers = 0
        self._task: asyncio.Task[None] | None = None

    def value(self) -> bytes:
        return orjson.dumps({"replica": self.replica, "url": self.url, "ts_ns": time.time_ns()})

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rec-lease")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.held:
            with contextlib.suppress(Exception):  # the next replica takes over at its next try
                await self.kv.delete(KEY, last=self.revision)
            await self._set(False)

    async def _set(self, held: bool) -> None:
        if held == self.held:
            return
        self.held = held
        if held:
            self.takeovers += 1
        log.info("recording lease " + ("taken" if held else "lost"), extra={"replica": self.replica})
        await self.on_change(held)

    async def step(self) -> None:
        """One try: renew the lease when held, else take it when nobody holds it."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        now = self.clock()
        if self.held:
            try:
                self.revision = await self.kv.update(KEY, self.value(), last=self.revision)
                self.renewed_at = now
            except KeyWrongLastSequenceError:
                await self._set(False)  # expired and taken by another, or deleted
            except Exception as exc:  # NATS away: held only while the last renewal is within the TTL
                log.warning("recording lease renewal failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                if now - self.renewed_at >= self.ttl_s - self.renew_s:
                    await self._set(False)
            return
        try:
            self.revision = await self.kv.create(KEY, self.value())
        except KeyWrongLastSequenceError:
            with contextlib.suppress(KeyNotFoundError, Exception):
                entry = await self.kv.get(KEY)
                doc = orjson.loads(entry.value or b"{}")
                self.holder = doc if isinstance(doc, dict) else {}
            return
        except Exception as exc:
            log.warning("recording lease unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self.renewed_at = now
        self.holder = {"replica": self.replica, "url": self.url}
        await self._set(True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop outlives any one failure
                log.exception("recording lease step failed")
            await asyncio.sleep(self.renew_s)

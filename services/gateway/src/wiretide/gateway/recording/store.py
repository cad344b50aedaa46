"""Recording jobs in a NATS JetStream key-value bucket (`wiretide.common.recording.BUCKET`): one key
per job, file storage kept across restarts, a watch the gateway follows — as agents keep theirs.

Rule: the bucket is the one truth about which jobs exist; a value that does not validate is skipped
with a log line, never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from wiretide.common.recording import InvalidJob, RecordingJob, check_name, open_bucket

log = logging.getLogger(__name__)

Watcher = Callable[[str, RecordingJob | None], Awaitable[None]]


class JobStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> JobStore:
        return cls(await open_bucket(js))

    async def put(self, job: RecordingJob) -> RecordingJob:
        revision = await self.kv.put(job.name, job.to_json())
        return replace(job, revision=int(revision))

    async def get(self, name: str) -> RecordingJob | None:
        check_name(name)
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        try:
            return RecordingJob.from_json(entry.value, int(entry.revision or 0))
        except InvalidJob as exc:
            log.warning("stored recording job skipped", extra={"job": name, "error": str(exc)})
            return None

    async def delete(self, name: str) -> bool:
        if await self.get(name) is None:
            return False
        await self.kv.delete(name)
        return True

    async def names(self) -> list[str]:
        try:
            return sorted(await self.kv.keys())
        except NoKeysError:
            return []

    async def watch(self, on_change: Watcher, initial_done: asyncio.Event) -> None:
        """Follow every change (the current values first); `initial_done` is set once they are in."""
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # the marker after the current values
                    initial_done.set()
                    continue
                name = entry.key
                if entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
                    await on_change(name, None)
                    continue
                try:
                    job = RecordingJob.from_json(entry.value, int(entry.revision or 0))
                except InvalidJob as exc:
                    log.warning("stored recording job skipped", extra={"job": name, "error": str(exc)})
                    continue
                await on_change(name, job)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

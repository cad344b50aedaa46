"""Agent definitions in a NATS JetStream key-value bucket: one key per agent, a history of versions,
file storage (kept across restarts of the same data dir), and a watch every replica follows.

Rule: the bucket is the one truth about which agents exist and what they say; a replica never runs
a definition it did not read from here (hot reload is the watch), and a value that does not decode
is skipped with a log line, never run. Listings read the stream's state (its subjects, then each
key's messages), never a watcher's "no more pending" marker: nats-py can send that marker before
messages already on their way have been seen, and a listing would then miss agents that exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from wiretide.agents.model import AgentDef, InvalidAgent, check_name
from wiretide.common.bus.kv import open_kv

log = logging.getLogger(__name__)

BUCKET: Final = "wiretide_agents"  # the JetStream stream behind it is KV_wiretide_agents
STREAM: Final = f"KV_{BUCKET}"
PREFIX: Final = f"$KV.{BUCKET}."
HISTORY: Final = 16  # versions kept per agent (JetStream's maximum is 64)

Watcher = Callable[[str, AgentDef | None], Awaitable[None]]


class RevisionConflict(RuntimeError):
    """The agent changed since the revision a caller based its change on."""


class AgentStore:
    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self.kv = kv
        self.js = js
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext) -> AgentStore:
        kv = await open_kv(
            js, BUCKET, history=HISTORY, storage=StorageType.FILE, description="Wiretide agents"
        )
        return cls(kv, js)

    async def put(self, definition: AgentDef, expected: int | None = None) -> int:
        """Store `definition`; with `expected`, only over that revision (0: only if there is none)."""
        try:
            if expected is None:
                return int(await self.kv.put(definition.name, definition.to_json()))
            if expected == 0:
                return int(await self.kv.create(definition.name, definition.to_json()))
            return int(await self.kv.update(definition.name, definition.to_json(), last=expected))
        except KeyWrongLastSequenceError:
            current = await self.get(definition.name)
            now = f"revision {current.revision}" if current is not None else "deleted"
            since = "it was read" if expected == 0 else f"revision {expected}"
            raise RevisionConflict(f"agent {definition.name!r} changed since {since} (now {now})") from None

    async def get(self, name: str) -> AgentDef | None:
        check_name(name)
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return AgentDef.from_json(entry.value, int(entry.revision or 0))

    async def delete(self, name: str) -> bool:
        if await self.get(name) is None:
            return False
        await self.kv.delete(name)
        return True

    async def names(self) -> list[str]:
        """The agents that exist (not deleted), sorted."""
        return [d.name for d in await self.all()]

    async def all(self) -> list[AgentDef]:
        """Every stored agent's current definition, by name: the keys are the stream's subjects, each
        read by its last message (a deleted agent's last message is its delete marker)."""
        info = await self.js.stream_info(STREAM, subjects_filter=f"{PREFIX}>")
        keys = sorted(subject[len(PREFIX) :] for subject in (info.state.subjects or {}))
        found = []
        for key in keys:
            try:
                definition = await self.get(key)
            except InvalidAgent as exc:
                log.warning("stored agent skipped", extra={"agent": key, "error": str(exc)})
                continue
            if definition is not None:
                found.append(definition)
        return found

    async def history(self, name: str) -> list[int]:
        """Revisions kept for `name`, newest first (since its last delete, when it was deleted)."""
        check_name(name)
        subject = f"{PREFIX}{name}"
        revisions: list[int] = []
        seq = 1
        for _ in range(HISTORY + 1):  # the versions kept, and a delete marker among them
            try:
                msg = await self.js.get_msg(STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            if msg.seq is None:
                break
            op = (msg.headers or {}).get(KV_OP)
            if op in (KV_DEL, KV_PURGE):
                revisions.clear()
            else:
                revisions.append(int(msg.seq))
            seq = int(msg.seq) + 1
        return sorted(revisions, reverse=True)

    async def watch(self, on_change: Watcher, initial_done: asyncio.Event) -> None:
        """Follow every change (the current values first); `initial_done` is set once they are in."""
        watcher = await self.kv.watchall()
        self._watch = asyncio.current_task()
        try:
            async for entry in _updates(watcher, initial_done):
                name = entry.key
                if entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
                    await on_change(name, None)
                    continue
                try:
                    definition = AgentDef.from_json(entry.value, int(entry.revision or 0))
                except InvalidAgent as exc:
                    log.warning("stored agent skipped", extra={"agent": name, "error": str(exc)})
                    continue
                await on_change(name, definition)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


async def _updates(
    watcher: KeyValue.KeyWatcher, initial_done: asyncio.Event
) -> AsyncIterator[KeyValue.Entry]:
    async for entry in watcher:
        if entry is None:  # the marker after the current values
            initial_done.set()
            continue
        yield entry

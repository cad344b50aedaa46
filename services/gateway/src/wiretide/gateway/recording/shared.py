"""The runs' status, shared by the gateway replicas through a JetStream KV bucket: the replica that
runs the jobs (the lease holder) writes each run's status when it changes, every replica follows the
bucket, so whichever replica the API reaches lists every run — and knows which replica keeps its
bundle, to fetch it from there.

Rule: only the lease holder writes, one key per run (its id), the status as the holder keeps it in
its `status.json` plus `replica` and `url` (where that replica's HTTP API answers). Values that do not
decode are skipped; the table is bounded (`MAX_RUNS`, the oldest runs forgotten first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import orjson

log = logging.getLogger(__name__)

BUCKET: Final = "wiretide_recording_runs"
MAX_BYTES: Final = 64 << 20  # the oldest runs' values go first beyond this
MAX_RUNS: Final = 20_000


def run_key(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in run_id)[:200] or "_"


async def open_bucket(js: Any) -> Any:
    from wiretide.common.bus.kv import open_kv

    return await open_kv(
        js,
        BUCKET,
        description="Wiretide recording runs, as the replica that ran them last said",
        max_bytes=MAX_BYTES,
    )


class SharedRuns:
    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.runs: dict[str, dict[str, Any]] = {}
        self.ready = asyncio.Event()
        self.skipped = 0

    async def put(self, doc: dict[str, Any]) -> None:
        await self.kv.put(run_key(str(doc["id"])), orjson.dumps(doc))
        self._keep(doc)

    def _keep(self, doc: dict[str, Any]) -> None:
        self.runs[str(doc["id"])] = doc
        if len(self.runs) > MAX_RUNS:
            oldest = min(self.runs.values(), key=lambda d: int(d.get("start_ns") or 0))
            self.runs.pop(str(oldest["id"]), None)

    async def watch(self) -> None:
        from nats.js.kv import KV_DEL, KV_PURGE

        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    self.ready.set()
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    for rid in [r for r in self.runs if run_key(r) == entry.key]:
                        self.runs.pop(rid, None)
                    continue
                try:
                    doc = orjson.loads(entry.value)
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
                    self.skipped += 1
                    continue
                self._keep(doc)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

"""Every replica's state and log of every agent, shared through a JetStream key-value bucket, so that the
replica the API happens to reach answers for all of them (replicas share the entries, so an agent can
fail on one and run on another, and each writes its own lines).

Rule: a replica writes only its own keys — `log.<agent>.<replica>` (the lines written since its
previous batch, a few times a second, at most `BATCH_BYTES` a value, `HISTORY` values kept) and
`state.<agent>.<replica>` (its status when it changes, its counters at most every `STATE_EVERY_S`, a
heartbeat every `HEARTBEAT_S`) — and reads everyone's through one watch into bounded tables. A line's
cursor is its batch's revision × `CURSOR_SPAN` + its index: the same on every replica, so a client
following the log may be answered by any of them. Work is per batch, never per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from wiretide.agents.runtime import AgentRun, LogLine
from wiretide.agents.runtime.agent import LOG_LINES
from wiretide.common.bus.kv import open_kv

log = logging.getLogger(__name__)

BUCKET: Final = "wiretide_agent_runs"
HISTORY: Final = 64  # log batches kept per agent and replica (JetStream's maximum)
MAX_BYTES: Final = 256 * 1024**2  # the whole bucket; the oldest values go first
TTL_S: Final = 7 * 24 * 3600.0  # a replica gone for a week is forgotten, its lines too
BATCH_BYTES: Final = 256 * 1024  # one value, well under NATS's 1 MiB message limit
CURSOR_SPAN: Final = 1024  # lines per value are at most LOG_LINES (1000): the index fits below it
FLUSH_S: Final = 0.25  # how often new lines are shared
STATE_EVERY_S: Final = 2.0  # counters alone are shared at most this often
HEARTBEAT_S: Final = 5.0  # an unchanged state is shared again this often
STALE_AFTER_S: Final = 3 * HEARTBEAT_S  # a replica silent this long stopped without saying so
MAX_REPLICAS: Final = 64  # replicas remembered per agent (the longest silent is forgotten first)
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_=-]")

assert LOG_LINES < CURSOR_SPAN


def replica_token(name: str) -> str:
    """A replica name as one key token (KV keys allow letters, digits, `-`, `_`, `=`; dots split)."""
    return _UNSAFE.sub("_", name)[:128] or "_"


@dataclass(frozen=True, slots=True)
class SharedLine:
    seq: int  # the cursor: revision * CURSOR_SPAN + index
    ts_ns: int
    stream: str
    text: str
    replica: str


@dataclass(slots=True)
class _Progress:
    """What this replica shared of one agent: its log up to `seq`, its state as `state_key`."""

    lines: Any  # the AgentRun's deque: a new one (the agent was deleted and made again) starts over
    seq: int = 0
    unshared: int = 0  # lines that left the agent's log before they could be shared
    state_key: tuple[Any, ...] = ()
    counters: tuple[int, ...] = ()
    at: float = 0.0


@dataclass(slots=True)
class _Replica:
    state: dict[str, Any] | None = None
    lines: deque[SharedLine] = field(default_factory=lambda: deque(maxlen=LOG_LINES))


class Shared:
    """The tables a replica keeps of every replica's agents (its own included), fed by the watch."""

    def __init__(self) -> None:
        self.agents: dict[str, dict[str, _Replica]] = {}

    def apply(self, key: str, revision: int, value: bytes | None, operation: str | None) -> None:
        kind, _, rest = key.partition(".")
        agent, _, replica = rest.partition(".")
        if not agent or not replica or kind not in ("log", "state"):
            return
        if operation in (KV_DEL, KV_PURGE) or value is None:
            replicas = self.agents.get(agent, {})
            r = replicas.get(replica)
            if r is None:
                return
            if kind == "state":
                r.state = None
            else:
                r.lines.clear()
            if r.state is None and not r.lines:
                del replicas[replica]
            if not replicas:
                del self.agents[agent]
            return
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        replicas = self.agents.setdefault(agent, {})
        r = replicas.get(replica)
        if r is None:
            if len(replicas) >= MAX_REPLICAS:
                oldest = min(replicas, key=lambda n: int((replicas[n].state or {}).get("seen_ns", 0)))
                del replicas[oldest]
            r = replicas[replica] = _Replica()
        if kind == "state":
            r.state = doc
            return
        name = str(doc.get("replica") or replica)
        for index, item in enumerate(doc.get("lines") or ()):
            if not isinstance(item, list) or len(item) != 3 or index >= CURSOR_SPAN:
                continue
            ts_ns, stream, text = item
            r.lines.append(
                SharedLine(revision * CURSOR_SPAN + index, int(ts_ns), str(stream), str(text), name)
            )

    def lines(self, agent: str, after: int = 0, limit: int = 0) -> list[SharedLine]:
        """The agent's lines of every replica after cursor `after`, oldest first (the newest `limit`)."""
        merged = [line for r in self.agents.get(agent, {}).values() for line in r.lines if line.seq > after]
        merged.sort(key=lambda line: line.seq)
        return merged[-limit:] if limit else merged

    def replicas_with_lines(self, agent: str) -> list[str]:
        return sorted(name for name, r in self.agents.get(agent, {}).items() if r.lines)

    def states(self, agent: str, now_ns: int | None = None) -> dict[str, dict[str, Any]]:
        """Replica name -> its last state of `agent`, with `stale` set for a replica silent too long."""
        now = time.time_ns() if now_ns is None else now_ns
        out = {}
        for name, r in self.agents.get(agent, {}).items():
            if r.state is not None:
                seen = int(r.state.get("seen_ns") or 0)
                out[name] = {**r.state, "stale": now - seen > STALE_AFTER_S * 1e9}
        return out

    def knows(self, agent: str) -> bool:
        return agent in self.agents


def state_doc(run: AgentRun, replica: str, unshared: int) -> dict[str, Any]:
    st = run.status()
    return {
        "replica": replica,
        "state": st["state"],
        "last_error": st["last_error"],
        "error_line": st["error_line"],
        "revision": st["revision"],
        "invocations": st["invocations"],
        "items": st["items"],
        "failures": st["failures"],
        "tests_passed": st["tests_passed"],
        "tests_failed": st["tests_failed"],
        "log_dropped": st["log_dropped"] + unshared,
        "outbound_dropped": st["outbound_dropped"],
        "seen_ns": time.time_ns(),
    }


def _batches(lines: list[LogLine], replica: str) -> list[tuple[bytes, int]]:
    """The lines as values of at most BATCH_BYTES (a line was cut to 4 KiB when logged), each with
    the log sequence of its last line."""
    out: list[tuple[bytes, int]] = []
    chunk: list[list[Any]] = []
    size = 0
    for i, line in enumerate(lines):
        cost = len(line.text.encode()) + 48
        if chunk and size + cost > BATCH_BYTES:
            out.append((orjson.dumps({"replica": replica, "lines": chunk}), lines[i - 1].seq))
            chunk, size = [], 0
        chunk.append([line.ts_ns, line.stream, line.text])
        size += cost
    if chunk:
        out.append((orjson.dumps({"replica": replica, "lines": chunk}), lines[-1].seq))
    return out


class Replicas:
    """This replica's side of the bucket: what it shares, and the tables of everyone's."""

    def __init__(self, kv: KeyValue, replica: str) -> None:
        self.kv = kv
        self.replica = replica
        self.token = replica_token(replica)
        self.shared = Shared()
        self._progress: dict[str, _Progress] = {}
        # A flush in flight must not put a removed agent's lines back after they were purged.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, js: JetStreamContext, replica: str) -> Replicas:
        kv = await open_kv(
            js,
            BUCKET,
            description="Wiretide agents: each replica's state and log",
            history=HISTORY,
            ttl=TTL_S,
            max_bytes=MAX_BYTES,
        )
        return cls(kv, replica)

    async def follow(self) -> None:
        """Keep the tables: every value kept, then every change (runs until cancelled)."""
        watcher = await self.kv.watchall(include_history=True)
        try:
            async for entry in watcher:
                if entry is None:  # the end of what was kept; changes follow
                    continue
                self.shared.apply(entry.key, int(entry.revision or 0), entry.value, entry.operation)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def flush(self, runs: Iterable[AgentRun], now: float | None = None) -> None:
        """Share the new lines of every agent, and the states that are due; forget removed agents.
        What could not be put (NATS away) is tried again at the next flush, from the agent's log."""
        async with self._lock:
            await self._flush(runs, now)

    async def _flush(self, runs: Iterable[AgentRun], now: float | None) -> None:
        t = time.monotonic() if now is None else now
        work = []
        present = set()
        for run in runs:
            present.add(run.agent)
            p = self._progress.get(run.agent)
            if p is None or p.lines is not run.lines:
                p = self._progress[run.agent] = _Progress(run.lines)
            work.append(self._share(run, p, t))
        gone = [name for name in self._progress if name not in present]
        for name in gone:
            del self._progress[name]
        await asyncio.gather(*work, *(self._delete(f"state.{name}.{self.token}") for name in gone))

    async def _share(self, run: AgentRun, p: _Progress, t: float) -> None:
        """One agent: its lines in order (a batch is committed once stored), then its state if due."""
        lines = run.logs_since(p.seq, 0)
        if lines:
            p.unshared += max(0, lines[0].seq - p.seq - 1)
            key = f"log.{run.agent}.{self.token}"
            for value, last in _batches(lines, self.replica):
                await self.kv.put(key, value)
                p.seq = last
        st = run.status()
        state_key = (st["state"], st["last_error"], st["error_line"], st["revision"], st["enabled"])
        counters = (st["invocations"], st["items"], st["failures"], st["tests_passed"], st["tests_failed"])
        if (
            state_key != p.state_key
            or (counters != p.counters and t - p.at >= STATE_EVERY_S)
            or t - p.at >= HEARTBEAT_S
        ):
            await self.kv.put(
                f"state.{run.agent}.{self.token}", orjson.dumps(state_doc(run, self.replica, p.unshared))
            )
            p.state_key, p.counters, p.at = state_key, counters, t

    async def _delete(self, key: str) -> None:
        with contextlib.suppress(Exception):
            await self.kv.delete(key)

    async def forget(self, agent: str) -> None:
        """A deleted agent: every replica's lines and state of it go (a new agent of that name starts
        with an empty log)."""
        names = set(self.shared.agents.get(agent, {})) | {self.token}
        for replica in names:
            for kind in ("log", "state"):
                with contextlib.suppress(Exception):
                    await self.kv.purge(f"{kind}.{agent}.{replica_token(replica)}")

    async def forget_own(self, agent: str) -> None:
        """This replica saw `agent` deleted: its own lines and state of it go, after any flush in
        flight (which may have put lines after the deleting replica's `forget`)."""
        async with self._lock:
            self._progress.pop(agent, None)
            for kind in ("log", "state"):
                with contextlib.suppress(Exception):
                    await self.kv.purge(f"{kind}.{agent}.{self.token}")

    async def leave(self) -> None:
        """This replica stops: its states go (its lines stay, for whoever reads them later)."""
        await asyncio.gather(*(self._delete(f"state.{name}.{self.token}") for name in self._progress))
        self._progress.clear()

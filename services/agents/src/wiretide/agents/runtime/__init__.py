"""The runtime: every loaded agent, and dispatch of hook items to the agents that define the hook.

Rule: work is per batch — the items are encoded to JSON once per batch and handed to each agent in
one call per `MAX_BATCH` items; `kfl.match` queries are evaluated in Python once per batch and query,
whichever agents share them. One thread calls the runtime (the service's JS thread, or the harness).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import orjson

from wiretide.agents.helpers import extra_hooks
from wiretide.agents.helpers.kfl import predicate
from wiretide.agents.hooks import HOOKS, ON_ITEM_CAPTURED, ON_ITEM_QUERIED, SPREAD
from wiretide.agents.model import AgentDef
from wiretide.agents.runtime.agent import DISABLED, FAILED, RUNNING, AgentRun, Limits, LogLine, Mark
from wiretide.agents.runtime.backend import Backend
from wiretide.agents.runtime.sandbox import JsError, Sandbox, check_syntax

__all__ = [
    "DISABLED",
    "FAILED",
    "RUNNING",
    "AgentRun",
    "Backend",
    "JsError",
    "Limits",
    "LogLine",
    "Mark",
    "Runtime",
    "Sandbox",
    "check_syntax",
]

# Items per call into a sandbox: the per-call time limit covers at most this many hook calls.
MAX_BATCH: Final = 256
ENTRY_HOOKS: Final = frozenset({ON_ITEM_CAPTURED, ON_ITEM_QUERIED})


class Runtime:
    def __init__(self, backend: Backend, limits: Limits, wake: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.limits = limits
        self.agents: dict[str, AgentRun] = {}
        self.hook_names = (*HOOKS, *extra_hooks())
        self._wake = wake or (lambda: None)

    def put(self, definition: AgentDef) -> AgentRun:
        """Load (or reload) an agent from its definition; a failure is recorded on the agent."""
        old = self.agents.get(definition.name)
        run = AgentRun(definition, self.backend, self.limits, self.hook_names)
        if old is not None:  # its history carries over a reload: the log and the counters
            run.lines, run.log_seq, run.counters = old.lines, old.log_seq, old.counters
        run.wake = self._wake
        self.agents[definition.name] = run
        run.load()
        return run

    def remove(self, name: str) -> None:
        run = self.agents.pop(name, None)
        if run is not None:
            run.disable()
            self.backend.metrics.forget(name)

    def wants(self, hook: str) -> bool:
        return any(a.running and hook in a.hooks for a in self.agents.values())

    def dispatch(self, hook: str, items: Sequence[Any]) -> None:
        """Hand `items` to every running agent with `hook` (spread hooks take argument lists)."""
        targets = [a for a in self.agents.values() if a.running and hook in a.hooks]
        if not targets or not items:
            return
        spread = hook in SPREAD
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start : start + MAX_BATCH]
            payload = orjson.dumps(chunk).decode()
            memo: dict[str, list[int]] = {}
            for agent in targets:
                kfl = None
                if agent.queries and hook in ENTRY_HOOKS:
                    kfl = self._kfl(agent.queries, chunk, memo)
                agent.call(hook, payload, len(chunk), kfl, spread)

    @staticmethod
    def _kfl(queries: list[str], items: Sequence[Any], memo: dict[str, list[int]]) -> str:
        columns = []
        for q in queries:
            col = memo.get(q)
            if col is None:
                match = predicate(q)
                col = memo[q] = [1 if match(e) else 0 for e in items]
            columns.append(col)
        return orjson.dumps([list(row) for row in zip(*columns, strict=True)]).decode()

    def query_items(self, entries: Sequence[dict[str, Any]]) -> list[Mark]:
        """Run onItemQueried over `entries`; the test marks the agents made."""
        marks: list[Mark] = []
        for agent in self.agents.values():
            agent.marks = marks
        try:
            self.dispatch(ON_ITEM_QUERIED, entries)
        finally:
            for agent in self.agents.values():
                agent.marks = None
        return marks

    def run_due_jobs(self, now_s: float | None = None) -> None:
        now = time.time() if now_s is None else now_s
        for agent in list(self.agents.values()):
            for job in list(agent.jobs.values()):
                if job.next_s > now or not agent.running:
                    continue
                job.runs += 1
                job.next_s = _next(job.cron, now)
                agent.run_job(job.tag)

    def next_job_s(self) -> float | None:
        times = [j.next_s for a in self.agents.values() if a.running for j in a.jobs.values()]
        return min(times) if times else None

    def process_inboxes(self) -> None:
        for agent in list(self.agents.values()):
            agent.process_inbox()

    def statuses(self) -> list[dict[str, Any]]:
        return [a.status() for a in sorted(self.agents.values(), key=lambda a: a.agent)]

    def load_all(self, definitions: Iterable[AgentDef]) -> None:
        for d in definitions:
            self.put(d)


def _next(cron: Any, now_s: float) -> float:
    import datetime as dt

    nxt = cron.next_after(dt.datetime.fromtimestamp(now_s, dt.UTC))
    return nxt.timestamp() if nxt is not None else float("inf")

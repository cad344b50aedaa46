"""One running agent: its sandbox, state, counters, log and jobs; the `Host` its helpers see.

Rule: whatever the agent does wrong (a throw, a loop past the time limit, an allocation past the
memory limit, a helper called with the wrong types, a bad cron string) stops this agent only: it is
marked failed with the error and the line, its sandbox is dropped, and the caller goes on with the
next agent and the next entry. Only the runtime's thread calls into it, except `settle` and `fire`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from wiretide.agents.cron import Cron
from wiretide.agents.helpers import Call, handlers
from wiretide.agents.model import AgentDef
from wiretide.agents.runtime.backend import Backend
from wiretide.agents.runtime.sandbox import JsError, Sandbox

log = logging.getLogger(__name__)

LOG_LINES: Final = 1000  # lines kept per agent (the newest); older lines are counted, not kept
MAX_LINE_CHARS: Final = 4096  # a console line longer than this is cut (and says so)
# What a failed call recorded is kept only as far as these go: its console lines (never its webhooks,
# metrics or marks, which a call that did not finish must not leave behind).
KEPT_FROM_A_FAILED_CALL: Final = frozenset({"console.log", "console.error", "console.dropped"})
RUNNING: Final = "running"
FAILED: Final = "failed"
DISABLED: Final = "disabled"


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    ts_ns: int
    stream: str  # "log" | "error" | "system"
    text: str


@dataclass(frozen=True, slots=True)
class Mark:
    """A test.pass / test.fail on an entry."""

    agent: str
    result: str  # "pass" | "fail"
    entry_id: str
    note: str


@dataclass(slots=True)
class Job:
    tag: str
    cron: Cron
    next_s: float  # epoch seconds of the next run
    runs: int = 0


@dataclass(slots=True)
class Limits:
    memory_mb: int
    time_limit_s: float


@dataclass(slots=True)
class Counters:
    invocations: int = 0  # calls into the sandbox
    items: int = 0  # hook calls (entries, events) handed in those calls
    failures: int = 0
    passed: int = 0
    failed_tests: int = 0
    log_dropped: int = 0
    outbound_dropped: int = 0


class AgentRun:
    """The live form of an `AgentDef`. Implements `wiretide.agents.helpers.Host`."""

    def __init__(
        self, definition: AgentDef, backend: Backend, limits: Limits, hook_names: tuple[str, ...]
    ) -> None:
        self.definition = definition
        self.backend = backend
        self.limits = limits
        self.hook_names = hook_names
        self.sandbox: Sandbox | None = None
        self.hooks: frozenset[str] = frozenset()
        self.state = DISABLED
        self.last_error = ""
        self.error_line = 0
        self.counters = Counters()
        self.lines: deque[LogLine] = deque(maxlen=LOG_LINES)
        self.log_seq = 0
        self.jobs: dict[str, Job] = {}
        self.queries: list[str] = []  # kfl.match queries known at load, by index
        self.marks: list[Mark] | None = None  # collecting test marks (onItemQueried) when a list
        self._inbox: deque[tuple[str, Any]] = deque()  # ("settle", (id, ok, json)) | ("fire", (hook, args))
        self._lock = threading.Lock()
        self.wake: Callable[[], None] = lambda: None  # told when the inbox gets work

    # -- Host ---------------------------------------------------------------------------------
    @property
    def agent(self) -> str:
        return self.definition.name

    @property
    def node(self) -> str:
        return self.backend.node

    @property
    def env(self) -> Mapping[str, str]:
        return self.definition.env

    def log(self, stream: str, text: str) -> None:
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + f"... ({len(text) - MAX_LINE_CHARS} more characters)"
        with self._lock:
            self.log_seq += 1
            self.lines.append(LogLine(self.log_seq, time.time_ns(), stream, text))

    def fail(self, message: str, line: int = 0) -> None:
        self.state = FAILED
        self.last_error = message
        self.error_line = line
        self.counters.failures += 1
        self.sandbox = None  # a context that hit a limit keeps its garbage: never reuse it
        self.jobs.clear()
        self.log("system", f"agent stopped: {message}")
        log.warning("agent failed", extra={"agent": self.agent, "error": message})

    def settle(self, call_id: int, ok: bool, value: Any) -> None:
        self._inbox.append(("settle", (call_id, ok, value)))
        self.wake()

    def fire(self, hook: str, *args: Any) -> None:
        self._inbox.append(("fire", (hook, args)))
        self.wake()

    def submit(self, what: str, work: Callable[[], Awaitable[Any]], call_id: int | None = None) -> None:
        done = None if call_id is None else (lambda ok, value: self.settle(call_id, ok, value))
        self.backend.submit(self, what, work, done)

    def schedule(self, tag: str, cron: Cron) -> None:
        now = self.backend.now()
        nxt = cron.next_after(dt.datetime.fromtimestamp(now, dt.UTC))
        self.jobs[tag] = Job(tag, cron, nxt.timestamp() if nxt is not None else float("inf"))

    def unschedule(self, tag: str) -> None:
        self.jobs.pop(tag, None)

    def test(self, result: str, entry_id: str, note: str) -> None:
        if result == "pass":
            self.counters.passed += 1
        else:
            self.counters.failed_tests += 1
        if self.marks is not None and entry_id:
            self.marks.append(Mark(self.agent, result, entry_id, note))

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state == RUNNING and self.sandbox is not None

    def load(self) -> None:
        """(Re)create the sandbox and run the agent's top level. Failure marks the agent failed."""
        self.sandbox = None
        self.jobs.clear()
        self._inbox.clear()
        if not self.definition.enabled:
            self.state = DISABLED
            return
        from wiretide.agents.helpers.kfl import KflLoadError, load_queries

        try:
            sandbox = Sandbox(memory_mb=self.limits.memory_mb, time_limit_s=self.limits.time_limit_s)
            sandbox.set_global("env", dict(self.definition.env))
            sandbox.set_global("__wt_node", self.backend.node)
            self.queries = load_queries(self.definition.source, self.definition.env)
            sandbox.set_global("__wt_kq", {q: i for i, q in enumerate(self.queries)})
            self.sandbox = sandbox
            self.state = RUNNING
            self.last_error, self.error_line = "", 0
            hooks, out = sandbox.load(self.definition.source, self.hook_names)
        except KflLoadError as exc:
            self.fail(str(exc), exc.line)
            return
        except JsError as exc:
            self.fail(str(exc), exc.line)
            return
        self.hooks = frozenset(hooks)
        self.handle(out)

    def disable(self) -> None:
        self.sandbox = None
        self.jobs.clear()
        self.state = DISABLED

    # -- calls --------------------------------------------------------------------------------
    def call(self, hook: str, payload: str, count: int, kfl: str | None = None, spread: bool = False) -> None:
        sandbox = self.sandbox
        if sandbox is None or self.state != RUNNING or hook not in self.hooks:
            return
        self.counters.invocations += 1
        self.counters.items += count
        try:
            out = sandbox.call(hook, payload, kfl, spread)
        except JsError as exc:
            self.failed_call(sandbox, exc)
            return
        if out is not None:
            self.handle(out)

    def run_job(self, tag: str) -> None:
        sandbox = self.sandbox
        if sandbox is None or self.state != RUNNING:
            return
        self.counters.invocations += 1
        try:
            sandbox.eval(f"__wt_jobs_run({orjson.dumps(tag).decode()})")
            out = sandbox.drain()
        except JsError as exc:
            self.failed_call(sandbox, exc)
            return
        if out is not None:
            self.handle(out)

    def process_inbox(self) -> None:
        """Settle asynchronous answers and fire queued hooks (the runtime's thread)."""
        while self._inbox:
            what, arg = self._inbox.popleft()
            sandbox = self.sandbox
            if sandbox is None or self.state != RUNNING:
                continue
            if what == "settle":
                call_id, ok, value = arg
                try:
                    out = sandbox.settle(int(call_id), bool(ok), orjson.dumps(value).decode())
                except JsError as exc:
                    self.failed_call(sandbox, exc)
                    continue
                if out is not None:
                    self.handle(out)
            else:
                hook, args = arg
                if hook in self.hooks:
                    self.call(hook, orjson.dumps([list(args)]).decode(), 1, None, True)

    def failed_call(self, sandbox: Sandbox, exc: JsError) -> None:
        """A call stopped by an error or a limit: keep the lines it logged first, then fail."""
        out = sandbox.salvage()
        if out is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.handle(out, KEPT_FROM_A_FAILED_CALL)
        self.fail(str(exc), exc.line)

    def handle(self, out: str | None, only: frozenset[str] | None = None) -> None:
        """Route the outbox's records to their helpers' handlers (`only` these kinds, when given)."""
        if out is None:
            return
        table = handlers()
        for rec in orjson.loads(out):
            if self.state != RUNNING:
                return  # a handler failed the agent: the rest of its outbox is void
            kind = rec[0] if rec else ""
            if only is not None and kind not in only:
                continue
            handler = table.get(kind)
            if handler is None:
                self.log("system", f"unknown helper record {str(kind)[:60]!r} ignored")
                continue
            try:
                handler(Call(kind, tuple(rec[1:])), self)
            except Exception as exc:  # a helper's own bug never stops dispatch
                log.exception("helper handler failed", extra={"agent": self.agent, "kind": kind})
                self.log("system", f"{kind}: {exc}")

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "name": self.agent,
            "enabled": self.definition.enabled,
            "state": self.state,
            "last_error": self.last_error,
            "error_line": self.error_line,
            "hooks": sorted(self.hooks),
            "invocations": c.invocations,
            "items": c.items,
            "failures": c.failures,
            "tests_passed": c.passed,
            "tests_failed": c.failed_tests,
            "log_dropped": c.log_dropped,
            "outbound_dropped": c.outbound_dropped,
            "jobs": sorted(self.jobs),
            "revision": self.definition.revision,
            "updated_ns": self.definition.updated_ns,
        }

    def logs_since(self, seq: int, limit: int) -> list[LogLine]:
        """The lines after `seq`, oldest first (the newest `limit`): read from the newest back, so a
        caller that keeps up (the replicas' flush, a few times a second) reads only what is new."""
        newer: list[LogLine] = []
        with self._lock:
            for line in reversed(self.lines):
                if line.seq <= seq or (limit and len(newer) == limit):
                    break
                newer.append(line)
        newer.reverse()
        return newer

"""The replay harness: an agent run offline over entries (a capture's), so that agents get CI like code.

Every batch goes through `onItemCaptured` then `onItemQueried`, jobs run on the capture's clock (the
entries' timestamps), `hub.action` comes back to the same agent; nothing leaves the machine
(webhooks, `kfl.query` and `pcap.snapshot` are logged as not sent).

Rule: the result says whether the agent is fit to ship — no `test.fail`, no crash — and keeps every
line it logged, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wiretide.agents.hooks import ON_ITEM_CAPTURED
from wiretide.agents.model import AgentDef
from wiretide.agents.runtime import FAILED, AgentRun, Backend, Limits, LogLine, Runtime, check_syntax


class ReplayBackend(Backend):
    def __init__(self) -> None:
        super().__init__("replay")
        self.clock = 0.0

    def now(self) -> float:
        return self.clock


@dataclass(slots=True)
class ReplayResult:
    entries: int = 0
    passed: int = 0
    failed: int = 0
    error: str = ""  # the agent's failure (syntax, throw, limit), empty when it ran to the end
    error_kind: str = ""  # "syntax" (it never ran) | "runtime" (it ran and was stopped) | ""
    line: int = 0
    column: int = 0
    lines: list[LogLine] = field(default_factory=list)
    marks: dict[str, str] = field(default_factory=dict)  # entry id -> "pass" | "fail" (last mark)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.error


def replay(
    source: str,
    batches: Iterable[list[dict[str, Any]]],
    *,
    env: dict[str, str] | None = None,
    name: str = "agent",
    limits: Limits | None = None,
    on_line: Callable[[LogLine], None] | None = None,
) -> ReplayResult:
    """Run `source` over `batches` of entries; `on_line` sees each log line as it is written."""
    result = ReplayResult()
    problem = check_syntax(source)
    if problem is not None:
        result.error, result.line, result.column = problem.message, problem.line, problem.column
        result.error_kind = "syntax"
        return result
    backend = ReplayBackend()
    runtime = Runtime(backend, limits or Limits(memory_mb=64, time_limit_s=1.0))
    run: AgentRun | None = None
    shown = 0

    def flush() -> None:
        nonlocal shown
        if run is None:
            return
        for line in run.logs_since(shown, 0):
            result.lines.append(line)
            if on_line is not None:
                on_line(line)
            shown = line.seq

    for batch in batches:
        if not batch:
            continue
        backend.clock = max(backend.clock, max(int(e.get("timestamp") or 0) for e in batch) / 1e9)
        if run is None:
            run = runtime.put(AgentDef(name, source, dict(env or {})))
        runtime.run_due_jobs(backend.clock)
        runtime.dispatch(ON_ITEM_CAPTURED, batch)
        for mark in runtime.query_items(batch):
            result.marks[mark.entry_id] = mark.result
        runtime.process_inboxes()
        result.entries += len(batch)
        flush()
        if run.state == FAILED:
            break
    if run is None:  # no entries: the top level still runs once
        run = runtime.put(AgentDef(name, source, dict(env or {})))
    else:
        runtime.run_due_jobs(backend.clock + 1)  # what was due when the capture ended
        runtime.process_inboxes()
    flush()
    result.passed, result.failed = run.counters.passed, run.counters.failed_tests
    if run.state == FAILED:
        result.error, result.line, result.error_kind = run.last_error, run.error_line, "runtime"
    return result

"""One QuickJS context: the sandbox an agent runs in, with a memory limit and a per-call time limit.

Rule: every call into the sandbox is bounded (time, memory, stack) and Python is never called from
inside it (QuickJS refuses Python callbacks under a time limit): helpers record their calls in an
outbox that each call returns as one JSON string. A context that hit a limit is thrown away, never
reused; the agent gets a fresh one when it is loaded again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import orjson
import quickjs  # type: ignore[import-untyped]  # a C extension without type information

from wiretide.agents.helpers import helpers_js

# The prelude and helpers are evaluated after this many blank lines, so that a line number below it
# in a stack trace is always the agent's own (QuickJS names every script "<input>").
PRELUDE_LINE_OFFSET: Final = 1_000_000
DEFAULT_MEMORY_MB: Final = 64
DEFAULT_TIME_LIMIT_S: Final = 1.0
STACK_BYTES: Final = 1024 * 1024  # deep enough for real code, small enough that runaway recursion stops early
# Headroom for loading the prelude before the agent's own allocations count against the limit.
_LINE: Final = re.compile(r"<input>:(\d+)")


def _prelude() -> str:
    return resources.files("wiretide.agents.runtime").joinpath("prelude.js").read_text(encoding="utf-8")


_PRELUDE_SOURCE: str | None = None


def prelude_source() -> str:
    global _PRELUDE_SOURCE
    if _PRELUDE_SOURCE is None:
        _PRELUDE_SOURCE = (
            "\n" * PRELUDE_LINE_OFFSET
            + _prelude()
            + "\n"
            + helpers_js()
            + f"\n__wt_line_offset = {PRELUDE_LINE_OFFSET};\n"
        )
    return _PRELUDE_SOURCE


@dataclass(frozen=True, slots=True)
class JsError(Exception):
    """An agent's failure: what went wrong and the line of its source (0 when unknown)."""

    kind: str  # "exception" | "time" | "memory" | "stack" | "syntax"
    message: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        where = (
            f" (line {self.line}" + (f", column {self.column}" if self.column else "") + ")"
            if self.line
            else ""
        )
        return f"{self.message}{where}"


def agent_line(text: str) -> int:
    """The first line of the agent's own source named in a QuickJS stack trace (0 when none is)."""
    for match in _LINE.finditer(text):
        line = int(match.group(1))
        if line < PRELUDE_LINE_OFFSET:
            return line
    return 0


_LOOP: Final = re.compile(r"\b(?:while\s*\(|for\s*\(|do\b)")
_FUNCTION: Final = re.compile(r"\bfunction\b|=>")
_COMMENT: Final = re.compile(r"//.*$")
LOOP_SCAN_LINES: Final = 200  # how far past the interrupted line a loop is looked for


def loop_line(source: str, line: int) -> int:
    """The line of the loop a time limit interrupted, from the line QuickJS names.

    QuickJS records a source position only for operations that can throw (calls, property reads...);
    a loop made of local arithmetic (`while (true) { n++; }`) has none, so the interrupt is reported
    at the last statement before it. When the named line is not itself inside a loop, the first loop
    that starts at or after it in the same block is the one that ran: a block that closes first, or a
    new function, means the named line was already inside the loop and is kept."""
    lines = source.split("\n")
    start = max(line, 1)
    depth = 0
    for number in range(start, min(len(lines), start + LOOP_SCAN_LINES) + 1):
        code = _COMMENT.sub("", lines[number - 1])
        if _LOOP.search(code):
            return number
        if number > start and _FUNCTION.search(code):
            break
        depth += code.count("{") - code.count("}")
        if depth < 0:
            break
    return line


def to_js_error(exc: BaseException, time_limit_s: float, memory_mb: int, source: str = "") -> JsError:
    text = str(exc)
    first = text.split("\n", 1)[0].strip()
    line = agent_line(text)
    if isinstance(exc, quickjs.StackOverflow) or "stack overflow" in first:
        return JsError("stack", "stack overflow (runaway recursion)", line)
    if first == "InternalError: interrupted":
        if source:
            line = loop_line(source, line)
        return JsError("time", f"time limit exceeded: a call ran longer than {time_limit_s:g} s", line)
    if first == "InternalError: out of memory" or isinstance(exc, MemoryError):
        return JsError("memory", f"memory limit exceeded ({memory_mb} MiB)", line)
    return JsError("exception", first or type(exc).__name__, line)


class Sandbox:
    """A QuickJS context with the prelude and helpers loaded. Not thread-safe: one thread uses it."""

    def __init__(
        self, *, memory_mb: int = DEFAULT_MEMORY_MB, time_limit_s: float = DEFAULT_TIME_LIMIT_S
    ) -> None:
        self.memory_mb = memory_mb
        self.time_limit_s = time_limit_s
        self.ctx = quickjs.Context()
        self.ctx.set_max_stack_size(STACK_BYTES)
        self.ctx.eval(prelude_source())
        self.ctx.set_memory_limit(memory_mb * 1024 * 1024)
        self.ctx.set_time_limit(time_limit_s)
        self._run = self.ctx.get("__wt_run")
        self._settle = self.ctx.get("__wt_settle")
        self._drain = self.ctx.get("__wt_drain")
        self.broken = False
        self.source = ""  # the agent's source, once loaded (to place a time limit's interrupt)

    def _error(self, exc: BaseException) -> JsError:
        self.broken = True
        return to_js_error(exc, self.time_limit_s, self.memory_mb, self.source)

    def set_global(self, name: str, value: Any) -> None:
        """Define a global from a JSON value (env, the node name)."""
        self.ctx.eval(f"var {name} = {orjson.dumps(value).decode()};")

    def load(self, source: str, hook_names: tuple[str, ...]) -> tuple[list[str], str | None]:
        """Run the agent's top level; return the hooks it defines and the outbox. Raises JsError."""
        self.source = source
        try:
            self.ctx.eval(source)
            hooks = orjson.loads(str(self.ctx.get("__wt_bind")(orjson.dumps(list(hook_names)).decode())))
            out = self._drain()
        except (quickjs.JSException, quickjs.StackOverflow, MemoryError) as exc:
            raise self._error(exc) from None
        return [str(h) for h in hooks], out if isinstance(out, str) else None

    def call(self, hook: str, payload: str, kfl: str | None, spread: bool) -> str | None:
        """Call `hook` for every item of `payload` (a JSON array); return the outbox. Raises JsError."""
        try:
            out = self._run(hook, payload, kfl, spread)
        except (quickjs.JSException, quickjs.StackOverflow, MemoryError) as exc:
            raise self._error(exc) from None
        return out if isinstance(out, str) else None

    def settle(self, call_id: int, ok: bool, value_json: str | None) -> str | None:
        """Resolve or reject an asynchronous helper's promise and run what waited for it."""
        try:
            out = self._settle(call_id, ok, value_json)
            outs = [out] if isinstance(out, str) else []
            while self.ctx.execute_pending_job():
                pass
            more = self._drain()
            if isinstance(more, str):
                outs.append(more)
        except (quickjs.JSException, quickjs.StackOverflow, MemoryError) as exc:
            raise self._error(exc) from None
        if not outs:
            return None
        if len(outs) == 1:
            return outs[0]
        return orjson.dumps([rec for o in outs for rec in orjson.loads(o)]).decode()

    def eval(self, code: str) -> Any:
        """Evaluate host code (a job's function); the outbox is drained by the caller."""
        try:
            return self.ctx.eval(code)
        except (quickjs.JSException, quickjs.StackOverflow, MemoryError) as exc:
            raise self._error(exc) from None

    def salvage(self) -> str | None:
        """After a failed call: what the agent recorded before it failed (its console lines), if the
        context can still hand it over (the call's garbage is gone once the error unwound it)."""
        try:
            out = self._drain()
        except (quickjs.JSException, quickjs.StackOverflow, MemoryError):
            return None
        return out if isinstance(out, str) else None

    def drain(self) -> str | None:
        try:
            out = self._drain()
        except (quickjs.JSException, quickjs.StackOverflow, MemoryError) as exc:
            raise self._error(exc) from None
        return out if isinstance(out, str) else None


_SYNTAX_WRAP: Final = "(function(){"


def check_syntax(source: str) -> JsError | None:
    """Compile without running (the source inside a function that is never called); a syntax error
    with its line and column. QuickJS names only the line, so the column is found by compiling
    ever longer prefixes of that line until the same error appears."""
    ctx = quickjs.Context()
    ctx.set_time_limit(DEFAULT_TIME_LIMIT_S)
    ctx.set_memory_limit(DEFAULT_MEMORY_MB * 1024 * 1024)

    def compile_error(text: str) -> tuple[str, int] | None:
        try:
            ctx.eval(_SYNTAX_WRAP + text + "\n})")
        except quickjs.JSException as exc:
            msg = str(exc)
            first = msg.split("\n", 1)[0]
            if first.startswith("SyntaxError"):
                return first, agent_line(msg)
        except quickjs.StackOverflow:
            return "SyntaxError: nesting too deep", 0
        return None

    found = compile_error(source)
    if found is None:
        return None
    message, line = found
    column = 0
    if line:
        lines = source.split("\n")
        head = "\n".join(lines[: line - 1]) + ("\n" if line > 1 else "")
        text = lines[line - 1] if line - 1 < len(lines) else ""
        for end in range(1, len(text) + 1):
            if compile_error(head + text[:end]) == (message, line):
                column = end
                token = re.search(r": '(.+)'$", message)
                if token and text[:end].endswith(token.group(1)):
                    column = end - len(token.group(1)) + 1
                break
    return JsError("syntax", message, line, column)

"""The helpers an agent's JavaScript can call (`console`, `test`, `vendor`, ...), and the registry that
lets another module add its own namespace without touching these.

A helper namespace is a `Helper`: the JavaScript that defines it in every sandbox (it records calls
with `__wt_emit([kind, ...args])`, or `__wt_async(kind, args, cb)` for an answer that comes later),
the Python handlers of those records (run by the host after each call into the sandbox, never inside
it), its documentation, and any extra hooks it calls (`onInsight`). To add one, write a module under
`wiretide.agents.helpers` that defines `HELPER` (or `HELPERS`) and name it in `MODULES`; a module
that is not installed is skipped, so an optional namespace (`llm`) costs nothing when absent.

Rule: handlers never block: outbound work goes through `Host.submit` (bounded queue, timeouts,
counted drops), and an asynchronous answer comes back through `Host.settle`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, Protocol


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded helper call: its kind (`vendor.webhook`) and its arguments as JSON values. For an
    asynchronous helper the first argument is the call id to settle."""

    kind: str
    args: tuple[Any, ...]


class Host(Protocol):
    """What a helper handler may use: the agent it runs for and the service's facilities."""

    @property
    def agent(self) -> str: ...

    @property
    def node(self) -> str: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    @property
    def backend(self) -> Any:
        """The facilities of where the agent runs (`runtime.backend.Backend`): the service's, or the
        replay harness's offline ones."""
        ...

    def log(self, stream: str, text: str) -> None:
        """Append a line to the agent's log (`stream` is "log" or "error")."""

    def fail(self, message: str, line: int = 0) -> None:
        """Stop the agent and mark it failed with `message` (and the line of its source, when known)."""

    def test(self, result: str, entry_id: str, note: str) -> None:
        """Count a test.pass/test.fail ("pass" | "fail") and mark the entry when it is being queried."""

    def schedule(self, tag: str, cron: Any) -> None:
        """Run the job `tag` on `cron` (a parsed `wiretide.agents.cron.Cron`)."""

    def unschedule(self, tag: str) -> None:
        """Stop running the job `tag`."""

    def settle(self, call_id: int, ok: bool, value: Any) -> None:
        """Resolve (ok) or reject the promise of asynchronous call `call_id`; safe from any thread."""

    def fire(self, hook: str, *args: Any) -> None:
        """Call one of the agent's hooks later with these arguments; safe from any thread."""

    def submit(self, what: str, work: Callable[[], Awaitable[Any]], call_id: int | None = None) -> None:
        """Run `work` off the hook path (bounded queue, timeout, counted drops); with `call_id`, settle
        that call with its result, or reject it with its error."""


Handler = Callable[[Call, Host], None]


@dataclass(frozen=True, slots=True)
class Helper:
    namespace: str  # the JavaScript global it defines
    js: str  # JavaScript evaluated in every sandbox after the prelude
    doc: str  # Markdown for the scripting reference (docs/agents.md)
    handlers: Mapping[str, Handler] = field(default_factory=dict)  # record kind -> handler
    hooks: tuple[str, ...] = ()  # extra hooks this helper calls (besides wiretide.agents.hooks)


# The helper modules under wiretide.agents.helpers, in the order their namespaces are documented.
MODULES: Final = (
    "console",
    "testing",
    "vendor",
    "prometheus",
    "jobs",
    "kfl",
    "pcap",
    "record",
    "hub",
    "utils",
    "llm",
)


@cache
def helpers() -> tuple[Helper, ...]:
    """Every helper namespace installed, in `MODULES` order."""
    found: list[Helper] = []
    for name in MODULES:
        qualified = f"{__name__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
            continue
        if hasattr(module, "HELPER"):
            found.append(module.HELPER)
        found.extend(getattr(module, "HELPERS", ()))
    return tuple(found)


@cache
def handlers() -> dict[str, Handler]:
    """Record kind -> handler, over every helper."""
    table: dict[str, Handler] = {}
    for helper in helpers():
        table.update(helper.handlers)
    return table


def helpers_js() -> str:
    return "\n".join(h.js for h in helpers())


def extra_hooks() -> tuple[str, ...]:
    return tuple(hook for h in helpers() for hook in h.hooks)

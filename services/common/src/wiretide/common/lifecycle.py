"""Lifecycle: signals become one stop event; components start in order and stop in reverse.

Rule: every component gets a bounded time to stop; a component that hangs is abandoned with a
log line, so that SIGTERM always ends the process within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Stopper = Callable[[], Awaitable[None]]


@dataclass
class Lifecycle:
    grace_s: float = 5.0
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _stoppers: list[tuple[str, Stopper]] = field(default_factory=list)
    failed: str | None = None  # why a part the process cannot run without ended; the exit is non-zero

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)

    def request_stop(self, reason: str = "requested") -> None:
        if not self.stop_event.is_set():
            log.info("stopping", extra={"reason": reason})
            self.stop_event.set()

    def fail(self, reason: str) -> None:
        """A part the process cannot run without has ended: stop everything, then exit non-zero (so that
        a supervisor or Kubernetes starts it again instead of leaving it half alive)."""
        if self.failed is None:
            self.failed = reason
            log.error("a vital part ended, stopping", extra={"reason": reason})
        self.request_stop(reason)

    def on_stop(self, name: str, stopper: Stopper) -> None:
        """Register a stopper; stoppers run in reverse order of registration."""
        self._stoppers.append((name, stopper))

    async def wait(self) -> None:
        await self.stop_event.wait()

    async def shutdown(self) -> None:
        per = max(0.5, self.grace_s / max(1, len(self._stoppers)))
        for name, stopper in reversed(self._stoppers):
            try:
                await asyncio.wait_for(stopper(), timeout=per)
            except TimeoutError:
                log.warning("component did not stop in time, abandoned", extra={"component": name})
            except Exception:
                log.exception("component failed while stopping", extra={"component": name})
        self._stoppers.clear()

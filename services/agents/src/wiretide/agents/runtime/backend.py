"""Where an agent's outbound helpers go: the service's real peers, or the replay harness's offline stand-ins.

Rule: the runtime and the helpers know only this interface; the agents service implements it with
real webhooks, the gateway and the capture service, the replay harness with offline answers, so an
agent behaves the same in both except for what leaves the machine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from wiretide.agents.helpers import Host
from wiretide.agents.helpers.prometheus import MetricsTable
from wiretide.common.llm import LlmConfig


class OfflineError(RuntimeError):
    """A helper that needs a running Wiretide was called where none runs (the replay harness)."""


class Backend:
    """The offline defaults: nothing leaves the process. The service overrides what it can reach."""

    def __init__(self, node: str = "replay") -> None:
        self.node = node
        self.metrics = MetricsTable()
        self.llm: LlmConfig | None = None  # the LLM llm.ask/observe reach (None: disabled, as offline)

    def submit(
        self,
        host: Host,
        what: str,
        work: Callable[[], Awaitable[Any]],
        done: Callable[[bool, Any], None] | None,
    ) -> None:
        """Run `work` off the hook path; `done(ok, value)` afterwards. Offline: not run, and said so."""
        host.log("system", f"{what}: not sent (offline)")
        if done is not None:
            done(False, f"{what} is not available offline")

    def now(self) -> float:
        """The clock jobs are scheduled by (epoch seconds); the replay harness uses the capture's."""
        return time.time()

    async def webhook(self, method: str, url: str, body: str, headers: dict[str, str]) -> int:
        raise OfflineError("webhooks are not sent offline")

    async def kfl_query(self, query: str, limit: int) -> list[dict[str, Any]]:
        raise OfflineError("kfl.query needs a running gateway")

    async def snapshot(self, bpf: str, name: str, seconds: float) -> dict[str, Any]:
        raise OfflineError("pcap.snapshot needs a running capture service")

    def hub(self, host: Host, action: str, obj: Any) -> None:
        """Send to every replica's copy of the agent (onHubAction). Offline: this copy only."""
        host.fire("onHubAction", action, obj)

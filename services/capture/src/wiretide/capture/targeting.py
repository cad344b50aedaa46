"""Targeting on one capture node: the kernel filter follows the spec and the pods this node holds.

The spec comes from the JetStream KV bucket (`PUT /api/targets`, `wiretide tap POD_REGEX -n NS`), the
pods from the resolver's identities (snapshot, then deltas). Whenever either changes the node's
filter is rebuilt — the configured capture filter AND the targeted pods' addresses — and swapped into
every ring socket in place. The identity sync starts only once a spec selects less than everything.

Rule: a spec that cannot be applied (a stored value that does not decode, a filter the kernel refuses)
leaves the last good filter in place and is reported in the status, never half-applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

import orjson

from wiretide.capture.bpf import FilterError, combine
from wiretide.common import targets
from wiretide.common.identity import IdentitySync
from wiretide.common.targets import TargetError, TargetSpec

log = logging.getLogger(__name__)

# How often the identity table's version is looked at (it changes by deltas, without a callback).
CHECK_EVERY_S: Final = 0.5


class Targeting:
    def __init__(
        self,
        node: str,
        base_expression: str,
        apply: Callable[[str], dict[str, str]],
        start_identity: Callable[[], IdentitySync],
        default: TargetSpec,
    ) -> None:
        self.node = node
        self.base = base_expression
        self._apply = apply  # LiveCapture.set_filter
        self._start_identity = start_identity
        self.spec = default
        self.revision = 0
        self.expression = base_expression
        self.note = "every pod"
        self.pods: list[targets.TargetedPod] = []
        self.errors: list[str] = []
        self.changes = 0
        self.identity: IdentitySync | None = None
        self._seen: tuple[Any, ...] = ()
        self._tasks: list[asyncio.Task[None]] = []
        self._kv: Any = None

    async def start(self, js: Any) -> None:
        try:
            self._kv = await targets.open_bucket(js)
            self.spec, self.revision = await targets.load(self._kv, self.spec)
        except TargetError as exc:
            self._error(f"stored spec ignored: {exc}")
        except Exception as exc:  # NATS away or refusing: the settings' spec, not a capture that stops
            self._kv = None
            self._error(
                f"the targeting bucket is unavailable ({type(exc).__name__}: {exc}); using the settings"
            )
        await self.refresh()
        self._tasks = [asyncio.create_task(self._watch_pods(), name="targeting-pods")]
        if self._kv is not None:
            self._tasks.append(asyncio.create_task(self._watch_spec(), name="targeting-spec"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.identity is not None:
            await self.identity.stop()

    async def refresh(self) -> None:
        """Rebuild the filter if the spec or the node's targeted pods changed."""
        if not self.spec.everything and self.identity is None:
            self.identity = self._start_identity()
            await self.identity.start()
        if self.spec.everything:
            pods: list[targets.TargetedPod] = []
        else:
            assert self.identity is not None
            pods = targets.targeted(self.spec, self._identities(), self.node)
        key = (self.spec, tuple(pods))
        if key == self._seen:
            return
        expression, note = targets.kernel_expression(self.spec, pods)
        wanted = combine(self.base, f"({expression})" if expression else "")
        failed = self._apply(wanted) if wanted != self.expression else {}
        if failed:
            self._error(
                f"kernel filter refused on {', '.join(sorted(failed))}: {next(iter(failed.values()))}"
            )
            return
        self._seen = key
        self.expression, self.note, self.pods = wanted, note, pods
        self.changes += 1
        log.info("targeting applied", extra={"note": note, "pods": len(pods), "revision": self.revision})
        await self._publish()

    async def _publish(self) -> None:
        """This node's state beside the spec (`node.<name>`), for `GET /api/targets`."""
        if self._kv is None:
            return
        try:
            await self._kv.put(targets.node_key(self.node), orjson.dumps(self.status()))
        except Exception as exc:  # the filter is applied either way; only the report is late
            self._error(f"cannot publish the node's targeting ({type(exc).__name__})")

    def _identities(self) -> list[Any]:
        assert self.identity is not None
        table = self.identity.table
        return [*table.held("pod"), *table.held("node")]

    def _error(self, message: str) -> None:
        self.errors = [*self.errors[-4:], message]
        log.warning("targeting", extra={"error": message})

    async def _watch_spec(self) -> None:
        watcher = await self._kv.watch(targets.KEY)
        async for entry in watcher:
            if entry is None or entry.value is None:  # end of the initial values, or a purge
                continue
            try:
                spec = targets.decode(entry.value)
            except TargetError as exc:
                self._error(f"stored spec ignored: {exc}")
                continue
            self.spec, self.revision = spec, int(entry.revision or 0)
            try:
                await self.refresh()
            except FilterError as exc:
                self._error(str(exc))

    async def _watch_pods(self) -> None:
        version = -1
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            if self.identity is None:
                continue
            if self.identity.table.version != version:
                version = self.identity.table.version
                try:
                    await self.refresh()
                except FilterError as exc:
                    self._error(str(exc))

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "spec": self.spec.to_json(),
            "revision": self.revision,
            "filter": self.expression,
            "note": self.note,
            "pods": [p.to_json() for p in self.pods],
            "errors": list(self.errors),
        }

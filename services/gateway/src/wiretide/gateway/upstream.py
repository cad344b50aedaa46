"""What was lost before entries reached the store, and what was captured but only counted: drop
counters and undissected-packet counts polled from capture and the dissectors."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from wiretide.common.rpc import channel
from wiretide.common.settings import CommonSettings
from wiretide.gateway.query import Completeness
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc, dissector_pb2, dissector_pb2_grpc

log = logging.getLogger(__name__)

POLL_S = 5.0
CALL_TIMEOUT_S = 1.0


class UpstreamPoller:
    def __init__(
        self,
        settings: CommonSettings,
        completeness: Completeness,
        metadata: tuple[tuple[str, str], ...] = (),  # the service token (common/auth)
    ) -> None:
        self.settings = settings
        self.metadata = metadata
        self.completeness = completeness
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Each dissector's last answer: one that misses a poll keeps its counts in the sum.
        self._undissected: dict[str, dict[str, int]] = {}

    async def poll_once(self) -> dict[str, int]:
        drops: dict[str, int] = {}
        async with channel(self.settings.capture_grpc, self.settings.transport, peer="capture") as ch:
            with contextlib.suppress(grpc.aio.AioRpcError):
                st = await capture_pb2_grpc.CaptureServiceStub(ch).GetStatus(
                    capture_pb2.GetStatusRequest(), timeout=CALL_TIMEOUT_S, metadata=self.metadata
                )
                for reason, n in st.drops.items():
                    drops[f"capture.{reason}"] = drops.get(f"capture.{reason}", 0) + n
                self.completeness.capture = {
                    "node": st.node,
                    "packets": st.packets,
                    "interfaces": [
                        {"name": i.name, "packets": i.packets, "kernel_drops": i.kernel_drops, "up": i.up}
                        for i in st.interfaces
                    ],
                    "errors": dict(st.errors),
                }
        for address in self.settings.dissector_endpoints:
            async with channel(address, self.settings.transport, peer="dissector") as ch:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    ds = await dissector_pb2_grpc.DissectorServiceStub(ch).GetStats(
                        dissector_pb2.GetStatsRequest(), timeout=CALL_TIMEOUT_S, metadata=self.metadata
                    )
                    for reason, n in ds.drops.items():
                        drops[f"dissector.{reason}"] = drops.get(f"dissector.{reason}", 0) + n
                    self._undissected[address] = dict(ds.undissected)
        total: dict[str, int] = {}
        for counts in self._undissected.values():
            for proto, n in counts.items():
                total[proto] = total.get(proto, 0) + n
        self.completeness.undissected = total
        return drops

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="upstream-poller")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.completeness.upstream_drops = await self.poll_once()
            except Exception as exc:  # never let bookkeeping take the gateway down
                log.debug("upstream poll failed", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=POLL_S)

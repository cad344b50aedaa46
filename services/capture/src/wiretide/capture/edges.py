"""Kernel-observed causality edges, published for the tracer on `wt.causality.<node>`.

Rule: one message per poll of the probe (a batch, never an edge per message); NATS away or slow
means edges are counted and dropped — the tracer then links those calls by timing, nothing breaks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import Final

from wiretide.capture.sources.ebpf.causality import CausalEdge, CausalityFeed, Endpoints
from wiretide.common.bus import Bus
from wiretide.common.bus.causality import CAUSALITY_VERSION
from wiretide.common.bus.subjects import causality_subject
from wiretide.proto.v1 import causality_pb2

log = logging.getLogger(__name__)

# Publishes in flight at once; beyond it a poll's edges are dropped (counted).
MAX_IN_FLIGHT: Final = 64


def _conn(e: Endpoints) -> causality_pb2.CausalConnection:
    return causality_pb2.CausalConnection(
        client_ip=ipaddress.ip_address(e.client_ip).packed,
        client_port=e.client_port,
        server_ip=ipaddress.ip_address(e.server_ip).packed,
        server_port=e.server_port,
    )


def edge_batch(node: str, seq: int, edges: list[CausalEdge]) -> causality_pb2.CausalEdgeBatch:
    return causality_pb2.CausalEdgeBatch(
        node=node,
        seq=seq,
        version=CAUSALITY_VERSION,
        edges=[
            causality_pb2.CausalEdge(
                outbound=_conn(e.outbound),
                outbound_ns=e.outbound_ns,
                inbound=_conn(e.inbound),
                inbound_ns=e.inbound_ns,
                pid=e.pid,
                tid=e.tid,
                comm=e.comm,
            )
            for e in edges
        ],
    )


class EdgePublisher:
    """Runs the causality feed and publishes what it reads; `published`/`dropped` count edges."""

    def __init__(
        self,
        node: str,
        bus: Bus,
        loop: asyncio.AbstractEventLoop,
        after: Callable[[], bool] | None = None,
    ) -> None:
        self.node = node
        self.subject = causality_subject(node)
        self._bus = bus
        self._seq = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self.published = 0
        self.dropped = 0
        self.feed = CausalityFeed(self._on_edges, loop, after=after)

    def start(self) -> None:
        self.feed.start()

    def close(self) -> None:
        self.feed.close()

    def _on_edges(self, edges: list[CausalEdge]) -> None:
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self.dropped += len(edges)
            return
        self._seq += 1
        data = edge_batch(self.node, self._seq, edges).SerializeToString()
        task = asyncio.get_running_loop().create_task(self._publish(data, len(edges)))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _publish(self, data: bytes, n: int) -> None:
        try:
            await self._bus.nc.publish(self.subject, data)
        except Exception as exc:  # NATS away or its buffer full: the tracer falls back to timing
            self.dropped += n
            log.debug("causality edges dropped", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self.published += n

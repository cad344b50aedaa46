"""Causality edges over the bus (real nats-server): the capture side publishes a poll's edges as one
CausalEdgeBatch on `wt.causality.<node>`; the tracer service turns kernel causality on at the first
batch and links the calls those edges name as `syscall`; a message that does not decode or is of a
newer version is counted, never raised on."""

from __future__ import annotations

import asyncio

import nats
from prometheus_client import REGISTRY

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_tracer_service import publish
from tests.unit.tracer.test_causality import SUBJECT, batch, crossed
from wiretide.capture.edges import EdgePublisher
from wiretide.capture.sources.ebpf.causality import CausalEdge, Endpoints
from wiretide.common.bus.causality import CAUSALITY_VERSION, read_causality
from wiretide.common.bus.connection import Bus
from wiretide.common.bus.subjects import CAUSALITY_ALL
from wiretide.tracer.service import TracerService, TracerSettings
from wiretide.tracer.spans import KIND_CLIENT, LINK_SYSCALL


async def test_the_tracer_service_links_by_the_edges_it_reads_from_the_bus(nats_server: NatsServer) -> None:
    settings = TracerSettings(
        nats_url=nats_server.url,
        tracer_grpc="127.0.0.1:0",
        tracer_durable=f"tracer-causality-{__import__('os').getpid()}",
        tracer_window_s=0.2,
    )
    entries, edges = crossed()
    linked_before = REGISTRY.get_sample_value("wiretide_tracer_causality_total", {"outcome": "linked"}) or 0
    async with running(TracerService(settings)) as svc:
        assert isinstance(svc, TracerService) and svc.causality is None  # off until edges come
        nc = await nats.connect(nats_server.url)
        await nc.publish(SUBJECT, b"\xff\x00 not a batch")
        await nc.publish(SUBJECT, batch(version=CAUSALITY_VERSION + 1))
        await nc.publish(SUBJECT, batch(*edges))
        await nc.flush()
        await nc.close()
        await wait_for_async(
            "the edges read", lambda: svc.causality is not None and svc.causality.stats["edges"] == 2
        )
        assert svc.causality is not None
        assert (svc.causality.stats["invalid"], svc.causality.stats["refused"]) == (1, 1)
        await publish(nats_server.url, entries)

        def linked() -> dict[str, str]:
            return {
                s.entry_id: s.link
                for s in svc.engine.store.spans()
                if s.kind == KIND_CLIENT and s.entry_id in ("c1", "c2")
            }

        got = await wait_for_async("both calls decided", linked, lambda v: len(v) == 2, timeout=20)
        assert got == {"c1": LINK_SYSCALL, "c2": LINK_SYSCALL}
        await wait_for_async(
            "the outcomes on the metrics",
            lambda: REGISTRY.get_sample_value("wiretide_tracer_causality_total", {"outcome": "linked"}) or 0,
            lambda n: n >= linked_before + 2,
        )


async def test_the_capture_side_publishes_a_polls_edges_as_one_batch(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    got: list[bytes] = []

    async def keep(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.data)

    await nc.subscribe(CAUSALITY_ALL, cb=keep)
    bus = Bus(nc, nc.jetstream())
    publisher = EdgePublisher("node-a", bus, asyncio.get_running_loop())  # its feed is not started
    edge = CausalEdge(
        Endpoints("10.0.1.1", 50001, "10.0.2.1", 9090),
        5,
        Endpoints("10.0.0.9", 4001, "10.0.1.1", 80),
        4,
        1,
        2,
        "py",
    )
    publisher._on_edges([edge, edge])
    await wait_for_async("the batch", lambda: got)
    batch_read = read_causality(got[0], publisher.subject)
    assert len(batch_read.edges) == 2 and batch_read.node == "node-a"
    assert publisher.published == 2 and publisher.dropped == 0
    await nc.close()
    publisher._on_edges([edge])  # NATS gone: dropped and counted, not raised
    await wait_for_async("the drop counted", lambda: publisher.dropped == 1)

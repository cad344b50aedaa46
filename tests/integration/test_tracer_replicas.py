"""Three tracer replicas as services (`WIRETIDE_TRACER_PARTITIONS=3`) on a real nats-server: each reads
every entry through its own durable consumer and keeps its share, they tell each other trace ids over
NATS, and one OTLP receiver gets every span exactly once, every trace one connected tree — propagated
context and timing alone. A facts message that is not one is counted and dropped, never raised."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict

import nats
import pytest

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_tracer_service import publish
from tests.unit.tracer.chains import MS, build
from tests.unit.tracer.receiver import GrpcReceiver, Received
from wiretide.common.bus.subjects import tracer_facts_subject
from wiretide.common.settings import SettingsError
from wiretide.tracer.service import TracerService, TracerSettings

REPLICAS = 3
KIND_SERVER, KIND_CLIENT = 2, 3  # OTLP Span.SpanKind


def trees(spans: list[Received]) -> dict[bytes, list[Received]]:
    """The spans by trace, each checked to be one connected tree (one root, every parent in it)."""
    by_trace: dict[bytes, list[Received]] = defaultdict(list)
    for r in spans:
        by_trace[r.span.trace_id].append(r)
    for members in by_trace.values():
        ids = {r.span.span_id for r in members}
        roots = [r for r in members if not r.span.parent_span_id]
        assert len(roots) == 1, f"{len(roots)} roots in one trace"
        assert all(r.span.parent_span_id in ids for r in members if r.span.parent_span_id)
    return by_trace


async def test_three_replicas_export_every_span_once_in_whole_trees(nats_server: NatsServer) -> None:
    receiver = GrpcReceiver()
    pid = os.getpid()
    headers = build(20, 3, pods=2, tiers=("frontend", "api", "backend", "db"), propagate=True, seed=7)
    # timing alone, one request at a time (so that the links are not in doubt), a minute later
    timing = build(
        20,
        1,
        pods=2,
        tiers=("frontend", "api", "backend", "db"),
        seed=8,
        t0=headers.entries[-1]["timestamp"] + 60_000 * MS,
    )
    entries = headers.entries + timing.entries
    services = [
        TracerService(
            TracerSettings(
                nats_url=nats_server.url,
                tracer_grpc="127.0.0.1:0",
                tracer_durable=f"tracer-rep-{pid}",
                tracer_window_s=0.2,
                tracer_partitions=REPLICAS,
                tracer_partition=str(i),
                traces_otlp_endpoint=receiver.endpoint,
                traces_otlp_flush_interval_s=0.05,
            )
        )
        for i in range(REPLICAS)
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for svc in services:
                await stack.enter_async_context(running(svc))
            nc = await nats.connect(nats_server.url)
            await nc.publish(tracer_facts_subject(1), b'{"v": 1, "facts": [["x", "nothex"]]}')
            await nc.publish(tracer_facts_subject(2), b"\xff not json")
            await nc.flush()
            await nc.close()
            for i in range(0, len(entries), 25):
                await publish(nats_server.url, entries[i : i + 25])
            want = 2 * len(entries)
            got = await asyncio.to_thread(receiver.collected.wait_for, want, 60.0)
            await wait_for_async(
                "every replica read every entry",
                lambda: [s.entries_in for s in services],
                lambda counts: all(c == len(entries) for c in counts),
            )
            assert len(got) == want, f"{len(got)} spans exported for {len(entries)} calls"
            keys = [(r.attributes["wiretide.entry_id"], r.span.kind) for r in got]
            assert len(set(keys)) == want  # each span once: no replica exported another's
            by_trace = trees(got)
            assert len(by_trace) == len(headers.roots) + len(timing.roots)
            assert {t.hex() for t in by_trace} >= {
                e["request"]["headers"]["traceparent"].split("-")[1] for e in headers.entries
            }
            # each replica exported a share, and told the others what they waited for
            assert all(s.engine.store.spans() for s in services)
            assert all(s.engine.assembler.stats.get("facts_missing", 0) == 0 for s in services)
            assert sum(s.engine.other_replicas for s in services) > 0
            assert services[1].invalid_facts == 1 and services[2].invalid_facts == 1
            assert "not hex" in services[1].facts_error or "length" in services[1].facts_error
    finally:
        receiver.stop()


def test_replica_settings_name_what_is_wrong() -> None:
    from wiretide.common.settings import load_settings

    for env, why in (
        ({"WIRETIDE_TRACER_PARTITIONS": "0"}, "WIRETIDE_TRACER_PARTITIONS"),
        ({"WIRETIDE_TRACER_PARTITIONS": "3", "WIRETIDE_TRACER_PARTITION": "3"}, "not one of 0..2"),
        ({"WIRETIDE_TRACER_PARTITIONS": "2", "WIRETIDE_TRACER_PARTITION": "first"}, "replica number or auto"),
    ):
        with pytest.raises(SettingsError, match=why):
            TracerService(load_settings(TracerSettings, "tracer", env))
    one = TracerService(load_settings(TracerSettings, "tracer", {}))
    assert one.partition is None  # one replica: no split, no facts, the durable as configured
    auto = load_settings(
        TracerSettings, "tracer", {"WIRETIDE_TRACER_PARTITIONS": "4", "WIRETIDE_TRACER_PARTITION": "auto"}
    )
    os.environ["HOSTNAME"], saved = "tracer-3", os.environ.get("HOSTNAME")
    try:
        assert TracerService(auto).partition is not None and TracerService(auto).partition.index == 3  # type: ignore[union-attr]
    finally:
        if saved is None:
            del os.environ["HOSTNAME"]
        else:
            os.environ["HOSTNAME"] = saved

"""Faults under load, CI-sized: NATS restarted under a publisher, a dissector killed (-9) with a spool,
the store's disk full, and a half-open flood against the dissector's memory budget. `make chaos`
runs the full-size versions through `wiretide up` (chaos/run.py).

Each test waits for what it observes (the client noticing NATS gone, a spool file growing, the
store reporting the full disk), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.helpers.disk import fill, tmpfs
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.netns import is_root
from tests.helpers.services import ServiceProcess
from tests.helpers.wait import wait_for, wait_for_async
from tests.integration.test_bus import encode, stored_items
from tests.integration.test_dissector_service import read_entries
from tests.integration.test_store_writer import make_entries, publish
from tests.unit.dissector.builders import SYN, T0, Conversation, columns, tcp_frame
from wiretide.common.bus import BatchPublisher, connect_with_retry, entries_subject
from wiretide.common.bus.spool import HEADER
from wiretide.common.entry import UlidGenerator
from wiretide.proto.v1 import dissector_pb2, dissector_pb2_grpc, packets_pb2

RSS_BUDGET_MB = 300  # every service's memory budget (docs/reliability.md)


# -- NATS away under a publisher ------------------------------------------------------------------


async def test_a_publish_that_timed_out_while_nats_was_away_goes_again_as_it_was_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """The client keeps what it could not send and delivers it on reconnect; a retry under the same
    message id with more items in it was dropped by JetStream as a duplicate, losing the extra items
    (490 of 1,205 calls in `make chaos`' NATS outage before the fix)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        bus = await connect_with_retry(server.url, "t")
        pub = BatchPublisher(bus, entries_subject("n1"), encode, max_items=500, max_delay_s=0.01)
        pub.start()
        server.stop()
        await wait_for_async("the client to notice", lambda: not bus.connected)
        pub.extend(list(range(10)))
        first = await wait_for_async("a first attempt held by the client", lambda: bus.nc.pending_data_size)
        pub.extend(list(range(10, 300)))
        # The first attempt timed out; the publisher tried again: the client now holds both.
        await wait_for_async(
            "a second attempt", lambda: bus.nc.pending_data_size, done=lambda n: n > first, timeout=60
        )
        server.start()
        await wait_for_async("everything sent", lambda: pub.waiting, done=lambda n: n == 0)
        await pub.close()
        await bus.close()
        assert await stored_items(server.url) == list(range(300))
    finally:
        server.stop()


# -- the store's disk full ------------------------------------------------------------------------


def store_status(port: int) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json()["store"]
    return doc


def count(db: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
        n, distinct = c.execute("SELECT count(*), count(DISTINCT path) FROM entries").fetchone()
    return int(n), int(distinct)


@pytest.mark.skipif(not is_root(), reason="needs root to mount a small tmpfs for the store")
def test_a_full_disk_stops_the_store_with_a_clear_error_and_it_recovers_intact_when_space_returns(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "store", 16) as store:
        db = store / "entries.sqlite3"
        http = free_port()
        gw = spawn(
            "gateway",
            nats_server.url,
            WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{http}",
            WIRETIDE_GATEWAY_DB=str(db),
            WIRETIDE_GATEWAY_ACK_WAIT_S="2",
        )
        gw.wait_health("SERVING")
        gen = UlidGenerator()
        asyncio.run(publish(nats_server.url, [make_entries(100, gen, start=0)]))
        wait_for("the first entries stored", lambda: count(db)[0], done=lambda n: n == 100)
        ballast = fill(store)
        later = [make_entries(100, gen, start=100 + i * 100) for i in range(20)]
        asyncio.run(publish(nats_server.url, later))
        status = wait_for(
            "the store to report the full disk", lambda: store_status(http), lambda s: s["last_error"]
        )
        assert status["writing"] is False
        assert "full" in status["last_error"] and str(db) in status["last_error"]
        gw.wait_health("NOT_SERVING")
        ballast.unlink()
        wait_for("every entry stored", lambda: count(db), done=lambda c: c == (2100, 2100))
        wait_for("writing again", lambda: store_status(http), lambda s: s["writing"] and not s["last_error"])
        gw.wait_health("SERVING")
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- the dissector killed with entries spooled ----------------------------------------------------


def http_exchanges(n: int) -> packets_pb2.PacketBatch:
    """`n` HTTP calls, each on its own connection (GET /call/<i>), as one batch from node edge-1."""
    frames = []
    for i in range(n):
        conv = Conversation(cport=20_000 + i, ts=T0 + i * 10_000_000).handshake()
        conv.send(True, f"GET /call/{i} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
        conv.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        frames += conv.close().frames
    return columns(frames).to_proto("edge-1", packets_pb2.CAPTURE_SOURCE_AF_PACKET, seq=1)


async def ingest(address: str, batch: packets_pb2.PacketBatch) -> None:
    async def requests() -> AsyncIterator[dissector_pb2.IngestRequest]:
        yield dissector_pb2.IngestRequest(batch=batch)

    async with grpc.aio.insecure_channel(address) as ch:
        acks = [r async for r in dissector_pb2_grpc.DissectorServiceStub(ch).Ingest(requests())]
    assert acks[-1].acked_seq == 1


def records(path: Path) -> int:
    """Records in a spool file, read beside the process writing it (nothing is opened for writing)."""
    data, n, at = path.read_bytes(), 0, 0
    while at + HEADER.size <= len(data):
        size, id_len = HEADER.unpack_from(data, at)
        at += HEADER.size + id_len + size
        n += at <= len(data)
    return n


def test_a_dissector_killed_while_nats_is_away_leaves_its_spool_to_the_next_one_which_delivers_it(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    calls = 40
    address = f"127.0.0.1:{free_port()}"
    settings = {
        "WIRETIDE_DISSECTOR_GRPC": address,  # the spool's directory is named after the endpoint
        "WIRETIDE_DISSECTOR_MAX_BUFFERED": "1",  # beyond one entry in memory, the spool
        "WIRETIDE_DISSECTOR_PUBLISH_ITEMS": "1",  # a message (and a spool record) per entry
    }
    first: ServiceProcess = spawn("dissector", nats_server.url, **settings)
    first.wait_health("SERVING")
    nats_server.stop()
    first.wait_health("NOT_SERVING")
    asyncio.run(ingest(address, http_exchanges(calls)))
    spool_dir = tmp_path / "data" / "spool" / f"dissector-{address.rsplit(':', 1)[1]}"
    subject = entries_subject("edge-1")
    path = spool_dir / f"{subject}.spool"
    # Every entry but the one held in memory is on disk before the kill.
    wait_for("the spool to hold the entries", lambda: path.stat().st_size if path.exists() else 0)
    spooled = wait_for("all but one entry spooled", lambda: records(path), done=lambda n: n == calls - 1)
    assert first.proc is not None
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    nats_server.start()
    second: ServiceProcess = spawn("dissector", nats_server.url, **settings)
    second.wait_health("SERVING")
    got = asyncio.run(read_entries(nats_server.url, "edge-1", want=spooled, timeout=60))
    paths = sorted(str(e["path"]) for e in got)
    assert len(paths) == len(set(paths)) == spooled  # delivered once each, by the next process
    assert set(paths) <= {f"/call/{i}" for i in range(calls)}
    wait_for("the spool emptied", lambda: path.stat().st_size, done=lambda n: n == 0)


# -- a half-open flood against the dissector's memory budget ---------------------------------------

FLOOD_FLOWS = 120_000  # beyond the default table of 100,000 flows: the rest evict the oldest
FLOOD_BATCH = 4_000  # SYNs per PacketBatch, about what the capture sends at once


def syn_batches() -> Iterator[packets_pb2.PacketBatch]:
    """One SYN per flow (source port x client address), never answered: half-open flows."""
    frames = []
    for i in range(FLOOD_FLOWS):
        client = f"10.66.{i // 60_000}.{1 + (i // 60_000)}"
        frames.append((T0 + i * 1000, tcp_frame(client, 1024 + i % 60_000, "10.66.9.9", 80, i, 0, SYN)))
    for seq, at in enumerate(range(0, len(frames), FLOOD_BATCH), 1):
        cols = columns(frames[at : at + FLOOD_BATCH])
        yield cols.to_proto("edge-1", packets_pb2.CAPTURE_SOURCE_AF_PACKET, seq=seq)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_half_open_flood_keeps_the_dissector_within_its_memory_budget_and_counts_evictions(
    nats_server: NatsServer, spawn: Any
) -> None:
    address = f"127.0.0.1:{free_port()}"
    dissector: ServiceProcess = spawn("dissector", nats_server.url, WIRETIDE_DISSECTOR_GRPC=address)
    dissector.wait_health("SERVING")
    batches = list(syn_batches())

    async def flood() -> dissector_pb2.GetStatsResponse:
        async def requests() -> AsyncIterator[dissector_pb2.IngestRequest]:
            for b in batches:
                yield dissector_pb2.IngestRequest(batch=b)

        async with grpc.aio.insecure_channel(address) as ch:
            stub = dissector_pb2_grpc.DissectorServiceStub(ch)
            acks = [r.acked_seq async for r in stub.Ingest(requests())]
            assert acks[-1] == len(batches)
            stats: dissector_pb2.GetStatsResponse = await stub.GetStats(dissector_pb2.GetStatsRequest())
            return stats

    stats = asyncio.run(flood())
    assert stats.packets == FLOOD_FLOWS
    assert stats.flows_active == 100_000  # the table's bound (WIRETIDE_DISSECTOR_MAX_FLOWS)
    assert stats.drops["flow_table_full"] == FLOOD_FLOWS - 100_000  # each eviction counted
    assert dissector.proc is not None
    assert peak_rss_mb(dissector.proc.pid) <= RSS_BUDGET_MB

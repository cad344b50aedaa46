"""The pipe at the NATS level: EntryBatches on wt.entries.* land in the gateway's SQLite store and come
back over REST; garbage is counted and skipped; a killed gateway resumes without loss or duplicates."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from operator import not_
from pathlib import Path
from typing import Any

import httpx
import nats

from tests.helpers.nats import NatsServer, free_port
from tests.helpers.wait import wait_for
from wiretide.common.bus import STORE_WRITER_DURABLE, entries_subject
from wiretide.common.bus.connection import ensure_stream
from wiretide.common.bus.subjects import ENTRIES_STREAM
from wiretide.common.entry import UlidGenerator, encode_batch
from wiretide.proto.v1 import entries_pb2

NOW = time.time_ns()


def make_entries(n: int, gen: UlidGenerator, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": gen.new(),
            "timestamp": NOW + (start + i) * 1000,
            "protocol": "http",
            "node": "node-a",
            "method": "GET",
            "path": f"/item/{start + i}",
            "status": 200 + (i % 3) * 100,
            "src": {"ip": "10.0.0.1", "namespace": "shop", "name": "web"},
            "dst": {"ip": "10.0.0.2", "namespace": "shop", "name": "api"},
        }
        for i in range(n)
    ]


async def publish(url: str, batches: list[list[dict[str, Any]]], raw: list[bytes] | None = None) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js, ENTRIES_STREAM)
    for data in raw or []:
        await js.publish(entries_subject("node-a"), data)
    for seq, docs in enumerate(batches, 1):
        payload = encode_batch(docs, "node-a", "test", seq)
        await js.publish(entries_subject("node-a"), payload, headers={"Nats-Msg-Id": f"test-{docs[0]['id']}"})
    await nc.close()


def wait_rows(db: Path, want: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        if db.exists():
            with sqlite3.connect(db) as c:
                try:
                    n = c.execute("SELECT count(*) FROM entries").fetchone()[0]
                except sqlite3.OperationalError:
                    n = -1
            if n >= want:
                return n
        time.sleep(0.2)
    return n


async def unacked(url: str) -> int:
    """Messages the store writer's durable consumer has not acknowledged yet (pending or in flight)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(ENTRIES_STREAM.name, STORE_WRITER_DURABLE)
    finally:
        await nc.close()
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        try:
            return int(c.execute("SELECT count(*) FROM entries").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def metric(url: str, name: str) -> float:
    text = httpx.get(url).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_published_batch_is_stored_and_served_over_rest(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    http_port, metrics_port = free_port(), free_port()
    gw = spawn(
        "gateway",
        nats_server.url,
        WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{http_port}",
        WIRETIDE_GATEWAY_METRICS=f"127.0.0.1:{metrics_port}",
    )
    gw.wait_health("SERVING")
    gen = UlidGenerator()
    docs = make_entries(5, gen)
    bad_entry = entries_pb2.EntryBatch(entries=[entries_pb2.Entry(id="x", json=b'{"id": "x"}')])
    garbage = [b"\xff\xfe not protobuf at all", bad_entry.SerializeToString()]
    asyncio.run(publish(nats_server.url, [docs], raw=garbage))
    assert wait_rows(tmp_path / "data" / "entries.sqlite3", 5) == 5
    resp = httpx.get(f"http://127.0.0.1:{http_port}/api/entries", params={"limit": 3})
    assert resp.status_code == 200
    body = resp.json()
    assert [e["path"] for e in body["entries"]] == ["/item/4", "/item/3", "/item/2"]
    assert body["entries"][0] == docs[4]
    # The undecodable message and the invalid entry were counted, and the consumer went on. They were
    # published after the good batch, and the writer works on two batches at once: wait for them.
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        metric(metrics_url, "wiretide_bus_invalid_messages_total{") < 2
        or metric(metrics_url, "wiretide_gateway_invalid_entries_total ") < 1
    ):
        time.sleep(0.1)
    assert metric(metrics_url, "wiretide_bus_invalid_messages_total{") >= 2
    assert metric(metrics_url, "wiretide_gateway_invalid_entries_total ") == 1
    assert gw.health() == "SERVING"


def test_bad_query_strings_get_4xx_never_500(nats_server: NatsServer, spawn: Any) -> None:
    http_port = free_port()
    gw = spawn("gateway", nats_server.url, WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{http_port}")
    gw.wait_health("SERVING")
    base = f"http://127.0.0.1:{http_port}"
    assert httpx.get(f"{base}/api/entries", params={"limit": "-1"}).status_code == 400
    assert httpx.get(f"{base}/api/entries", params={"limit": "ten"}).status_code == 400
    big = httpx.get(f"{base}/api/entries", params={"limit": "100000000"})
    assert big.status_code == 200
    assert big.json()["completeness"]["limit_capped"] is True
    assert httpx.get(f"{base}/api/nothing-here").status_code == 404


def test_a_gateway_killed_mid_stream_resumes_without_loss_or_duplicates(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    gw = spawn(
        "gateway",
        nats_server.url,
        WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{free_port()}",
        WIRETIDE_GATEWAY_ACK_WAIT_S="2",
    )
    gw.wait_health("SERVING")
    gen = UlidGenerator()
    batches = [make_entries(50, gen, start=i * 50) for i in range(200)]  # 10,000 entries

    async def feed_and_kill() -> None:
        task = asyncio.create_task(publish(nats_server.url, batches))
        # Kill as soon as the first batch is committed: a fixed delay let the faster writer store all
        # 10,000 first on a quick run.
        db = tmp_path / "data" / "entries.sqlite3"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _rows(db) < 1:  # noqa: ASYNC110 (polling another process)
            await asyncio.sleep(0.005)
        gw.kill()  # SIGKILL while batches are still arriving
        await task

    asyncio.run(feed_and_kill())
    db = tmp_path / "data" / "entries.sqlite3"
    with sqlite3.connect(db) as c:
        before = c.execute("SELECT count(*) FROM entries").fetchone()[0]
    assert before < 10_000, "the kill should have happened mid-stream"
    gw2 = spawn(
        "gateway",
        nats_server.url,
        WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{free_port()}",
        WIRETIDE_GATEWAY_ACK_WAIT_S="2",
    )
    gw2.wait_health("SERVING")
    assert wait_rows(db, 10_000) == 10_000
    # Every message acknowledged (none pending, none awaiting an ack): nothing is left to redeliver, so
    # the rows are final. Waiting on the consumer's state, not on the ack wait elapsing.
    wait_for(
        "the store writer acknowledged every message", lambda: asyncio.run(unacked(nats_server.url)), not_
    )
    with sqlite3.connect(db) as c:
        n, distinct = c.execute("SELECT count(*), count(DISTINCT path) FROM entries").fetchone()
    assert (n, distinct) == (10_000, 10_000)
    assert re.search(r"SERVING", gw2.health())


def test_health_is_not_serving_until_nats_is_up(tmp_path: Path, spawn: Any) -> None:
    server = NatsServer(tmp_path / "late-nats")
    svc = spawn("tracer", server.url)
    svc.wait_health("NOT_SERVING")  # up and answering, but without NATS
    time.sleep(1.0)
    assert svc.health() == "NOT_SERVING"  # and it stays so while NATS is away
    server.start()
    try:
        svc.wait_health("SERVING")
        server.stop()
        svc.wait_health("NOT_SERVING")
        server.start()
        svc.wait_health("SERVING")
    finally:
        server.stop()


def test_every_service_stops_cleanly_on_sigterm(nats_server: NatsServer, spawn: Any) -> None:
    procs = [
        spawn(name, nats_server.url) for name in ("capture", "dissector", "resolver", "tracer", "agents")
    ]
    procs.append(spawn("gateway", nats_server.url, WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{free_port()}"))
    for p in procs:
        p.wait_health("SERVING")
    for p in procs:
        assert p.terminate(timeout=15) == 0, p.log()

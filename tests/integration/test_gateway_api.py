"""The user's door: REST, WebSocket, gRPC and the CLI against a running gateway fed over NATS.

Every answer is checked against the KFL predicate applied to the entries that were published.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
import websockets

from tests.helpers.entries import entries
from tests.helpers.har import assert_valid_har
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.wait import wait_for_async
from tests.integration.test_store_writer import publish
from wiretide.common.entry import from_proto
from wiretide.common.kfl import compile_predicate
from wiretide.common.rpc import check_health
from wiretide.common.settings import load_settings
from wiretide.gateway.service import GatewayService, GatewaySettings
from wiretide.proto.v1 import gateway_pb2, gateway_pb2_grpc

DOCS = entries(300, seed=11)


def newest_first(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in sorted(docs, key=lambda d: (d["timestamp"], d["id"]), reverse=True)]


def make_gateway(nats_url: str, data: Path, **extra: str) -> GatewayService:
    env = {
        "WIRETIDE_NATS_URL": nats_url,
        "WIRETIDE_DATA_DIR": str(data),
        "WIRETIDE_GATEWAY_GRPC": f"127.0.0.1:{free_port()}",
        "WIRETIDE_GATEWAY_HTTP": f"127.0.0.1:{free_port()}",
        **extra,
    }
    return GatewayService(load_settings(GatewaySettings, "gateway", env))


async def wait_stored(gw: GatewayService, n: int) -> None:
    await wait_for_async(
        f"{n} entries stored", lambda: gw.writer.stored if gw.writer else 0, lambda stored: stored >= n
    )


@pytest.fixture
async def gateway(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[tuple[GatewayService, str]]:
    gw = make_gateway(nats_server.url, tmp_path)
    async with running(gw):
        await publish(nats_server.url, [DOCS[i : i + 100] for i in range(0, 300, 100)])
        await wait_stored(gw, 300)
        yield gw, f"http://{gw.gs.gateway_http}"


@pytest.mark.parametrize(
    "query",
    ["", "http && status_code >= 500", 'dst.namespace == "payments"', 'path.contains("/api/")', "dns",
     "http and response.status == 404"],
)  # fmt: skip
async def test_entries_are_what_the_query_selects_newest_first(
    gateway: tuple[GatewayService, str], query: str
) -> None:
    _gw, base = gateway
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{base}/api/entries", params={"q": query, "limit": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    pred = compile_predicate(query) if query else (lambda _d: True)
    assert [e["id"] for e in body["entries"]] == newest_first([d for d in DOCS if pred(d)])
    c_ = body["completeness"]
    assert c_["matched"] == len(body["entries"]) and c_["exhausted"] is True
    assert {"scanned", "upstream_drops", "retention_deleted", "invalid_skipped"} <= set(c_)


async def test_pages_follow_the_next_cursor(gateway: tuple[GatewayService, str]) -> None:
    _gw, base = gateway
    seen: list[str] = []
    params: dict[str, Any] = {"q": "http", "limit": 25}
    async with httpx.AsyncClient() as c:
        while True:
            body = (await c.get(f"{base}/api/entries", params=params)).json()
            seen += [e["id"] for e in body["entries"]]
            if not body["next"]:
                break
            params["before"] = body["next"]
    assert seen == newest_first([d for d in DOCS if compile_predicate("http")(d)])


async def test_bad_requests_are_4xx_with_reasons(gateway: tuple[GatewayService, str]) -> None:
    _gw, base = gateway
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{base}/api/entries", params={"q": "http && (status_code >"})
        assert r.status_code == 400
        assert r.json()["position"] >= 9 and r.json()["error"].startswith("invalid query")
        r = await c.get(f"{base}/api/entries", params={"q": "no_such_variable == 1"})
        assert r.status_code == 400 and "no_such_variable" in r.json()["error"]
        assert (await c.get(f"{base}/api/entries", params={"before": "garbage"})).status_code == 400
        assert (await c.get(f"{base}/api/entries", params={"q": "x" * 10_000})).status_code == 400
        assert (await c.get(f"{base}/api/entries/NOSUCHENTRY")).status_code == 404
        assert (await c.get(f"{base}/api/entries/" + "A" * 300)).status_code == 404
        assert (await c.get(f"{base}/api/entries/%00%ff")).status_code == 404
        assert (await c.get(f"{base}/api/stats", params={"by": "colour"})).status_code == 400
        assert (await c.post(f"{base}/api/kfl/validate", content=b"not json")).status_code == 400
        assert (await c.post(f"{base}/api/kfl/validate", json={"query": 5})).status_code == 400
        assert (await c.post(f"{base}/api/entries")).status_code == 405


async def test_one_entry_har_stats_validate_and_openapi(gateway: tuple[GatewayService, str]) -> None:
    _gw, base = gateway
    async with httpx.AsyncClient() as c:
        one = (await c.get(f"{base}/api/entries/{DOCS[5]['id']}")).json()
        assert one == DOCS[5]
        har = (await c.get(f"{base}/api/export.har", params={"q": 'method == "GET"'})).json()
        gets = [d for d in DOCS if d.get("method") == "GET" and d["protocol"] == "http"]
        assert len(har["log"]["entries"]) == len(gets)
        assert {h["request"]["method"] for h in har["log"]["entries"]} == {"GET"}
        assert_valid_har(har)
        stats = (await c.get(f"{base}/api/stats", params={"by": "protocol"})).json()
        counts = {g["key"]: g["count"] for g in stats["groups"]}
        want: dict[str, int] = {}
        for d in DOCS:
            want[d["protocol"]] = want.get(d["protocol"], 0) + 1
        assert counts == want
        http = next(g for g in stats["groups"] if g["key"] == "http")
        errors = sum(1 for d in DOCS if d["protocol"] == "http" and d["status"] >= 500)
        assert http["errors"] == errors
        assert http["latency_ms"]["p50"] <= http["latency_ms"]["p95"] <= http["latency_ms"]["p99"]
        ok = (await c.post(f"{base}/api/kfl/validate", json={"query": "http && status_code >= 500"})).json()
        assert ok == {"valid": True, "problems": []}
        bad = (await c.post(f"{base}/api/kfl/validate", json={"query": "status_code >= "})).json()
        assert bad["valid"] is False and bad["problems"][0]["position"] >= 13
        spec = (await c.get(f"{base}/api/openapi.json")).json()
        assert {
            "/api/entries",
            "/api/entries/{id}",
            "/api/export.har",
            "/api/stats",
            "/api/kfl/validate",
        } <= set(spec["paths"])


async def test_the_live_stream_sends_only_matching_new_entries(
    gateway: tuple[GatewayService, str], nats_server: NatsServer
) -> None:
    _gw, base = gateway
    fresh = entries(200, seed=99)
    want = [d["id"] for d in fresh if compile_predicate("http && status_code >= 500")(d)]
    url = base.replace("http://", "ws://") + "/api/stream?q=" + "http%20%26%26%20status_code%20%3E%3D%20500"
    async with websockets.connect(url) as ws:
        assert orjson.loads(await ws.recv())["type"] == "hello"
        await publish(nats_server.url, [fresh])
        got = []
        while len(got) < len(want):
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            got.append(msg["entry"]["id"])
    assert got == want


async def test_an_invalid_stream_query_is_refused_with_a_reason(gateway: tuple[GatewayService, str]) -> None:
    _gw, base = gateway
    async with websockets.connect(base.replace("http://", "ws://") + "/api/stream?q=http%20%26%26") as ws:
        msg = orjson.loads(await ws.recv())
        assert msg["type"] == "error" and "position" in msg
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4400


async def test_a_slow_stream_client_is_cut_off_without_blocking_others(
    gateway: tuple[GatewayService, str], nats_server: NatsServer
) -> None:
    gw, base = gateway
    ws_base = base.replace("http://", "ws://") + "/api/stream"
    async with (
        websockets.connect(ws_base, max_queue=1) as slow,
        websockets.connect(ws_base + "?q=dns") as fast,
    ):
        await slow.recv()
        await fast.recv()
        burst = entries(5000, seed=5)
        await publish(nats_server.url, [burst[i : i + 500] for i in range(0, 5000, 500)])
        want = sum(1 for d in burst if d["protocol"] == "dns")
        got = 0
        while got < want:
            msg = orjson.loads(await asyncio.wait_for(fast.recv(), 10))
            got += msg["type"] == "entry"
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(slow.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4408
    assert "slow consumer" in info.value.rcvd.reason
    assert got == want


async def test_grpc_offers_the_same_answers(
    gateway: tuple[GatewayService, str], nats_server: NatsServer
) -> None:
    gw, _base = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as ch:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        resp = await stub.Query(gateway_pb2.QueryRequest(query="dns", limit=1000))
        assert [e.id for e in resp.entries] == newest_first([d for d in DOCS if d["protocol"] == "dns"])
        assert resp.completeness.matched == len(resp.entries)
        got = await stub.Get(gateway_pb2.GetRequest(id=DOCS[0]["id"]))
        assert from_proto(got.entry) == DOCS[0]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Get(gateway_pb2.GetRequest(id="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Query(gateway_pb2.QueryRequest(query="http &&"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stats = orjson.loads((await stub.Stats(gateway_pb2.StatsRequest(by="protocol"))).json)
        assert sum(g["count"] for g in stats["groups"]) == 300
        watching = len(gw.live.subscribers)
        call = stub.Stream(gateway_pb2.StreamRequest(query="grpc"))
        # Publish only once the stream is subscribed: entries sent before would never reach it.
        await wait_for_async("the stream subscribed", lambda: len(gw.live.subscribers) > watching)
        fresh = entries(100, seed=3)
        await publish(nats_server.url, [fresh])
        want = [d["id"] for d in fresh if d["protocol"] == "grpc"]
        got = []
        async for item in call:
            got.append(item.entry.id)
            if len(got) == len(want):
                break
        call.cancel()
        assert got == want


async def test_the_cli_queries_a_running_gateway(gateway: tuple[GatewayService, str]) -> None:
    _gw, base = gateway
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wiretide.cli", "query", "dns", "--url", base,
        "--format", "jsonl", "--limit", "1000",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    ids = [orjson.loads(line)["id"] for line in out.splitlines()]
    assert ids == newest_first([d for d in DOCS if d["protocol"] == "dns"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wiretide.cli", "query", "status_code >", "--url", base,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _out, err = await proc.communicate()
    assert proc.returncode == 2 and b"bad query" in err and b"expected a value" in err


async def test_a_token_guards_every_route(nats_server: NatsServer, tmp_path: Path) -> None:
    gw = make_gateway(nats_server.url, tmp_path, WIRETIDE_GATEWAY_TOKEN="s3cret")
    async with running(gw):
        base = f"http://{gw.gs.gateway_http}"
        async with httpx.AsyncClient() as c:
            for path in ("/api/entries", "/api/health", "/api/openapi.json", "/api/stats"):
                assert (await c.get(base + path)).status_code == 401
            assert (
                await c.get(base + "/api/entries", headers={"authorization": "Bearer wrong"})
            ).status_code == 401
            assert (
                await c.get(base + "/api/entries", headers={"authorization": "Bearer s3cret"})
            ).status_code == 200
            r = await c.get(base + "/api/entries", headers={"origin": "http://evil.example"})
            assert "access-control-allow-origin" not in r.headers
        ws = base.replace("http://", "ws://") + "/api/stream"
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(ws):
                pass
        async with websockets.connect(ws + "?token=s3cret") as conn:
            assert orjson.loads(await conn.recv())["type"] == "hello"


async def test_an_unwritable_store_stops_acks_turns_not_serving_and_loses_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    gw = make_gateway(nats_server.url, tmp_path, WIRETIDE_GATEWAY_ACK_WAIT_S="3")
    async with running(gw):
        address = f"127.0.0.1:{gw.grpc_port}"
        blocker = sqlite3.connect(tmp_path / "entries.sqlite3", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database: writes fail
        docs = entries(500, seed=21)
        await publish(nats_server.url, [docs[:250], docs[250:]])
        await wait_for_async(
            "the writer reports the locked store", lambda: gw.writer is not None and not gw.writer.healthy
        )
        assert gw.writer is not None
        assert "locked" in (gw.writer.last_error or "")
        await wait_for_async(
            "health says NOT_SERVING",
            lambda: check_health(address, "wiretide.proto.v1.GatewayService"),
            lambda state: state == "NOT_SERVING",
        )
        blocker.execute("ROLLBACK")
        blocker.close()
        await wait_stored(gw, 500)
        assert gw.writer.healthy
        assert await asyncio.to_thread(gw.store.count) == 500  # type: ignore[union-attr]

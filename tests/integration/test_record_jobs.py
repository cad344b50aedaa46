"""Recording jobs through a running gateway fed over NATS: REST start/stop/list/get, triggers, the
bundle of a run, `record("name")`, roles, and jobs that survive a restart. Capture and resolver are
absent here (their part is counted in the run's status, as it would be when they are away)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.entries import entry
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.wait import wait_for_async
from tests.integration.test_gateway_api import make_gateway, wait_stored
from tests.integration.test_store_writer import publish
from wiretide.common.entry import UlidGenerator
from wiretide.gateway.recording.bundle import open_bundle
from wiretide.gateway.service import GatewayService

FAST = {
    "WIRETIDE_RECORDING_CUT_S": "0.5",
    "WIRETIDE_RECORDING_LAG_S": "0",
}


def recent(n: int, seed: int, **over: Any) -> list[dict[str, Any]]:
    """Entries from the last few seconds (a recording takes what happened around now)."""
    gen, rnd = UlidGenerator(), random.Random(seed)
    now = time.time_ns()
    return [entry(gen, now - 3_000_000_000 + i * 1000, rnd, **over) for i in range(n)]


def absent_peers() -> dict[str, str]:
    return {
        "WIRETIDE_CAPTURE_GRPC": f"127.0.0.1:{free_port()}",
        "WIRETIDE_RESOLVER_GRPC": f"127.0.0.1:{free_port()}",
    }


@pytest.fixture
async def gateway(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[tuple[GatewayService, str]]:
    gw = make_gateway(nats_server.url, tmp_path, **FAST, **absent_peers())
    async with running(gw):
        yield gw, f"http://{gw.gs.gateway_http}"


async def job(client: httpx.AsyncClient, base: str, name: str) -> dict[str, Any]:
    resp = await client.get(f"{base}/api/recordings/{name}")
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


async def test_a_job_records_the_matching_entries_of_its_window_into_a_bundle(
    gateway: tuple[GatewayService, str], nats_server: NatsServer, tmp_path: Path
) -> None:
    gw, base = gateway
    docs = recent(200, seed=3)
    await publish(nats_server.url, [docs])
    await wait_stored(gw, 200)
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"name": "incident", "filter": 'dst.namespace == "shop"', "duration_s": 600, "preceding_s": 60}
        created = await client.post(f"{base}/api/recordings", json=body)
        assert created.status_code == 201, created.text
        assert (await client.post(f"{base}/api/recordings", json=body)).status_code == 409
        expected = sorted(d["id"] for d in docs if d["dst"]["namespace"] == "shop")
        await wait_for_async(
            "the run collected every matching entry",
            lambda: job(client, base, "incident"),
            lambda j: bool(j["runs"]) and j["runs"][0]["entries"] == len(expected),
        )
        # record("incident") scopes a query to it, mixable with any other clause
        scoped = await client.get(f"{base}/api/entries", params={"q": 'record("incident")', "limit": 1000})
        assert sorted(e["id"] for e in scoped.json()["entries"]) == expected
        q = 'record("incident") && status_code >= 500'
        mixed = await client.get(f"{base}/api/entries", params={"q": q, "limit": 1000})
        errors = sorted(
            d["id"] for d in docs if d["dst"]["namespace"] == "shop" and (d.get("status") or 0) >= 500
        )
        assert errors and sorted(e["id"] for e in mixed.json()["entries"]) == errors
        unknown = await client.get(f"{base}/api/entries", params={"q": 'http && record("nope")'})
        assert unknown.status_code == 400 and unknown.json()["position"] == 8
        stopped = await client.post(f"{base}/api/recordings/incident/stop")
        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        run = (await job(client, base, "incident"))["runs"][0]
        assert run["state"] == "done" and run["bundle"]
        assert run["drops"]["identities_unavailable"] >= 1  # the resolver is away: said, not hidden
        got = await client.get(f"{base}/api/recordings/incident/runs/{run['id']}/bundle")
        assert got.status_code == 200
        (tmp_path / "b.tar.gz").write_bytes(got.content)
        b = open_bundle(tmp_path / "b.tar.gz", tmp_path / "opened")
        stored = {e["id"]: e for e in scoped.json()["entries"]}
        assert [e["id"] for e in b.entries()] == sorted(expected, key=lambda i: (stored[i]["timestamp"], i))
        assert all(e == stored[e["id"]] for e in b.entries())
        health = (await client.get(f"{base}/api/health")).json()["recordings"]
        assert (
            health["jobs"] == 1 and health["bundles"] == 1 and health["drops"]["identities_unavailable"] >= 1
        )


async def test_a_trigger_starts_a_run_with_the_preceding_entries(
    gateway: tuple[GatewayService, str], nats_server: NatsServer
) -> None:
    gw, base = gateway
    async with httpx.AsyncClient(timeout=30) as client:
        body = {
            "name": "errors",
            "filter": "http && status_code >= 500",
            "duration_s": 60,
            "preceding_s": 120,
            "trigger": {"condition": "http && status_code >= 500", "threshold": 3, "window_s": 60},
        }
        assert (await client.post(f"{base}/api/recordings", json=body)).status_code == 201
        assert (await job(client, base, "errors"))["state"] == "armed"
        calm = recent(2, seed=5, protocol="http")
        for d in calm:
            d.update(status=503, protocol="http", method="GET", path="/x")
        await publish(nats_server.url, [calm])
        await wait_stored(gw, 2)
        assert not (await job(client, base, "errors"))["runs"]  # two are not more than three
        burst = recent(5, seed=6)
        for d in burst:
            d.update(status=500, protocol="http", method="GET", path="/boom")
        await publish(nats_server.url, [burst])
        fired = await wait_for_async(
            "the trigger fired and its run took the preceding entries too",
            lambda: job(client, base, "errors"),
            lambda j: bool(j["runs"]) and j["runs"][0]["entries"] >= 7,
        )
        assert fired["trigger_fired"] >= 1 and fired["runs"][0]["trigger_fired_ns"]


async def test_roles_and_bad_jobs(nats_server: NatsServer, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(orjson.dumps({"tokens": [
        {"token": "v" * 32, "subject": "vic", "role": "viewer", "namespaces": ["*"]},
        {"token": "e" * 32, "subject": "ed", "role": "editor", "namespaces": ["shop"]},
    ]}).decode())  # fmt: skip
    gw = make_gateway(
        nats_server.url, tmp_path / "d", WIRETIDE_AUTH_TOKENS_FILE=str(tokens), **FAST, **absent_peers()
    )
    async with running(gw), httpx.AsyncClient(timeout=30) as client:
        base = f"http://{gw.gs.gateway_http}"
        viewer = {"authorization": "Bearer " + "v" * 32}
        editor = {"authorization": "Bearer " + "e" * 32}
        assert (await client.get(f"{base}/api/recordings")).status_code == 401
        assert (
            await client.post(f"{base}/api/recordings", json={"name": "a"}, headers=viewer)
        ).status_code == 403
        outside = {"name": "a", "namespaces": ["payments"]}
        assert (await client.post(f"{base}/api/recordings", json=outside, headers=editor)).status_code == 403
        made = await client.post(
            f"{base}/api/recordings", json={"name": "a", "duration_s": 5}, headers=editor
        )
        assert made.status_code == 201 and made.json()["namespaces"] == ["shop"]
        assert made.json()["created_by"] == "ed"
        bad_jobs: list[Any] = [{"name": "a b"}, {"name": "x", "filter": "status_code >="}]
        bad_jobs += [{"name": "x", "duration_s": -1}, {"name": "x", "upload": {"kind": "s3"}}, [1, 2]]
        for bad in bad_jobs:
            resp = await client.post(f"{base}/api/recordings", json=bad, headers=editor)
            assert resp.status_code == 400 and resp.json()["error"], (bad, resp.text)
        assert (await client.get(f"{base}/api/recordings/nope", headers=viewer)).status_code == 404
        assert (await client.get(f"{base}/api/recordings/a/runs/x/bundle", headers=viewer)).status_code == 404


async def test_jobs_and_runs_survive_a_restart(nats_server: NatsServer, tmp_path: Path) -> None:
    peers = absent_peers()
    gw = make_gateway(nats_server.url, tmp_path, **FAST, **peers)
    async with running(gw), httpx.AsyncClient(timeout=30) as client:
        base = f"http://{gw.gs.gateway_http}"
        await client.post(f"{base}/api/recordings", json={"name": "keep", "duration_s": 600})
        await wait_for_async("a run started", lambda: job(client, base, "keep"), lambda j: bool(j["runs"]))
    again = make_gateway(nats_server.url, tmp_path, **FAST, **peers)
    async with running(again), httpx.AsyncClient(timeout=30) as client:
        base = f"http://{again.gs.gateway_http}"
        j = await wait_for_async("the job is back", lambda: client.get(f"{base}/api/recordings/keep"),
                                 lambda r: r.status_code == 200)  # fmt: skip
        doc = j.json()
        assert doc["state"] == "recording" and len(doc["runs"]) == 1, orjson.dumps(doc).decode()

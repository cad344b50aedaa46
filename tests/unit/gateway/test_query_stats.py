"""`/api/stats` counts errors by the protocol table, as the tracer does: a gRPC call is judged by its
`grpc_status`, not by the HTTP 200 under it; and the table itself is served at `/api/protocols`."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from tests.helpers.entries import entry
from wiretide.common.auth import Authenticator
from wiretide.common.entry import UlidGenerator
from wiretide.common.protocols import table_json
from wiretide.common.settings import load_settings
from wiretide.gateway.api.rest import build_app
from wiretide.gateway.query import Completeness, QueryService
from wiretide.gateway.service import GatewaySettings
from wiretide.gateway.store import SqliteStore

T0 = 1_700_000_000_000_000_000


def grpc_call(gen: UlidGenerator, n: int, grpc_status: int) -> dict[str, Any]:
    doc = entry(gen, T0 + n * 1_000_000, random.Random(n), protocol="grpc", status=200, method="POST")
    doc.update(path="/shop.Orders/Get", request={"service": "shop.Orders", "method": "Get"})
    doc["response"] = {"status": 200, "grpc_status": grpc_status, "headers": {}}
    return doc


async def test_a_grpc_call_failing_with_unavailable_over_http_200_counts_as_an_error(tmp_path: Path) -> None:
    gen = UlidGenerator()
    docs = [grpc_call(gen, 0, 0), grpc_call(gen, 1, 14), grpc_call(gen, 2, 5), grpc_call(gen, 3, 0)]
    store = SqliteStore(tmp_path / "entries.db")
    try:
        store.insert_many(docs)
        stats = await QueryService(store, Completeness()).stats("grpc", by="protocol")
    finally:
        store.close()
    (group,) = stats["groups"]
    # UNAVAILABLE (14) is the server's fault; NOT_FOUND (5) is the caller's and not counted.
    assert (group["key"], group["count"], group["errors"]) == ("grpc", 4, 1)


async def test_stats_by_status_class_read_grpc_outcomes_not_http_classes(tmp_path: Path) -> None:
    gen = UlidGenerator()
    docs = [grpc_call(gen, 0, 0), grpc_call(gen, 1, 14)]
    store = SqliteStore(tmp_path / "entries.db")
    try:
        store.insert_many(docs)
        stats = await QueryService(store, Completeness()).stats("", by="status_class")
    finally:
        store.close()
    assert {g["key"]: g["errors"] for g in stats["groups"]} == {"ok": 0, "error": 1}


async def test_the_protocol_table_is_served_as_json_and_documented() -> None:
    gs = load_settings(GatewaySettings, "gateway", {"WIRETIDE_AUTH_ALLOWED_HOSTS": "gateway"})
    gw = SimpleNamespace(gs=gs, auth=Authenticator())
    transport = httpx.ASGITransport(app=build_app(gw))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        served = await client.get("/api/protocols")
        spec = (await client.get("/api/openapi.json")).json()
    assert served.status_code == 200
    assert served.json() == table_json()
    assert served.json()["protocols"]["grpc"]["family"] == "rpc"
    assert "/api/protocols" in spec["paths"]

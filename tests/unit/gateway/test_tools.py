"""The console's and MCP's tools answer as the API does: within the caller's namespaces, bounded, and
saying how complete they are; bad arguments and unknown tools are answers the model can read.

Entries live in a real SQLite store; the tracer and the agents service are a small in-test peer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.entries import entries, entry
from wiretide.common.auth import ALL_NAMESPACES, NamespaceScope, Principal, Role
from wiretide.common.entry import UlidGenerator
from wiretide.gateway.query import Completeness, QueryService
from wiretide.gateway.store import SqliteStore
from wiretide.gateway.tools import (
    MAX_ENTRIES,
    MAX_RESULT_BYTES,
    TOOLS,
    Tools,
    UpstreamUnavailable,
)

ADMIN = Principal("root", Role.ADMIN, ALL_NAMESPACES, "token")
SHOP_VIEWER = Principal("alice", Role.VIEWER, NamespaceScope.of(["shop"]), "token")
NOBODY = Principal("mallory", Role.NONE, ALL_NAMESPACES, "token")
DOCS = entries(400, seed=7)


class Peers:
    """The tracer and the agents service as the tools see them."""

    def __init__(self, spans: list[dict[str, Any]] | None = None, down: bool = False) -> None:
        self.spans = spans or []
        self.down = down
        self.map_queries: list[str] = []

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        if self.down:
            raise UpstreamUnavailable("the tracer service is unavailable: UNAVAILABLE")
        if not self.spans:
            raise LookupError(f"trace {trace_id} not found")
        return [dict(s) for s in self.spans]

    async def service_map(self, query: str, window_ns: int) -> dict[str, Any]:
        self.map_queries.append(query)
        nodes = [
            {"id": "shop/web", "name": "web", "namespace": "shop", "kind": "service"},
            {"id": "shop/api", "name": "api", "namespace": "shop", "kind": "service"},
            {"id": "payments/db", "name": "db", "namespace": "payments", "kind": "service"},
            {"id": "kube-system/dns", "name": "dns", "namespace": "kube-system", "kind": "service"},
        ]
        edge = {
            "protocol": "http",
            "request_rate": 1.0,
            "error_rate": 0.0,
            "p50_ms": 1.0,
            "p95_ms": 2.0,
            "p99_ms": 3.0,
        }
        edges = [
            {"source": "shop/web", "destination": "shop/api", "requests": 10, **edge},
            {"source": "shop/api", "destination": "payments/db", "requests": 5, **edge},
            {"source": "payments/db", "destination": "kube-system/dns", "requests": 50, **edge},
        ]
        return {"nodes": nodes, "edges": edges, "window": {}, "records_evicted": 0}

    async def agents(self) -> list[dict[str, Any]]:
        if self.down:
            raise UpstreamUnavailable("the agents service is unavailable: UNAVAILABLE")
        return [{"name": f"a{i}", "enabled": True, "state": "running", "last_error": None,
                 "invocations": i, "failures": 0} for i in range(150)]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "entries.sqlite3")
    s.insert_many(DOCS)
    yield s
    s.close()


def tools(store: SqliteStore, peers: Peers | None = None) -> Tools:
    return Tools(QueryService(store, Completeness()), peers or Peers())


def in_shop(doc: dict[str, Any]) -> bool:
    return "shop" in (doc["src"].get("namespace"), doc["dst"].get("namespace"))


async def test_every_tool_has_a_json_schema_of_an_object_with_its_arguments() -> None:
    names = [t.name for t in TOOLS]
    assert names == ["query_entries", "get_entry", "stats", "service_map", "get_trace", "list_agents"]
    for t in TOOLS:
        assert t.parameters["type"] == "object" and t.parameters["additionalProperties"] is False
        assert t.openai()["function"]["parameters"] is t.parameters


async def test_query_entries_answers_newest_first_one_line_each_and_says_how_complete(
    store: SqliteStore,
) -> None:
    result = await tools(store).call(
        "query_entries", '{"kfl": "http && status_code >= 500", "limit": 5}', ADMIN
    )
    assert result.ok
    rows = result.content["entries"]
    expected = sorted((d for d in DOCS if d["protocol"] == "http" and d["status"] >= 500),
                      key=lambda d: d["timestamp"], reverse=True)[:5]  # fmt: skip
    assert [r["id"] for r in rows] == [d["id"] for d in expected]
    assert set(rows[0]) >= {"id", "time", "protocol", "src", "dst", "method", "path", "status", "elapsed_ms"}
    assert "request" not in rows[0] and "response" not in rows[0]
    assert result.content["completeness"]["returned"] == 5
    assert result.content["completeness"]["more"] is True
    assert result.cited == tuple(d["id"] for d in expected)


async def test_a_viewer_scoped_to_shop_never_receives_an_entry_outside_shop(store: SqliteStore) -> None:
    t = tools(store)
    result = await t.call("query_entries", {"kfl": "", "limit": MAX_ENTRIES}, SHOP_VIEWER)
    by_id = {d["id"]: d for d in DOCS}
    assert result.content["entries"]
    assert all(in_shop(by_id[r["id"]]) for r in result.content["entries"])
    outside = next(d for d in DOCS if not in_shop(d))
    got = await t.call("get_entry", {"id": outside["id"]}, SHOP_VIEWER)
    assert not got.ok and "no entry" in got.content["error"]
    assert (await t.call("get_entry", {"id": outside["id"]}, ADMIN)).ok
    stats = await t.call("stats", {"group_by": "protocol"}, SHOP_VIEWER)
    assert stats.content["total"] == sum(1 for d in DOCS if in_shop(d))


async def test_a_query_cannot_escape_the_namespace_scope_with_an_or(store: SqliteStore) -> None:
    result = await tools(store).call(
        "query_entries", {"kfl": 'true || dst.namespace == "payments"'}, SHOP_VIEWER
    )
    by_id = {d["id"]: d for d in DOCS}
    assert all(in_shop(by_id[r["id"]]) for r in result.content.get("entries", []))


async def test_a_principal_without_a_role_gets_nothing(store: SqliteStore) -> None:
    result = await tools(store).call("query_entries", {}, NOBODY)
    assert not result.ok and "viewer" in result.content["error"]


async def test_limits_above_the_cap_are_capped_and_say_so(store: SqliteStore) -> None:
    result = await tools(store).call("query_entries", {"limit": 10_000}, ADMIN)
    assert len(result.content["entries"]) == MAX_ENTRIES
    assert result.content["completeness"]["limit_capped"] is True


async def test_a_large_body_is_cut_and_the_answer_stays_within_its_byte_bound(tmp_path: Path) -> None:
    gen = UlidGenerator()
    doc = entry(gen, 1_700_000_000_000_000_000, random.Random(1), protocol="http", method="POST", status=200)
    doc["request"] = {"headers": {f"x-h{i}": "v" * 300 for i in range(400)}, "body": "A" * 1_000_000}
    s = SqliteStore(tmp_path / "big.sqlite3")
    try:
        s.insert_many([doc])
        result = await tools(s).call("get_entry", {"id": doc["id"]}, ADMIN)
    finally:
        s.close()
    assert result.ok
    assert len(result.text().encode()) <= MAX_RESULT_BYTES
    assert result.content["entry"]["id"] == doc["id"]
    assert "[cut: 1000000 chars]" in result.content["entry"]["request"]["body"]
    assert result.content["completeness"]["cut_for_size"]["strings_cut"] >= 1


@pytest.mark.parametrize(
    ("name", "arguments", "says"),
    [
        ("query_entries", "{not json", "not JSON"),
        ("query_entries", "[1, 2]", "JSON object"),
        ("query_entries", {"kfl": 5}, "'kfl' must be a string"),
        ("query_entries", {"limit": "ten"}, "'limit' must be an integer"),
        ("query_entries", {"limit": 0}, "at least 1"),
        ("query_entries", {"sql": "drop table"}, "unknown: sql"),
        ("query_entries", {"kfl": "status_code >>= 5"}, "invalid query"),
        ("get_entry", {}, "needs 'id'"),
        ("stats", {"group_by": "colour"}, "must be one of"),
        ("service_map", {"window": "yesterday"}, "window must be a duration"),
        ("get_trace", {"id": "xyz"}, "32 hex digits"),
        ("drop_tables", {}, "unknown tool 'drop_tables'"),
    ],
)  # fmt: skip
async def test_bad_arguments_and_unknown_tools_are_errors_the_model_can_read(
    store: SqliteStore, name: str, arguments: Any, says: str
) -> None:
    result = await tools(store).call(name, arguments, ADMIN)
    assert not result.ok
    assert says in result.content["error"], result.content
    orjson.loads(result.text())


async def test_the_service_map_is_scoped_in_the_query_sent_and_in_what_comes_back(store: SqliteStore) -> None:
    peers = Peers()
    result = await tools(store, peers).call("service_map", {"window": "5m"}, SHOP_VIEWER)
    assert result.ok
    assert "shop" in peers.map_queries[-1]
    edges = {(e["source"], e["destination"]) for e in result.content["edges"]}
    assert edges == {("shop/web", "shop/api"), ("shop/api", "payments/db")}
    admin = await tools(store, peers).call("service_map", {}, ADMIN)
    assert admin.content["edges"][0]["requests"] == 50  # busiest first
    assert peers.map_queries[-1] == ""


async def test_a_trace_shows_a_scoped_viewer_only_the_spans_of_entries_it_may_see(store: SqliteStore) -> None:
    inside = next(d for d in DOCS if in_shop(d))
    outside = next(d for d in DOCS if not in_shop(d))
    span: dict[str, Any] = {"parent_span_id": None, "service": "web", "name": "GET /", "kind": "server",
                            "duration_us": 1500, "error": False, "link": "header", "confidence": 1.0,
                            "attributes": {}}  # fmt: skip
    spans = [
        {**span, "span_id": "a" * 16, "start_ns": 2, "entry_id": inside["id"]},
        {**span, "span_id": "b" * 16, "start_ns": 1, "entry_id": outside["id"]},
    ]
    t = tools(store, Peers(spans))
    viewer = await t.call("get_trace", {"id": "F" * 32}, SHOP_VIEWER)
    assert [s["entry_id"] for s in viewer.content["spans"]] == [inside["id"]]
    assert viewer.content["completeness"]["spans_outside_your_namespaces"] == 1
    assert viewer.cited == (inside["id"],)
    admin = await t.call("get_trace", {"id": "f" * 32}, ADMIN)
    assert [s["entry_id"] for s in admin.content["spans"]] == [outside["id"], inside["id"]]  # by start


async def test_an_unreachable_peer_is_an_error_answer_not_an_exception(store: SqliteStore) -> None:
    t = tools(store, Peers(down=True))
    for name in ("get_trace", "list_agents"):
        result = await t.call(name, {"id": "a" * 32} if name == "get_trace" else {}, ADMIN)
        assert not result.ok and "unavailable" in result.content["error"]


async def test_list_agents_is_capped_and_says_how_many_there_are(store: SqliteStore) -> None:
    result = await tools(store).call("list_agents", None, ADMIN)
    assert len(result.content["agents"]) == 100
    assert result.content["completeness"] == {"agents_total": 150, "agents_shown": 100}

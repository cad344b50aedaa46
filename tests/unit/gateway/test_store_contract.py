"""One suite, both stores: SQLite (embedded) and MongoDB (over the wire, against nx-27017 — see the
README for what was and was not verified against a real mongod)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.entries import entries
from tests.helpers.mongo import WireMongo
from wiretide.common.kfl import compile_predicate
from wiretide.gateway.store import Cursor, EntryStore, SqliteStore
from wiretide.gateway.store.mongo import MongoStore

QUERIES = [
    "",
    "http",
    "http && status_code >= 500",
    'dst.namespace == "payments"',
    'path.contains("/api/")',
    'dns && "example.com" in dns_questions',
    'method == "POST" || method == "PUT"',
    "!http && !dns",
    'src.name == "web" && dst.name.startsWith("ca")',
    'request.headers["user-agent"] == "curl/8"',
    'elapsed_time > duration("250ms")',
    "grpc && grpc_status != 0",
]


@pytest.fixture(scope="module")
def wire_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WireMongo]:
    server = WireMongo(tmp_path_factory.mktemp("mongo"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "mongodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EntryStore]:
    if request.param == "sqlite":
        s: EntryStore = SqliteStore(tmp_path / "entries.sqlite3")
    else:
        server = request.getfixturevalue("wire_mongo")
        s = MongoStore(server.url, database=f"t{time.time_ns()}")
    yield s
    s.close()


DOCS = entries(600, seed=7)


def newest_first(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in sorted(docs, key=lambda d: (d["timestamp"], d["id"]), reverse=True)]


def test_inserts_are_idempotent_by_id(store: EntryStore) -> None:
    assert store.insert_many(DOCS[:100]) == 100
    assert store.insert_many(DOCS[50:150]) == 50
    assert store.count() == 150
    assert store.get(DOCS[10]["id"]) == DOCS[10]
    assert store.get("no-such-id") is None


@pytest.mark.parametrize("query", QUERIES)
def test_a_scan_returns_exactly_what_the_predicate_accepts_newest_first(
    store: EntryStore, query: str
) -> None:
    if store.kind == "mongodb" and "dns_questions" in query:
        pytest.skip("nx-27017 does not follow dotted paths into arrays of documents (MongoDB does)")
    store.insert_many(DOCS)
    expected = newest_first([d for d in DOCS if compile_predicate(query)(d)]) if query else newest_first(DOCS)
    page = store.scan(query, limit=10_000)
    assert [d["id"] for d in page.docs] == expected
    assert page.exhausted and page.next is None


@pytest.mark.parametrize("query", ["", "http && status_code >= 500", 'path.contains("/api/")'])
def test_pages_chain_through_cursors_without_gaps_or_repeats(store: EntryStore, query: str) -> None:
    store.insert_many(DOCS)
    seen: list[str] = []
    before = None
    for _ in range(100):
        page = store.scan(query, limit=37, before=before)
        seen += [d["id"] for d in page.docs]
        if page.next is None:
            break
        before = page.next
    pred = compile_predicate(query) if query else (lambda _d: True)
    assert seen == newest_first([d for d in DOCS if pred(d)])


def test_after_returns_only_newer_entries(store: EntryStore) -> None:
    store.insert_many(DOCS)
    pivot = Cursor.of(sorted(DOCS, key=lambda d: (d["timestamp"], d["id"]))[500])
    page = store.scan("", limit=1000, after=pivot)
    assert len(page.docs) == 99
    assert all((d["timestamp"], d["id"]) > (pivot.ts, pivot.id) for d in page.docs)


def test_a_scan_that_hits_its_bound_says_so_and_can_continue(store: EntryStore) -> None:
    store.insert_many(DOCS)
    query = "size(path) > 1000"  # evaluated in Python by both stores: nothing is that long
    page = store.scan(query, limit=10, max_scan=100)
    assert page.docs == []
    assert not page.exhausted
    assert page.scanned >= 100 and page.next is not None
    rest = store.scan(query, limit=10, before=page.next, max_scan=10_000)
    assert rest.exhausted and rest.scanned == 600 - page.scanned


def test_retention_deletes_by_age_and_oldest_first(store: EntryStore) -> None:
    store.insert_many(DOCS)
    cutoff = sorted(d["timestamp"] for d in DOCS)[100]
    assert store.delete_older_than(cutoff) == 100
    assert store.count() == 500
    assert store.delete_oldest(50) == 50
    remaining = store.scan("", limit=1000).docs
    assert [d["id"] for d in remaining] == newest_first(DOCS)[:450]
    assert store.used_bytes() > 0


def test_cursors_from_elsewhere_are_refused() -> None:
    for bad in ("", "abc", "12_", "_x", "1" * 30 + "_x", "12_" + "x" * 100):
        with pytest.raises(ValueError):
            Cursor.decode(bad)
    assert Cursor.decode(Cursor(5, "a_b").encode()) == Cursor(5, "a_b")

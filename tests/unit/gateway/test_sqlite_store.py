"""What only the SQLite store does: its on-disk layout, the upgrade from the first layout, and keeping
JSON as it arrived."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.entries import entries
from wiretide.common.kfl import compile_predicate
from wiretide.gateway.store import SqliteStore, StoreError
from wiretide.gateway.store.sqlite import SCHEMA_VERSION

# The first layout (user_version 0), as gateways before the grouped layout wrote it.
V0_SCHEMA = """
CREATE TABLE entries (
    id TEXT PRIMARY KEY, ts INTEGER NOT NULL, protocol TEXT NOT NULL, node TEXT, status INTEGER,
    method TEXT, path TEXT, src_ns TEXT, src_name TEXT, dst_ns TEXT, dst_name TEXT, elapsed INTEGER,
    doc BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX entries_ts ON entries (ts);
CREATE INDEX entries_protocol_ts ON entries (protocol, ts);
CREATE INDEX entries_status_ts ON entries (status, ts);
CREATE INDEX entries_method_ts ON entries (method, ts);
CREATE INDEX entries_node_ts ON entries (node, ts);
CREATE INDEX entries_src_ns_ts ON entries (src_ns, ts);
CREATE INDEX entries_src_name_ts ON entries (src_name, ts);
CREATE INDEX entries_dst_ns_ts ON entries (dst_ns, ts);
CREATE INDEX entries_dst_name_ts ON entries (dst_name, ts);
"""

DOCS = entries(400, seed=11)


def end(doc: dict[str, Any], side: str, key: str) -> str | None:
    value = doc.get(side, {}).get(key)
    return value if isinstance(value, str) else None


def write_v0(path: Path, docs: list[dict[str, Any]]) -> None:
    db = sqlite3.connect(path)
    db.executescript(V0_SCHEMA)
    db.executemany(
        "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (d["id"], d["timestamp"], d["protocol"], d.get("node"), d.get("status"), d.get("method"),
             d.get("path"), end(d, "src", "namespace"), end(d, "src", "name"), end(d, "dst", "namespace"),
             end(d, "dst", "name"), d.get("elapsed_us"), b"j" + orjson.dumps(d))
            for d in docs
        ],
    )  # fmt: skip
    db.commit()
    db.close()


def newest_first(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in sorted(docs, key=lambda d: (d["timestamp"], d["id"]), reverse=True)]


def test_a_store_in_the_first_layout_is_migrated_with_every_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "entries.sqlite3"
    write_v0(db, DOCS)
    with caplog.at_level(logging.WARNING, logger="wiretide.gateway.store.sqlite"):
        store = SqliteStore(db)
    assert any("migrating" in r.getMessage() for r in caplog.records)
    assert store.count() == len(DOCS)
    assert store.get(DOCS[7]["id"]) == DOCS[7]
    for query in ("", 'dst.namespace == "payments"', "http && status_code >= 500", 'path.contains("/api/")'):
        want = newest_first([d for d in DOCS if compile_predicate(query)(d)]) if query else newest_first(DOCS)
        assert [d["id"] for d in store.scan(query, limit=1000).docs] == want
    assert store.insert_many(DOCS[:50]) == 0  # still idempotent by id after the migration
    store.close()
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "entries_v0" not in {n for (n,) in c.execute("SELECT name FROM sqlite_master")}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wiretide.gateway.store.sqlite"):
        again = SqliteStore(db)  # opening a current store migrates nothing
    assert not caplog.records
    assert again.count() == len(DOCS)
    again.close()


def test_a_store_written_by_a_newer_gateway_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "entries.sqlite3"
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(db)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_json_handed_in_as_received_is_stored_as_is(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    docs = DOCS[:20]
    raw = [orjson.dumps(d, option=orjson.OPT_INDENT_2) for d in docs]  # not how the store would write it
    assert store.insert_many(docs, raw) == 20
    assert store.get(docs[3]["id"]) == docs[3]
    (blob,) = store._db.execute("SELECT doc FROM entries WHERE id = ?", (docs[3]["id"],)).fetchone()
    assert blob == b"j" + raw[3]
    with pytest.raises(ValueError):
        store.insert_many(docs, raw[:-1])
    store.close()


def test_a_failed_insert_forgets_the_combinations_it_introduced(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    new_kind = [dict(d, protocol="kafka", node="node-z", id=f"k{i}") for i, d in enumerate(DOCS[:5])]
    unbindable = {"id": ["not", "text"], "timestamp": 1, "protocol": "kafka", "node": "node-z"}
    with pytest.raises(StoreError):
        store.insert_many([*new_kind, unbindable])
    with pytest.raises(TypeError):
        store.insert_many([*new_kind, dict(DOCS[0], id="big", status=2**70)])  # not JSON-encodable
    assert store.count() == 0
    assert store.insert_many(new_kind) == 5  # the rolled-back combination is inserted again, not reused
    assert [d["id"] for d in store.scan('kafka && node_name == "node-z"', limit=10).docs] == newest_first(
        new_kind
    )
    store.close()


def test_an_entry_with_fields_of_unexpected_types_is_stored_and_found_by_the_residual(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    odd = [
        dict(DOCS[0], id="a", status="500", src="nowhere", path=7),
        dict(DOCS[1], id="b", status=True, dst={"namespace": 3, "name": None}),
        dict(DOCS[2], id="c", status=2.5e2, method=None),
    ]
    assert store.insert_many(odd) == 3
    for query in (
        "status_code >= 500",
        'path.startsWith("/")',
        'dst.namespace == "payments"',
        '!(src.name == "web")',
        "status == 250",
        "",
    ):
        pred = compile_predicate(query) if query else (lambda _d: True)
        assert [d["id"] for d in store.scan(query, limit=10).docs] == newest_first(
            [d for d in odd if pred(d)]
        )
    store.close()


@pytest.mark.parametrize("budget", [0, 10**9])
@pytest.mark.parametrize(
    "query",
    ['node_name == "node-a"', 'method == "DELETE" && src.name == "web"', "dns", "status_code == 404 || grpc"],
)
def test_every_search_strategy_returns_the_same_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int, query: str
) -> None:
    # Tiny windows and a budget of nothing (or plenty) send each query down every path: time-ordered
    # windows, search-and-sort within the budget, and the planner's own plan.
    monkeypatch.setattr("wiretide.gateway.store.sqlite.WINDOWS", (4, 16))
    monkeypatch.setattr("wiretide.gateway.store.sqlite.PROBE_STEPS", budget)
    monkeypatch.setattr("wiretide.gateway.store.sqlite.WALK_STEPS", budget)
    store = SqliteStore(tmp_path / "s.db")
    store.insert_many(DOCS)
    seen: list[str] = []
    before = None
    while True:
        page = store.scan(query, limit=9, before=before)
        seen += [d["id"] for d in page.docs]
        if page.next is None:
            break
        before = page.next
    assert seen == newest_first([d for d in DOCS if compile_predicate(query)(d)])
    store.close()

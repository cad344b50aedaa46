"""What only the SQLite store does: its on-disk layout, the upgrades from earlier layouts, segments, and
keeping JSON as it arrived."""

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
from wiretide.gateway.store.sqlite import SCHEMA_VERSION, compress_from, pack

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

# The grouped layout without segments (user_version 1).
V1_SCHEMA = """
CREATE TABLE calls (call INTEGER PRIMARY KEY, protocol TEXT NOT NULL, node TEXT, status INTEGER, method TEXT);
CREATE INDEX calls_protocol ON calls (protocol);
CREATE INDEX calls_node ON calls (node);
CREATE INDEX calls_status ON calls (status);
CREATE INDEX calls_method ON calls (method);
CREATE TABLE peers (peer INTEGER PRIMARY KEY, src_ns TEXT, src_name TEXT, dst_ns TEXT, dst_name TEXT);
CREATE INDEX peers_src_ns ON peers (src_ns);
CREATE INDEX peers_src_name ON peers (src_name);
CREATE INDEX peers_dst_ns ON peers (dst_ns);
CREATE INDEX peers_dst_name ON peers (dst_name);
CREATE TABLE entries (
    id TEXT NOT NULL, ts INTEGER NOT NULL, call INTEGER NOT NULL, peer INTEGER NOT NULL, path TEXT,
    doc BLOB NOT NULL, PRIMARY KEY (ts, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX entries_id ON entries (id);
CREATE INDEX entries_call ON entries (call);
CREATE INDEX entries_peer ON entries (peer);
PRAGMA user_version = 1;
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


def write_v1(path: Path, docs: list[dict[str, Any]]) -> None:
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    numbers: dict[tuple[str, tuple[Any, ...]], int] = {}

    def number(table: str, values: tuple[Any, ...]) -> int:
        if (table, values) not in numbers:
            marks = ",".join("?" * len(values))
            numbers[table, values] = db.execute(
                f"INSERT INTO {table} VALUES (NULL,{marks})", values
            ).lastrowid
        return numbers[table, values]

    for d in docs:
        call = number("calls", (d["protocol"], d.get("node"), d.get("status"), d.get("method")))
        peer = number(
            "peers", tuple(end(d, side, key) for side in ("src", "dst") for key in ("namespace", "name"))
        )
        db.execute(
            "INSERT INTO entries VALUES (?,?,?,?,?,?)",
            (d["id"], d["timestamp"], call, peer, d.get("path"), pack(orjson.dumps(d))),
        )
    db.commit()
    db.close()


def all_pages(store: SqliteStore, query: str, limit: int = 9) -> list[str]:
    seen: list[str] = []
    before = None
    while True:
        page = store.scan(query, limit=limit, before=before)
        seen += [d["id"] for d in page.docs]
        if page.next is None:
            return seen
        before = page.next


SEARCHES = ("", 'dst.namespace == "payments"', "http && status_code >= 500", 'path.contains("/api/")',
            'method == "DELETE" && src.name == "web"', "status_code == 418")  # fmt: skip


def newest_first(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in sorted(docs, key=lambda d: (d["timestamp"], d["id"]), reverse=True)]


def check_migrated(store: SqliteStore) -> None:
    """Every migrated entry is there, idempotent by id; new writes go to a new segment and every
    search finds old and new together, newest first. Closes the store."""
    assert store.count() == len(DOCS)
    assert store.get(DOCS[7]["id"]) == DOCS[7]
    assert store.insert_many(DOCS[:50]) == 0  # still idempotent by id after the migration
    more = entries(30, seed=12)
    assert store.insert_many(more) == 30  # into a new segment, found with the migrated ones
    for query in SEARCHES:
        want = [d for d in DOCS + more if not query or compile_predicate(query)(d)]
        assert all_pages(store, query) == newest_first(want)
    store.close()


def test_a_store_in_the_first_layout_is_migrated_with_every_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "entries.sqlite3"
    write_v0(db, DOCS)
    with caplog.at_level(logging.WARNING, logger="wiretide.gateway.store.sqlite"):
        store = SqliteStore(db)
    assert any("migrating" in r.getMessage() for r in caplog.records)
    for query in ("", 'dst.namespace == "payments"', "http && status_code >= 500", 'path.contains("/api/")'):
        want = newest_first([d for d in DOCS if compile_predicate(query)(d)]) if query else newest_first(DOCS)
        assert [d["id"] for d in store.scan(query, limit=1000).docs] == want
    check_migrated(store)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "entries_v0" not in {n for (n,) in c.execute("SELECT name FROM sqlite_master")}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wiretide.gateway.store.sqlite"):
        again = SqliteStore(db)  # opening a current store migrates nothing
    assert not caplog.records
    assert again.count() == len(DOCS) + 30
    again.close()


def test_a_store_in_the_grouped_layout_is_migrated_to_segments_with_every_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "entries.sqlite3"
    write_v1(db, DOCS)
    with caplog.at_level(logging.WARNING, logger="wiretide.gateway.store.sqlite"):
        store = SqliteStore(db)
    assert any("migrating" in r.getMessage() for r in caplog.records)
    check_migrated(store)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("SELECT count(*) FROM entries WHERE seg = 0").fetchone()[0] == len(DOCS)
        assert c.execute("SELECT seg FROM segments ORDER BY seg").fetchall() == [(0,), (1,)]
        index = c.execute("SELECT sql FROM sqlite_master WHERE name = 'entries_peer'").fetchone()[0]
        assert "(seg, peer)" in index
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wiretide.gateway.store.sqlite"):
        again = SqliteStore(db)  # opening a current store migrates nothing
    assert not caplog.records
    assert again.count() == len(DOCS) + 30
    again.close()


def test_a_failed_migration_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "entries.sqlite3"
    write_v1(db, DOCS)
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE segments (x)")  # in the way of the migration's own
    with pytest.raises(StoreError):
        SqliteStore(db)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        assert c.execute("SELECT count(*) FROM entries").fetchone()[0] == len(DOCS)
        assert "seg" not in {row[1] for row in c.execute("PRAGMA table_info(entries)")}


def test_entries_fill_segments_of_segment_rows_across_batches_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wiretide.gateway.store.sqlite.SEGMENT_ROWS", 7)
    store = SqliteStore(tmp_path / "s.db")
    assert store.insert_many(DOCS[:10]) == 10  # 7 in segment 0, 3 in segment 1
    assert store.insert_many(DOCS[10:30]) == 20  # 4 more in 1, 7 in 2, 7 in 3, 2 in 4
    store.close()
    store = SqliteStore(tmp_path / "s.db")  # a restart starts a new segment
    # 5 already stored: they count towards segment 5 all the same (7 rows, 2 of them new), then 7 and 1.
    assert store.insert_many(DOCS[25:40]) == 10
    rows = store._db.execute("SELECT seg, count(*) FROM entries GROUP BY seg ORDER BY seg").fetchall()
    assert rows == [(0, 7), (1, 7), (2, 7), (3, 7), (4, 2), (5, 2), (6, 7), (7, 1)]
    assert store._db.execute("SELECT seg FROM segments").fetchall() == [(s,) for s in range(8)]
    for query in SEARCHES:
        want = [d for d in DOCS[:40] if not query or compile_predicate(query)(d)]
        assert all_pages(store, query) == newest_first(want)
    store.close()


def test_a_failed_insert_leaves_its_segment_to_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wiretide.gateway.store.sqlite.SEGMENT_ROWS", 4)
    store = SqliteStore(tmp_path / "s.db")
    unbindable = {"id": ["not", "text"], "timestamp": 1, "protocol": "kafka"}
    with pytest.raises(StoreError):
        store.insert_many([*DOCS[:6], unbindable])
    assert store._db.execute("SELECT count(*) FROM segments").fetchone()[0] == 0
    assert store.insert_many(DOCS[:6]) == 6
    rows = store._db.execute("SELECT seg, count(*) FROM entries GROUP BY seg ORDER BY seg").fetchall()
    assert rows == [(0, 4), (1, 2)]
    assert store._db.execute("SELECT seg FROM segments").fetchall() == [(0,), (1,)]
    store.close()


def test_maintenance_forgets_segments_that_retention_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wiretide.gateway.store.sqlite.SEGMENT_ROWS", 10)
    store = SqliteStore(tmp_path / "s.db")
    docs = sorted(DOCS[:50], key=lambda d: d["timestamp"])
    store.insert_many(docs)  # segments 0-4, oldest entries first
    assert store.delete_oldest(25) == 25  # segments 0 and 1 emptied, 2 half
    store.maintain()
    assert store._db.execute("SELECT seg FROM segments").fetchall() == [(2,), (3,), (4,)]
    assert store.delete_oldest(25) == 25  # all of them: the segment being filled stays
    store.maintain()
    assert store._db.execute("SELECT seg FROM segments").fetchall() == []
    assert store.insert_many(DOCS[50:55]) == 5
    assert store._db.execute("SELECT seg FROM segments").fetchall() == [(5,)]
    assert all_pages(store, 'dst.namespace == "payments"') == newest_first(
        [d for d in DOCS[50:55] if d["dst"]["namespace"] == "payments"]
    )
    store.close()


def test_a_segment_that_retention_emptied_while_being_filled_is_listed_again_by_its_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wiretide.gateway.store.sqlite.SEGMENT_ROWS", 10)
    monkeypatch.setattr("wiretide.gateway.store.sqlite.WINDOWS", (1, 2))  # searches go through the index
    store = SqliteStore(tmp_path / "s.db")
    store.insert_many(DOCS[:5])  # segment 0, half full
    assert store.delete_oldest(5) == 5
    store.maintain()
    assert store._db.execute("SELECT seg FROM segments").fetchall() == []
    store.insert_many(DOCS[5:20])  # 5 more into segment 0, then 10 into 1
    assert store._db.execute("SELECT seg FROM segments").fetchall() == [(0,), (1,)]
    for query in SEARCHES:
        want = [d for d in DOCS[5:20] if not query or compile_predicate(query)(d)]
        assert all_pages(store, query, limit=4) == newest_first(want)
    store.close()


@pytest.mark.parametrize("layout", ["new", "migrated"])
def test_a_filter_no_combination_matches_is_answered_by_the_group_index_within_a_small_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    # 4,000 entries in one segment (migrated) or in 4: reading them takes far more than 300 VM steps,
    # a search of the index for combinations that do not exist takes a few.
    monkeypatch.setattr("wiretide.gateway.store.sqlite.SEGMENT_ROWS", 1000)
    monkeypatch.setattr("wiretide.gateway.store.sqlite.WINDOWS", (1, 2))
    monkeypatch.setattr("wiretide.gateway.store.sqlite.PROBE_STEPS", 300)
    monkeypatch.setattr("wiretide.gateway.store.sqlite.WALK_STEPS", 0)
    docs = entries(4000, seed=5)
    db = tmp_path / "entries.sqlite3"
    if layout == "migrated":
        write_v1(db, docs)
        store = SqliteStore(db)
    else:
        store = SqliteStore(db)
        for first in range(0, len(docs), 1000):
            store.insert_many(docs[first : first + 1000])
        store.maintain()
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    for query in ('node_name == "node-z"', 'src.name == "nobody"', "status_code == 418"):
        assert store.scan(query, limit=10).docs == []
    store._db.set_trace_callback(None)
    searched = [q for q in statements if "(SELECT ts, id FROM entries JOIN" in q]
    assert len(searched) == 3
    assert all("+ts DESC" in q for q in searched)  # each answered by the budgeted search, none by a scan
    store.close()


def test_statistics_state_rows_per_segment_and_per_combination_in_a_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wiretide.gateway.store.sqlite.SEGMENT_ROWS", 40)
    store = SqliteStore(tmp_path / "s.db")
    store.insert_many(DOCS)  # 10 segments
    store.maintain()
    stats = dict(store._db.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'entries'").fetchall())
    rows = int(stats["entries_id"].split()[0])
    for table, key in (("calls", "call"), ("peers", "peer")):
        (combinations,) = store._db.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert stats[f"entries_{key}"] == f"{rows} {rows // 10} {max(1, min(rows // 10, 40) // combinations)}"
    store.close()


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


def _padded(doc: dict[str, Any], size: int) -> tuple[dict[str, Any], bytes]:
    """`doc` with a response body that makes its JSON exactly `size` bytes."""
    doc = {**doc, "path": "/" + "p" * 200, "response": {"body": ""}}
    doc["response"]["body"] = "x" * (size - len(orjson.dumps(doc)))
    raw = orjson.dumps(doc)
    assert len(raw) == size
    return doc, raw


def test_json_that_fits_its_page_is_stored_uncompressed_and_larger_json_compressed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    threshold = compress_from(8192)
    assert store._compress_from == threshold
    small = [_padded(d, threshold - 1) for d in DOCS[:50]]
    large = [_padded(d, threshold) for d in DOCS[50:60]]
    docs = [d for d, _ in small + large]
    assert store.insert_many(docs, [raw for _, raw in small + large]) == 60
    blobs = dict(store._db.execute("SELECT id, doc FROM entries").fetchall())
    assert all(blobs[d["id"]] == b"j" + raw for d, raw in small)
    assert all(blobs[d["id"]][:1] == b"z" for d, _ in large)
    assert all(store.get(d["id"]) == d for d in docs)
    # Uncompressed rows at the threshold, with a long path, still fit their pages: no overflow page.
    overflow = "SELECT count(*) FROM dbstat WHERE name = 'entries' AND pagetype = 'overflow'"
    assert store._db.execute(overflow).fetchone()[0] == 0
    store.close()


def test_a_store_with_smaller_pages_compresses_from_a_smaller_size(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.db") as c:
        c.execute("PRAGMA page_size = 4096")
        c.execute("VACUUM")
    store = SqliteStore(tmp_path / "s.db")
    assert store._compress_from == compress_from(4096) < compress_from(8192)
    doc, raw = _padded(DOCS[0], compress_from(4096))
    store.insert_many([doc], [raw])
    assert store._db.execute("SELECT doc FROM entries").fetchone()[0][:1] == b"z"
    assert store.get(doc["id"]) == doc
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
    monkeypatch.setattr("wiretide.gateway.store.sqlite.SEGMENT_ROWS", 16)  # and the index in many segments
    store = SqliteStore(tmp_path / "s.db")
    for first in range(0, len(DOCS), 50):
        store.insert_many(DOCS[first : first + 50])
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

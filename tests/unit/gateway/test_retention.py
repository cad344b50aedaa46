"""Retention deletes by age and by size, oldest first, and counts what it deleted by reason."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.entries import entries
from wiretide.gateway.retention import Retention
from wiretide.gateway.store import SqliteStore


def test_entries_past_the_age_bound_are_deleted_and_counted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    now = time.time_ns()
    old = entries(300, seed=1, start_ns=now - 7200 * 10**9, step_ns=10**6)  # two hours ago
    new = entries(200, seed=2, start_ns=now - 60 * 10**9, step_ns=10**6)  # a minute ago
    store.insert_many(old + new)
    r = Retention(store, max_age_s=3600, max_bytes=0, interval_s=1)
    assert r.enforce(now) == {"age": 300, "size": 0}
    assert store.count() == 200
    assert r.enforce(now) == {"age": 0, "size": 0}
    assert r.deleted == {"age": 300, "size": 0}


def test_the_size_bound_deletes_the_oldest_until_the_store_fits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    docs = entries(20_000, seed=3)
    for i in range(0, len(docs), 1000):
        store.insert_many(docs[i : i + 1000])
    full = store.used_bytes()
    r = Retention(store, max_age_s=0, max_bytes=full // 2, interval_s=1)
    done = r.enforce()
    assert done["size"] > 0 and done["age"] == 0
    assert store.used_bytes() <= full // 2
    left = store.scan("", limit=100_000).docs
    newest = sorted(docs, key=lambda d: (d["timestamp"], d["id"]), reverse=True)
    assert [d["id"] for d in left] == [d["id"] for d in newest[: len(left)]]
    assert len(left) + done["size"] == 20_000

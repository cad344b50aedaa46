"""The SQLite entry store: WAL, batched idempotent inserts, indexed columns + the entry as compressed JSON.

Rule: an entry id is stored at most once (INSERT OR IGNORE on the primary key), so a batch that
is delivered again after a crash between commit and ack never duplicates rows.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id        TEXT PRIMARY KEY,
    ts        INTEGER NOT NULL,
    protocol  TEXT NOT NULL,
    node      TEXT,
    status    INTEGER,
    method    TEXT,
    path      TEXT,
    src_ns    TEXT,
    src_name  TEXT,
    dst_ns    TEXT,
    dst_name  TEXT,
    doc       BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_ts ON entries (ts);
CREATE INDEX IF NOT EXISTS entries_protocol_ts ON entries (protocol, ts);
CREATE INDEX IF NOT EXISTS entries_status_ts ON entries (status, ts);
CREATE INDEX IF NOT EXISTS entries_dst_ns_ts ON entries (dst_ns, ts);
CREATE INDEX IF NOT EXISTS entries_src_ns_ts ON entries (src_ns, ts);
"""

# zlib level 1: most of the size win for a fraction of the CPU of the default level.
COMPRESSION_LEVEL = 1


class StoreError(Exception):
    """The store cannot take or give entries (disk full, unwritable, corrupt)."""


def _end(doc: dict[str, Any], side: str, key: str) -> Any:
    end = doc.get(side)
    return end.get(key) if isinstance(end, dict) else None


def _row(doc: dict[str, Any]) -> tuple[Any, ...]:
    status = doc.get("status")
    return (
        doc["id"],
        doc["timestamp"],
        doc["protocol"],
        doc.get("node"),
        status if isinstance(status, int) and not isinstance(status, bool) else None,
        doc.get("method"),
        doc.get("path"),
        _end(doc, "src", "namespace"),
        _end(doc, "src", "name"),
        _end(doc, "dst", "namespace"),
        _end(doc, "dst", "name"),
        zlib.compress(orjson.dumps(doc), COMPRESSION_LEVEL),
    )


def decode_doc(blob: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(zlib.decompress(blob))
    return doc


class SqliteStore:
    """One connection, used from one thread at a time (callers serialise through a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert_many(self, docs: Sequence[dict[str, Any]]) -> int:
        """Insert in one transaction; returns how many were new. Raises StoreError, storing nothing."""
        rows = [_row(d) for d in docs]
        with self._lock:
            try:
                before = self._db.total_changes
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR IGNORE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
                return self._db.total_changes - before
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"insert failed: {exc}") from exc

    def latest(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            try:
                rows: Iterable[tuple[bytes]] = self._db.execute(
                    "SELECT doc FROM entries ORDER BY ts DESC, id DESC LIMIT ?", (limit,)
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"query failed: {exc}") from exc
        return [decode_doc(r[0]) for r in rows]

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM entries").fetchone()
        return int(n)

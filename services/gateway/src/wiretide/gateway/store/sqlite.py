"""The SQLite entry store (the embedded default): WAL, batched idempotent inserts, indexed columns for
the fields queries filter on, and the whole entry as zlib-compressed JSON.

Rule: an entry id is stored at most once (INSERT OR IGNORE on the primary key), so a batch that is
delivered again after a crash between commit and ack never duplicates rows; KFL is pushed down to
the indexed columns as far as it goes and the rest runs in Python on the decoded entry.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.common.kfl import compile_sql
from wiretide.gateway.store.base import DEFAULT_MAX_SCAN, Cursor, Page, StoreError, paged_scan

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
    elapsed   INTEGER,
    doc       BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_ts ON entries (ts);
CREATE INDEX IF NOT EXISTS entries_protocol_ts ON entries (protocol, ts);
CREATE INDEX IF NOT EXISTS entries_status_ts ON entries (status, ts);
CREATE INDEX IF NOT EXISTS entries_method_ts ON entries (method, ts);
CREATE INDEX IF NOT EXISTS entries_node_ts ON entries (node, ts);
CREATE INDEX IF NOT EXISTS entries_src_ns_ts ON entries (src_ns, ts);
CREATE INDEX IF NOT EXISTS entries_src_name_ts ON entries (src_name, ts);
CREATE INDEX IF NOT EXISTS entries_dst_ns_ts ON entries (dst_ns, ts);
CREATE INDEX IF NOT EXISTS entries_dst_name_ts ON entries (dst_name, ts);
"""

INSERT = (
    "INSERT OR IGNORE INTO entries (id, ts, protocol, node, status, method, path, src_ns, src_name,"
    " dst_ns, dst_name, elapsed, doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)

# WITHOUT ROWID keyed by id: every secondary index (col, ts) then ends in id, so "newest first"
# (ORDER BY ts DESC, id DESC) is read straight off an index instead of sorted.

# KFL variables that live in indexed (or at least uncompressed) columns.
COLUMNS: Final[dict[str, str]] = {
    "timestamp": "ts",
    "protocol": "protocol",
    "node_name": "node",
    "status_code": "status",
    "method": "method",
    "path": "path",
    "src.namespace": "src_ns",
    "src.name": "src_name",
    "dst.namespace": "dst_ns",
    "dst.name": "dst_name",
}

# zlib level 1: most of the size win for a fraction of the CPU of the default level.
COMPRESSION_LEVEL = 1
# Below this size compression saves little and costs more than the insert itself (zlib's set-up).
COMPRESS_FROM = 1024
RAW, ZLIB = b"j", b"z"
BUSY_TIMEOUT_S = 5.0
CACHE_KIB = 64 * 1024  # page cache: keeps the upper levels of ten indexes in memory at millions of rows
WINDOWS = (1_024, 16_384)  # newest rows tried in time order before a plan that sorts every match
PLAN_CACHE = 256  # plan shapes remembered (per WHERE clause)
WINDOW_DOC = "(SELECT doc FROM entries AS e WHERE e.id = w.id)"  # the blob, read only for a match
WINDOW_COLUMNS = "id, ts, protocol, node, status, method, path, src_ns, src_name, dst_ns, dst_name, elapsed"
REANALYZE_MIN_ROWS = 10_000  # re-sample statistics whenever the table has doubled past this
ANALYSIS_ROWS = 1000  # rows sampled per index by ANALYZE: enough for the planner, milliseconds to run


def _end(doc: dict[str, Any], side: str, key: str) -> Any:
    end = doc.get(side)
    value = end.get(key) if isinstance(end, dict) else None
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        else None
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _row(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        doc["id"],
        doc["timestamp"],
        doc["protocol"],
        _str(doc.get("node")),
        _int(doc.get("status")),
        _str(doc.get("method")),
        _str(doc.get("path")),
        _end(doc, "src", "namespace"),
        _end(doc, "src", "name"),
        _end(doc, "dst", "namespace"),
        _end(doc, "dst", "name"),
        _int(doc.get("elapsed_us")),
        encode_doc(doc),
    )


def encode_doc(doc: dict[str, Any]) -> bytes:
    """JSON, zlib-compressed when large enough to be worth it (first byte says which)."""
    raw = orjson.dumps(doc)
    if len(raw) < COMPRESS_FROM:
        return RAW + raw
    return ZLIB + zlib.compress(raw, COMPRESSION_LEVEL)


def decode_doc(blob: bytes) -> dict[str, Any]:
    body = memoryview(blob)[1:]
    doc: dict[str, Any] = orjson.loads(zlib.decompress(body) if blob[:1] == ZLIB else body)
    return doc


class SqliteStore:
    """One connection, used by one thread at a time (calls serialise on a lock)."""

    kind = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rows_at_analyze = 0
        self._sorting_plans: dict[str, bool] = {}
        self._since_analyze = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.executescript(SCHEMA)
            self._analyze()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc

    def _analyze(self) -> None:
        self._sorting_plans = {}
        self._rows_at_analyze += self._since_analyze
        self._since_analyze = 0
        # Sampled statistics let the planner choose between "walk the time index" and "use the
        # filter's index", which decides whether "latest N matching" costs 1 ms or 100 ms.
        self._db.execute(f"PRAGMA analysis_limit={ANALYSIS_ROWS}")
        self._db.execute("ANALYZE")

    def maintain(self) -> None:
        """Refresh the planner's statistics (called periodically by retention)."""
        with self._lock:
            try:
                self._analyze()
            except sqlite3.Error as exc:
                raise StoreError(f"analyze failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"query failed: {exc}") from exc

    def _plan_sorts(self, sql: str, args: list[Any]) -> bool:
        """Whether SQLite would sort the matches rather than read them in time order off an index."""
        key = sql.rsplit(" LIMIT ", 1)[0]
        sorts = self._sorting_plans.get(key)
        if sorts is None:
            plan = self._fetch("EXPLAIN QUERY PLAN " + sql, args)
            sorts = any("TEMP B-TREE FOR ORDER BY" in str(row[-1]) for row in plan)
            if len(self._sorting_plans) >= PLAN_CACHE:
                self._sorting_plans.clear()
            self._sorting_plans[key] = sorts
        return sorts

    def insert_many(self, docs: Sequence[dict[str, Any]]) -> int:
        """Insert in one transaction; returns how many were new. Raises StoreError, storing nothing."""
        rows = [_row(d) for d in docs]
        with self._lock:
            try:
                before = self._db.total_changes
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(INSERT, rows)
                self._db.execute("COMMIT")
                new = self._db.total_changes - before
                self._since_analyze += new
                if self._since_analyze > max(REANALYZE_MIN_ROWS, self._rows_at_analyze):
                    self._analyze()  # the table doubled: the planner's statistics are stale
                return new
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"insert failed: {exc}") from exc

    def get(self, entry_id: str) -> dict[str, Any] | None:
        rows = self._fetch("SELECT doc FROM entries WHERE id = ?", (entry_id,))
        return decode_doc(rows[0][0]) if rows else None

    def latest(self, limit: int) -> list[dict[str, Any]]:
        return self.scan("", limit=limit).docs

    def scan(
        self,
        query: str,
        *,
        limit: int,
        before: Cursor | None = None,
        after: Cursor | None = None,
        max_scan: int = DEFAULT_MAX_SCAN,
    ) -> Page:
        where: list[str] = []
        params: list[Any] = []
        residual = None
        if query.strip():
            plan = compile_sql(query, COLUMNS)
            if plan.where:
                where.append(f"({plan.where})")
                params.extend(plan.params)
            residual = None if plan.exact else plan.residual
        if after is not None:
            where.append("(ts, id) > (?, ?)")
            params.extend((after.ts, after.id))

        def fetch(position: Cursor | None, n: int) -> list[dict[str, Any]]:
            older, older_args = ("(ts, id) < (?, ?)", [position.ts, position.id]) if position else ("1", [])
            cond = " AND ".join([*where, older])
            sql = f"SELECT doc FROM entries WHERE {cond} ORDER BY ts DESC, id DESC LIMIT ?"
            args = [*params, *older_args, n]
            if where and self._plan_sorts(sql, args):
                # The planner would collect and sort every match. Newest first over a dense match,
                # the newest rows by time usually hold enough: read growing windows of them in order.
                match = " AND ".join(where)
                for rows_back in WINDOWS:
                    window = (
                        f"SELECT {WINDOW_DOC} FROM (SELECT {WINDOW_COLUMNS}"
                        f" FROM entries INDEXED BY entries_ts WHERE {older} ORDER BY ts DESC, id DESC"
                        f" LIMIT {rows_back}) AS w WHERE {match} ORDER BY ts DESC, id DESC LIMIT ?"
                    )
                    rows = self._fetch(window, [*older_args, *params, n])
                    if len(rows) >= n:
                        return [decode_doc(blob) for (blob,) in rows]
            return [decode_doc(blob) for (blob,) in self._fetch(sql, args)]

        return paged_scan(fetch, residual, limit, before, max_scan)

    def count(self) -> int:
        return int(self._fetch("SELECT count(*) FROM entries", ())[0][0])

    def used_bytes(self) -> int:
        (pages,) = self._fetch("PRAGMA page_count", ())[0]
        (free,) = self._fetch("PRAGMA freelist_count", ())[0]
        (size,) = self._fetch("PRAGMA page_size", ())[0]
        return int((pages - free) * size)

    def _delete(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            try:
                cur = self._db.execute(sql, params)
                return int(cur.rowcount)
            except sqlite3.Error as exc:
                raise StoreError(f"delete failed: {exc}") from exc

    def delete_older_than(self, ts_ns: int) -> int:
        return self._delete("DELETE FROM entries WHERE ts < ?", (ts_ns,))

    def delete_oldest(self, n: int) -> int:
        return self._delete(
            "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY ts ASC, id ASC LIMIT ?)", (n,)
        )

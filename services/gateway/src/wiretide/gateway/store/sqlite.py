"""The SQLite entry store (the embedded default): WAL, batched idempotent inserts, the fields queries
filter on held in two small tables of their distinct combinations, and the whole entry as JSON.

Rule: an entry id is stored at most once (INSERT OR IGNORE on a unique index over id), so a batch that
is delivered again after a crash between commit and ack never duplicates rows; KFL is pushed down to
the filter columns as far as it goes and the rest runs in Python on the decoded entry.

Why groups: the fields queries filter on (protocol, node, status, method, both ends' namespace and
name) repeat across millions of entries as a few hundred combinations. An entry stores the number of
its combination in `calls` (protocol, node, status, method) and in `peers` (the two ends), and an index
on each number serves every filter on those fields: SQLite evaluates the filter on the small table and
reads the matching combinations' entries. Two indexes instead of eight per-field ones is what makes a
write cheap: each index is one more B-tree insert per entry, and those inserts were most of a write's
cost.

Why segments: an index led by the combination's number has one insertion point per combination, and
a batch of 1,000 entries spread over a few hundred combinations dirtied a few hundred index pages,
each written whole to the WAL at every commit (8 KiB for a 40-byte index entry: most of a write's
bytes and time). So each entry also records its segment — the number of the run of SEGMENT_ROWS
entries written before it — and the group indexes lead with it: (seg, number). A batch then fills the
few pages of its own segment's part of each index. A filtered search looks the matching combinations
up in every segment (`seg IN (SELECT seg FROM segments)`): a few thousand B-tree seeks at ten million
entries, the price of writing each index page about once.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.common.bus.entries import INDEXED_FIELDS, Indexed, Values, indexed_of_doc
from wiretide.common.kfl import compile_sql
from wiretide.gateway.store.base import DEFAULT_MAX_SCAN, Cursor, Page, StoreError, paged_scan

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2  # PRAGMA user_version; 0 is a new file or the first (per-field index) layout,
# 1 the grouped layout without segments

# The fields that queries filter on, as columns: (name, declared type). The declared types are the only
# types written (wrong-typed values are NULL), as KFL's SQL compiler requires.
FIELDS: Final = (
    ("protocol", "TEXT NOT NULL"), ("node", "TEXT"), ("status", "INTEGER"), ("method", "TEXT"),
    ("src_ns", "TEXT"), ("src_name", "TEXT"), ("dst_ns", "TEXT"), ("dst_name", "TEXT"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Group:
    """A table of the distinct combinations of some FIELDS, numbered; an entry stores its number."""

    table: str
    key: str  # the number's column, in the group's table and in `entries`
    fields: tuple[str, ...]
    start: int  # position of the first field in FIELDS (a group's fields are consecutive)


# Grouped by how they vary together: what the call was (few combinations: protocols x methods x
# statuses x nodes) and who talked to whom (the service graph's edges).
GROUPS: Final = (
    Group("calls", "call", ("protocol", "node", "status", "method"), 0),
    Group("peers", "peer", ("src_ns", "src_name", "dst_ns", "dst_name"), 4),
)
_TYPES: Final = dict(FIELDS)
# The bus contract lifts these fields in this order (its `Indexed.values`): one list, two spellings.
assert tuple(name for name, _ in FIELDS) == INDEXED_FIELDS


def _group_schema(g: Group) -> str:
    columns = "".join(f", {f} {_TYPES[f]}" for f in g.fields)
    indexes = "".join(f"CREATE INDEX {g.table}_{f} ON {g.table} ({f});" for f in g.fields)
    return f"CREATE TABLE {g.table} ({g.key} INTEGER PRIMARY KEY{columns});{indexes}"


SCHEMA = f"""
{"".join(_group_schema(g) for g in GROUPS)}
CREATE TABLE entries (
    id        TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    {"".join(f"{g.key} INTEGER NOT NULL, " for g in GROUPS)}
    path      TEXT,
    doc       BLOB NOT NULL,
    seg       INTEGER NOT NULL,
    PRIMARY KEY (ts, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX entries_id ON entries (id);
{"".join(f"CREATE INDEX entries_{g.key} ON entries (seg, {g.key});" for g in GROUPS)}
CREATE TABLE segments (seg INTEGER PRIMARY KEY);
PRAGMA user_version = {SCHEMA_VERSION};
"""
# WITHOUT ROWID keyed by (ts, id): the table itself is in newest-first order, so "newest first"
# (ORDER BY ts DESC, id DESC) is read straight off its B-tree. `segments` lists every segment number
# in use (a row per SEGMENT_ROWS entries written).

# The first layout: entries keyed by id with every field a column and nine (field, ts) indexes.
V0_INDEXES: Final = ("ts", "protocol_ts", "status_ts", "method_ts", "node_ts", "src_ns_ts", "src_name_ts",
                     "dst_ns_ts", "dst_name_ts")  # fmt: skip


def _migrate_v0() -> str:
    """SQL that moves the entries of the first layout into this one (run inside one transaction)."""
    fill = "".join(
        f"INSERT INTO {g.table} ({', '.join(g.fields)})"
        f" SELECT DISTINCT {', '.join(g.fields)} FROM entries_v0;"
        f"CREATE INDEX {g.table}_all ON {g.table} ({', '.join(g.fields)});"  # for the join below
        for g in GROUPS
    )
    joins = " ".join(
        f"JOIN {g.table} AS {g.key} ON " + " AND ".join(f"{g.key}.{f} IS v.{f}" for f in g.fields)
        for g in GROUPS
    )
    keys = "".join(f"{g.key}.{g.key}, " for g in GROUPS)
    return f"""
ALTER TABLE entries RENAME TO entries_v0;
{"".join(f"DROP INDEX IF EXISTS entries_{name};" for name in V0_INDEXES)}
{SCHEMA}
{fill}
INSERT OR IGNORE INTO entries (id, ts, {"".join(f"{g.key}, " for g in GROUPS)}path, doc, seg)
    SELECT v.id, v.ts, {keys}v.path, v.doc, 0 FROM entries_v0 AS v {joins};
{"".join(f"DROP INDEX {g.table}_all;" for g in GROUPS)}
DROP TABLE entries_v0;
INSERT INTO segments (seg) VALUES (0);
"""


MIGRATE_V0 = _migrate_v0()
# The grouped layout without segments: its entries become segment 0 (one segment, as its indexes were).
MIGRATE_V1 = f"""
ALTER TABLE entries ADD COLUMN seg INTEGER NOT NULL DEFAULT 0;
{"".join(f"DROP INDEX entries_{g.key};" for g in GROUPS)}
{"".join(f"CREATE INDEX entries_{g.key} ON entries (seg, {g.key});" for g in GROUPS)}
CREATE TABLE segments (seg INTEGER PRIMARY KEY);
INSERT INTO segments (seg) VALUES (0);
PRAGMA user_version = {SCHEMA_VERSION};
"""
# Older stores, by the version found: the layout they are brought to and the script that does it.
MIGRATIONS: Final = {0: ("grouped, segmented", MIGRATE_V0), 1: ("segmented indexes", MIGRATE_V1)}

INSERT = (
    f"INSERT OR IGNORE INTO entries (id, ts, {''.join(f'{g.key}, ' for g in GROUPS)}path, doc, seg)"
    f" VALUES ({', '.join('?' * (5 + len(GROUPS)))})"
)
# Entries per segment: a segment's part of a group index is ~25 pages (8 KiB, ~45-byte index entries),
# so a batch dirties at most that many pages of each index, whatever the number of combinations; and
# ten million entries make ~2,500 segments, each one B-tree seek per matching combination in a search.
SEGMENT_ROWS = 4096
IN_SEGMENTS = "seg IN (SELECT seg FROM segments)"

INSERT_GROUP = {
    g.key: f"INSERT INTO {g.table} ({', '.join(g.fields)}) VALUES ({', '.join('?' * len(g.fields))})"
    for g in GROUPS
}

# KFL variables that live in columns (of `entries` or a group's table; no name is in two tables).
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
# An entry's JSON is compressed only when its row would not otherwise fit on its page (a longer row
# spills into overflow pages, each one more page written). Compressing a small entry costs more CPU
# than the rest of its write (`bench/store_writer.py --size 1200`, 1.2 KB entries: 15-23 µs of CPU per
# entry stored uncompressed, 53-91 µs compressed). So small API calls are stored as received and take
# ~1.5x the bytes on disk (1,512 per entry against 998; the size-based retention bound counts them so).
# The threshold: SQLite's largest row kept on a page of the table's B-tree (an index B-tree: WITHOUT
# ROWID), less ROW_ALLOWANCE for the row's other columns (id, time, numbers, a path).
ROW_ALLOWANCE = 256
COMPRESS_FROM = 1024  # the threshold of a store whose page size is not known (and the floor of any)
RAW, ZLIB = b"j", b"z"
BUSY_TIMEOUT_S = 5.0
# 8 KiB pages: a row (columns + up to 1,774 bytes of raw JSON, see compress_from) stays on its page
# instead of spilling into an overflow page, which a WITHOUT ROWID table does past ~1,000 bytes with
# 4 KiB pages. New files only.
PAGE_SIZE = 8192
WAL_KIB = 128 * 1024  # the write-ahead log's size between checkpoints (and what its file is cut back to)
CACHE_KIB = 64 * 1024  # page cache: keeps the upper levels of the indexes in memory at millions of rows
WINDOWS = (1_024, 16_384)  # newest rows tried in time order before a plan that sorts every match
PROBE_STEPS = 40_000  # SQLite VM steps a budgeted attempt may take (some steps are B-tree searches:
# ~1 µs each, so tens of ms at most; counted, not timed, so the choice does not depend on load)
WALK_STEPS = 400_000  # ... and a walk in time order (its steps read rows in order: cheap ones)
PROBE_STEP = 1_000  # VM steps between checks of that budget
PLAN_CACHE = 256  # plan shapes remembered (per WHERE clause)
DOC = "(SELECT doc FROM entries AS e WHERE e.ts = w.ts AND e.id = w.id)"  # the blob, read only for a hit
WINDOW_COLUMNS = f"id, ts, {''.join(f'{g.key}, ' for g in GROUPS)}path"
GROUP_CACHE = 1_000_000  # combinations remembered per group; past it the cache restarts (a forgotten one
# is inserted again under a new number: harmless, queries filter on a group's fields, not its numbers)
REANALYZE_MIN_ROWS = 10_000  # re-sample statistics whenever the table has doubled past this
ANALYSIS_ROWS = 1000  # rows sampled per index by ANALYZE: enough for the planner, milliseconds to run


def compress_from(page_size: int) -> int:
    """JSON of at least this many bytes is compressed in a store of this page size (see ROW_ALLOWANCE):
    1,774 bytes with 8 KiB pages; the older 4 KiB pages keep the 1 KiB of earlier versions."""
    max_local = (page_size - 12) * 64 // 255 - 23  # SQLite's file format, "B-tree Page Layout"
    return max(COMPRESS_FROM, max_local - ROW_ALLOWANCE)


def pack(raw: bytes, threshold: int = COMPRESS_FROM) -> bytes:
    """An entry's JSON as stored: zlib-compressed from `threshold` bytes on (first byte says which)."""
    return RAW + raw if len(raw) < threshold else ZLIB + zlib.compress(raw, COMPRESSION_LEVEL)


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
        self._seg = 0  # the segment being filled, and the rows written into it so far
        self._seg_rows = 0
        self._known: dict[str, dict[Values, int]] = {g.key: {} for g in GROUPS}  # number by combination
        self._combinations: dict[Values, tuple[int, ...]] = {}  # every group's number by field values
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
            )
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only on a new file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.execute("PRAGMA temp_store=MEMORY")
            # Checkpoint the WAL into the database every WAL_KIB, not every 1,000 pages (SQLite's
            # default): a batch dirties the same index pages, which a checkpoint then writes once.
            (page,) = self._db.execute("PRAGMA page_size").fetchone()
            self._compress_from = compress_from(page)
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_KIB * 1024 // page}")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_KIB * 1024}")
            self._open_schema()
            self._load_groups()
            # Writes start a new segment: the ones before may hold entries up to their last row.
            (last,) = self._db.execute("SELECT max(seg) FROM segments").fetchone()
            self._seg = (last if last is not None else -1) + 1
            self._seg_rows = 0
            self._analyze()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc

    def _open_schema(self) -> None:
        """Create the schema in a new file, or bring an older layout up to this one (in one transaction)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            tables = {
                name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if version == SCHEMA_VERSION:
                pass
            elif version == 0 and "entries" not in tables:
                self._script(SCHEMA)
            elif version in MIGRATIONS:
                layout, script = MIGRATIONS[version]
                (rows,) = self._db.execute("SELECT count(*) FROM entries").fetchone()
                log.warning(
                    "migrating the SQLite store in place (once; a large store takes minutes)",
                    extra={
                        "path": str(self.path), "entries": rows, "to_layout": layout,
                        "from_version": version, "to_version": SCHEMA_VERSION,
                    },
                )  # fmt: skip
                self._script(script)
            else:
                raise StoreError(
                    f"{self.path} has store schema version {version}, newer than this gateway's"
                    f" {SCHEMA_VERSION}; use a newer gateway or another data directory"
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _script(self, script: str) -> None:
        # executescript() would commit the open transaction first; run the statements one by one.
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def _load_groups(self) -> None:
        for g in GROUPS:
            rows = self._db.execute(f"SELECT {g.key}, {', '.join(g.fields)} FROM {g.table}")
            self._known[g.key] = {tuple(row[1:]): row[0] for row in rows}

    def _analyze(self) -> None:
        self._sorting_plans = {}
        self._rows_at_analyze += self._since_analyze
        self._since_analyze = 0
        # Sampled statistics let the planner choose between "walk the time order" and "use the
        # filter's group index", which decides whether "latest N matching" costs 1 ms or 100 ms.
        self._db.execute(f"PRAGMA analysis_limit={ANALYSIS_ROWS}")
        self._db.execute("ANALYZE")
        # A sample of the first rows of a group index sees one segment and one combination in it, so
        # it makes "segment, number" look no narrower than "segment". State what they hold: rows per
        # segment, and per combination in a segment of SEGMENT_ROWS (segment 0 of a migrated store
        # holds all its entries: counted as one of SEGMENT_ROWS, the search through the index is still
        # preferred to reading it whole, and the search's step budget stops it when that was wrong).
        stat = "SELECT stat FROM sqlite_stat1 WHERE tbl = 'entries' AND idx = ?"
        found = self._db.execute(stat, ("entries_id",)).fetchone()
        if found is None:
            return  # an empty store: no statistics, and none needed
        rows = int(str(found[0]).split()[0])
        (segments,) = self._db.execute("SELECT count(*) FROM segments").fetchone()
        per_segment = max(1, rows // max(1, segments))
        for g in GROUPS:
            (combinations,) = self._db.execute(f"SELECT count(*) FROM {g.table}").fetchone()
            self._db.execute(
                "UPDATE sqlite_stat1 SET stat = ? WHERE tbl = 'entries' AND idx = ?",
                (
                    f"{rows} {per_segment} {max(1, min(per_segment, SEGMENT_ROWS) // max(1, combinations))}",
                    f"entries_{g.key}",
                ),
            )
        self._db.execute("ANALYZE sqlite_master")  # the planner reads the statistics again

    def maintain(self) -> None:
        """Forget segments emptied by retention and refresh the planner's statistics (called periodically
        by retention)."""
        with self._lock:
            try:
                self._db.execute(
                    "DELETE FROM segments"
                    " WHERE NOT EXISTS (SELECT 1 FROM entries WHERE entries.seg = segments.seg)"
                )
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

    def _fetch_within_budget(self, sql: str, params: Sequence[Any], budget: int) -> list[Any] | None:
        """The rows of `sql`, or None when SQLite needs more than `budget` VM steps to find them."""
        steps = 0

        def spent() -> int:
            nonlocal steps
            steps += PROBE_STEP
            return int(steps > budget)

        with self._lock:
            self._db.set_progress_handler(spent, PROBE_STEP)
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupt" in str(exc):
                    return None
                raise StoreError(f"query failed: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"query failed: {exc}") from exc
            finally:
                self._db.set_progress_handler(None, 0)

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

    def _numbers(self, values: Values, added: dict[str, dict[Values, int]]) -> tuple[int, ...]:
        """Each group's number for these field values; a combination first seen is inserted into its
        group's table (inside the caller's transaction) and recorded in `added`."""
        numbers = []
        for g in GROUPS:
            combination = values[g.start : g.start + len(g.fields)]
            number = self._known[g.key].get(combination) or added[g.key].get(combination)
            if number is None:
                cursor = self._db.execute(INSERT_GROUP[g.key], combination)
                number = added[g.key][combination] = int(cursor.lastrowid or 0)
            numbers.append(number)
        return tuple(numbers)

    def _rows(
        self,
        entries: Sequence[Indexed],
        segs: Sequence[int],
        added: dict[str, dict[Values, int]],
    ) -> tuple[list[tuple[Any, ...]], dict[Values, tuple[int, ...]]]:
        """The entry rows in the insert's column order, and the field values first seen here with their
        numbers (remembered once committed). The hot loop of a write: kept flat."""
        cached = self._combinations
        fresh: dict[Values, tuple[int, ...]] = {}
        rows = []
        threshold = self._compress_from
        compress = zlib.compress
        for (entry_id, ts, values, path, body), seg in zip(entries, segs, strict=True):
            numbers = cached.get(values) or fresh.get(values)
            if numbers is None:
                numbers = fresh[values] = self._numbers(values, added)
            blob = RAW + body if len(body) < threshold else ZLIB + compress(body, COMPRESSION_LEVEL)
            rows.append((entry_id, ts, *numbers, path, blob, seg))
        return rows, fresh

    def insert_many(self, docs: Sequence[dict[str, Any]], raw: Sequence[bytes] | None = None) -> int:
        """Insert in one transaction; returns how many were new. Raises StoreError, storing nothing.

        `raw[i]`, when given, is docs[i] as JSON (as it came off the wire): stored as is, not re-encoded."""
        if raw is not None and len(raw) != len(docs):
            raise ValueError("raw must hold one JSON document per entry")
        bodies = [orjson.dumps(doc) for doc in docs] if raw is None else raw
        return self.insert_indexed([indexed_of_doc(d, b) for d, b in zip(docs, bodies, strict=True)])

    def insert_indexed(self, entries: Sequence[Indexed]) -> int:
        """`insert_many` of entries as the bus contract lifts them (the JSON is never decoded)."""
        added: dict[str, dict[Values, int]] = {g.key: {} for g in GROUPS}
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                seg, seg_rows = self._seg, self._seg_rows
                segs: list[int] = []
                while len(segs) < len(entries):  # SEGMENT_ROWS rows to a segment
                    # Listed by every transaction that writes into it: a segment listed is never one
                    # that maintain() found empty and forgot meanwhile.
                    self._db.execute("INSERT OR IGNORE INTO segments (seg) VALUES (?)", (seg,))
                    take = min(len(entries) - len(segs), SEGMENT_ROWS - seg_rows)
                    segs += [seg] * take
                    seg_rows += take
                    if seg_rows == SEGMENT_ROWS:
                        seg, seg_rows = seg + 1, 0
                rows, fresh = self._rows(entries, segs, added)
                new = self._db.executemany(INSERT, rows).rowcount
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")  # and the combinations it added are not remembered
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(self._insert_error(exc)) from exc
                raise
            self._seg, self._seg_rows = seg, seg_rows
            for key, combinations in added.items():
                known = self._known[key]
                if len(known) + len(combinations) > GROUP_CACHE:
                    known.clear()
                known.update(combinations)
            if len(self._combinations) + len(fresh) > GROUP_CACHE:
                self._combinations.clear()
            self._combinations.update(fresh)
            self._since_analyze += new
            if self._since_analyze > max(REANALYZE_MIN_ROWS, self._rows_at_analyze):
                try:
                    self._analyze()  # the table doubled: the planner's statistics are stale
                except sqlite3.Error as exc:
                    log.warning("analyze after insert failed", extra={"error": str(exc)})
            return new

    def _insert_error(self, exc: sqlite3.Error) -> str:
        """What a failed insert tells the user; a full disk says which and what happens meanwhile."""
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
            return f"insert failed: {exc}"
        try:
            free = f"{shutil.disk_usage(self.path.parent).free:,} bytes free"
        except OSError:
            free = "free space unknown"
        return (
            f"insert failed: the disk holding {self.path} is full ({free}); entries wait on the bus "
            "(JetStream) and are written once space returns"
        )

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

        # Join only the group tables whose fields the filter reads (compile_sql quotes column names):
        # then a group's index (number, ts, id) covers the search, the entries' rows are not read.
        text = " ".join(where)
        joins = "".join(
            f" JOIN {g.table} USING ({g.key})" for g in GROUPS if any(f'"{f}"' in text for f in g.fields)
        )

        def fetch(position: Cursor | None, n: int) -> list[dict[str, Any]]:
            older, older_args = ("(ts, id) < (?, ?)", [position.ts, position.id]) if position else ("1", [])
            cond = " AND ".join([*where, older])
            order = "ORDER BY ts DESC, id DESC"
            args = [*params, *older_args, n]
            hits = f"SELECT ts, id FROM entries{joins} WHERE {cond} {order} LIMIT ?"
            sorts = bool(where) and self._plan_sorts(hits, args)
            if joins or sorts:
                # Walking the time order until n match is fast over a dense match and slow over a
                # sparse one; searching the filter's index and sorting the matches is the reverse.
                # Over a dense match the newest rows usually hold enough: read a window of them in
                # order. Then try searching and sorting, and walking, each within a budget that only
                # the right one fits ("+ts" is no column an index orders by: it makes SQLite search
                # and sort). Then a larger window, and last whatever the planner chose, unbounded.
                match = " AND ".join(where)
                unordered = "ORDER BY +ts DESC, +id DESC"
                # The search goes through the joined group's index (seg, number), in every segment. Its
                # limit is written out: with "LIMIT ?" SQLite may prefer reading whole segments.
                sort = (
                    f"SELECT ts, id FROM entries{joins} WHERE {cond} AND {IN_SEGMENTS} {unordered}"
                    f" LIMIT {int(n)}"
                )
                # CROSS JOIN keeps `entries` the outer loop: its rows are walked in (ts, id) order.
                outer = joins.replace(" JOIN ", " CROSS JOIN ")
                walk = f"SELECT ts, id FROM entries{outer} WHERE {cond} {order} LIMIT ?"
                budgeted = [(sort, args[:-1], PROBE_STEPS), (walk, args, WALK_STEPS)] if joins else []
                for rows_back in WINDOWS:
                    window = (
                        f"SELECT {DOC} FROM (SELECT {WINDOW_COLUMNS} FROM entries WHERE {older}"
                        f" {order} LIMIT {rows_back}) AS w{joins} WHERE {match} {order} LIMIT ?"
                    )
                    rows = self._fetch(window, [*older_args, *params, n])
                    if len(rows) >= n:
                        return [decode_doc(blob) for (blob,) in rows]
                    for attempt, attempt_args, steps in budgeted if rows_back == WINDOWS[0] else []:
                        found = self._fetch_within_budget(
                            f"SELECT {DOC} FROM ({attempt}) AS w {order}", attempt_args, steps
                        )
                        if found is not None:
                            return [decode_doc(blob) for (blob,) in found]
            # The doc is read only for the rows returned, not for every match a sorting plan collects.
            sql = f"SELECT {DOC} FROM ({hits}) AS w {order}"
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
        oldest = "SELECT ts, id FROM entries ORDER BY ts ASC, id ASC LIMIT ?"
        return self._delete(f"DELETE FROM entries WHERE (ts, id) IN ({oldest})", (n,))

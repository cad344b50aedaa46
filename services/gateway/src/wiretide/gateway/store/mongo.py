"""The MongoDB entry store (clusters): one document per entry, `_id` = entry id, the same indexes and
the same KFL pushdown (as a MongoDB filter, with a residual evaluated in Python).

Rule: the same interface and the same answers as the SQLite store — the shared store test suite
runs against both. Verified against a MongoDB-wire-protocol server (nx-27017) on these machines,
not against a real mongod (see the README); over TLS through a TLS terminator in front of it.

TLS, and anything else about the connection, is set in the URL (store/mongo_url.py); the URL is
shown and reported only redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import BulkWriteError, PyMongoError

from wiretide.common.bus.entries import Indexed
from wiretide.common.kfl import compile_mongo
from wiretide.gateway.store.base import DEFAULT_MAX_SCAN, Cursor, Page, StoreError, paged_scan
from wiretide.gateway.store.mongo_url import (
    DEFAULT_SELECTION_TIMEOUT_MS,
    SELECTION_TIMEOUT_OPTION,
    MongoUrl,
    explain,
)

INDEXES: list[list[tuple[str, int]]] = [
    [("timestamp", DESCENDING)],
    [("protocol", ASCENDING), ("timestamp", DESCENDING)],
    [("status", ASCENDING), ("timestamp", DESCENDING)],
    [("method", ASCENDING), ("timestamp", DESCENDING)],
    [("node", ASCENDING), ("timestamp", DESCENDING)],
    [("src.namespace", ASCENDING), ("src.name", ASCENDING), ("timestamp", DESCENDING)],
    [("dst.namespace", ASCENDING), ("dst.name", ASCENDING), ("timestamp", DESCENDING)],
]
SORT = [("timestamp", DESCENDING), ("_id", DESCENDING)]
DUPLICATE_KEY = 11000
# Approximate stored bytes per entry when the server cannot report collection sizes.
FALLBACK_BYTES_PER_ENTRY = 2048


def portable(flt: Any) -> Any:
    """The same filter in the most widely implemented operators: a field's `$not` becomes a `$nor`,
    a list of `$type`s an `$or` of single `$type`s. MongoDB gives the same answers either way;
    servers that speak only the common subset of the query language (nx-27017) then can too.
    """
    if isinstance(flt, list):
        return [portable(x) for x in flt]
    if not isinstance(flt, dict):
        return flt
    parts: list[dict[str, Any]] = []
    logical: dict[str, Any] = {}
    for key, value in flt.items():
        if key in ("$and", "$or", "$nor"):
            logical[key] = portable(value)
        elif key.startswith("$") or not (isinstance(value, dict) and any(k.startswith("$") for k in value)):
            parts.append({key: value})
        else:
            ops = dict(value)
            extra: list[dict[str, Any]] = []
            if "$not" in ops:
                extra.append({"$nor": [{key: ops.pop("$not")}]})
            if isinstance(ops.get("$type"), list):
                extra.append({"$or": [{key: {"$type": t}} for t in ops.pop("$type")]})
            if ops:
                parts.append({key: ops})
            parts.extend(extra)
    if logical:
        parts.append(logical)
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _before(c: Cursor) -> dict[str, Any]:
    return {"$or": [{"timestamp": {"$lt": c.ts}}, {"timestamp": c.ts, "_id": {"$lt": c.id}}]}


def _after(c: Cursor) -> dict[str, Any]:
    return {"$or": [{"timestamp": {"$gt": c.ts}}, {"timestamp": c.ts, "_id": {"$gt": c.id}}]}


def _out(doc: dict[str, Any]) -> dict[str, Any]:
    doc.pop("_id", None)
    return doc


class MongoStore:
    kind = "mongodb"

    def __init__(self, url: str, database: str = "wiretide", collection: str = "entries") -> None:
        self._url = MongoUrl.parse(url)
        self.location = self._url.redacted()
        options: dict[str, Any] = {}
        if self._url.option(SELECTION_TIMEOUT_OPTION) is None:
            options[SELECTION_TIMEOUT_OPTION] = DEFAULT_SELECTION_TIMEOUT_MS
        try:
            self._client: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=False, **options)
        except (PyMongoError, ValueError, TypeError, OSError) as exc:  # the URL itself is wrong
            raise StoreError(f"cannot open MongoDB store at {self.location}: {self._explain(exc)}") from None
        try:
            self._coll = self._client[database][collection]
            for keys in INDEXES:
                self._coll.create_index(keys)
        except Exception as exc:  # PyMongoError, and what the driver lets out against an odd server
            # (a KeyError from an authentication answer without its payload)
            self._client.close()
            # Not chained: the driver's own message is given here, with its secrets removed.
            raise StoreError(f"cannot open MongoDB store at {self.location}: {self._explain(exc)}") from None

    def _explain(self, exc: BaseException) -> str:
        return explain(f"{type(exc).__name__}: {exc}", self._url)

    def close(self) -> None:
        self._client.close()

    def insert_many(self, docs: Sequence[dict[str, Any]], raw: Sequence[bytes] | None = None) -> int:
        del raw  # BSON is built from the documents
        if not docs:
            return 0
        try:
            # Skip ids already stored (a redelivered batch); a concurrent replica's race is caught below.
            ids = [d["id"] for d in docs]
            present = {r["_id"] for r in self._coll.find({"_id": {"$in": ids}}, {"_id": 1})}
            rows = [{"_id": d["id"], **d} for d in docs if d["id"] not in present]
            if not rows:
                return 0
            return len(self._coll.insert_many(rows, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if all(e.get("code") == DUPLICATE_KEY for e in errors):
                return int(exc.details.get("nInserted", 0))
            raise StoreError(f"insert failed: {errors[:1]}") from exc
        except PyMongoError as exc:
            raise StoreError(f"insert failed: {self._url.scrub(str(exc))}") from exc

    def insert_indexed(self, entries: Sequence[Indexed]) -> int:
        """BSON is built from the documents: their JSON is decoded here, once per batch."""
        loads = orjson.loads
        try:
            docs = [loads(json) for _, _, _, _, json in entries]
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"insert failed: an entry's JSON does not parse: {exc}") from exc
        return self.insert_many(docs)

    def get(self, entry_id: str) -> dict[str, Any] | None:
        try:
            doc = self._coll.find_one({"_id": entry_id})
        except PyMongoError as exc:
            raise StoreError(f"query failed: {self._url.scrub(str(exc))}") from exc
        return _out(doc) if doc is not None else None

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
        base: list[dict[str, Any]] = []
        residual = None
        if query.strip():
            plan = compile_mongo(query)
            if plan.filter:
                base.append(portable(plan.filter))
            residual = None if plan.exact else plan.residual
        if after is not None:
            base.append(_after(after))

        def fetch(position: Cursor | None, n: int) -> list[dict[str, Any]]:
            conds = [*base, _before(position)] if position is not None else list(base)
            flt = {"$and": conds} if len(conds) > 1 else (conds[0] if conds else {})
            return [_out(row) for row in self._coll.find(flt).sort(SORT).limit(n)]

        try:
            return paged_scan(fetch, residual, limit, before, max_scan)
        except PyMongoError as exc:
            raise StoreError(f"query failed: {self._url.scrub(str(exc))}") from exc

    def count(self) -> int:
        try:
            return int(self._coll.count_documents({}))
        except PyMongoError as exc:
            raise StoreError(f"count failed: {self._url.scrub(str(exc))}") from exc

    def used_bytes(self) -> int:
        try:
            stats = self._coll.database.command("collStats", self._coll.name)
            size = stats.get("size")
            if isinstance(size, int | float) and size > 0:
                return int(size)
        except PyMongoError:
            pass  # servers without collStats: estimate from the count
        return self.count() * FALLBACK_BYTES_PER_ENTRY

    def maintain(self) -> None:
        """Nothing to do: MongoDB keeps its own planner statistics."""

    def delete_older_than(self, ts_ns: int) -> int:
        try:
            return int(self._coll.delete_many({"timestamp": {"$lt": ts_ns}}).deleted_count)
        except PyMongoError as exc:
            raise StoreError(f"delete failed: {self._url.scrub(str(exc))}") from exc

    def delete_oldest(self, n: int) -> int:
        try:
            ids = [
                d["_id"]
                for d in self._coll.find({}, {"_id": 1}).sort([("timestamp", 1), ("_id", 1)]).limit(n)
            ]
            if not ids:
                return 0
            return int(self._coll.delete_many({"_id": {"$in": ids}}).deleted_count)
        except PyMongoError as exc:
            raise StoreError(f"delete failed: {self._url.scrub(str(exc))}") from exc

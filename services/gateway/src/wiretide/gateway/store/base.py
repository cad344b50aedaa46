"""What every entry store offers: idempotent batched writes, newest-first KFL scans with cursors,
lookups by id, and retention by age and size.

Rule: a scan never returns an entry its KFL rejects, and says how much it looked at (`scanned`)
and whether it stopped early (`exhausted`), so an answer can state how complete it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wiretide.common.bus.entries import Indexed

# Rows examined by one scan before it stops and hands back a cursor (bounds a query's cost).
DEFAULT_MAX_SCAN = 200_000
# Rows fetched per round trip while a residual predicate filters in Python.
SCAN_CHUNK = 1_000


class StoreError(Exception):
    """The store cannot take or give entries (disk full, unwritable, locked, unreachable)."""


class BadCursor(ValueError):
    """A `before`/`after` cursor that this store did not hand out."""


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in newest-first order: (timestamp, id) of an entry."""

    ts: int
    id: str

    def encode(self) -> str:
        return f"{self.ts}_{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        ts_text, sep, ident = text.partition("_")
        if not sep or not ts_text.isdigit() or not ident or len(ident) > 64 or len(ts_text) > 20:
            raise BadCursor(f"not a cursor: {text[:80]!r}")
        return cls(int(ts_text), ident)

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Cursor:
        return cls(int(doc["timestamp"]), str(doc["id"]))


@dataclass(slots=True)
class Page:
    docs: list[dict[str, Any]]
    scanned: int
    # True when the scan reached the end of the window; False when it stopped at `limit` or `max_scan`.
    exhausted: bool
    next: Cursor | None = None


@dataclass(slots=True)
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)


Residual = Callable[[dict[str, Any]], bool]


def paged_scan(
    fetch: Callable[[Cursor | None, int], list[dict[str, Any]]],
    residual: Residual | None,
    limit: int,
    before: Cursor | None,
    max_scan: int,
) -> Page:
    """Newest-first scan shared by every store.

    `fetch(position, n)` returns up to `n` entries strictly older than `position` (all when None)
    that pass what the store could push down. Without a residual one fetch of `limit` suffices; with
    one, chunks are filtered in Python until `limit` match or `max_scan` rows were looked at.
    """
    if limit <= 0:
        return Page([], 0, exhausted=False)
    docs: list[dict[str, Any]] = []
    scanned = 0
    position = before
    while True:
        chunk = limit - len(docs) if residual is None else min(SCAN_CHUNK, max_scan - scanned)
        rows = fetch(position, chunk)
        for doc in rows:
            scanned += 1
            if residual is not None and not residual(doc):
                continue
            docs.append(doc)
            if len(docs) == limit:
                # More may follow; continue after the last entry handed out.
                return Page(docs, scanned, exhausted=False, next=Cursor.of(doc))
        if len(rows) < chunk or not rows:
            return Page(docs, scanned, exhausted=True)
        position = Cursor.of(rows[-1])
        if scanned >= max_scan:
            return Page(docs, scanned, exhausted=False, next=position)


class EntryStore(Protocol):
    kind: str

    def insert_many(self, docs: Sequence[dict[str, Any]], raw: Sequence[bytes] | None = None) -> int:
        """Store `docs` (idempotent by id); `raw[i]`, when given, is docs[i] as received JSON, which a
        store may keep instead of encoding docs[i] again. Returns how many were new."""
        ...

    def insert_indexed(self, entries: Sequence[Indexed]) -> int:
        """`insert_many` of entries as the bus contract hands them to the store writer: the indexed fields
        lifted, the document as JSON (decoded only by a store that needs the document)."""
        ...

    def get(self, entry_id: str) -> dict[str, Any] | None: ...

    def scan(
        self,
        query: str,
        *,
        limit: int,
        before: Cursor | None = None,
        after: Cursor | None = None,
        max_scan: int = DEFAULT_MAX_SCAN,
    ) -> Page: ...

    def count(self) -> int: ...

    def used_bytes(self) -> int: ...

    def delete_older_than(self, ts_ns: int) -> int: ...

    def delete_oldest(self, n: int) -> int: ...

    def maintain(self) -> None: ...

    def close(self) -> None: ...

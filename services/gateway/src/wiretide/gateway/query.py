"""The gateway's application layer: every use-case (query, get, stats, HAR, validate) once, shared by
REST, WebSocket, gRPC and the CLI.

Rule: answers say how complete they are — how much was scanned, whether the scan stopped early,
and what was dropped upstream (capture, dissectors) or evicted by retention. Every use-case takes the
caller's `NamespaceScope` and answers only within it: the scope is pushed into the store's query (so
limits and counts are those of the scope), and every returned entry is checked against it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wiretide.common.auth import ALL_NAMESPACES, NamespaceScope, check_restricted
from wiretide.common.har import har_log
from wiretide.common.kfl import KflError, validate
from wiretide.common.protocols import is_error, status_class
from wiretide.gateway.recording.kfl import expand as expand_records
from wiretide.gateway.recording.kfl import placeholder
from wiretide.gateway.store import Cursor, EntryStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # a page larger than this is capped (and says so), not refused
STATS_MAX_SCAN = 200_000
HAR_MAX_ENTRIES = 5_000
GROUP_KEYS = ("protocol", "status", "status_class", "method", "path", "src", "dst", "edge", "node")


class QueryError(ValueError):
    """A bad request: the message is for the user; `position`/`hint` locate a KFL problem."""

    def __init__(self, message: str, position: int | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.position = position
        self.hint = hint

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"error": str(self)}
        if self.position is not None:
            doc["position"] = self.position
        if self.hint:
            doc["hint"] = self.hint
        return doc


@dataclass(slots=True)
class Completeness:
    """Counters that qualify every answer."""

    upstream_drops: dict[str, int] = field(default_factory=dict)
    retention_deleted: dict[str, int] = field(default_factory=dict)
    invalid_skipped: int = 0
    capture: dict[str, Any] = field(default_factory=dict)  # the capture node's last status
    # Packets the dissectors count but make no entry of, by protocol (`sctp`, `arp`…), summed over them.
    undissected: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class QueryResult:
    entries: list[dict[str, Any]]
    next: str | None
    completeness: dict[str, Any]


def _cursor(text: str | None, name: str) -> Cursor | None:
    if not text:
        return None
    try:
        return Cursor.decode(text)
    except ValueError as exc:
        raise QueryError(f"{name}: {exc}") from None


def _kfl(exc: KflError) -> QueryError:
    return QueryError(f"invalid query: {exc.message}", exc.position, exc.hint)


def clamp_limit(raw: int | None) -> tuple[int, bool]:
    if raw is None:
        return DEFAULT_LIMIT, False
    if raw < 0:
        raise QueryError("limit must be ≥ 0")
    return min(raw, MAX_LIMIT), raw > MAX_LIMIT


def _percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p * (len(sorted_values) - 1))))
    return sorted_values[k]


def _end_name(end: Any) -> str:
    if not isinstance(end, dict):
        return "?"
    name = end.get("name") or end.get("ip") or "?"
    ns = end.get("namespace")
    return f"{ns}/{name}" if ns else str(name)


def group_key(by: str) -> Callable[[dict[str, Any]], str]:
    if by == "status_class":
        return status_class
    if by in ("src", "dst"):
        return lambda e: _end_name(e.get(by))
    if by == "edge":
        return lambda e: f"{_end_name(e.get('src'))} → {_end_name(e.get('dst'))} ({e.get('protocol')})"
    field_name = {"node": "node"}.get(by, by)
    return lambda e: str(e.get(field_name)) if e.get(field_name) is not None else "none"


class QueryService:
    def __init__(
        self,
        store: EntryStore,
        completeness: Completeness,
        records: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.completeness = completeness
        self.records = records  # record("name") -> the recording's selection as KFL (None: unknown)

    def expand(self, query: str) -> str:
        """`query`, checked as the user wrote it (errors point into their text), with every
        record("name") replaced by that recording's selection."""
        if "record" not in query:
            return query
        self.check(query)
        try:
            return expand_records(query, self.records or (lambda _name: None))
        except KflError as exc:
            raise _kfl(exc) from None

    def _qualify(self, scanned: int, matched: int, exhausted: bool, capped: bool) -> dict[str, Any]:
        return {
            "scanned": scanned,
            "matched": matched,
            "exhausted": exhausted,
            "limit_capped": capped,
            "upstream_drops": dict(self.completeness.upstream_drops),
            "retention_deleted": dict(self.completeness.retention_deleted),
            "invalid_skipped": self.completeness.invalid_skipped,
        }

    @staticmethod
    def check(query: str) -> None:
        errors = [p for p in validate(placeholder(query)) if p.severity == "error"]
        if errors:
            p = errors[0]
            raise QueryError(f"invalid query: {p.message}", p.position, p.hint)

    @classmethod
    def scoped(cls, query: str, scope: NamespaceScope) -> str:
        """The user's query checked, then narrowed to `scope` (the text the store runs)."""
        cls.check(query)
        if scope.unrestricted:
            return query
        try:
            check_restricted(scope, query)
        except (ValueError, KflError) as exc:
            raise QueryError(str(exc)) from None
        return scope.restrict(query)

    async def query(
        self,
        query: str = "",
        limit: int | None = None,
        before: str | None = None,
        after: str | None = None,
        scope: NamespaceScope = ALL_NAMESPACES,
    ) -> QueryResult:
        n, capped = clamp_limit(limit)
        b, a = _cursor(before, "before"), _cursor(after, "after")
        text = self.scoped(self.expand(query), scope)
        try:
            page = await asyncio.to_thread(self.store.scan, text, limit=n, before=b, after=a)
        except KflError as exc:
            raise _kfl(exc) from None
        docs = [d for d in page.docs if scope.allows(d)]
        return QueryResult(
            entries=docs,
            next=page.next.encode() if page.next else None,
            completeness=self._qualify(page.scanned, len(docs), page.exhausted, capped),
        )

    async def get(self, entry_id: str, scope: NamespaceScope = ALL_NAMESPACES) -> dict[str, Any] | None:
        """The entry, or None when there is none — or none the caller may see (the same answer, so a
        scoped caller cannot learn that an entry outside its scope exists)."""
        if not entry_id or len(entry_id) > 64:
            return None
        doc = await asyncio.to_thread(self.store.get, entry_id)
        return doc if doc is not None and scope.allows(doc) else None

    async def har(
        self, query: str = "", limit: int | None = None, scope: NamespaceScope = ALL_NAMESPACES
    ) -> dict[str, Any]:
        text = self.scoped(self.expand(query), scope)
        n = min(limit if limit is not None and limit >= 0 else HAR_MAX_ENTRIES, HAR_MAX_ENTRIES)
        try:
            page = await asyncio.to_thread(self.store.scan, text, limit=n)
        except KflError as exc:
            raise _kfl(exc) from None
        doc = har_log([d for d in page.docs if scope.allows(d)])
        doc["log"]["comment"] = f"{len(doc['log']['entries'])} HTTP entries; scanned {page.scanned}"
        return doc

    async def stats(
        self, query: str = "", by: str = "protocol", scope: NamespaceScope = ALL_NAMESPACES
    ) -> dict[str, Any]:
        if by not in GROUP_KEYS:
            raise QueryError(f"by must be one of {', '.join(GROUP_KEYS)}, got {by[:40]!r}")
        text = self.scoped(self.expand(query), scope)
        try:
            page = await asyncio.to_thread(
                self.store.scan, text, limit=STATS_MAX_SCAN, max_scan=STATS_MAX_SCAN
            )
        except KflError as exc:
            raise _kfl(exc) from None
        docs = [d for d in page.docs if scope.allows(d)]
        key = group_key(by)
        groups: dict[str, dict[str, Any]] = {}
        latencies: dict[str, list[float]] = {}
        for e in docs:
            k = key(e)
            g = groups.get(k)
            if g is None:
                g = groups[k] = {
                    "key": k,
                    "count": 0,
                    "errors": 0,
                    "bytes": 0,
                    "first": e["timestamp"],
                    "last": 0,
                }
                if by == "edge":
                    g["edge"] = {
                        "source": _end_name(e.get("src")),
                        "destination": _end_name(e.get("dst")),
                        "protocol": e.get("protocol"),
                    }
                latencies[k] = []
            g["count"] += 1
            g["errors"] += is_error(e)
            size: dict[str, Any] = e["size"] if isinstance(e.get("size"), dict) else {}
            g["bytes"] += int(size.get("request") or 0) + int(size.get("response") or 0)
            g["first"] = min(g["first"], e["timestamp"])
            g["last"] = max(g["last"], e["timestamp"])
            if isinstance(e.get("elapsed_us"), int):
                latencies[k].append(e["elapsed_us"] / 1000.0)
        out = []
        for k, g in groups.items():
            lat = sorted(latencies[k])
            span_s = max((g["last"] - g["first"]) / 1e9, 1.0)
            out.append(
                {
                    **g.get("edge", {}),
                    "key": k,
                    "count": g["count"],
                    "errors": g["errors"],
                    "error_rate": g["errors"] / g["count"],
                    "rate_per_s": g["count"] / span_s,
                    "bytes": g["bytes"],
                    "latency_ms": {
                        "p50": _percentile(lat, 0.50),
                        "p95": _percentile(lat, 0.95),
                        "p99": _percentile(lat, 0.99),
                    },
                }
            )
        out.sort(key=lambda g: (-g["count"], g["key"]))
        return {
            "by": by,
            "total": len(docs),
            "groups": out,
            "completeness": self._qualify(page.scanned, len(docs), page.exhausted, False),
        }

    @staticmethod
    def validate(query: str) -> dict[str, Any]:
        problems = validate(placeholder(query))
        return {
            "valid": all(p.severity != "error" for p in problems),
            "problems": [p.to_dict() for p in problems],
        }

"""The resolver's identity store: the IP history plus who claims what, versions and pending deltas.

Rule: every change to the history goes through `set_claims`/`drop_owner`, lands in one pending
delta, and leaves the store at `version + 1` when flushed; a snapshot is always taken right after a
flush, so snapshot version N plus deltas N+1, N+2 … is exactly the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from wiretide.common.identity import NS, IdentityTable, span_key
from wiretide.proto.v1 import resolver_pb2

# Closed spans are kept this long after their holder let go: long enough to name entries that
# arrive late (replays, slow pipelines), short enough to stay bounded under churn.
RETENTION_NS: Final = 3600 * NS

# Identities per delta message: ~300 bytes each keeps a delta well under NATS's 1 MiB max_payload.
MAX_PER_UPDATE: Final = 2000

Owner = tuple[str, str, str, str]  # (source, kind, namespace, name)
Address = tuple[str, int]  # (ip, port)


@dataclass(frozen=True, slots=True)
class Claim:
    """An owner's claim on ip[:port] since `since_ns`, with the identity it should resolve to."""

    ip: str
    port: int
    since_ns: int
    identity: resolver_pb2.Identity


def _same_fields(a: resolver_pb2.Identity, b: resolver_pb2.Identity) -> bool:
    x = resolver_pb2.Identity()
    x.CopyFrom(a)
    x.valid_from_ns = b.valid_from_ns
    x.valid_until_ns = b.valid_until_ns
    return x == b


class IdentityStore:
    def __init__(self, table: IdentityTable | None = None, stale_after_ns: int = 60 * NS) -> None:
        self.table = table if table is not None else IdentityTable()
        self.stale_after_ns = stale_after_ns
        self.version = 0
        self.synced_at_ns = 0
        self._open: dict[Owner, dict[Address, resolver_pb2.Identity]] = {}
        self._upserts: dict[tuple[str, int, str, str, str, int], resolver_pb2.Identity] = {}
        self._removals: dict[tuple[str, int, str, str, str, int], resolver_pb2.Identity] = {}
        self._relist: dict[tuple[str, str], set[Owner]] = {}

    # -- staleness -------------------------------------------------------------------------
    def mark_synced(self, now_ns: int | None = None) -> None:
        self.synced_at_ns = now_ns if now_ns is not None else time.time_ns()

    def stale(self, now_ns: int | None = None) -> bool:
        now = now_ns if now_ns is not None else time.time_ns()
        return self.synced_at_ns == 0 or now - self.synced_at_ns > self.stale_after_ns

    # -- claims ----------------------------------------------------------------------------
    def _put(self, ident: resolver_pb2.Identity) -> resolver_pb2.Identity:
        stored, changed = self.table.upsert(ident)
        for other in (*changed, stored):
            key = span_key(other)
            self._removals.pop(key, None)
            self._upserts[key] = other
        return stored

    def touch(self, owner: Owner) -> None:
        """`owner` is still there, unchanged (a relist must not close its claims)."""
        seen = self._relist.get(owner[:2])
        if seen is not None:
            seen.add(owner)

    def set_claims(self, owner: Owner, claims: list[Claim], now_ns: int | None = None) -> None:
        """`owner` now claims exactly `claims`: new ones open spans, vanished ones are closed at now."""
        now = now_ns if now_ns is not None else time.time_ns()
        self.touch(owner)
        current = self._open.get(owner, {})
        wanted = {(c.ip, c.port): c for c in claims}
        if not current and not wanted:
            return
        result: dict[Address, resolver_pb2.Identity] = {}
        for addr, claim in wanted.items():
            held = current.get(addr)
            ident = resolver_pb2.Identity()
            ident.CopyFrom(claim.identity)
            ident.ip, ident.port = addr
            live = self.table.get(held) if held is not None else None
            if live is not None and live.valid_until_ns:
                continue  # a newer holder took the address over; this claim is out of date
            if held is not None and live is not None:
                ident.valid_from_ns = held.valid_from_ns
                ident.valid_until_ns = 0
                if _same_fields(ident, held) and held.valid_until_ns == 0:
                    result[addr] = held
                    continue
                result[addr] = self._put(ident)
            else:
                ident.valid_from_ns = claim.since_ns or now
                ident.valid_until_ns = 0
                result[addr] = self._put(ident)
        for addr, held in current.items():
            if addr not in wanted:
                self._close(held, now)
        if result:
            self._open[owner] = result
        else:
            self._open.pop(owner, None)

    def _close(self, held: resolver_pb2.Identity, at_ns: int) -> None:
        live = self.table.get(held)
        if live is None or live.valid_until_ns:
            return  # evicted, or already cut short by a newer holder
        closed = resolver_pb2.Identity()
        closed.CopyFrom(live)
        closed.valid_until_ns = max(at_ns, closed.valid_from_ns + 1)
        self._put(closed)

    def drop_owner(self, owner: Owner, at_ns: int | None = None) -> None:
        at = at_ns if at_ns is not None else time.time_ns()
        for held in self._open.pop(owner, {}).values():
            self._close(held, at)

    def owners(self, source: str, kind: str) -> list[Owner]:
        return [o for o in self._open if o[0] == source and o[1] == kind]

    def begin_relist(self, source: str, kind: str) -> None:
        self._relist[(source, kind)] = set()

    def end_relist(self, source: str, kind: str, now_ns: int | None = None) -> int:
        """Close everything of this kind that the fresh list did not mention. Returns how many."""
        seen = self._relist.pop((source, kind), set())
        gone = [o for o in self.owners(source, kind) if o not in seen]
        for owner in gone:
            self.drop_owner(owner, now_ns)
        return len(gone)

    # -- distribution ----------------------------------------------------------------------
    def expire(self, now_ns: int | None = None) -> int:
        now = now_ns if now_ns is not None else time.time_ns()
        dropped = self.table.expire(now - RETENTION_NS)
        for ident in dropped:
            key = span_key(ident)
            self._upserts.pop(key, None)
            self._removals[key] = ident
        return len(dropped)

    def flush(self, now_ns: int | None = None) -> list[resolver_pb2.IdentityUpdate]:
        """The pending changes as the next versioned deltas (each small enough for one NATS message)."""
        if not self._upserts and not self._removals:
            return []
        synced, stale = self.synced_at_ns, self.stale(now_ns)
        upserts, removals = list(self._upserts.values()), list(self._removals.values())
        self._upserts.clear()
        self._removals.clear()
        out: list[resolver_pb2.IdentityUpdate] = []
        for i in range(0, max(len(upserts), len(removals)), MAX_PER_UPDATE):
            self.version += 1
            out.append(
                resolver_pb2.IdentityUpdate(
                    version=self.version,
                    upserts=upserts[i : i + MAX_PER_UPDATE],
                    removals=removals[i : i + MAX_PER_UPDATE],
                    synced_at_ns=synced,
                    stale=stale,
                )
            )
        self.table.version = self.version
        return out

    def heartbeat(self, now_ns: int | None = None) -> resolver_pb2.IdentityUpdate:
        return resolver_pb2.IdentityUpdate(
            version=self.version, synced_at_ns=self.synced_at_ns, stale=self.stale(now_ns)
        )

    def snapshot(self, now_ns: int | None = None) -> resolver_pb2.SnapshotResponse:
        """Call right after `flush` (pending changes would otherwise be missing from it)."""
        return resolver_pb2.SnapshotResponse(
            version=self.version,
            identities=list(self.table.identities()),
            synced_at_ns=self.synced_at_ns,
            stale=self.stale(now_ns),
        )

"""The store's deltas, replayed on a copy, give exactly the store; versions have no holes."""

from __future__ import annotations

import random

from wiretide.common.identity import NS, IdentityTable, apply_update, load_snapshot
from wiretide.proto.v1.resolver_pb2 import Identity
from wiretide.resolver.table import MAX_PER_UPDATE, Claim, IdentityStore

T0 = 1_700_000_000 * NS


def claim(ip: str, name: str, since: int = T0, port: int = 0, **labels: str) -> Claim:
    return Claim(ip, port, since, Identity(name=name, namespace="ns", kind="pod", labels=labels))


def answers(table: IdentityTable, ips: list[str], times: list[int]) -> list[object]:
    return [table.lookup(ip, 80, t) for ip in ips for t in times]


def test_random_changes_replayed_as_deltas_equal_the_store() -> None:
    rng = random.Random(7)
    store = IdentityStore()
    copy = IdentityTable()
    ips = [f"10.5.0.{i}" for i in range(12)]
    now = T0
    for step in range(400):
        now += rng.randrange(1, 5) * NS
        name = f"p{rng.randrange(30)}"
        owner = ("k8s", "pod", "ns", name)
        if rng.random() < 0.3:
            store.drop_owner(owner, now)
        else:
            store.set_claims(owner, [claim(rng.choice(ips), name, now, app=str(step % 3))], now)
        if rng.random() < 0.2:
            for update in store.flush(now):
                assert update.version == copy.version + 1
                apply_update(copy, update)
    for update in store.flush(now):
        apply_update(copy, update)
    times = list(range(T0, now + 60 * NS, 3 * NS))
    assert answers(copy, ips, times) == answers(store.table, ips, times)
    snap_copy = IdentityTable()
    load_snapshot(snap_copy, store.snapshot(now))
    assert snap_copy.version == store.version
    assert answers(snap_copy, ips, times) == answers(store.table, ips, times)


def test_unchanged_claims_publish_nothing_and_label_changes_keep_the_start() -> None:
    store = IdentityStore()
    store.set_claims(("k8s", "pod", "ns", "a"), [claim("10.6.0.1", "a", app="x")], T0)
    assert len(store.flush(T0)) == 1
    store.set_claims(("k8s", "pod", "ns", "a"), [claim("10.6.0.1", "a", app="x")], T0 + NS)
    assert store.flush(T0 + NS) == []
    store.set_claims(("k8s", "pod", "ns", "a"), [claim("10.6.0.1", "a", T0 + 5 * NS, app="y")], T0 + 5 * NS)
    (update,) = store.flush(T0 + 5 * NS)
    assert [(u.valid_from_ns, u.labels["app"]) for u in update.upserts] == [(T0, "y")]


def test_a_relist_closes_what_it_no_longer_mentions() -> None:
    store = IdentityStore()
    for name in ("a", "b"):
        store.set_claims(("k8s", "pod", "ns", name), [claim(f"10.7.0.{ord(name)}", name)], T0)
    store.begin_relist("k8s", "pod")
    store.set_claims(("k8s", "pod", "ns", "a"), [claim("10.7.0.97", "a")], T0 + 10 * NS)
    assert store.end_relist("k8s", "pod", T0 + 10 * NS) == 1
    assert store.table.find("10.7.0.98", 0, T0 + 9 * NS)[0] is not None
    assert store.table.find("10.7.0.98", 0, T0 + 100 * NS)[0] is None


def test_large_changes_are_split_into_consecutive_versions() -> None:
    store = IdentityStore()
    n = MAX_PER_UPDATE * 2 + 5
    for i in range(n):
        store.set_claims(
            ("k8s", "pod", "ns", f"p{i}"), [claim(f"10.{i // 60000}.{i // 250 % 240}.{i % 250}", f"p{i}")], T0
        )
    updates = store.flush(T0)
    assert [u.version for u in updates] == [1, 2, 3]
    assert sum(len(u.upserts) for u in updates) == n


def test_staleness_follows_the_last_confirmation() -> None:
    store = IdentityStore(stale_after_ns=30 * NS)
    assert store.stale(T0)  # never synced
    store.mark_synced(T0)
    assert not store.stale(T0 + 29 * NS)
    assert store.stale(T0 + 31 * NS)
    assert store.heartbeat(T0 + 31 * NS).stale


def test_retention_removes_old_spans_and_publishes_their_removal() -> None:
    store = IdentityStore()
    store.set_claims(("k8s", "pod", "ns", "a"), [claim("10.8.0.1", "a")], T0)
    store.drop_owner(("k8s", "pod", "ns", "a"), T0 + NS)
    store.flush(T0 + NS)
    assert store.expire(T0 + 7200 * NS) == 1
    (update,) = store.flush(T0 + 7200 * NS)
    assert [r.name for r in update.removals] == ["a"] and len(store.table) == 0

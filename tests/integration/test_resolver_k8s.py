"""The resolver's Kubernetes source with the official client against the list/watch emulator over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from tests.helpers import kubeapi as ka
from wiretide.common.identity import NS
from wiretide.resolver.k8s.leader import LeaseElector
from wiretide.resolver.k8s.source import KubernetesSource, api_client
from wiretide.resolver.table import IdentityStore

WATCH_TIMEOUT_S = 3  # short server-side watches, so reconnects happen within a test


async def until(cond: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def name_at(store: IdentityStore, ip: str, ts_ns: int | None = None, port: int = 80) -> str | None:
    fields, _ = store.table.lookup(ip, port, ts_ns or time.time_ns())
    return None if fields is None else fields["name"]


class Cluster:
    def __init__(self, api: ka.KubeApi, store: IdentityStore, source: KubernetesSource) -> None:
        self.api, self.store, self.source = api, store, source


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    api = ka.KubeApi().start()
    api.put(ka.namespace("shop"))
    api.put(ka.node("node-1", "10.40.0.1"))
    api.put(ka.replicaset("web-7f9c", "shop", "web"))
    api.put(
        ka.pod("web-7f9c-abcde", "shop", "10.40.1.5", labels={"app": "web"}, owner=("ReplicaSet", "web-7f9c"))
    )
    api.put(ka.service("web", "shop", "10.96.0.10"))
    api.put(ka.endpointslice("web", "shop", [("web-7f9c-abcde", "10.40.1.5")]))
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    store = IdentityStore(stale_after_ns=2 * NS)
    source = KubernetesSource(store)
    await source.start(api_client(str(kubeconfig)), page_size=500, watch_timeout_s=WATCH_TIMEOUT_S)
    try:
        yield Cluster(api, store, source)
    finally:
        await source.stop()
        api.stop()


async def test_the_first_list_names_pods_with_workload_service_and_labels(cluster: Cluster) -> None:
    await until(lambda: not cluster.store.stale())  # every kind listed once
    fields, how = cluster.store.table.lookup("10.40.1.5", 8080, time.time_ns())
    assert how == "ip" and fields is not None
    assert fields["pod"] == {"name": "web-7f9c-abcde", "namespace": "shop", "labels": {"app": "web"}}
    assert fields["workload"] == {"kind": "Deployment", "name": "web"}
    assert fields["service"] == {"name": "web", "namespace": "shop"}
    assert fields["node"] == "node-1"
    assert name_at(cluster.store, "10.96.0.10") == "web"
    assert name_at(cluster.store, "10.40.0.1") == "node-1"


async def test_an_ip_reused_by_a_new_pod_one_second_later_names_old_and_new_entries(cluster: Cluster) -> None:
    api, store = cluster.api, cluster.store
    now = datetime.now(UTC).replace(microsecond=0)
    t0, t1 = now - timedelta(seconds=120), now - timedelta(seconds=60)
    api.put(ka.pod("cart-1", "shop", "10.40.1.77", created=t0))
    await until(lambda: name_at(store, "10.40.1.77") == "cart-1")
    api.delete("Pod", "shop", "cart-1", deletion_timestamp=t1)
    api.put(ka.pod("cart-2", "shop", "10.40.1.77", created=t1 + timedelta(seconds=1)))
    await until(lambda: name_at(store, "10.40.1.77") == "cart-2")
    ns = lambda d: int(d.timestamp() * NS)  # noqa: E731
    assert name_at(store, "10.40.1.77", ns(t0 + timedelta(seconds=30))) == "cart-1"
    assert name_at(store, "10.40.1.77", ns(t1 - timedelta(milliseconds=500))) == "cart-1"
    assert name_at(store, "10.40.1.77", ns(t1 + timedelta(milliseconds=1500))) == "cart-2"


async def test_a_cut_watch_resumes_from_its_resource_version_without_listing_again(cluster: Cluster) -> None:
    api, store = cluster.api, cluster.store
    await until(lambda: name_at(store, "10.40.1.5") is not None)
    lists_before = api.count("/api/v1/pods?limit")
    api.cut_watches()
    api.put(ka.pod("after-cut", "shop", "10.40.1.90"))
    await until(lambda: name_at(store, "10.40.1.90") == "after-cut")
    assert api.count("/api/v1/pods?limit") == lists_before
    pod_watchers = [w for w in cluster.source.watchers if w.kind == "pod"]
    assert pod_watchers[0].stats.watches >= 2


async def test_410_gone_makes_the_watcher_list_again_and_close_what_vanished_meanwhile(
    cluster: Cluster,
) -> None:
    api, store = cluster.api, cluster.store
    api.put(ka.pod("doomed", "shop", "10.40.1.60"))
    await until(lambda: name_at(store, "10.40.1.60") == "doomed")
    api.set_down(True)
    api.delete("Pod", "shop", "doomed")
    api.put(ka.pod("newcomer", "shop", "10.40.1.61"))
    api.compact()
    api.set_down(False)
    await until(lambda: name_at(store, "10.40.1.61") == "newcomer")
    await until(lambda: name_at(store, "10.40.1.60", time.time_ns() + 60 * NS) is None)
    pod_watcher = next(w for w in cluster.source.watchers if w.kind == "pod")
    assert pod_watcher.stats.relists_gone >= 1 and pod_watcher.stats.lists >= 2


async def test_an_unreachable_api_server_keeps_the_last_good_state_and_marks_it_stale(
    cluster: Cluster,
) -> None:
    api, store = cluster.api, cluster.store
    await until(lambda: not store.stale())
    api.set_down(True)
    await until(store.stale)
    assert name_at(store, "10.40.1.5") == "web-7f9c-abcde"
    failures = sum(w.stats.failures for w in cluster.source.watchers)
    assert failures >= 1
    api.set_down(False)
    await until(lambda: not store.stale())


async def test_a_list_larger_than_a_page_is_read_in_pages(tmp_path: Path) -> None:
    api = ka.KubeApi().start()
    for i in range(1200):
        api.put(ka.to_json(ka.pod(f"p{i}", "bulk", f"10.41.{i // 250}.{i % 250 + 1}")))
    store = IdentityStore()
    source = KubernetesSource(store)
    await source.start(
        api_client(str(api.write_kubeconfig(tmp_path / "kc"))), page_size=500, watch_timeout_s=3
    )
    try:
        await until(lambda: len(source.pods) == 1200)
        assert name_at(store, "10.41.4.200") == "p1199"
        assert api.count("/api/v1/pods?continue=") + api.count("&continue=") >= 2
    finally:
        await source.stop()
        api.stop()


async def test_objects_with_missing_fields_are_skipped_without_stopping_the_watch(cluster: Cluster) -> None:
    api, store = cluster.api, cluster.store
    api.put(
        {
            "kind": "Pod",
            "metadata": {"name": "weird", "namespace": "shop"},
            "spec": None,
            "status": {"podIP": 5},
        }
    )
    api.put(
        {"kind": "Service", "metadata": {"name": "odd", "namespace": "shop"}, "spec": {"clusterIPs": [None]}}
    )
    api.put(ka.pod("fine", "shop", "10.40.1.95"))
    try:
        await until(lambda: name_at(store, "10.40.1.95") == "fine")
    except AssertionError:
        errors = {w.kind: (w.stats.failures, w.stats.errors[-3:]) for w in cluster.source.watchers}
        raise AssertionError(f"the pod was never named; watchers: {errors}") from None
    assert ("shop", "weird") in cluster.source.pods


def test_only_one_replica_holds_the_lease_until_it_expires(tmp_path: Path) -> None:
    api = ka.KubeApi().start()
    try:
        coord = client.CoordinationV1Api(api_client(str(api.write_kubeconfig(tmp_path / "kc"))))
        a = LeaseElector(coord, "wiretide", "resolver", "replica-a", lambda _: None, lease_s=15)
        b = LeaseElector(coord, "wiretide", "resolver", "replica-b", lambda _: None, lease_s=15)
        now = datetime.now(UTC)
        assert a.try_acquire(now)
        assert not b.try_acquire(now + timedelta(seconds=1))
        assert a.try_acquire(now + timedelta(seconds=5))  # renew
        assert not b.try_acquire(now + timedelta(seconds=19))
        assert b.try_acquire(now + timedelta(seconds=21))  # a stopped renewing
        assert not a.try_acquire(now + timedelta(seconds=22))
        lease = coord.read_namespaced_lease("resolver", "wiretide")
        assert lease.spec.holder_identity == "replica-b" and lease.spec.lease_transitions == 1
    finally:
        api.stop()


def test_a_stale_lease_write_loses_to_the_one_that_wrote_first(tmp_path: Path) -> None:
    api = ka.KubeApi().start()
    try:
        coord = client.CoordinationV1Api(api_client(str(api.write_kubeconfig(tmp_path / "kc"))))
        LeaseElector(coord, "wiretide", "resolver", "x", lambda _: None).try_acquire()
        read_first = coord.read_namespaced_lease("resolver", "wiretide")
        LeaseElector(coord, "wiretide", "resolver", "x", lambda _: None).try_acquire()
        with pytest.raises(client.ApiException) as info:
            coord.replace_namespaced_lease("resolver", "wiretide", read_first)
        assert info.value.status == 409
    finally:
        api.stop()


async def test_a_large_list_is_applied_page_by_page_while_the_loop_keeps_serving(tmp_path: Path) -> None:
    api = ka.KubeApi().start()
    total = 3000
    for i in range(total):
        api.put(ka.to_json(ka.pod(f"p{i}", "bulk", f"10.42.{i // 250}.{i % 250 + 1}")))
    store = IdentityStore()
    source = KubernetesSource(store)
    seen_while_loading: list[int] = []

    async def other_work() -> None:  # stands for lookups and snapshots served meanwhile
        while len(source.pods) < total:
            seen_while_loading.append(len(source.pods))
            await asyncio.sleep(0)

    await source.start(
        api_client(str(api.write_kubeconfig(tmp_path / "kc"))), page_size=200, watch_timeout_s=3
    )
    try:
        await asyncio.wait_for(other_work(), 60)
        assert any(0 < n < total for n in seen_while_loading)
    finally:
        await source.stop()
        api.stop()

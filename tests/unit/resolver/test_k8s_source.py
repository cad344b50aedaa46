"""Watch events applied to the store without HTTP: ordering, relists, the objects that tie pods to names."""

from __future__ import annotations

from wiretide.cli.demo import kubeapi as ka
from wiretide.common.identity import NS
from wiretide.resolver.k8s.source import KubernetesSource
from wiretide.resolver.k8s.watch import PAGE, RELIST_BEGIN, RELIST_END
from wiretide.resolver.table import IdentityStore

T0 = 1_700_000_000 * NS


def fields(store: IdentityStore, ip: str, ts: int = T0 + 100 * NS) -> dict[str, object]:
    found, _ = store.table.lookup(ip, 80, ts)
    assert found is not None, ip
    return found


def relist(source: KubernetesSource, kind: str, docs: list[dict[str, object]], now: int) -> None:
    source.apply(kind, RELIST_BEGIN, None, now)
    source.apply(kind, PAGE, docs, now)
    source.apply(kind, RELIST_END, None, now)


def test_a_replicaset_seen_after_its_pod_still_names_the_deployment() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    source.apply(
        "pod", "ADDED", ka.to_json(ka.pod("api-x1", "shop", "10.9.0.1", owner=("ReplicaSet", "api-5f"))), T0
    )
    assert fields(store, "10.9.0.1")["workload"] == {"kind": "ReplicaSet", "name": "api-5f"}
    source.apply("replicaset", "ADDED", ka.to_json(ka.replicaset("api-5f", "shop", "api")), T0 + NS)
    assert fields(store, "10.9.0.1")["workload"] == {"kind": "Deployment", "name": "api"}


def test_endpointslices_attach_and_detach_the_service_name() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    source.apply("pod", "ADDED", ka.to_json(ka.pod("web-1", "shop", "10.9.0.2")), T0)
    slice_doc = ka.to_json(ka.endpointslice("web", "shop", [("web-1", "10.9.0.2")]))
    source.apply("endpointslice", "ADDED", slice_doc, T0 + NS)
    assert fields(store, "10.9.0.2")["service"] == {"name": "web", "namespace": "shop"}
    source.apply("endpointslice", "DELETED", slice_doc, T0 + 2 * NS)
    assert fields(store, "10.9.0.2")["service"] is None


def test_a_relist_closes_pods_deleted_while_the_watch_was_away() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    a = ka.to_json(ka.pod("a", "shop", "10.9.0.3"))
    b = ka.to_json(ka.pod("b", "shop", "10.9.0.4"))
    relist(source, "pod", [a, b], T0)
    relist(source, "pod", [a], T0 + 50 * NS)
    assert ("shop", "b") not in source.pods
    assert fields(store, "10.9.0.4", T0 + 10 * NS)["name"] == "b"  # earlier entries keep the name
    assert store.table.lookup("10.9.0.4", 80, T0 + 500 * NS) == (None, "none")
    assert fields(store, "10.9.0.3")["name"] == "a"


def test_malformed_objects_are_counted_and_the_rest_of_the_page_applies() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    good = ka.to_json(ka.pod("ok", "shop", "10.9.0.5"))
    source.apply("pod", PAGE, [{"metadata": {}}, "not an object", None, good], T0)
    assert source.stats.invalid == 3 and source.stats.applied == 1
    assert fields(store, "10.9.0.5")["name"] == "ok"


def test_a_pod_that_gets_its_ip_later_is_named_from_then_on() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    source.apply("pod", "ADDED", ka.to_json(ka.pod("late", "shop", None)), T0)
    assert store.table.lookup("10.9.0.6", 80, T0 + NS) == (None, "none")
    source.apply("pod", "MODIFIED", ka.to_json(ka.pod("late", "shop", "10.9.0.6")), T0 + 5 * NS)
    assert fields(store, "10.9.0.6", T0 + 6 * NS)["name"] == "late"


def test_the_store_is_synced_only_once_every_kind_has_been_listed() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    for kind in ("namespace", "node", "replicaset", "endpointslice", "service"):
        relist(source, kind, [], T0)
        assert store.synced_at_ns == 0
    relist(source, "pod", [], T0 + NS)
    assert store.synced_at_ns == T0 and not store.stale(T0 + 2 * NS)

"""Pods found by their containers' ids: what names an end whose process's container eBPF saw."""

from __future__ import annotations

from typing import Any

from wiretide.cli.demo import kubeapi as ka
from wiretide.common import containers
from wiretide.common.identity import NS, IdentityTable, apply_update, load_snapshot
from wiretide.resolver.k8s import objects
from wiretide.resolver.k8s.source import KubernetesSource
from wiretide.resolver.table import IdentityStore

T0 = 1_700_000_000 * NS
NODE_IP = "10.0.0.5"
C1, C2, C3 = "a1" * 32, "b2" * 32, "c3" * 32


def at(seconds: int) -> int:
    return T0 + seconds * NS


def pod_doc(name: str, cids: list[str], **kw: Any) -> dict[str, Any]:
    return ka.to_json(ka.pod(name, "kube-system", NODE_IP, host_network=True, container_ids=cids, **kw))


def test_a_pod_is_found_by_each_of_its_containers_while_its_address_is_the_node_s() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    source.apply("node", "ADDED", ka.to_json(ka.node("node-1", NODE_IP)), at(0))
    source.apply("pod", "ADDED", pod_doc("cilium-x1", [C1, C2], ports=[9962]), at(0))
    table = store.table
    for cid in (C1, C2):
        found = table.container(cid, at(10))
        assert found is not None
        assert found["pod"] == {"name": "cilium-x1", "namespace": "kube-system", "labels": {}}
        assert found["name"] == "cilium-x1"
    # the address alone says "the node" for any other port: this is what the container index is for
    assert table.lookup(NODE_IP, 443, at(10))[0]["name"] == "node-1"  # type: ignore[index]
    assert table.lookup(containers.key(C1), 0, at(10))[1] == "container"
    assert table.container(C3, at(10)) is None
    assert table.stats().addresses == 2  # the node's address, the pod's port; containers are not addresses


def test_a_restarted_container_names_the_pod_under_its_new_id_and_the_old_one_lingers() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    source.apply("pod", "ADDED", pod_doc("agent", [C1]), at(0))
    source.apply("pod", "MODIFIED", pod_doc("agent", [C2]), at(100))
    table = store.table
    assert table.container(C2, at(110)) is not None
    assert table.container(C1, at(50)) is not None  # entries from before the restart keep their name
    assert table.container(C1, at(100 + 3600)) is None


def test_a_deleted_pod_s_containers_stop_naming_it() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    doc = pod_doc("agent", [C1])
    source.apply("pod", "ADDED", doc, at(0))
    source.apply("pod", "DELETED", doc, at(100))
    assert store.table.container(C1, at(50)) is not None
    assert store.table.container(C1, at(100 + 3600)) is None


def test_container_identities_reach_a_dissector_s_copy_through_snapshot_and_deltas() -> None:
    store = IdentityStore()
    source = KubernetesSource(store)
    source.apply("pod", "ADDED", pod_doc("agent", [C1]), at(0))
    store.flush(at(0))
    copy = IdentityTable()
    load_snapshot(copy, store.snapshot(at(0)))
    assert copy.container(C1, at(1)) is not None
    source.apply("pod", "MODIFIED", pod_doc("agent", [C2]), at(10))
    for update in store.flush(at(10)):
        apply_update(copy, update)
    assert copy.container(C2, at(11)) is not None
    assert copy.container(C1, at(11 + 3600)) is None


def test_malformed_container_statuses_yield_no_containers() -> None:
    doc = pod_doc("agent", [])
    doc["status"]["containerStatuses"] = [
        None,
        "x",
        {"containerID": 5},
        {"containerID": "containerd://short"},
        {"containerID": f"containerd://{C1}"},
        {"containerID": f"containerd://{C1}"},  # the same id twice counts once
    ]
    doc["status"]["initContainerStatuses"] = {"not": "a list"}
    doc["status"]["ephemeralContainerStatuses"] = [{"containerID": f"cri-o://{C3}"}]
    assert objects.pod_facts(doc).containers == (C1, C3)


def test_a_pod_keeps_a_bounded_number_of_container_ids() -> None:
    doc = pod_doc("agent", [f"{i:064x}" for i in range(objects.MAX_CONTAINERS_PER_POD + 50)])
    facts = objects.pod_facts(doc)
    assert len(facts.containers) == objects.MAX_CONTAINERS_PER_POD


def test_a_finished_pod_names_no_container() -> None:
    store = IdentityStore()
    KubernetesSource(store).apply("pod", "ADDED", pod_doc("job", [C1], phase="Succeeded"), at(0))
    assert store.table.container(C1, at(1)) is None


def test_container_identities_count_against_the_table_s_bound() -> None:
    store = IdentityStore(IdentityTable(max_spans=10))
    source = KubernetesSource(store)
    for i in range(20):
        doc = ka.to_json(ka.pod(f"p{i}", "ns", f"10.1.0.{i}", container_ids=[f"{i:064x}"]))
        source.apply("pod", "ADDED", doc, at(i))
    assert len(store.table) == 10
    assert store.table.evicted == 30
    assert store.table.container(f"{19:064x}", at(30)) is not None
    assert store.table.container(f"{0:064x}", at(30)) is None

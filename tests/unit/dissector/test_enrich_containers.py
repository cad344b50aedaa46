"""An end whose process's container eBPF saw is named by that container's pod, whatever its address."""

from __future__ import annotations

from typing import Any

from wiretide.common import containers
from wiretide.common.identity import NS, IdentityTable
from wiretide.dissector.service import enrich
from wiretide.proto.v1 import resolver_pb2

T0 = 1_700_000_000 * NS
NODE_IP = "10.0.0.5"
CID = "a1" * 32


def table() -> IdentityTable:
    t = IdentityTable()
    t.upsert(resolver_pb2.Identity(ip=NODE_IP, name="node-1", kind="node", node="node-1", valid_from_ns=T0))
    pod = resolver_pb2.Identity(
        ip=containers.key(CID),
        kind="container",
        container_id=CID,
        name="agent-x1",
        namespace="kube-system",
        node="node-1",
        labels={"app": "agent"},
        valid_from_ns=T0,
    )
    pod.workload.kind, pod.workload.name = "DaemonSet", "agent"
    t.upsert(pod)
    return t


def entry(process: Any) -> dict[str, Any]:
    src: dict[str, Any] = {"ip": NODE_IP, "port": 40000}
    if process is not None:
        src["process"] = process
    return {"protocol": "http", "timestamp": T0 + NS, "src": src, "dst": {"ip": "10.9.9.9", "port": 80}}


def test_a_host_network_process_in_a_known_container_is_named_by_its_pod_not_the_node() -> None:
    e = entry({"pid": 7, "name": "agent", "cgroup_id": 42, "container_id": CID})
    enrich(table(), [e])
    src = e["src"]
    assert src["name"] == "agent-x1"
    assert src["pod"] == {"name": "agent-x1", "namespace": "kube-system", "labels": {"app": "agent"}}
    assert src["workload"] == {"kind": "DaemonSet", "name": "agent"}
    assert src["resolution"] == "container"
    assert src["process"] == {"pid": 7, "name": "agent", "cgroup_id": 42, "container_id": CID}
    assert (src["ip"], src["port"]) == (NODE_IP, 40000)


def test_without_a_known_container_the_address_names_the_end_and_the_process_is_kept() -> None:
    for process in (
        {"pid": 7, "name": "sshd", "cgroup_id": 1, "container_id": None},
        {"pid": 7, "name": "x", "cgroup_id": 1, "container_id": "f0" * 32},  # not any pod's
        {"pid": 7, "name": "x", "cgroup_id": 1, "container_id": 12},  # junk
    ):
        e = entry(process)
        enrich(table(), [e])
        assert e["src"]["name"] == "node-1", process
        assert e["src"]["resolution"] == "ip"
        assert e["src"]["process"] == process


def test_an_end_without_a_process_is_named_by_its_address_only() -> None:
    e = entry(None)
    enrich(table(), [e])
    assert e["src"]["name"] == "node-1" and e["src"]["process"] is None


def test_a_container_is_not_taken_for_its_pod_before_the_pod_existed() -> None:
    e = entry({"pid": 7, "name": "agent", "cgroup_id": 42, "container_id": CID})
    e["timestamp"] = T0 - 3600 * NS
    enrich(table(), [e])
    assert e["src"]["resolution"] != "container"

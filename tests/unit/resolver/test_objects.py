"""Kubernetes objects → facts → claims, with the malformed objects that real clusters and proxies send."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.kubeapi import pod, service, to_json
from wiretide.resolver.k8s import objects as k8s


def test_a_pod_without_an_ip_claims_nothing() -> None:
    facts = k8s.pod_facts(to_json(pod("pending", "shop", None)))
    assert facts.ips == () and k8s.pod_claims(facts, ("", ""), ("", "")) == []


def test_a_finished_pod_gives_its_address_back() -> None:
    facts = k8s.pod_facts(to_json(pod("job-1", "batch", "10.1.0.9", phase="Succeeded")))
    assert k8s.pod_claims(facts, ("Job", "job"), ("", "")) == []


@pytest.mark.parametrize(
    "doc",
    [
        {"metadata": {"name": "bare"}},
        {
            "metadata": {"name": "nulls", "labels": None, "ownerReferences": None},
            "spec": None,
            "status": None,
        },
        {
            "metadata": {"name": "wrong", "labels": ["x"], "creationTimestamp": "yesterday"},
            "status": {"podIP": 7},
        },
        {
            "metadata": {"name": "odd-ports"},
            "spec": {"containers": [{"ports": [{"containerPort": "80"}, None]}]},
        },
    ],
)
def test_pods_with_missing_or_mistyped_fields_yield_fewer_facts_not_errors(doc: dict[str, Any]) -> None:
    facts = k8s.pod_facts(doc)
    assert facts.ips == () and facts.ports == () and facts.since_ns == 0


def test_an_object_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="name"):
        k8s.pod_facts({"metadata": {}})


def test_a_host_network_pod_is_named_by_its_ports_only() -> None:
    facts = k8s.pod_facts(
        to_json(pod("node-exporter-x", "mon", "192.168.7.2", host_network=True, ports=[9100]))
    )
    claims = k8s.pod_claims(facts, ("DaemonSet", "node-exporter"), ("", ""))
    assert [(c.ip, c.port) for c in claims] == [("192.168.7.2", 9100)]
    assert claims[0].identity.workload.kind == "DaemonSet"


def test_the_workload_comes_from_the_replicasets_owner_or_the_template_hash() -> None:
    facts = k8s.pod_facts(to_json(pod("api-5d8f-x", "shop", "10.1.0.3", owner=("ReplicaSet", "api-5d8f"))))
    assert k8s.workload_of(facts, {("shop", "api-5d8f"): ("Deployment", "api")}) == ("Deployment", "api")
    assert k8s.workload_of(facts, {}) == ("ReplicaSet", "api-5d8f")
    hashed = k8s.pod_facts(
        to_json(
            pod(
                "api-5d8f-y",
                "shop",
                "10.1.0.4",
                owner=("ReplicaSet", "api-5d8f"),
                labels={"pod-template-hash": "5d8f"},
            )
        )
    )
    assert k8s.workload_of(hashed, {}) == ("Deployment", "api")
    stateful = k8s.pod_facts(to_json(pod("db-0", "shop", "10.1.0.5", owner=("StatefulSet", "db"))))
    assert k8s.workload_of(stateful, {}) == ("StatefulSet", "db")


def test_a_headless_service_claims_no_address() -> None:
    doc = to_json(service("headless", "shop", "None"))
    assert k8s.service_claims(doc) == []
    assert [c.ip for c in k8s.service_claims(to_json(service("web", "shop", "10.96.0.1")))] == ["10.96.0.1"]


def test_deletion_time_is_the_earlier_of_the_deadline_and_the_observation() -> None:
    doc = {"metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:10Z"}}
    deadline = k8s.parse_time_ns("2024-01-01T00:00:10Z")
    assert k8s.pod_ended_ns(doc, deadline + 5) == deadline
    assert k8s.pod_ended_ns(doc, deadline - 5) == deadline - 5
    assert k8s.pod_ended_ns({"metadata": {"name": "p"}}, 123) == 123

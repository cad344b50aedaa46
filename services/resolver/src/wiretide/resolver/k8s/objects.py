"""Kubernetes objects (as the API's JSON) → the compact facts the resolver keeps → identity claims.

Rule: a field that is missing, null or of the wrong type reads as absent — a malformed object
yields fewer facts, never an exception; only an object without a name is refused (ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from wiretide.common import containers
from wiretide.proto.v1 import resolver_pb2
from wiretide.resolver.table import Claim

NS: Final = 1_000_000_000
SOURCE: Final = "k8s"
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
# A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
TEMPLATE_HASH_LABEL: Final = "pod-template-hash"
NODE_ADDRESS_TYPES: Final = ("InternalIP", "ExternalIP")
ENDED_PHASES: Final = ("Succeeded", "Failed")
# The container statuses a pod reports: its containers, init containers and debug containers.
CONTAINER_STATUSES: Final = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
# Container ids kept per pod: real pods have a handful; a hostile object cannot grow the table.
MAX_CONTAINERS_PER_POD: Final = 64


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _labels(value: Any) -> dict[str, str]:
    return {k: v for k, v in _dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def parse_time_ns(value: Any) -> int:
    """RFC 3339 (as the API writes timestamps) → ns since epoch; 0 if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return 0
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * NS)
    except ValueError:
        return 0


def meta(obj: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an object; ValueError if it has no name."""
    md = _dict(obj.get("metadata"))
    name = _str(md.get("name"))
    if not name:
        raise ValueError("object without metadata.name")
    return _str(md.get("namespace")), name


def resource_version(obj: dict[str, Any]) -> str:
    return _str(_dict(obj.get("metadata")).get("resourceVersion"))


def controller_of(obj: dict[str, Any]) -> tuple[str, str]:
    """(kind, name) of the controlling owner reference, or ("", "")."""
    refs = [_dict(r) for r in _list(_dict(obj.get("metadata")).get("ownerReferences"))]
    chosen = next((r for r in refs if r.get("controller") is True), refs[0] if refs else {})
    return _str(chosen.get("kind")), _str(chosen.get("name"))


@dataclass(frozen=True, slots=True)
class PodFacts:
    namespace: str
    name: str
    ips: tuple[str, ...]
    host_network: bool
    ports: tuple[int, ...]
    labels: tuple[tuple[str, str], ...]
    node: str
    owner_kind: str
    owner_name: str
    since_ns: int
    ended: bool
    containers: tuple[str, ...] = ()  # bare container ids (see wiretide.common.containers)


def pod_facts(obj: dict[str, Any]) -> PodFacts:
    namespace, name = meta(obj)
    md, spec, status = _dict(obj.get("metadata")), _dict(obj.get("spec")), _dict(obj.get("status"))
    ips = [_str(_dict(p).get("ip")) for p in _list(status.get("podIPs"))]
    if not any(ips):
        ips = [_str(status.get("podIP"))]
    ports = sorted(
        {
            port
            for c in _list(spec.get("containers"))
            for p in _list(_dict(c).get("ports"))
            if isinstance(port := _dict(p).get("containerPort"), int) and 0 < port < 65536
        }
    )
    owner_kind, owner_name = controller_of(obj)
    since = max(parse_time_ns(md.get("creationTimestamp")), parse_time_ns(status.get("startTime")))
    cids = [
        containers.from_status(_dict(c).get("containerID"))
        for field in CONTAINER_STATUSES
        for c in _list(status.get(field))
    ]
    return PodFacts(
        namespace=namespace,
        name=name,
        ips=tuple(dict.fromkeys(ip for ip in ips if ip)),
        host_network=spec.get("hostNetwork") is True,
        ports=tuple(ports),
        labels=tuple(sorted(_labels(md.get("labels")).items())),
        node=_str(spec.get("nodeName")),
        owner_kind=owner_kind,
        owner_name=owner_name,
        since_ns=since,
        ended=_str(status.get("phase")) in ENDED_PHASES,
        containers=tuple(dict.fromkeys(c for c in cids if c))[:MAX_CONTAINERS_PER_POD],
    )


def pod_ended_ns(obj: dict[str, Any], observed_ns: int) -> int:
    """When a deleted pod let its address go: its deletion deadline if that came first."""
    deadline = parse_time_ns(_dict(obj.get("metadata")).get("deletionTimestamp"))
    return min(observed_ns, deadline) if deadline else observed_ns


def workload_of(pod: PodFacts, replicaset_owner: dict[tuple[str, str], tuple[str, str]]) -> tuple[str, str]:
    """The workload behind a pod: a ReplicaSet's own controller (a Deployment), else the pod's owner."""
    kind, name = pod.owner_kind, pod.owner_name
    if kind == "ReplicaSet":
        owner = replicaset_owner.get((pod.namespace, name))
        if owner is not None and owner[0]:
            return owner
        template_hash = dict(pod.labels).get(TEMPLATE_HASH_LABEL, "")
        if template_hash and name.endswith("-" + template_hash):
            return "Deployment", name[: -len(template_hash) - 1]
    return kind, name


def pod_claims(pod: PodFacts, workload: tuple[str, str], service: tuple[str, str]) -> list[Claim]:
    if pod.ended:
        return []
    ident = resolver_pb2.Identity(
        name=pod.name,
        namespace=pod.namespace,
        kind="pod",
        labels=dict(pod.labels),
        service_name=service[1],
        service_namespace=service[0],
        node=pod.node,
    )
    if workload[1]:
        ident.workload.kind, ident.workload.name = workload
    if pod.host_network:
        # The address is the node's: only the pod's own ports name it.
        claims = [Claim(ip, port, pod.since_ns, ident) for ip in pod.ips for port in pod.ports]
    else:
        claims = [Claim(ip, 0, pod.since_ns, ident) for ip in pod.ips]
    # Each container names the pod too, whatever address its processes use (see resolver.proto).
    for cid in pod.containers:
        held = resolver_pb2.Identity()
        held.CopyFrom(ident)
        held.kind, held.container_id = "container", cid
        claims.append(Claim(containers.key(cid), 0, pod.since_ns, held))
    return claims


def service_claims(obj: dict[str, Any]) -> list[Claim]:
    namespace, name = meta(obj)
    md, spec = _dict(obj.get("metadata")), _dict(obj.get("spec"))
    ips = [_str(ip) for ip in _list(spec.get("clusterIPs"))] or [_str(spec.get("clusterIP"))]
    ips += [_str(ip) for ip in _list(spec.get("externalIPs"))]
    ips += [
        _str(_dict(i).get("ip"))
        for i in _list(_dict(_dict(obj.get("status")).get("loadBalancer")).get("ingress"))
    ]
    since = parse_time_ns(md.get("creationTimestamp"))
    ident = resolver_pb2.Identity(
        name=name,
        namespace=namespace,
        kind="service",
        labels=_labels(md.get("labels")),
        service_name=name,
        service_namespace=namespace,
    )
    return [Claim(ip, 0, since, ident) for ip in dict.fromkeys(ips) if ip and ip != "None"]


def node_claims(obj: dict[str, Any]) -> list[Claim]:
    _, name = meta(obj)
    md, status = _dict(obj.get("metadata")), _dict(obj.get("status"))
    ips = [
        _str(_dict(a).get("address"))
        for a in _list(status.get("addresses"))
        if _dict(a).get("type") in NODE_ADDRESS_TYPES
    ]
    ident = resolver_pb2.Identity(name=name, kind="node", labels=_labels(md.get("labels")), node=name)
    since = parse_time_ns(md.get("creationTimestamp"))
    return [Claim(ip, 0, since, ident) for ip in dict.fromkeys(ips) if ip]


def endpointslice_pods(obj: dict[str, Any]) -> tuple[tuple[str, str], set[tuple[str, str]]]:
    """((namespace, service), {(namespace, pod)}) that an EndpointSlice ties together."""
    namespace, _ = meta(obj)
    service = _labels(_dict(obj.get("metadata")).get("labels")).get(SERVICE_NAME_LABEL, "")
    pods: set[tuple[str, str]] = set()
    for endpoint in _list(obj.get("endpoints")):
        ref = _dict(_dict(endpoint).get("targetRef"))
        if ref.get("kind") == "Pod" and _str(ref.get("name")):
            pods.add((_str(ref.get("namespace")) or namespace, _str(ref.get("name"))))
    return (namespace, service), pods

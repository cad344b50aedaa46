"""The optional static inventory: a YAML file naming addresses the other sources cannot see.

Accepted shapes — a list of records, or a mapping from address to record:

    - {ip: 10.0.0.5, name: billing-db, namespace: prod, labels: {tier: db}}
    10.0.0.6: {name: ldap, port: 389, service: directory, workload: {kind: VM, name: ldap-1}}

Rule: a bad file fails start-up with a message naming the setting and the record; it is never
half-loaded.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from wiretide.proto.v1 import resolver_pb2
from wiretide.resolver.table import Claim

SETTING = "WIRETIDE_RESOLVER_INVENTORY"


class InventoryError(ValueError):
    """The inventory file cannot be used; the message says where and why."""


def _record(ip: str, rec: Any, where: str) -> Claim:
    if not isinstance(rec, dict):
        raise InventoryError(f"{SETTING}: {where}: expected a mapping, got {type(rec).__name__}")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InventoryError(f"{SETTING}: {where}: {ip!r} is not an IP address") from None
    name = rec.get("name")
    if not isinstance(name, str) or not name:
        raise InventoryError(f"{SETTING}: {where}: `name` is required")
    port = rec.get("port", 0)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InventoryError(f"{SETTING}: {where}: `port` must be 0..65535")
    labels = rec.get("labels") or {}
    if not isinstance(labels, dict):
        raise InventoryError(f"{SETTING}: {where}: `labels` must be a mapping")
    ident = resolver_pb2.Identity(
        name=name,
        namespace=str(rec.get("namespace") or ""),
        kind="static",
        labels={str(k): str(v) for k, v in labels.items()},
        service_name=str(rec.get("service") or ""),
        node=str(rec.get("node") or ""),
    )
    if ident.service_name:
        ident.service_namespace = ident.namespace
    workload = rec.get("workload")
    if isinstance(workload, dict) and workload.get("name"):
        ident.workload.kind = str(workload.get("kind") or "")
        ident.workload.name = str(workload["name"])
    return Claim(ip, port, 1, ident)


def load_inventory(path: Path) -> list[Claim]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InventoryError(f"{SETTING}: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{SETTING}: {path} is not YAML: {exc}") from None
    if doc is None:
        return []
    if isinstance(doc, dict):
        return [_record(str(ip), rec, f"{path}: {ip}") for ip, rec in doc.items()]
    if isinstance(doc, list):
        out = []
        for i, rec in enumerate(doc):
            ip = rec.get("ip") if isinstance(rec, dict) else None
            out.append(_record(str(ip or ""), rec, f"{path}: record {i + 1}"))
        return out
    raise InventoryError(f"{SETTING}: {path}: expected a list or a mapping at the top")

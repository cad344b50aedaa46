"""The resolver's Prometheus metrics: its evictions are a counter (`..._total`) that grows by what the
identity table evicts, never set back, and counts each eviction once however often it is reported."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from wiretide.common.identity import NS, IdentityTable
from wiretide.common.settings import load_settings
from wiretide.proto.v1 import resolver_pb2
from wiretide.resolver.service import ResolverService, ResolverSettings
from wiretide.resolver.table import IdentityStore

EVICTED = "wiretide_resolver_identity_evicted_total"


def pod(i: int) -> resolver_pb2.Identity:
    return resolver_pb2.Identity(
        ip=f"10.60.0.{i}", name=f"p{i}", namespace="shop", kind="pod", valid_from_ns=i * NS
    )


def evicted_total() -> float:
    return REGISTRY.get_sample_value(EVICTED) or 0.0


def test_identity_evictions_are_a_counter_that_grows_by_what_the_table_evicted(tmp_path: Path) -> None:
    family = next(f for f in REGISTRY.collect() if f.name == EVICTED.removesuffix("_total"))
    assert family.type == "counter"
    env = {"WIRETIDE_DATA_DIR": str(tmp_path)}
    service = ResolverService(load_settings(ResolverSettings, "resolver", env))
    service.store = IdentityStore(IdentityTable(max_spans=2))
    before = evicted_total()
    for i in range(1, 6):
        service.store.table.upsert(pod(i))
    assert service.store.table.evicted == 3
    service.report_metrics()
    service.report_metrics()  # a second report of the same state adds nothing
    assert evicted_total() - before == 3
    service.store.table.upsert(pod(6))
    service.report_metrics()
    assert evicted_total() - before == 4
    service.store = IdentityStore()  # a fresh table counts from zero: the counter never goes back
    service.report_metrics()
    assert evicted_total() - before == 4

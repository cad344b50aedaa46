"""The tracer's Prometheus metrics keep Prometheus' conventions: every counter's series ends in `_total`,
and no label takes unbounded values — names learned from DNS answers (one per host called) never become
a `source`/`destination` label, however many there are; the service map still shows each of them."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

import wiretide.tracer.service  # noqa: F401 - registers every tracer metric
from wiretide.tracer.engine import Engine
from wiretide.tracer.servicemap import EXTERNAL, ServiceMap

from .chains import peer

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
HOSTS = 600  # distinct names: more than any dashboard should have series for one caller


def to_learned_host(i: int, caller: str) -> dict[str, Any]:
    """`caller` (a pod the resolver knows) calls a host it looked up in DNS: a name, nothing more."""
    return {
        "id": f"{caller}-{i}", "node": "n", "timestamp": T0 + i * MS, "elapsed_us": 1000, "protocol": "http",
        "transport": "tcp", "method": "GET", "path": "/", "status": 200,
        "src": {**peer(caller, 0, "10.0.0.1", 4000 + i), "resolution": "ip"},
        "dst": {"ip": f"203.0.{i // 250}.{i % 250}", "port": 443, "name": f"h{i}.example.net",
                "namespace": None, "pod": None, "service": None, "workload": None, "resolution": "dns"},
        "size": {"request": 10, "response": 10},
    }  # fmt: skip


def destinations(source: str) -> set[str]:
    found = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.labels.get("source") == source:
                found.add(sample.labels["destination"])
    return found


def test_names_learned_from_dns_fold_into_one_destination_label_but_stay_nodes_on_the_map() -> None:
    smap = ServiceMap()
    for i in range(HOSTS):
        smap.add(to_learned_host(i, "dnsfold"))
    assert destinations("shop/dnsfold") == {EXTERNAL}
    labels = {"source": "shop/dnsfold", "destination": EXTERNAL, "protocol": "http", "status_class": "2xx"}
    assert REGISTRY.get_sample_value("wiretide_tracer_edge_requests_total", labels) == HOSTS
    nodes, edges = smap.compute(window_ns=0)
    assert len([n for n in nodes if n.name.endswith(".example.net")]) == HOSTS
    assert len(edges) == HOSTS


def test_the_span_path_folds_learned_names_too() -> None:
    engine = Engine()
    engine.ingest([to_learned_host(i, "dnsspans") for i in range(HOSTS)])
    engine.flush()
    assert destinations("shop/dnsspans") == {EXTERNAL}


def test_a_name_from_the_resolver_stays_its_own_label() -> None:
    smap = ServiceMap()
    entry = to_learned_host(0, "dnskeep")
    entry["dst"] = {**peer("payments", 0, "10.0.9.9", 443), "resolution": "ip-and-port"}
    smap.add(entry)
    assert destinations("shop/dnskeep") == {"shop/payments"}


def test_every_tracer_counter_series_ends_in_total() -> None:
    counters = [f for f in REGISTRY.collect() if f.type == "counter" and f.name.startswith("wiretide_tracer")]
    assert len(counters) >= 8
    for family in counters:
        values = [s.name for s in family.samples if not s.name.endswith("_created")]
        assert all(name.endswith("_total") for name in values), family.name


def test_red_metrics_read_as_prometheus_client_counters_and_histograms_would() -> None:
    """The RED series are plain counts read at scrape time; what Prometheus reads is what a Counter and
    a Histogram of the same names and labels, fed the same calls, export (`_created` aside: a time)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from wiretide.tracer.servicemap import DURATION_BUCKETS

    reference = CollectorRegistry()
    edge = ["source", "destination", "protocol"]
    requests = Counter("wiretide_tracer_edge_requests", "", [*edge, "status_class"], registry=reference)
    duration = Histogram(
        "wiretide_tracer_edge_duration_seconds", "", edge, buckets=DURATION_BUCKETS, registry=reference
    )
    nbytes = Counter("wiretide_tracer_edge_bytes", "", edge, registry=reference)
    smap = ServiceMap()
    for i in range(300):
        entry = to_learned_host(i, "redparity")
        entry["dst"] = {**peer(f"svc{i % 3}", 0, "10.0.9.9", 443), "resolution": "ip"}
        entry["elapsed_us"] = (i * 7919) % 12_000_000  # across every bucket, the edges included
        entry["status"] = (200, 404, 503, 0)[i % 4]
        entry["size"] = {"request": i % 5, "response": 0}
        smap.add(entry)
        labels = ("shop/redparity", f"shop/svc{i % 3}", "http")
        klass = {200: "2xx", 404: "4xx", 503: "5xx", 0: "ok"}[entry["status"]]
        requests.labels(*labels, klass).inc()
        duration.labels(*labels).observe(entry["elapsed_us"] * 1000 / 1e9)
        nbytes.labels(*labels).inc(i % 5)

    def samples(families: Any) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        return sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value if not s.name.endswith("_created") else 0.0)
            for f in families
            if f.name.startswith("wiretide_tracer_edge")
            for s in f.samples
            if s.labels.get("source") == "shop/redparity"
        )

    assert samples(REGISTRY.collect()) == samples(reference.collect())

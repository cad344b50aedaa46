"""The service map and RED metrics match the calls fed in; the Grafana dashboard asks only for metrics
the tracer really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

import wiretide.tracer.service  # noqa: F401 - registers every tracer metric
from wiretide.common.kfl import compile_predicate
from wiretide.tracer.engine import Engine
from wiretide.tracer.servicemap import ServiceMap, percentile

from .chains import peer

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def call(i: int, src: str, dst: str, ms: int, status: int, size: int = 100) -> dict[str, Any]:
    return {
        "id": f"e{i}", "node": "n", "timestamp": T0 + i * MS, "elapsed_us": ms * 1000, "protocol": "http",
        "method": "GET", "path": "/x", "status": status, "src": peer(src, 0, "10.0.0.1", 4000 + i),
        "dst": peer(dst, 0, "10.0.0.2", 80), "size": {"request": size, "response": size},
    }  # fmt: skip


def test_edges_carry_rate_error_rate_latency_percentiles_and_bytes() -> None:
    smap = ServiceMap()
    for i in range(100):
        smap.add(call(i, "mapweb", "mapapi", ms=i + 1, status=500 if i % 10 == 0 else 200))
    smap.add(call(200, "mapapi", "mapdb", ms=3, status=200))
    nodes, edges = smap.compute(window_ns=10 * 10**9)
    assert [n.id for n in nodes] == ["shop/mapapi", "shop/mapdb", "shop/mapweb"]
    web = next(e for e in edges if e.source == "shop/mapweb")
    assert web.requests == 100 and web.error_rate == 0.1 and web.bytes == 100 * 200
    assert (web.p50_ms, web.p95_ms, web.p99_ms) == (50.0, 95.0, 99.0)
    assert web.request_rate == 10.0  # 100 calls over a 10 s window
    labels = {"source": "shop/mapweb", "destination": "shop/mapapi", "protocol": "http"}
    assert (
        REGISTRY.get_sample_value("wiretide_tracer_edge_requests_total", {**labels, "status_class": "5xx"})
        == 10
    )
    assert REGISTRY.get_sample_value("wiretide_tracer_edge_duration_seconds_count", labels) == 100


def test_a_filtered_map_counts_the_matching_calls_the_trace_store_holds() -> None:
    engine = Engine()
    calls = [call(i, "fmapweb", "fmapapi", ms=i + 1, status=500 if i % 10 == 0 else 200) for i in range(100)]
    calls.append(call(200, "fmapapi", "fmapdb", ms=3, status=200))
    engine.ingest(calls)
    engine.flush()
    nodes, edges, missing = engine.service_map(10 * 10**9, compile_predicate("status >= 500"))
    assert [(e.source, e.destination, e.requests, e.error_rate) for e in edges] == [
        ("shop/fmapweb", "shop/fmapapi", 10, 1.0)
    ]
    assert [n.id for n in nodes] == ["shop/fmapapi", "shop/fmapweb"] and missing == 0
    # Unfiltered, from the map's own records: every call, errors or not.
    _, everything, _ = engine.service_map(10 * 10**9)
    assert sorted(e.requests for e in everything) == [1, 100]
    # Calls the store has forgotten are missing from a filtered map, and the answer says how many.
    engine.store.max_traces = 1
    engine.ingest([call(300, "fmapweb", "fmapapi", ms=1, status=503)])
    engine.flush()
    _, edges, missing = engine.service_map(10 * 10**9, compile_predicate("status >= 500"))
    assert [e.requests for e in edges] == [1] and missing == 101


def test_the_window_is_packet_time_and_the_record_bound_is_counted() -> None:
    smap = ServiceMap(max_records=10)
    for i in range(30):
        smap.add(call(i, "boundweb", "boundapi", ms=1, status=200))
    assert smap.evicted == 20 and len(smap.records) == 10
    _, edges = smap.compute(window_ns=5 * MS)  # the last 5 ms of packet time
    assert edges[0].requests == 5


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0


def test_the_grafana_dashboard_queries_only_metrics_the_tracer_exports() -> None:
    path = Path(__file__).resolve().parents[3] / "k8s" / "tracer" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"wiretide_tracer_[a-z_]+", e)}
    known = set(REGISTRY._names_to_collectors)  # every sample name, _total/_bucket included
    assert used and used <= known, used - known


def test_a_call_recorded_from_its_spans_is_the_call_recorded_from_its_entry() -> None:
    from wiretide.tracer.spans import KIND_SERVER, SpanIds, spans_from_entry

    odd = [
        call(1, "mapweb", "mapapi", ms=3, status=503),
        {**call(2, "mapweb", "mapapi", ms=3, status=200), "size": {"request": -5, "response": True}},
        {**call(3, "mapweb", "mapapi", ms=3, status=200), "size": "many", "elapsed_us": -7},
        {**call(4, "mapweb", "mapapi", ms=3, status=200), "protocol": 7, "timestamp": "soon"},
        {**call(5, "mapweb", "mapapi", ms=3, status=200), "src": {"ip": "192.0.2.1", "port": 1}},
    ]
    from_entries, from_spans = ServiceMap(), ServiceMap()
    for entry in odd:
        spans = spans_from_entry(entry, SpanIds(1))
        server, first = spans[-1], spans[0]
        caller = first.workload if first.kind != KIND_SERVER else first.peer
        callee = server.workload if server.kind == KIND_SERVER else first.peer
        from_entries.add_call(entry, caller, callee, server.error)
        from_spans.add_span(server, caller, callee)
    assert list(from_spans.records) == list(from_entries.records)
    assert [r.error for r in from_spans.records] == [True, False, False, False, False]
    assert [r.bytes for r in from_spans.records] == [200, 0, 0, 200, 200]
    assert from_spans.latest_ns == from_entries.latest_ns


def test_addresses_nobody_named_share_one_prometheus_series_but_stay_nodes_on_the_map() -> None:
    smap = ServiceMap()
    labels = {"source": "external", "destination": "shop/edgeapi", "protocol": "http"}
    before = REGISTRY.get_sample_value("wiretide_tracer_edge_duration_seconds_count", labels) or 0
    for i in range(40):
        entry = call(i, "x", "edgeapi", ms=2, status=200)
        entry["src"] = {"ip": f"203.0.113.{i + 1}", "port": 40000 + i}  # a client outside the cluster
        smap.add(entry)
    assert REGISTRY.get_sample_value("wiretide_tracer_edge_duration_seconds_count", labels) == before + 40
    assert REGISTRY.get_sample_value("wiretide_tracer_edge_duration_seconds_count",
                                     {**labels, "source": "203.0.113.1"}) is None  # fmt: skip
    nodes, edges = smap.compute(window_ns=10 * 10**9)
    assert len([n for n in nodes if n.id.startswith("203.0.113.")]) == 40
    assert len(edges) == 40 and all(e.destination == "shop/edgeapi" for e in edges)


def test_a_grpc_call_answered_503_by_a_proxy_without_grpc_status_is_a_server_error() -> None:
    smap = ServiceMap()
    proxied = {**call(300, "grpcweb", "grpcapi", ms=2, status=503), "protocol": "grpc"}
    proxied.update(path="/shop.Orders/Get", response={"status": 503, "headers": {}})
    answered = {**call(301, "grpcweb", "grpcapi", ms=2, status=200), "protocol": "grpc"}
    answered["response"] = {"status": 200, "grpc_status": 14}
    smap.add(proxied)
    smap.add(answered)
    (edge,) = smap.compute(window_ns=10 * 10**9)[1]
    assert edge.error_rate == 1.0
    labels = {"source": "shop/grpcweb", "destination": "shop/grpcapi", "protocol": "grpc"}
    for klass in ("5xx", "error"):  # the HTTP status read as a class; the gRPC code as an outcome
        sample = REGISTRY.get_sample_value(
            "wiretide_tracer_edge_requests_total", {**labels, "status_class": klass}
        )
        assert sample == 1


def test_an_end_named_late_is_drawn_once_as_the_workload_that_held_its_address() -> None:
    smap = ServiceMap()
    early = call(1, "mapweb", "latepod", ms=1, status=200)
    early["dst"] = {"ip": "10.0.0.2", "port": 80}  # the identity had not arrived yet
    smap.add(early)
    smap.add(call(2, "mapweb", "latepod", ms=1, status=200))  # named: shop/latepod at 10.0.0.2
    stranger = call(3, "mapweb", "latepod", ms=1, status=200)
    stranger["dst"] = {"ip": "10.0.0.99", "port": 80}  # nobody ever named this one
    smap.add(stranger)
    nodes, edges = smap.compute(window_ns=0)
    assert [n.id for n in nodes] == ["10.0.0.99:80", "shop/latepod", "shop/mapweb"]
    assert {(e.destination, e.requests) for e in edges} == {("shop/latepod", 2), ("10.0.0.99:80", 1)}


def test_an_address_that_changed_hands_names_each_call_by_its_holder_at_the_time() -> None:
    smap = ServiceMap()
    first, second = (
        call(1, "mapweb", "oldpod", ms=1, status=200),
        call(5, "mapweb", "newpod", ms=1, status=200),
    )
    unnamed = [call(i, "mapweb", "x", ms=1, status=200) for i in (3, 7)]
    for e in unnamed:
        e["dst"] = {"ip": "10.0.0.2", "port": 80}
    for e in (first, unnamed[0], second, unnamed[1]):
        smap.add(e)
    _, edges = smap.compute(window_ns=0)
    assert {(e.destination, e.requests) for e in edges} == {("shop/oldpod", 2), ("shop/newpod", 2)}

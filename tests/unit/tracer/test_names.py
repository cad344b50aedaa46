"""Span names stay few per server (names.py): a position of a route that takes too many values reads
`{param}`, a server's route tree and its other names are bounded, and bad names never raise."""

from __future__ import annotations

import pytest

from wiretide.tracer.names import (
    MAX_NAMES_PER_SERVER,
    MAX_NODES_PER_SERVER,
    MAX_SEGMENT_VALUES,
    MAX_TOTAL,
    SpanNames,
)


def test_a_route_position_with_too_many_values_reads_param_for_every_call() -> None:
    names = SpanNames()
    got = [names.name("shop", "web", f"GET /c/p{n}", "http") for n in range(MAX_SEGMENT_VALUES + 50)]
    assert got[:MAX_SEGMENT_VALUES] == [f"GET /c/p{n}" for n in range(MAX_SEGMENT_VALUES)]
    assert set(got[MAX_SEGMENT_VALUES:]) == {"GET /c/{param}"}
    assert names.name("shop", "web", "GET /c/p1", "http") == "GET /c/{param}"  # seen before: folded too
    assert names.name("shop", "web", "POST /c/p7/items", "http") == "POST /c/{param}/items"
    assert names.stats["routes_folded"] == 1
    # Other routes of that server, and the same paths on another server, keep their names.
    assert names.name("shop", "web", "GET /api/orders/{id}", "http") == "GET /api/orders/{id}"
    assert names.name("shop", "api", "GET /c/p1", "http") == "GET /c/p1"
    assert names.total < 20  # the folded values are forgotten


def test_a_few_routes_are_named_as_they_are() -> None:
    names = SpanNames()
    routes = ["/", "/api/items", "/api/items/{id}", "/api/orders", "/healthz", "/api/items/{id}/reviews"]
    for _ in range(3):
        for method in ("GET", "POST"):
            for route in routes:
                assert names.name("", "10.0.0.2:8080", f"{method} {route}", "http2") == f"{method} {route}"
    assert not any(names.stats.values())


def test_a_servers_route_tree_is_bounded_the_rest_read_param() -> None:
    names = SpanNames()
    # Two levels of 90 values each (each under the fold): 8,190 routes, more than one tree holds.
    got = {names.name("", "web", f"GET /a{i}/b{j}", "http") for i in range(90) for j in range(90)}
    assert names.stats["routes_cut"] > 0 and names.stats["routes_folded"] == 0
    assert names.total <= MAX_NODES_PER_SERVER + 1
    assert len(got) <= MAX_NODES_PER_SERVER + 90
    assert "GET /a0/b1" in got and "GET /{param}" in got  # the first routes kept, then the known prefix


def test_names_that_are_not_routes_are_bounded_per_server() -> None:
    names = SpanNames()
    got = [
        names.name("", "10.0.0.53:53", f"DNS A host{n}.example", "dns")
        for n in range(MAX_NAMES_PER_SERVER + 10)
    ]
    assert got[:MAX_NAMES_PER_SERVER] == [f"DNS A host{n}.example" for n in range(MAX_NAMES_PER_SERVER)]
    assert set(got[MAX_NAMES_PER_SERVER:]) == {"dns other"}
    assert names.stats["names_other"] == 10
    assert names.name("", "10.0.0.53:53", "DNS A host1.example", "dns") == "DNS A host1.example"


def test_everything_is_forgotten_at_once_past_the_total_bound() -> None:
    names = SpanNames()
    per = MAX_NAMES_PER_SERVER
    for s in range(MAX_TOTAL // per + 2):
        for n in range(per):
            names.name("", f"s{s}", f"op{n}", "grpc")
    assert names.stats["names_reset"] >= 1
    assert names.total <= MAX_TOTAL


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        ("", "http"), ("GET", "http"), ("GET ", "http"), ("GET //", "http"), ("GET /a//b/", "http"),
        ("\x00 /\udcff", "http"), ("x", ""), ("x", "no-such-protocol"),
        ("GET /a b c", "http"), ("a b", "grpc"),
    ],
)  # fmt: skip
def test_bad_names_never_raise_and_come_back_unchanged_the_first_time(name: str, protocol: str) -> None:
    names = SpanNames()
    assert names.name("", "s", name, protocol) == name
    assert names.name("", "s", name, protocol) == name


def test_a_route_deeper_than_a_tree_holds_is_cut_at_its_bound() -> None:
    names = SpanNames()
    got = names.name("", "s", "GET /" + "x/" * 5_000, "http")
    assert got == "GET /" + "x/" * MAX_NODES_PER_SERVER + "{param}"
    assert names.total <= MAX_NODES_PER_SERVER + 1 and names.stats["routes_cut"] == 1


def test_the_tracer_names_calls_by_template_and_counts_it_on_metrics() -> None:
    from prometheus_client import REGISTRY

    from tests.unit.tracer.test_memory import distinct_path_calls
    from wiretide.tracer.engine import Engine

    def folded() -> float:
        value = REGISTRY.get_sample_value(
            "wiretide_tracer_span_names_collapsed_total", {"how": "routes_folded"}
        )
        return value or 0.0

    before = folded()
    engine = Engine()
    spans = engine.ingest(distinct_path_calls(0, MAX_SEGMENT_VALUES + 20), 0) + engine.flush()
    names = [s.name for s in sorted(spans, key=lambda s: s.start_ns)]
    assert names[0] == "GET /c/p0" and names[-1] == "GET /c/{param}"
    assert {s.shared["url.path"] for s in spans} >= {
        "/c/p0",
        f"/c/p{MAX_SEGMENT_VALUES + 19}",
    }  # the path stays
    assert folded() == before + 1

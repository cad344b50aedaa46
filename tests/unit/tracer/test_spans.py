"""Entries become client/server spans named and attributed by the OTel semantic conventions."""

from __future__ import annotations

from typing import Any

from wiretide.tracer.spans import KIND_CLIENT, KIND_SERVER, SpanIds, route_of, spans_from_entry

from .chains import peer


def http_entry(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "01HX0000000000000000000001",
        "node": "node-a",
        "timestamp": 1_700_000_000_000_000_000,
        "elapsed_us": 2_500,
        "protocol": "http",
        "version": "1.1",
        "transport": "tcp",
        "src": {**peer("frontend", 0, "10.0.0.1", 40000),
                "process": {"pid": 77, "name": "node", "container_id": "c0ffee"}},
        "dst": peer("api", 0, "10.0.1.1", 8080),
        "method": "POST",
        "path": "/api/orders/123?expand=items",
        "status": 503,
        "request": {"method": "POST", "path": "/api/orders/123?expand=items",
                    "headers": {"user-agent": "curl/8"}},
        "response": {"status": 503, "headers": {}},
        "size": {"request": 10, "response": 20},
        "tls": {"sni": "api.shop", "version": "TLSv1.3", "alpn": ["h2"], "cipher": "TLS_AES_128_GCM_SHA256"},
        "error": None,
    }  # fmt: skip
    doc.update(over)
    return doc


def test_an_http_call_between_two_workloads_gives_a_client_and_a_server_span() -> None:
    client, server = spans_from_entry(http_entry(), SpanIds(1))
    assert (client.kind, server.kind) == (KIND_CLIENT, KIND_SERVER)
    assert client.workload.service_name == "frontend" and server.workload.service_name == "api"
    assert client.name == server.name == "POST /api/orders/{id}"
    for span in (client, server):
        a = span.attributes
        assert a["http.request.method"] == "POST" and a["url.path"] == "/api/orders/123"
        assert a["url.query"] == "expand=items" and a["http.response.status_code"] == 503
        assert (a["client.address"], a["client.port"], a["server.address"], a["server.port"]) == (
            "10.0.0.1", 40000, "10.0.1.1", 8080)  # fmt: skip
        assert a["network.transport"] == "tcp" and a["network.protocol.version"] == "1.1"
        assert a["tls.server.name"] == "api.shop" and a["tls.protocol.version"] == "1.3"
        assert a["tls.next_protocol"] == "h2" and a["url.scheme"] == "https"
        assert span.start_ns == 1_700_000_000_000_000_000 and span.end_ns == span.start_ns + 2_500_000
    assert client.attributes["network.peer.address"] == "10.0.1.1"
    assert server.attributes["network.peer.address"] == "10.0.0.1"
    # 5xx is an error on both sides (semconv http-spans "Status").
    assert client.error and server.error and server.attributes["error.type"] == "503"
    res = client.workload.resource_attributes()
    assert res["service.name"] == "frontend" and res["k8s.namespace.name"] == "shop"
    assert res["k8s.pod.name"] == "frontend-0" and res["k8s.deployment.name"] == "frontend"
    assert res["k8s.node.name"] == "node-a" and res["process.pid"] == 77
    assert res["process.executable.name"] == "node" and res["container.id"] == "c0ffee"


def test_a_4xx_is_an_error_only_at_the_client() -> None:
    client, server = spans_from_entry(http_entry(status=404), SpanIds(1))
    assert client.error and not server.error


def test_grpc_status_follows_the_rpc_conventions() -> None:
    entry = http_entry(protocol="grpc", path="/shop.Orders/Get", version="2", status=200,
                       request={"service": "shop.Orders", "method": "Get", "headers": {}},
                       response={"grpc_status": 5})  # fmt: skip
    client, server = spans_from_entry(entry, SpanIds(1))
    assert client.name == "shop.Orders/Get"
    assert client.attributes["rpc.system"] == "grpc" and client.attributes["rpc.service"] == "shop.Orders"
    assert client.attributes["rpc.method"] == "Get" and client.attributes["rpc.grpc.status_code"] == 5
    assert client.error and not server.error  # NOT_FOUND is not a server fault
    _, server = spans_from_entry({**entry, "response": {"grpc_status": 14}}, SpanIds(1))
    assert server.error


def test_redis_dns_and_kafka_carry_their_own_conventions() -> None:
    redis = http_entry(
        protocol="redis", method="get", path="", summary="GET user:1", status=0, request={}, response={}
    )
    assert spans_from_entry(redis, SpanIds(1))[0].attributes["db.system"] == "redis"
    assert spans_from_entry(redis, SpanIds(1))[0].name == "GET"
    dns = http_entry(
        protocol="dns", transport="udp", method="QUERY", path="example.com", status=2,
        request={"questions": [{"name": "example.com", "type": "A"}]}, response={"rcode": 2},
    )  # fmt: skip
    span = spans_from_entry(dns, SpanIds(1))[0]
    assert span.attributes["dns.question.name"] == "example.com" and span.error  # SERVFAIL
    kafka = http_entry(protocol="kafka", method="Produce", path="orders", status=0, request={}, response={})
    span = spans_from_entry(kafka, SpanIds(1))[0]
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.destination.name"] == "orders" and span.name == "Produce orders"


def test_an_end_known_only_by_address_gets_no_span_of_its_own() -> None:
    entry = http_entry(src={"ip": "203.0.113.9", "port": 5555})
    spans = spans_from_entry(entry, SpanIds(1))
    assert [s.kind for s in spans] == [KIND_SERVER]
    assert spans[0].peer.service_name == "203.0.113.9" and not spans[0].peer.known
    neither = spans_from_entry(
        http_entry(src={"ip": "203.0.113.9"}, dst={"ip": "198.51.100.1", "port": 80}), SpanIds(1)
    )
    assert len(neither) == 1 and neither[0].workload.service_name == "198.51.100.1"


def test_a_hostile_entry_with_wrong_types_still_gives_spans_without_raising() -> None:
    entry = {"id": "x", "timestamp": 5, "protocol": "http", "src": "nope", "dst": 7, "request": [],
             "response": "x", "size": None, "tls": 3, "elapsed_us": "slow", "status": "200"}  # fmt: skip
    spans = spans_from_entry(entry, SpanIds(1))
    assert len(spans) == 1 and spans[0].end_ns == 5


def test_identifier_segments_are_folded_in_span_names() -> None:
    assert route_of("/users/42/orders/9f86d081884c7d65?x=1") == "/users/{id}/orders/{id}"
    assert route_of("") == "/"

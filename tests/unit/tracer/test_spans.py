"""Entries become client/server spans named and attributed by the OTel semantic conventions (the
release in `spans.SEMCONV_VERSION`): names the registry retired never come out, Wiretide's own extras
stay under `wiretide.*`."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.common.protocols import route_of
from wiretide.tracer.spans import (
    KIND_CLIENT,
    KIND_SERVER,
    SCHEMA_URL,
    SEMCONV_VERSION,
    Descriptions,
    Span,
    SpanIds,
    Workloads,
    describe,
    spans_from_entry,
    split_authority,
    workload_of,
)

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
        # No Host header: the SNI names the server (the retired `tls.client.server_name`), the port is
        # the one connected to.
        assert (a["client.address"], a["client.port"], a["server.address"], a["server.port"]) == (
            "10.0.0.1", 40000, "api.shop", 8080)  # fmt: skip
        assert a["network.transport"] == "tcp" and a["network.protocol.version"] == "1.1"
        assert a["tls.protocol.name"] == "tls" and a["tls.protocol.version"] == "1.3"
        assert a["tls.next_protocol"] == "h2" and a["url.scheme"] == "https"
        assert span.start_ns == 1_700_000_000_000_000_000 and span.end_ns == span.start_ns + 2_500_000
    assert client.attributes["network.peer.address"] == "10.0.1.1"
    assert server.attributes["network.peer.address"] == "10.0.0.1"
    assert client.attributes["url.full"] == "https://api.shop:8080/api/orders/123?expand=items"
    assert "url.full" not in server.attributes  # the client's view only (http-spans.md)
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
    a = client.attributes
    assert a["rpc.system.name"] == "grpc" and a["rpc.method"] == "shop.Orders/Get"  # fully qualified
    assert a["rpc.response.status_code"] == "NOT_FOUND"  # the status code's name, a string
    # gRPC is HTTP/2 on the wire: `network.protocol.name` is the application protocol, not "grpc".
    assert (a["network.protocol.name"], a["network.protocol.version"]) == ("http", "2")
    assert a["wiretide.protocol"] == "grpc"
    assert client.error and not server.error  # NOT_FOUND is not a server fault
    _, server = spans_from_entry({**entry, "response": {"grpc_status": 14}}, SpanIds(1))
    assert server.error and server.attributes["rpc.response.status_code"] == "UNAVAILABLE"


def test_redis_dns_and_kafka_carry_their_own_conventions() -> None:
    redis = http_entry(
        protocol="redis", method="get", path="", summary="GET user:1", status=0, request={}, response={}
    )
    assert spans_from_entry(redis, SpanIds(1))[0].attributes["db.system.name"] == "redis"
    assert spans_from_entry(redis, SpanIds(1))[0].attributes["db.operation.name"] == "get"  # as sent
    assert spans_from_entry(redis, SpanIds(1))[0].name == "GET"
    dns = http_entry(
        protocol="dns", transport="udp", method="QUERY", path="example.com", status=2,
        request={"questions": [{"name": "example.com", "type": "A"}]}, response={"rcode": 2},
    )  # fmt: skip
    span = spans_from_entry(dns, SpanIds(1))[0]
    assert span.attributes["dns.question.name"] == "example.com" and span.error  # SERVFAIL
    # The registry names no RCODE or question type attribute: they are Wiretide's, by their mnemonic.
    assert span.attributes["wiretide.dns.response_code"] == "SERVFAIL"
    assert span.attributes["wiretide.dns.question.type"] == "A"
    assert span.attributes["network.protocol.name"] == "dns"
    kafka = http_entry(protocol="kafka", method="Produce", path="orders", status=0, request={}, response={})
    span = spans_from_entry(kafka, SpanIds(1))[0]
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.destination.name"] == "orders" and span.name == "Produce orders"


def test_an_end_known_only_by_address_is_an_anonymous_workload_with_spans_of_its_own() -> None:
    entry = http_entry(src={"ip": "203.0.113.9", "port": 5555})
    client, server = spans_from_entry(entry, SpanIds(1))
    assert (client.kind, server.kind) == (KIND_CLIENT, KIND_SERVER)
    # The calling end is named by its IP (its port is ephemeral), not known, and says its address.
    assert client.workload.service_name == "203.0.113.9" and not client.workload.known
    assert client.workload.address == "203.0.113.9" and server.peer is client.workload
    neither = spans_from_entry(
        http_entry(src={"ip": "203.0.113.9"}, dst={"ip": "198.51.100.1", "port": 80}), SpanIds(1)
    )
    # The listening end is named by ip:port: several servers may share one address.
    assert [s.workload.service_name for s in neither] == ["203.0.113.9", "198.51.100.1:80"]
    assert neither[1].workload.address == "198.51.100.1" and neither[1].workload.instance == "198.51.100.1:80"
    v6 = spans_from_entry(http_entry(src={"ip": "fd00::1"}, dst={"ip": "fd00::2", "port": 8080}), SpanIds(1))
    assert v6[1].workload.service_name == "[fd00::2]:8080"
    # The memo gives the same names as the function (the listening port is part of its key).
    memo = Workloads()
    for port in (80, 81, 80):
        assert memo.of({"ip": "10.0.0.7", "port": port}, "n", True).service_name == f"10.0.0.7:{port}"
    assert memo.of({"ip": "10.0.0.7", "port": 81}, "n").service_name == "10.0.0.7"


def test_the_memo_names_an_end_of_an_address_alone_as_the_function_does_odd_values_included() -> None:
    ends: list[dict[str, Any]] = [
        {}, {"ip": "10.0.0.7"}, {"port": 80}, {"ip": "10.0.0.7", "port": 80}, {"ip": "10.0.0.7", "port": 81},
        {"ip": "10.0.0.7", "port": True}, {"ip": "10.0.0.7", "port": 1}, {"ip": "10.0.0.7", "port": None},
        {"ip": None, "port": 80}, {"ip": 7, "port": 80}, {"ip": "fd00::2", "port": 8080}, {"ip": ""},
        {"ip": "10.0.0.7", "name": "web"}, {"ip": "10.0.0.7", "port": 80, "name": "web"},
    ]  # fmt: skip
    memo = Workloads()
    for _ in range(2):  # remembered, then found
        for end in ends:
            for node in ("n", "m", ""):
                for listening in (False, True):
                    assert memo.of(end, node, listening) == workload_of(end, node, listening), (end, node)
    assert memo.of({"ip": "10.0.0.7"}, "n") is memo.of({"ip": "10.0.0.7", "port": 5}, "n")  # one object


def test_a_hostile_entry_with_wrong_types_still_gives_spans_without_raising() -> None:
    entry = {"id": "x", "timestamp": 5, "protocol": "http", "src": "nope", "dst": 7, "request": [],
             "response": "x", "size": None, "tls": 3, "elapsed_us": "slow", "status": "200"}  # fmt: skip
    spans = spans_from_entry(entry, SpanIds(1))
    assert len(spans) == 2 and spans[1].end_ns == 5
    assert spans[1].workload.service_name == "unknown" and not spans[1].workload.known


def test_identifier_segments_are_folded_in_span_names() -> None:
    assert route_of("/users/42/orders/9f86d081884c7d65?x=1") == "/users/{id}/orders/{id}"
    assert route_of("") == "/"


# Every attribute key a span may carry, from the registry of the release the tracer follows
# (model/**/registry.yaml at semantic-conventions v1.44.0); anything else must be `wiretide.*`.
REGISTRY = frozenset({
    "client.address", "client.port", "server.address", "server.port", "network.transport", "network.type",
    "network.peer.address", "network.peer.port", "network.protocol.name", "network.protocol.version",
    "tls.protocol.name", "tls.protocol.version", "tls.next_protocol", "tls.cipher", "tls.client.ja3",
    "http.request.method", "http.request.method_original", "http.response.status_code", "url.path",
    "url.query", "url.scheme", "url.full", "user_agent.original", "graphql.operation.name",
    "graphql.operation.type", "rpc.system.name", "rpc.method", "rpc.method_original",
    "rpc.response.status_code", "db.system.name", "db.operation.name", "db.query.text", "messaging.system",
    "messaging.operation.name", "messaging.destination.name", "messaging.operation.type",
    "messaging.client.id", "messaging.consumer.group.name", "dns.question.name", "error.type",
    "service.peer.name", "service.peer.namespace",
})  # fmt: skip
# Names earlier releases used that the registry has retired (or never had).
RETIRED = frozenset({
    "peer.service", "db.system", "rpc.system", "rpc.service", "rpc.grpc.status_code", "tls.server.name",
    "tls.client.server_name", "dns.response_code", "dns.question.type", "net.peer.name", "http.method",
    "http.status_code", "http.url",
})  # fmt: skip


def every_protocol() -> list[dict[str, Any]]:
    grpc = {"service": "shop.Orders", "method": "Get", "url": "http://orders:50051/shop.Orders/Get"}
    return [
        http_entry(),
        http_entry(protocol="http2", version="2", request={"url": "https://api.shop/x", "headers": {}}),
        http_entry(protocol="graphql", request={"operation_name": "Q", "operation_type": "query"}),
        http_entry(protocol="grpc", path="/shop.Orders/Get", request=grpc, response={"grpc_status": 12}),
        http_entry(protocol="ws", method="text", path="", status=None, version="13"),
        http_entry(protocol="dns", transport="udp", method="A", path="example.com", status=3),
        http_entry(protocol="redis", method="GET", status=-1, summary="GET k", error={"type": "x"}),
        http_entry(protocol="kafka", method="Produce", path="orders", status=0),
        http_entry(protocol="ldap", method="bind", status=49),
        http_entry(protocol="tls", method="handshake", path="api.shop"),
        http_entry(protocol="tcp", method="", path=""),
        http_entry(protocol="mqtt", method="PUBLISH"),
    ]


def test_every_attribute_is_in_the_registry_or_wiretides_own_and_no_retired_name_comes_out() -> None:
    seen: set[str] = set()
    for entry in every_protocol():
        for span in spans_from_entry(entry, SpanIds(1)):
            seen |= set(span.attributes)
    assert not seen & RETIRED
    assert {k for k in seen if not k.startswith("wiretide.")} <= REGISTRY
    assert {"service.peer.name", "rpc.system.name", "db.system.name", "url.full"} <= seen
    assert f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}" == SCHEMA_URL


def test_the_client_span_names_its_peer_service_by_the_current_attribute() -> None:
    client, server = spans_from_entry(http_entry(), SpanIds(1))
    assert client.attributes["service.peer.name"] == "api"
    assert client.attributes["service.peer.namespace"] == "shop"
    assert "peer.service" not in client.attributes and "service.peer.name" not in server.attributes


def test_the_host_header_names_the_server_and_each_side_keeps_the_ip_it_saw() -> None:
    entry = http_entry(tls=None, request={"headers": {"host": "api.shop.svc:8443", "user-agent": "curl/8"}})
    client, server = spans_from_entry(entry, SpanIds(1))
    for span in (client, server):
        assert (span.attributes["server.address"], span.attributes["server.port"]) == ("api.shop.svc", 8443)
    assert (client.attributes["network.peer.address"], client.attributes["network.peer.port"]) == (
        "10.0.1.1", 8080)  # fmt: skip
    assert (server.attributes["network.peer.address"], server.attributes["network.peer.port"]) == (
        "10.0.0.1", 40000)  # fmt: skip
    assert client.attributes["url.full"] == "http://api.shop.svc:8443/api/orders/123?expand=items"


def test_a_host_without_a_port_means_the_schemes_default_port() -> None:
    client, _ = spans_from_entry(http_entry(tls=None, request={"headers": {"host": "api"}}), SpanIds(1))
    assert (client.attributes["server.address"], client.attributes["server.port"]) == ("api", 80)
    assert client.attributes["url.full"] == "http://api/api/orders/123?expand=items"


def test_without_a_host_the_url_is_the_address_connected_to() -> None:
    entry = http_entry(tls=None, dst={**http_entry()["dst"], "ip": "fd00::1", "port": 8080})
    client, _ = spans_from_entry(entry, SpanIds(1))
    assert client.attributes["server.address"] == "fd00::1" and client.attributes["network.type"] == "ipv6"
    assert client.attributes["url.full"] == "http://[fd00::1]:8080/api/orders/123?expand=items"


def test_http2_and_grpc_take_the_server_from_the_authority() -> None:
    h2 = http_entry(protocol="http2", version="2", tls=None, path="/x",
                    request={"url": "http://[fd00::9]:9443/x", "headers": {"host": "ignored"}})  # fmt: skip
    client, _ = spans_from_entry(h2, SpanIds(1))
    assert (client.attributes["server.address"], client.attributes["server.port"]) == ("fd00::9", 9443)
    assert client.attributes["url.full"] == "http://[fd00::9]:9443/x"
    grpc = http_entry(protocol="grpc", version="2", tls=None, path="/shop.Cart/Get",
                      request={"url": "http://cart:9090/shop.Cart/Get", "headers": {}},
                      response={"grpc_status": 0})  # fmt: skip
    client, _ = spans_from_entry(grpc, SpanIds(1))
    assert (client.attributes["server.address"], client.attributes["server.port"]) == ("cart", 9090)
    assert "url.full" not in client.attributes  # an RPC, not a URL fetch


def test_authorities_that_are_no_host_are_ignored() -> None:
    assert split_authority("user:pw@api.shop:8443") == ("api.shop", 8443)
    assert split_authority("[fd00::1]") == ("fd00::1", 0)
    assert split_authority("api:99999") == ("api", 0)
    for bad in ("", "[fd00::1", "[fd00::1]x", "a b", "x" * 300, "a/b", ":80"):
        assert split_authority(bad) == ("", 0), bad
    entry = http_entry(tls=None, request={"headers": {"host": "a b"}})
    assert spans_from_entry(entry, SpanIds(1))[0].attributes["server.address"] == "10.0.1.1"


def test_signing_keys_in_the_query_are_redacted() -> None:
    entry = http_entry(tls=None, path="/o?color=blue&sig=s3cr3t&X-Amz-Signature=abc&signal=1",
                       request={"headers": {"host": "store"}})  # fmt: skip
    client, _ = spans_from_entry(entry, SpanIds(1))
    assert client.attributes["url.query"] == "color=blue&sig=REDACTED&X-Amz-Signature=REDACTED&signal=1"
    assert str(client.attributes["url.full"]).endswith(
        "/o?color=blue&sig=REDACTED&X-Amz-Signature=REDACTED&signal=1"
    )


def test_an_unknown_http_method_is_other_with_the_original_kept() -> None:
    client, _ = spans_from_entry(http_entry(method="PURGE"), SpanIds(1))
    assert client.attributes["http.request.method"] == "_OTHER"
    assert client.attributes["http.request.method_original"] == "PURGE"


def test_a_method_the_grpc_server_does_not_know_is_other() -> None:
    entry = http_entry(protocol="grpc", path="/x.Y/Z", request={}, response={"grpc_status": 12})
    client, _ = spans_from_entry(entry, SpanIds(1))
    assert client.attributes["rpc.method"] == "_OTHER" and client.attributes["rpc.method_original"] == "x.Y/Z"
    assert client.attributes["rpc.response.status_code"] == "UNIMPLEMENTED"


def test_a_websocket_message_is_not_described_as_an_http_request() -> None:
    span = spans_from_entry(http_entry(protocol="ws", method="text", version="13"), SpanIds(1))[0]
    a = span.attributes
    assert (a["network.protocol.name"], a["network.protocol.version"]) == ("websocket", "13")
    assert "http.request.method" not in a and a["wiretide.method"] == "text"


def test_transport_entries_name_no_application_protocol() -> None:
    for protocol in ("tcp", "udp", "icmp", "tls"):
        a = spans_from_entry(http_entry(protocol=protocol, tls=None), SpanIds(1))[0].attributes
        assert "network.protocol.name" not in a and a["wiretide.protocol"] == protocol
    a = spans_from_entry(http_entry(protocol="mqtt"), SpanIds(1))[0].attributes  # a plugin's protocol
    assert a["network.protocol.name"] == "mqtt"


def test_ssl_versions_are_named_ssl() -> None:
    entry = http_entry(tls={"version": "SSLv3", "sni": "old.shop"})
    a = spans_from_entry(entry, SpanIds(1))[0].attributes
    assert (a["tls.protocol.name"], a["tls.protocol.version"]) == ("ssl", "3")


def test_errors_and_names_come_from_the_protocol_table() -> None:
    from wiretide.common import protocols

    for entry in every_protocol():
        spans = spans_from_entry(entry, SpanIds(1))
        client: Span | None = next((s for s in spans if s.kind == KIND_CLIENT), None)
        server = next(s for s in spans if s.kind == KIND_SERVER)
        assert server.name == protocols.span_name(entry)
        assert server.status_message == protocols.server_error(entry)
        assert client is not None and client.status_message == protocols.client_error(entry)
    # gRPC over HTTP 200 with UNAVAILABLE is an error for both sides, whatever the HTTP status.
    entry = http_entry(protocol="grpc", status=200, path="/a.B/C", response={"grpc_status": 14})
    client, server = spans_from_entry(entry, SpanIds(1))
    assert client.error and server.error


def test_a_name_learned_from_dns_is_marked_learned_and_a_resolved_one_is_not() -> None:
    dns_named = {"ip": "93.184.216.34", "port": 443, "name": "example.com", "resolution": "dns"}
    assert workload_of(dns_named, "n").learned and workload_of(dns_named, "n").known
    assert Workloads().of(dns_named, "n").learned
    for mechanism in ("ip", "ip-and-port", "process"):
        assert not workload_of({**http_entry()["dst"], "resolution": mechanism}, "n").learned
    assert not workload_of({"ip": "10.0.0.9", "resolution": "none"}, "n").learned  # unnamed: not known
    remembered = Workloads()
    assert not remembered.of({**dns_named, "resolution": "ip"}, "n").learned
    assert remembered.of(dns_named, "n").learned  # the resolution is part of what is remembered


def test_every_table_row_makes_a_server_fault_an_error_for_the_caller_too() -> None:
    """`describe` asks for the server's error only when the caller saw one: every rule must agree."""
    from wiretide.common.protocols import PROTOCOLS

    for row in PROTOCOLS.values():
        for rule in row.status:
            codes = set(range(-3, 1000)) | set(rule.server_errors.codes)
            assert all(c in rule.client_errors for c in codes if c in rule.server_errors), row.name


def _one_of(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


# Entries that differ in every value `describe` reads, each drawn from a few choices (so that calls of
# one shape repeat with other per-call values), odd types included: a bool is no port, 1.0 no status,
# an empty user agent is one, ALPN [""] names a protocol and "" does not.
_TLS = st.fixed_dictionaries(
    {},
    optional={
        "sni": _one_of("api.shop", "", 3),
        "version": _one_of("TLSv1.3", "1.2", ""),
        "alpn": _one_of(["h2"], [""], [], "", "http/1.1", [4]),
        "cipher": _one_of("C", "", 5),
        "ja3": _one_of("j", ""),
        "decrypted": _one_of(True, False, 1),
    },
)
_REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "headers": st.one_of(
            _one_of("nope"),
            st.fixed_dictionaries(
                {},
                optional={
                    "host": _one_of("api:8080", "api", "bad host", "[::1]:99", ""),
                    "user-agent": _one_of("curl/8", "", None),
                },
            ),
        ),
        "query_string": _one_of("sig=a&b=c", "", None),
        "url": _one_of("https://[::1]:9443/x", "http://api/y", "/z", 3),
        "method": _one_of("PUT", ""),
        "path": _one_of("/r?sig=q", ""),
        "operation_name": _one_of("Q", "", 1),
        "operation_type": _one_of("query", ""),
    },
)
_ENTRIES = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=4),
        "protocol": _one_of("http", "http2", "graphql", "grpc", "ws", "redis", "dns", "mything", 7),
        "method": _one_of("GET", "POST", "BREW", "", None, 3),
        "path": _one_of("/a/1", "/a/2?x=1", "/a/3?sig=s&x=2", "?q", "/", "", None),
        "status": _one_of(200, 404, 503, 0, None, True, 1.0, "200"),
        "version": _one_of("1.1", "2", "", None),
        "transport": _one_of("tcp", "", None),
        "src": st.fixed_dictionaries(
            {"ip": _one_of("10.0.0.1", "fe80::1", "", None), "port": _one_of(40000, 40001, True, None)}
        ),
        "dst": st.fixed_dictionaries(
            {"ip": _one_of("10.0.1.1", "", None), "port": _one_of(8080, 80, 443, 1, True, False, None)}
        ),
        "tls": st.one_of(_one_of(None, "yes"), _TLS),
        "request": st.one_of(_one_of(None), _REQUEST),
        "response": _one_of(None, {"status": 500}, {"status": 200, "grpc_status": 14}, {"grpc_status": 12}),
        "size": _one_of(None, {"request": 1, "response": 2}, {"request": 3}, {"response": True}),
        "error": _one_of(
            None,
            {},
            {"type": "timeout", "message": "no answer"},
            {"type": "", "message": "m"},
            {"message": 4},
            "broken",
        ),
        "summary": _one_of("GET /a", "", None),
    }
)


def _variant(base: dict[str, Any], other: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """`base` with a few values taken from `other` (a dotted name reaches into nested objects): a
    call that differs from `base` in those values alone."""

    def take(mine: Any, theirs: Any, path: list[str]) -> Any:
        if not path:
            return theirs
        if type(mine) is not dict or type(theirs) is not dict:
            return mine
        out = {k: v for k, v in mine.items() if k != path[0]}
        if path[0] in theirs:
            out[path[0]] = take(mine.get(path[0]), theirs[path[0]], path[1:])
        return out

    out = base
    for name in fields:
        out = take(out, other, name.split("."))
    return out


_FIELDS = (
        "protocol", "method", "path", "status", "version", "transport", "src", "dst", "tls", "request",
        "response", "size", "error", "summary", "src.ip", "src.port", "dst.ip", "dst.port", "tls.sni",
        "tls.version", "tls.alpn", "tls.cipher", "tls.ja3", "tls.decrypted", "request.headers",
        "request.headers.host", "request.headers.user-agent", "request.query_string", "request.url",
        "request.method", "request.path", "request.operation_name", "request.operation_type",
        "response.status",
)  # fmt: skip
# Bases mostly of the calls described by shape (HTTP with a method and a path), so that variants of
# them meet a remembered shape.
_BASES = st.one_of(
    _ENTRIES,
    st.tuples(
        _ENTRIES, _one_of("http", "http2", "graphql"), _one_of("GET", "BREW"), _one_of("/a/1?x=1", "/")
    ).map(lambda t: {**t[0], "protocol": t[1], "method": t[2], "path": t[3]}),
)


@settings(max_examples=150, deadline=None)
@given(_BASES, st.lists(_ENTRIES, min_size=1, max_size=3))
def test_calls_described_by_shape_read_exactly_as_described_one_by_one(
    base: dict[str, Any], others: list[dict[str, Any]]
) -> None:
    """A call described from a remembered shape has the same name, attributes in the same order, errors
    and `url.full` as `describe` gives it alone, whatever came before it — calls that differ from the
    first in any one value included."""
    entries = [base, *(_variant(base, other, [name]) for other in others for name in _FIELDS)]
    shapes = Descriptions()
    for entry in [*entries, *entries]:  # the second round finds every shape remembered
        got, want = shapes.of(entry), describe(entry)
        assert list(got.attributes.items()) == list(want.attributes.items())
        assert [type(v) for v in got.attributes.values()] == [type(v) for v in want.attributes.values()]
        assert got._replace(attributes={}) == want._replace(attributes={})


def test_a_remembered_shape_is_not_changed_by_the_spans_made_from_it() -> None:
    """Spans add their own attributes to what an entry says; the shape's next call starts clean."""
    shapes, workloads = Descriptions(), Workloads()
    first = spans_from_entry(http_entry(id="one"), SpanIds(1), workloads=workloads, descriptions=shapes)
    again = spans_from_entry(
        http_entry(id="two", path="/api/orders/456", size={"request": 1}),
        SpanIds(1),
        workloads=workloads,
        descriptions=shapes,
    )
    assert first[0].shared["wiretide.entry_id"] == "one" and again[0].shared["wiretide.entry_id"] == "two"
    assert again[0].shared["url.path"] == "/api/orders/456" and "url.query" not in again[0].shared
    assert again[0].shared["wiretide.request.size"] == 1 and "wiretide.response.size" not in again[0].shared
    assert again[0].own["url.full"] == "https://api.shop:8080/api/orders/456"

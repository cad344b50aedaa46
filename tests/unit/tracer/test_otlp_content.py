"""What an exported span says, attribute by attribute: fixed entries in, the decoded OTLP request pinned.

The expectations are written from the semantic conventions of the release the tracer follows (v1.44.0:
http-spans.md, rpc/grpc.md, the tls/service/network registries, the k8s resource conventions), not
copied from an encoder's output; any change to the encoding's content (an attribute, its type, its order
within a span, a name, an id, the schema URL) fails here.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from wiretide.tracer.assemble import Assembler
from wiretide.tracer.export.otlp import Encoder, encode_request
from wiretide.tracer.spans import Span, SpanIds

T0 = 1_700_000_000 * 10**9
MS = 1_000_000


def end(name: str, ip: str, port: int, pod: str = "") -> dict[str, Any]:
    return {
        "ip": ip,
        "port": port,
        "name": name,
        "namespace": "shop",
        "pod": {"name": pod or f"{name}-0", "namespace": "shop"},
        "workload": {"kind": "Deployment", "name": name},
        "process": {"pid": 7, "name": name},
    }


def entries() -> list[dict[str, Any]]:
    """An external client → frontend (HTTPS), frontend → api (HTTP 503), frontend → cart (gRPC)."""
    return [
        {
            "id": "e-api",
            "node": "node-a",
            "timestamp": T0 + 2 * MS,
            "elapsed_us": 3_000,
            "protocol": "http",
            "version": "1.1",
            "transport": "tcp",
            "src": end("frontend", "10.0.0.1", 40000),
            "dst": end("api", "10.0.1.1", 8080),
            "method": "POST",
            "path": "/orders/12345?dry=1",
            "status": 503,
            "request": {"headers": {"user-agent": "curl/8", "host": "api"}},
            "size": {"request": 10, "response": 20},
        },
        {
            "id": "e-cart",
            "node": "node-a",
            "timestamp": T0 + 6 * MS,
            "elapsed_us": 1_000,
            "protocol": "grpc",
            "version": "2",
            "transport": "tcp",
            "src": end("frontend", "10.0.0.1", 40002),
            "dst": end("cart", "10.0.2.1", 9090),
            "path": "/shop.Cart/Get",
            "request": {"url": "http://cart:9090/shop.Cart/Get", "headers": {}},
            "response": {"grpc_status": 0},
        },
        {
            "id": "e-front",
            "node": "node-a",
            "timestamp": T0,
            "elapsed_us": 10_000,
            "protocol": "http",
            "version": "1.1",
            "transport": "tcp",
            "src": {"ip": "192.168.1.9", "port": 51000},
            "dst": end("frontend", "10.0.0.1", 443),
            "method": "GET",
            "path": "/checkout",
            "status": 200,
            "tls": {"sni": "shop.example", "version": "TLSv1.3", "alpn": ["h2"], "decrypted": True},
        },
    ]


def assembled() -> list[Span]:
    a = Assembler(ids=SpanIds(seed=3))
    a.add_many(entries())
    a.flush()
    return a.drain()


def plain(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    assert which is not None
    return (which, getattr(value, which))


SCHEMA = "https://opentelemetry.io/schemas/1.44.0"


def decoded(data: bytes) -> dict[tuple[str, int], dict[str, Any]]:
    """(entry id, kind) → the span as decoded by the official classes, attributes in wire order."""
    req = ExportTraceServiceRequest.FromString(data)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for rs in req.resource_spans:
        assert rs.schema_url == SCHEMA
        resource = [(kv.key, plain(kv.value)) for kv in rs.resource.attributes]
        for ss in rs.scope_spans:
            assert (ss.scope.name, ss.scope.version, ss.schema_url) == ("wiretide.tracer", "0.1.0", SCHEMA)
            for s in ss.spans:
                attrs = [(kv.key, plain(kv.value)) for kv in s.attributes]
                entry_id = dict(attrs)["wiretide.entry_id"][1]
                out[(entry_id, s.kind)] = {
                    "resource": resource,
                    "name": s.name,
                    "ids": (s.trace_id, s.span_id, s.parent_span_id),
                    "times": (s.start_time_unix_nano, s.end_time_unix_nano),
                    "attributes": attrs,
                    "status": (s.status.code, s.status.message),
                }
    return out


def s(text: str) -> tuple[str, str]:
    return ("string_value", text)


def i(number: int) -> tuple[str, int]:
    return ("int_value", number)


def resource(name: str) -> list[tuple[str, Any]]:
    return [
        ("service.name", s(name)),
        ("telemetry.sdk.name", s("wiretide")),
        ("service.namespace", s("shop")),
        ("k8s.namespace.name", s("shop")),
        ("k8s.pod.name", s(f"{name}-0")),
        ("service.instance.id", s(f"{name}-0")),
        ("k8s.node.name", s("node-a")),
        ("k8s.deployment.name", s(name)),
        ("process.pid", i(7)),
        ("process.executable.name", s(name)),
    ]


def network(client: str, cport: int, server: str, sport: int) -> list[tuple[str, Any]]:
    """Both ends; `server` is the request's authority, else the SNI, else the server's IP."""
    return [
        ("client.address", s(client)),
        ("client.port", i(cport)),
        ("server.address", s(server)),
        ("server.port", i(sport)),
        ("network.transport", s("tcp")),
        ("network.type", s("ipv4")),
    ]


API_CALL = [
    *network("10.0.0.1", 40000, "api", 80),  # Host: api — the origin's port is the scheme's default
    ("network.protocol.name", s("http")),
    ("network.protocol.version", s("1.1")),
    ("http.request.method", s("POST")),
    ("url.path", s("/orders/12345")),
    ("url.query", s("dry=1")),
    ("url.scheme", s("http")),
    ("user_agent.original", s("curl/8")),
    ("http.response.status_code", i(503)),
    ("wiretide.protocol", s("http")),
    ("wiretide.request.size", i(10)),
    ("wiretide.response.size", i(20)),
    ("wiretide.entry_id", s("e-api")),
    ("wiretide.node", s("node-a")),
]
CART_CALL = [
    *network("10.0.0.1", 40002, "cart", 9090),  # :authority cart:9090
    ("network.protocol.name", s("http")),
    ("network.protocol.version", s("2")),
    ("rpc.system.name", s("grpc")),
    ("rpc.method", s("shop.Cart/Get")),
    ("rpc.response.status_code", s("OK")),
    ("wiretide.protocol", s("grpc")),
    ("wiretide.entry_id", s("e-cart")),
    ("wiretide.node", s("node-a")),
]
FRONT_CALL = [
    *network("192.168.1.9", 51000, "shop.example", 443),  # no Host: the SNI names the server
    ("tls.protocol.name", s("tls")),
    ("tls.protocol.version", s("1.3")),
    ("tls.next_protocol", s("h2")),
    ("wiretide.tls.decrypted", ("bool_value", True)),
    ("network.protocol.name", s("http")),
    ("network.protocol.version", s("1.1")),
    ("http.request.method", s("GET")),
    ("url.path", s("/checkout")),
    ("url.scheme", s("https")),
    ("http.response.status_code", i(200)),
    ("wiretide.protocol", s("http")),
    ("wiretide.entry_id", s("e-front")),
    ("wiretide.node", s("node-a")),
]


def link(kind: str, confidence: float) -> list[tuple[str, Any]]:
    return [("wiretide.link", s(kind)), ("wiretide.confidence", ("double_value", confidence))]


def test_each_span_carries_exactly_its_conventional_attributes_in_order() -> None:
    spans = assembled()
    got = decoded(encode_request(spans))
    assert set(got) == {
        ("e-api", 3), ("e-api", 2), ("e-cart", 3), ("e-cart", 2), ("e-front", 3), ("e-front", 2)
    }  # fmt: skip
    timing = next(x.confidence for x in spans if x.entry_id == "e-api" and x.kind == 3)
    assert 0 < timing < 1

    front = got[("e-front", 2)]
    assert front["resource"] == resource("frontend")
    assert front["name"] == "GET /checkout"
    assert front["attributes"] == [
        *FRONT_CALL,
        ("network.peer.address", s("192.168.1.9")),
        ("network.peer.port", i(51000)),
        *link("entry", 1.0),
    ]
    assert front["status"] == (0, "")
    assert front["times"] == (T0, T0 + 10 * MS)
    # The caller nobody named is an anonymous workload: its address is its name, and its call the root.
    outside = got[("e-front", 3)]
    assert outside["resource"] == [("service.name", s("192.168.1.9")), ("telemetry.sdk.name", s("wiretide"))]
    assert outside["attributes"] == [
        *FRONT_CALL,
        ("network.peer.address", s("10.0.0.1")),
        ("network.peer.port", i(443)),
        ("url.full", s("https://shop.example/checkout")),
        ("service.peer.name", s("frontend")),
        ("service.peer.namespace", s("shop")),
        *link("root", 1.0),
    ]

    api_client, api_server = got[("e-api", 3)], got[("e-api", 2)]
    assert api_client["resource"] == resource("frontend") and api_server["resource"] == resource("api")
    assert api_client["name"] == api_server["name"] == "POST /orders/{id}"
    assert api_client["attributes"] == [
        *API_CALL,
        ("network.peer.address", s("10.0.1.1")),  # the IP the caller connected to
        ("network.peer.port", i(8080)),
        ("error.type", s("503")),
        ("url.full", s("http://api/orders/12345?dry=1")),
        ("service.peer.name", s("api")),
        ("service.peer.namespace", s("shop")),
        *link("timing", timing),
    ]
    assert api_server["attributes"] == [
        *API_CALL,
        ("network.peer.address", s("10.0.0.1")),
        ("network.peer.port", i(40000)),
        ("error.type", s("503")),
        *link("entry", 1.0),
    ]
    # http-spans.md#status: a 5xx is an error on both sides.
    assert api_client["status"] == api_server["status"] == (2, "503")
    assert api_client["times"] == api_server["times"] == (T0 + 2 * MS, T0 + 5 * MS)

    cart_client, cart_server = got[("e-cart", 3)], got[("e-cart", 2)]
    assert cart_client["name"] == cart_server["name"] == "shop.Cart/Get"
    assert cart_client["attributes"] == [
        *CART_CALL,
        ("network.peer.address", s("10.0.2.1")),
        ("network.peer.port", i(9090)),
        ("service.peer.name", s("cart")),
        ("service.peer.namespace", s("shop")),
        *link("timing", next(x.confidence for x in spans if x.entry_id == "e-cart" and x.kind == 3)),
    ]
    assert cart_server["attributes"] == [
        *CART_CALL,
        ("network.peer.address", s("10.0.0.1")),
        ("network.peer.port", i(40002)),
        *link("entry", 1.0),
    ]
    assert cart_client["status"] == cart_server["status"] == (0, "")

    # One trace; each call's client span is the parent of its server span, the front request of both.
    trace, front_id, _ = front["ids"]
    assert outside["ids"][2] == b"" and len(trace) == 16 and len(front_id) == 8
    assert front["ids"] == (trace, front_id, outside["ids"][1])
    for call in ("e-api", "e-cart"):
        client, server = got[(call, 3)]["ids"], got[(call, 2)]["ids"]
        assert client == (trace, client[1], front_id)
        assert server == (trace, server[1], client[1])
    by_entry = {(x.entry_id, x.kind): x for x in spans}
    assert all(got[key]["ids"][1] == by_entry[key].span_id for key in got)


def test_a_warm_encoder_writes_the_same_bytes_as_a_fresh_one() -> None:
    spans = assembled()
    encoder = Encoder()
    first = encoder.request(spans)
    for x in spans:
        x.exported = False
    assert encoder.request(spans) == first == encode_request(spans)


def test_true_and_one_stay_apart_however_often_they_repeat() -> None:
    spans = assembled()
    encoder = Encoder()
    seen = []
    for value in (1, True, 0, False, 1, True, 2, 2):
        spans[0].own["flag"] = value
        spans[0].exported = False
        attrs = decoded(encoder.request(spans[:1]))
        seen.append(next(v for _, span in attrs.items() for k, v in span["attributes"] if k == "flag"))
    assert seen == [
        i(1), ("bool_value", True), i(0), ("bool_value", False), i(1), ("bool_value", True), i(2), i(2)
    ]  # fmt: skip

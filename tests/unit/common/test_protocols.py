"""The protocol table answers every consumer's questions the same way: is it an error and whose,
how its status reads, what its span is called; and the JSON the UI reads holds the same rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from wiretide.common import protocols
from wiretide.common.entry import PROTOCOLS, Entry


def grpc(grpc_status: int | None, http_status: int = 200) -> dict[str, Any]:
    response: dict[str, Any] = {"status": http_status}
    if grpc_status is not None:
        response["grpc_status"] = grpc_status
    return {"protocol": "grpc", "status": http_status, "path": "/shop.Orders/Get", "response": response}


@pytest.mark.parametrize(
    ("entry", "client", "server", "text"),
    [
        ({"protocol": "http", "status": 200}, "", "", "200"),
        ({"protocol": "http", "status": 404}, "404", "", "404"),
        ({"protocol": "http2", "status": 503}, "503", "503", "503"),
        ({"protocol": "graphql", "status": None, "response": {"status": 502}}, "502", "502", "502"),
        (grpc(0), "", "", "OK (0)"),
        (grpc(14), "UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE (14)"),  # over HTTP 200: the trailer decides
        (grpc(5), "NOT_FOUND", "", "NOT_FOUND (5)"),  # the caller's mistake, not the server's
        (grpc(None, 503), "503", "503", "503"),  # a proxy answered: no grpc-status
        ({"protocol": "dns", "status": 3}, "", "", "NXDOMAIN"),  # an answer, not a failure
        ({"protocol": "dns", "status": 2}, "rcode_2", "rcode_2", "SERVFAIL"),
        ({"protocol": "dns", "status": None, "error": {"type": "timeout", "message": "x"}}, "timeout",
         "timeout", "timeout"),
        (
            {"protocol": "kafka", "status": 3},
            "UNKNOWN_TOPIC_OR_PARTITION", "UNKNOWN_TOPIC_OR_PARTITION", "UNKNOWN_TOPIC_OR_PARTITION (3)",
        ),
        ({"protocol": "redis", "status": -1}, "db_error", "db_error", "-1"),
        ({"protocol": "tcp", "error": {"type": "connection", "message": "reset"}}, "connection", "connection",
         "connection"),
        ({"protocol": "my-plugin", "status": 7}, "", "", "7"),  # unknown: a generic row, never a raise
    ],
)  # fmt: skip
def test_error_rules_and_status_text_per_protocol(
    entry: dict[str, Any], client: str, server: str, text: str
) -> None:
    assert protocols.client_error(entry) == client
    assert protocols.server_error(entry) == server
    assert protocols.is_error(entry) is (server != "")
    assert protocols.status_text(entry) == text


def test_status_classes_are_http_classes_only_where_the_status_is_http() -> None:
    assert protocols.status_class({"protocol": "http", "status": 201}) == "2xx"
    assert protocols.status_class(grpc(14)) == "error"
    assert protocols.status_class(grpc(0)) == "ok"
    assert protocols.status_class({"protocol": "dns", "status": 5}) == "error"


def test_span_names_follow_the_semantic_conventions() -> None:
    assert (
        protocols.span_name({"protocol": "http", "method": "GET", "path": "/users/42?x=1"})
        == "GET /users/{id}"
    )
    assert protocols.span_name(grpc(0)) == "shop.Orders/Get"
    dns = {"protocol": "dns", "request": {"questions": [{"name": "example.com", "type": "A"}]}}
    assert protocols.span_name(dns) == "DNS A example.com"
    assert protocols.span_name({"protocol": "tcp", "summary": "tcp 1.2.3.4:5 → 6.7.8.9:10"}).startswith(
        "tcp "
    )


def test_a_method_the_conventions_do_not_know_never_names_a_span() -> None:
    hostile = {"protocol": "http", "method": "X" * 40 + "<script>", "path": "/a"}
    assert protocols.span_name(hostile) == "HTTP /a"
    assert protocols.span_name({"protocol": "http2", "method": "PATCH", "path": "/a"}) == "PATCH /a"


def test_every_entry_protocol_has_a_row_and_unknown_ones_read_as_transport() -> None:
    assert set(protocols.PROTOCOLS) == PROTOCOLS
    assert protocols.info("no-such-protocol").family == "transport"
    assert {row.family for row in protocols.PROTOCOLS.values()} <= set(protocols.FAMILIES)


def test_the_json_table_carries_every_row_and_its_rules() -> None:
    doc = orjson.loads(orjson.dumps(protocols.table_json()))
    assert set(doc["protocols"]) == set(protocols.PROTOCOLS)
    rule = doc["protocols"]["grpc"]["status"][0]
    assert rule["path"] == ["response", "grpc_status"]
    assert rule["server_errors"]["codes"] == sorted(protocols.GRPC_SERVER_ERRORS)
    assert rule["names"]["14"] == "UNAVAILABLE"
    assert doc["default"]["family"] == "transport"


def test_the_entry_typeddict_names_every_top_level_field() -> None:
    assert set(Entry.__required_keys__) == {"id", "timestamp", "protocol"}
    assert {"src", "dst", "error", "size", "tls", "trace", "request", "response"} <= set(
        Entry.__optional_keys__
    )

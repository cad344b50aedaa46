"""KFL over entries: each variable, operator and function, evaluated by the Python predicate.

The entries are small transcripts of real calls (an HTTP 503, a gRPC failure, a DNS lookup, …);
each test says which of them a filter selects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from wiretide.common.kfl import VARIABLES, compile_predicate, compile_value, parse_query
from wiretide.common.kfl.values import ERROR, Duration, Timestamp

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
NOW = T0 + 600 * 1_000_000_000  # ten minutes later


def peer(
    ip: str, port: int, name: str, namespace: str, pod: str | None = None, service: str | None = None
) -> dict:
    return {
        "ip": ip,
        "port": port,
        "name": name,
        "namespace": namespace,
        "pod": {"name": pod, "namespace": namespace, "labels": {"app": name}} if pod else None,
        "service": {"name": service, "namespace": namespace} if service else None,
        "node": "worker-1",
    }


HTTP_503: dict[str, Any] = {
    "id": "01HTTP503",
    "node": "worker-1",
    "timestamp": T0 + 300 * 1_000_000_000,
    "elapsed_us": 420_000,
    "protocol": "http",
    "version": "1.1",
    "transport": "tcp",
    "src": peer("10.0.0.5", 43210, "frontend-7d9", "shop", pod="frontend-7d9"),
    "dst": peer("10.0.1.9", 8080, "payments", "payments", pod="payments-0", service="payments"),
    "method": "POST",
    "path": "/api/v1/charge",
    "status": 503,
    "summary": "POST /api/v1/charge",
    "redacted": ["request.headers.authorization"],
    "request": {
        "method": "POST",
        "url": "/api/v1/charge?retry=2&debug",
        "path": "/api/v1/charge",
        "query_string": "retry=2&debug",
        "query": {"retry": ["2"], "debug": [""]},
        "http_version": "HTTP/1.1",
        "headers": {"content-type": "application/json", "x-request-id": "abc-123"},
        "cookies": {"session": "s3cr3t"},
    },
    "response": {
        "status": 503,
        "reason": "Service Unavailable",
        "headers": {"retry-after": "5"},
        "cookies": {},
    },
    "error": None,
    "size": {"request": 512, "response": 128},
    "tls": {"sni": "payments.shop.example.com", "version": "1.3", "decrypted": True},
    "capture": {"source": "ebpf_tls", "interface": "eth0"},
    "trace": {"trace_id": "4bf92f3577b34da6", "span_id": "00f067aa0ba902b7"},
}
GRPC_FAIL: dict[str, Any] = {
    "id": "01GRPC",
    "node": "worker-2",
    "timestamp": T0 + 30 * 1_000_000_000,
    "elapsed_us": 1_500,
    "protocol": "grpc",
    "version": "2",
    "src": peer("10.0.2.2", 50000, "checkout", "shop", pod="checkout-1"),
    "dst": peer("10.0.3.3", 50051, "greeter", "hello", pod="greeter-0", service="greeter"),
    "method": "POST",
    "path": "/helloworld.Greeter/SayHello",
    "status": 200,
    "request": {"service": "helloworld.Greeter", "method": "SayHello", "headers": {"te": "trailers"}},
    "response": {"grpc_status": 14, "grpc_message": "unavailable"},
    "size": {"request": 40},
    "capture": {"source": "af_packet", "interface": "eth0"},
}
DNS_LOOKUP: dict[str, Any] = {
    "id": "01DNS",
    "node": "worker-1",
    "timestamp": T0,
    "elapsed_us": 900,
    "protocol": "dns",
    "transport": "udp",
    "src": peer("10.0.0.5", 5353, "frontend-7d9", "shop", pod="frontend-7d9"),
    "dst": peer("10.96.0.10", 53, "kube-dns", "kube-system", service="kube-dns"),
    "method": "A",
    "path": "example.com",
    "status": 0,
    "request": {"id": 4242, "questions": [{"name": "example.com", "type": "A", "class": "IN"}]},
    "response": {
        "rcode": 0,
        "answers": [
            {"name": "example.com", "type": "A", "ttl": 60, "data": "93.184.216.34"},
            {"name": "example.com", "type": "A", "ttl": 60, "data": "93.184.216.35"},
        ],
    },
}
GQL_MUTATION: dict[str, Any] = {
    "id": "01GQL",
    "timestamp": T0 + 1,
    "protocol": "graphql",
    "method": "POST",
    "path": "/graphql",
    "status": 200,
    "request": {"operation_name": "CreateUser", "operation_type": "mutation", "headers": {}},
}
KAFKA_PRODUCE: dict[str, Any] = {
    "id": "01KAFKA",
    "timestamp": T0 + 2,
    "protocol": "kafka",
    "method": "Produce",
    "summary": "Produce orders",
    "status": 0,
    "src": {"namespace": "shop", "name": "orders-writer"},
    "dst": {"namespace": "data", "name": "kafka-0"},
}
TLS_HANDSHAKE: dict[str, Any] = {
    "id": "01TLS",
    "timestamp": T0 + 3,
    "protocol": "tls",
    "tls": {"sni": "api.stripe.com", "version": "1.2"},
}
BARE: dict[str, Any] = {"id": "01BARE", "timestamp": T0 + 4, "protocol": "tcp"}

ENTRIES = [HTTP_503, GRPC_FAIL, DNS_LOOKUP, GQL_MUTATION, KAFKA_PRODUCE, TLS_HANDSHAKE, BARE]


def selected(query: str) -> list[str]:
    predicate = compile_predicate(query, now_ns=NOW)
    return [entry["id"] for entry in ENTRIES if predicate(entry)]


CASES: list[tuple[str, list[str]]] = [
    # protocol flags
    ("http", ["01HTTP503", "01GRPC", "01GQL"]),
    ("http2", ["01GRPC"]),
    ("grpc", ["01GRPC"]),
    ("gql", ["01GQL"]),
    ("dns", ["01DNS"]),
    ("kafka", ["01KAFKA"]),
    ("tcp", ["01BARE"]),
    ("udp || ws || redis || amqp || ldap || radius || diameter || icmp || sctp", []),
    ("tls", ["01HTTP503", "01TLS"]),
    ("!http", ["01DNS", "01KAFKA", "01TLS", "01BARE"]),
    # normalised fields
    ("status_code >= 500", ["01HTTP503"]),
    ("http && status_code >= 500", ["01HTTP503"]),
    ('method == "POST"', ["01HTTP503", "01GRPC", "01GQL"]),
    ('path.startsWith("/api")', ["01HTTP503"]),
    ('path.endsWith("/SayHello")', ["01GRPC"]),
    ('url.contains("debug")', ["01HTTP503"]),
    ('protocol == "kafka"', ["01KAFKA"]),
    ('summary.contains("orders")', ["01KAFKA"]),
    ('query_string["retry"] == "2"', ["01HTTP503"]),
    ('"debug" in query_string', ["01HTTP503"]),
    ('request.headers["content-type"] == "application/json"', ["01HTTP503"]),
    ("response.headers['retry-after'] == '5'", ["01HTTP503"]),
    ('request.cookies["session"] == "s3cr3t"', ["01HTTP503"]),
    ('"session" in request.cookies', ["01HTTP503"]),
    ('http_version == "HTTP/1.1"', ["01HTTP503"]),
    # gRPC, GraphQL, DNS, TLS
    ('grpc_method == "SayHello"', ["01GRPC"]),
    ('grpc_service == "helloworld.Greeter"', ["01GRPC"]),
    ("grpc && grpc_status != 0", ["01GRPC"]),
    ('gql_operation == "CreateUser" && gql_type == "mutation"', ["01GQL"]),
    ('dns && "example.com" in dns_questions', ["01DNS"]),
    ('"A" in dns_question_types', ["01DNS"]),
    ('"93.184.216.35" in dns_answers', ["01DNS"]),
    ("size(dns_answers) == 2", ["01DNS"]),
    ("dns_rcode == 0", ["01DNS"]),
    ('redis_command == "GET" || redis_key == "user:1"', []),  # defined only on redis entries
    ('kafka_topic == "orders" || "orders" in kafka_topics || kafka_api_key == 0', []),  # only on kafka
    ('kafka_client_id == "rdkafka"', []),
    ('postgresql || pg_query.contains("FROM") || pg_sqlstate == "42P01"', []),  # only on postgresql entries
    ('mysql || mysql_query.contains("FROM") || mysql_command == "COM_PING" || mysql_sqlstate == "42000"', []),
    ('mongodb || mongodb_command == "find" || mongodb_database == "shop" || mongodb_collection == "o"', []),
    ('amqp_exchange == "amq.direct" || amqp_routing_key == "orders" || amqp_queue == "orders"', []),
    ('ldap.operation == "search" || ldap.messageID == 2 || ldap.dn == "dc=x" || ldap.filter == "(a=*)"', []),
    ('ldap.scope == "baseObject" || ldap.resultCode == 49 || ldap.entries > 1 || ldap.oid == "1.3"', []),
    ('smtp || imap || pop3 || smtp.req.command == "MAIL" || smtp.response.code == 550', []),
    ('imap.request.command == "LOGIN" || imap.response.status == "NO"', []),  # only on mail entries
    ('pop.request.command == "RETR" || pop.response.indicator == "-ERR"', []),
    ('radius || radius_code == 1 || radius_user_name == "a" || radius_nas_identifier == "n"', []),
    ('radius_calling_station_id == "m" || radius_acct_status_type == "Stop" || radius_eap_type == "x"', []),
    ("diameter || diameter_command_code == 272 || diameter_application_id == 4", []),
    ('diameter_session_id == "s"', []),
    ('diameter_origin_host == "pcrf" || diameter_result_code == 5001', []),
    ('tlsx_sni.endsWith(".example.com")', ["01HTTP503"]),
    ('tlsx_sni == "api.stripe.com" && tls_version == "1.2"', ["01TLS"]),
    ('tls.sni == "api.stripe.com"', ["01TLS"]),
    # both ends
    ('src.ip == "10.0.0.5"', ["01HTTP503", "01DNS"]),
    ("dst.port == 53", ["01DNS"]),
    ('src.name == "checkout"', ["01GRPC"]),
    ('dst.namespace == "payments"', ["01HTTP503"]),
    ('src.pod.name == "checkout-1"', ["01GRPC"]),
    ('dst.pod.namespace == "hello"', ["01GRPC"]),
    ('dst.service.name == "kube-dns"', ["01DNS"]),
    ('dst.pod.labels["app"] == "payments"', ["01HTTP503"]),
    ('"kube-system" in namespaces', ["01DNS"]),
    ('"payments-0" in pods', ["01HTTP503"]),
    ('"greeter" in services', ["01GRPC"]),
    ('node_name == "worker-2"', ["01GRPC"]),
    # time, sizes, the rest of the entry
    ('elapsed_time > duration("250ms")', ["01HTTP503"]),
    ("elapsed_time > 1000", ["01HTTP503", "01GRPC"]),  # an int counts microseconds, as in KFL2
    ('elapsed_time >= duration("1.5ms") && elapsed_time < duration("1s")', ["01HTTP503", "01GRPC"]),
    ('timestamp > now() - duration("6m")', ["01HTTP503"]),
    ('timestamp >= timestamp("2026-01-01T00:00:30Z")', ["01HTTP503", "01GRPC"]),
    ('timestamp < timestamp("2026-01-01T01:00:01+01:00")', ["01DNS", "01GQL", "01KAFKA", "01TLS", "01BARE"]),
    ("request_size > 100", ["01HTTP503"]),
    ("response_size == 128 && total_size == 640", ["01HTTP503"]),
    ("total_size == 40", ["01GRPC"]),
    ('capture_source == "ebpf_tls"', ["01HTTP503"]),
    ('trace_id == "4bf92f3577b34da6"', ["01HTTP503"]),
    ('id == "01BARE"', ["01BARE"]),
    ('version == "2"', ["01GRPC"]),
    ('"request.headers.authorization" in redacted', ["01HTTP503"]),  # absent: an empty list
    # KFL v1 spellings
    ('http and request.method == "POST" and request.path != "/x"', ["01HTTP503", "01GRPC", "01GQL"]),
    ('response.status == r"5.*"', ["01HTTP503"]),
    ('request.path == r"/api/.*"', ["01HTTP503"]),
    ('request.path == r"/api"', []),  # a v1 regex must match the whole value
    ("not dns and status_code = 0", ["01KAFKA"]),
]


@pytest.mark.parametrize(("query", "expected"), CASES)
def test_each_filter_selects_exactly_the_entries_it_describes(query: str, expected: list[str]) -> None:
    assert selected(query) == expected


def test_every_variable_is_covered_by_a_case_above() -> None:
    used = " ".join(query for query, _ in CASES)
    missing = [name for name in VARIABLES if name not in used]
    assert missing == []


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_every_documented_example_is_a_valid_filter(name: str) -> None:
    parse_query(VARIABLES[name].example)


# --- CEL semantics -----------------------------------------------------------------------------------


def value(query: str, entry: dict[str, Any] | None = None) -> Any:
    return compile_value(query, now_ns=NOW, require_bool=False)(entry if entry is not None else HTTP_503)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("-7 % 3", -1),
        ("7.0 / 2", 3.5),
        ('"ab" + "cd"', "abcd"),
        ("[1] + [2]", [1, 2]),
        ("true ? 1 : 2", 1),
        ("size('héllo')", 5),
        ("size(b'h\\xc3\\xa9')", 3),
        ('"HeLLo".lowerAscii()', "hello"),
        ('"é".upperAscii()', "é"),
        ('{"a": 1}["a"]', 1),
        ('map_get({"a": 1}, "b", 7)', 7),
        ('map_get(request.headers, "x-request-id", "")', "abc-123"),
        ("string(503)", "503"),
        ('int("42")', 42),
        ("double(2)", 2.0),
        ('duration("1h30m") == duration("90m")', True),
        ('timestamp("2026-01-01T00:00:00Z") + duration("1s") > timestamp("2026-01-01T00:00:00Z")', True),
        ('timestamp("2026-01-01T00:00:10Z") - timestamp("2026-01-01T00:00:00Z")', Duration(10_000_000_000)),
        ("timestamp", Timestamp(HTTP_503["timestamp"])),
        ("elapsed_time", Duration(420_000_000)),
        ("1 == 1.0", True),
        ("[1, 2] == [1, 2]", True),
        ('{"a": [1]} == {"a": [1]}', True),
        ("dns_answers.all(a, a.startsWith('93.'))", True),
        ("dns_answers.exists_one(a, a.endsWith('.35'))", True),
        ("dns_answers.filter(a, a.endsWith('.35'))", ["93.184.216.35"]),
        ("dns_answers.map(a, size(a))", [13, 13]),
        ("request.headers.exists(k, k.startsWith('x-'))", True),
        ('path.matches("^/api/v[0-9]+/")', True),
        ('matches(path, "charge$")', True),
        ("has(request.headers.authorization)", False),
        ("has(request.headers)", True),
        ("error == null", True),
        ("tls != null", True),
    ],
)
def test_operators_and_functions_compute_cel_values(query: str, expected: Any) -> None:
    result = value(query, DNS_LOOKUP if "dns_answers" in query else HTTP_503)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "query",
    [
        "status_code == 500",  # DNS has a status, but not 500
        "request.headers['absent'] == 'x'",
        "1 / 0 == 1",
        "9223372036854775807 + 1 > 0",
        "grpc_status == 0",  # grpc_status is defined only for gRPC
        "int('x') == 1",
        "[1, 'a'].all(x, x > 0)",
    ],
)
def test_errors_and_missing_fields_make_the_filter_not_match(query: str) -> None:
    assert compile_predicate(query)(DNS_LOOKUP) is False


def test_a_missing_field_fails_both_a_comparison_and_its_negation() -> None:
    # The rule (docs/kfl.md): a comparison with a missing field is an error, and an error never matches.
    assert compile_predicate("grpc_status == 0")(HTTP_503) is False
    assert compile_predicate("grpc_status != 0")(HTTP_503) is False
    assert compile_predicate("!(grpc_status == 0)")(HTTP_503) is False
    assert compile_predicate("!has(response.grpc_status)")(HTTP_503) is True


def test_and_or_absorb_errors_when_the_other_side_decides() -> None:
    assert value("grpc_status == 0 && false") is False
    assert value("false && grpc_status == 0") is False
    assert value("grpc_status == 0 || true") is True
    assert value("true || grpc_status == 0") is True
    assert value("grpc_status == 0 && true") is ERROR
    assert value("grpc_status == 0 || false") is ERROR
    assert value("!(grpc_status == 0)") is ERROR
    assert value("grpc_status == 0 ? 1 : 2") is ERROR


def test_values_of_different_types_never_compare_equal_or_unequal() -> None:
    weird = {"id": "w", "timestamp": 1, "protocol": "http", "status": "503", "method": True}
    for query in ("status_code == 503", "status_code != 503", 'method == "true"', "method != 'x'"):
        assert compile_predicate(query)(weird) is False, query


def test_bool_is_not_a_number() -> None:
    assert (
        compile_predicate("status_code == 1")({"id": "b", "timestamp": 1, "protocol": "http", "status": True})
        is False
    )


def test_now_is_read_once_when_the_query_is_compiled() -> None:
    predicate = compile_predicate('timestamp > now() - duration("1m")', now_ns=T0 + 60 * 1_000_000_000)
    assert predicate(DNS_LOOKUP) is False
    assert predicate(GRPC_FAIL) is True


@pytest.mark.parametrize(
    "entry",
    [
        None,
        [],
        "text",
        {},
        {"protocol": 5, "status": [1], "request": "x", "src": ["a"], "timestamp": "soon", "elapsed_us": 1.5},
        {
            "protocol": {"a": 1},
            "request": {"questions": "x", "headers": []},
            "response": {"answers": [None, 3]},
        },
        {"size": {"request": "1", "response": None}, "tls": [], "path": 5},
    ],
)
def test_malformed_entries_never_raise_and_never_match_a_comparison(entry: Any) -> None:
    for query, _ in CASES:
        predicate = compile_predicate(query, now_ns=NOW)
        assert predicate(entry) in (True, False)
    assert compile_predicate("status_code >= 500")(entry) is False


def test_a_regex_taken_from_the_entry_is_compiled_at_run_time_and_a_bad_one_never_matches() -> None:
    predicate = compile_predicate("path.matches(summary)")
    assert predicate({"path": "/a/b", "summary": "^/a/"}) is True
    assert predicate({"path": "/a/b", "summary": "["}) is False
    assert predicate({"path": "aaaa", "summary": "(a+)+$"}) is False  # refused, not run


# --- the reference page --------------------------------------------------------------------------------

REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "kfl.md"


def reference_examples() -> list[str]:
    """Every snippet in an "example" column of docs/kfl.md, and the filters in its first code block."""
    text = REFERENCE.read_text(encoding="utf-8")
    examples: list[str] = []
    column = None
    for line in text.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if column is None:
            column = cells.index("example") if "example" in cells else -1
            continue
        if column >= 0 and column < len(cells):
            examples.extend(re.findall(r"`([^`]+)`", cells[column].replace("\\|", "|")))
    first_block = text.split("```")[1]
    examples.extend(line for line in first_block.splitlines() if line.strip())
    return examples


def test_the_reference_page_names_every_variable_and_flag() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert [name for name in VARIABLES if f"`{name}`" not in text] == []


@pytest.mark.parametrize("example", reference_examples())
def test_every_example_on_the_reference_page_is_a_valid_filter(example: str) -> None:
    parse_query(example)


# --- header names match ignoring case (RFC 9110 §5.1) ---------------------------------------------------

HTTP1_AS_SENT: dict[str, Any] = {"request": {"headers": {"Host": "shop", "X-Request-ID": "abc"}}}
HTTP2_LOWER: dict[str, Any] = {"request": {"headers": {"host": "shop", "x-request-id": "abc"}}}


@pytest.mark.parametrize(
    "query",
    [
        'request.headers["Host"] == "shop"',
        'request.headers.host == "shop"',
        'request.headers["HOST"].startsWith("sh")',
        "has(request.headers.Host)",
        '"x-REQUEST-id" in request.headers',
        'map_get(request.headers, "X-Request-Id", "") == "abc"',
        'request.headers[string("Host")] == "shop"',
    ],
)
def test_a_header_matches_whatever_case_it_was_sent_or_asked_in(query: str) -> None:
    predicate = compile_predicate(query)
    assert predicate(HTTP1_AS_SENT) is True
    assert predicate(HTTP2_LOWER) is True


def test_cookie_names_and_labels_still_match_exactly() -> None:
    cookie = {"request": {"cookies": {"session": "1"}}}
    label = {"dst": {"pod": {"labels": {"app": "x"}}}}
    assert compile_predicate('request.cookies["Session"] == "1"')(cookie) is False
    assert compile_predicate('dst.pod.labels["App"] == "x"')(label) is False

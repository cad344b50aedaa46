"""What users bring from elsewhere: `50ms`, `=~`, Wireshark display-filter fields, bare addresses,
`limit(5)`, `datetime(...)`. Each is either read as the KFL it means, with a warning whose hint is
the KFL spelling, or refused with an error that names the replacement — always at its position, and
always through `validate` (what the gateway's /api/kfl/validate and the CLI show)."""

from __future__ import annotations

from typing import Any

import pytest

from wiretide.common.kfl import KflError, Problem, compile_predicate, parse_query, validate
from wiretide.common.kfl.lexer import tokenize
from wiretide.common.kfl.values import Duration

SLOW: dict[str, Any] = {"id": "slow", "protocol": "http", "elapsed_us": 60_000, "path": "/api/x"}
FAST: dict[str, Any] = {"id": "fast", "protocol": "http", "elapsed_us": 40_000, "path": "/Health"}


def warnings_of(text: str) -> list[tuple[int, str, str]]:
    problems = validate(text)
    assert all(p.severity == "warning" for p in problems), problems
    return [(p.position, p.message, p.hint) for p in problems]


def error_of(text: str) -> Problem:
    (problem,) = validate(text)
    assert problem.severity == "error"
    with pytest.raises(KflError):
        parse_query(text)
    return problem


def selects(text: str, *entries: dict[str, Any]) -> list[str]:
    predicate = compile_predicate(text)
    return [str(e["id"]) for e in entries if predicate(e)]


# --- duration literals -------------------------------------------------------------------------------


def test_a_duration_literal_compared_with_a_duration_field_is_read_as_duration_and_says_so() -> None:
    assert selects("elapsed_time > 50ms", SLOW, FAST) == ["slow"]
    assert warnings_of("elapsed_time > 50ms") == [
        (15, '50ms read as duration("50ms")', 'write duration("50ms")')
    ]


@pytest.mark.parametrize(
    ("text", "ns"),
    [("50ms", 50_000_000), ("1.5s", 1_500_000_000), ("2m", 120_000_000_000), ("1h30m", 5_400_000_000_000),
     ("250us", 250_000), ("10µs", 10_000), ("7ns", 7)],
)  # fmt: skip
def test_duration_literals_take_go_units_and_combinations(text: str, ns: int) -> None:
    token = tokenize(text)[0]
    assert (token.kind, token.value, token.end) == ("duration", Duration(ns), len(text))


def test_a_duration_literal_works_in_time_arithmetic_too() -> None:
    now = 1_767_225_600_000_000_000
    query = parse_query("timestamp > now() - 5m", now_ns=now)
    assert compile_predicate(query)({"timestamp": now - 60_000_000_000}) is True
    assert compile_predicate(query)({"timestamp": now - 360_000_000_000}) is False
    assert query.warnings[0].hint == 'write duration("5m")'


def test_a_number_and_a_unit_apart_get_the_duration_spelling_as_hint() -> None:
    problem = error_of("elapsed_time > 50 ms")
    assert (problem.position, problem.hint) == (18, 'write duration("50ms")')


def test_a_quoted_duration_compared_with_a_duration_gets_the_duration_spelling_as_hint() -> None:
    assert error_of('elapsed_time > "50ms"').hint == 'write duration("50ms")'


def test_letters_that_are_not_a_unit_still_cannot_follow_a_number() -> None:
    assert "cannot run into letters" in error_of("elapsed_time > 50mx").message
    assert "cannot run into letters" in error_of("status_code > 5e3ms").message
    assert tokenize("7u")[0].kind == "uint"


# --- regex operators ---------------------------------------------------------------------------------


def test_the_perl_match_operator_is_read_as_matches_and_the_hint_is_the_cel_call() -> None:
    assert selects('path =~ "^/api"', SLOW, FAST) == ["slow"]
    assert warnings_of('path =~ "^/api"') == [(5, "'=~' read as .matches()", 'write path.matches("^/api")')]
    assert selects('path !~ "^/api"', SLOW, FAST) == ["fast"]
    assert warnings_of('path !~ "^/api"')[0][2] == 'write !path.matches("^/api")'


def test_wiresharks_match_operators_ignore_case_as_wireshark_does() -> None:
    for text in ('path ~ "health"', 'path matches "health"'):
        assert selects(text, SLOW, FAST) == ["fast"]
        assert warnings_of(text)[0][2] == 'write path.matches("(?i)health")'
    assert selects('path contains "api"', SLOW, FAST) == ["slow"]
    assert warnings_of('path contains "api"')[0][2] == 'write path.contains("api")'


def test_a_regex_operator_on_an_expression_puts_it_in_parentheses_in_the_hint() -> None:
    assert warnings_of('path + "x" =~ "x$"')[0][2] == 'write (path + "x").matches("x$")'


# --- Wireshark display-filter fields -----------------------------------------------------------------

CALL: dict[str, Any] = {
    "id": "call", "protocol": "http", "transport": "tcp", "method": "GET", "status": 503,
    "elapsed_us": 600_000,
    "src": {"ip": "10.0.1.104", "port": 40000, "name": "web"}, "dst": {"ip": "10.0.2.7", "port": 80},
    "request": {"headers": {"host": "shop.example", "user-agent": "curl/8.5"}},
    "tls": {"sni": "shop.example"}, "capture": {"interface": "eth0"},
}  # fmt: skip
DNS: dict[str, Any] = {
    "id": "dns", "protocol": "dns", "transport": "udp", "status": 0,
    "src": {"ip": "2001:db8::1", "port": 5353}, "dst": {"ip": "2001:db8::53", "port": 53},
    "request": {"questions": [{"name": "svc.local", "type": "A"}]},
    "response": {"answers": [{"data": "10.0.0.7"}]},
}  # fmt: skip
REDIS: dict[str, Any] = {
    "id": "redis", "protocol": "redis", "transport": "tcp", "method": "GET", "src": {"port": 80},
}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "replacement", "hint", "ids"),
    [
        ("ip.src == 10.0.1.104", "src.ip", 'write src.ip == "10.0.1.104"', ["call"]),
        ("ip.dst == 10.0.2.7", "dst.ip", 'write dst.ip == "10.0.2.7"', ["call"]),
        ("ip.addr == 10.0.2.7", "src.ip or dst.ip", 'write src.ip == "10.0.2.7" || dst.ip == "10.0.2.7"',
         ["call"]),
        ("ip.addr != 10.0.2.7", "src.ip or dst.ip", 'write !(src.ip == "10.0.2.7" || dst.ip == "10.0.2.7")',
         ["dns"]),
        ("ipv6.src == 2001:db8::1", "src.ip", 'write src.ip == "2001:db8::1"', ["dns"]),
        ("tcp.port == 80", "src.port or dst.port",
         'write transport == "tcp" && (src.port == 80 || dst.port == 80)', ["call", "redis"]),
        ("tcp.srcport == 40000", "src.port", 'write transport == "tcp" && src.port == 40000', ["call"]),
        ("tcp.dstport == 80", "dst.port", 'write transport == "tcp" && dst.port == 80', ["call"]),
        ("udp.port in [53, 5353]", "src.port or dst.port",
         'write transport == "udp" && (src.port in [53, 5353] || dst.port in [53, 5353])', ["dns"]),
        ('http.request.method == "GET"', "method", 'write http && method == "GET"', ["call"]),
        ("http.response.code >= 500", "status_code", "write http && status_code >= 500", ["call"]),
        ('http.host == "shop.example"', "request.headers.host",
         'write http && request.headers.host == "shop.example"', ["call"]),
        ('http.user_agent contains "curl"', 'request.headers["user-agent"]',
         'write http && request.headers["user-agent"].contains("curl")', ["call"]),
        ('dns.qry.name == "svc.local"', "dns_questions",
         'write dns && "svc.local" in dns_questions', ["dns"]),
        ('dns.qry.name.endsWith(".local")', "dns_questions",
         'write dns && dns_questions.exists(item, item.endsWith(".local"))', ["dns"]),
        ("dns.a == 10.0.0.7", "dns_answers", 'write dns && "10.0.0.7" in dns_answers', ["dns"]),
        ("frame.time_delta > 0.5", "elapsed_time (the call's duration)",
         'write elapsed_time > duration("500ms")', ["call"]),
        ('tls.handshake.extensions_server_name == "shop.example"', "tls.sni",
         'write tls.sni == "shop.example"', ["call"]),
        ('frame.interface_name == "eth0"', "capture.interface",
         'write capture.interface == "eth0"', ["call"]),
        ("http.host", "request.headers.host", "write http && has(request.headers.host)", ["call"]),
    ],
)  # fmt: skip
def test_a_wireshark_field_is_read_as_the_wiretide_field_with_a_warning_naming_it(
    text: str, replacement: str, hint: str, ids: list[str]
) -> None:
    assert selects(text, CALL, DNS, REDIS) == ids
    position, message, written = warnings_of(text)[0]
    assert position == 0
    name = message.removeprefix("Wireshark field '").partition("'")[0]
    assert text.startswith(name) and message.endswith(f"' read as {replacement}")
    assert written == hint
    assert selects(hint.removeprefix("write "), CALL, DNS, REDIS) == ids  # the hint means the same


def test_a_wireshark_field_is_bound_to_its_protocol_as_in_wireshark() -> None:
    # Redis also has a method "GET"; Wireshark's http.request.method exists only on HTTP.
    assert selects('http.request.method == "GET"', CALL, REDIS) == ["call"]
    assert selects('method == "GET"', CALL, REDIS) == ["call", "redis"]


def test_kfl_names_win_over_display_filter_names_and_loop_variables_are_left_alone() -> None:
    assert validate('tls.sni == "a"') == []
    assert validate('dns_answers.exists(ip, ip == "10.0.0.7")') == []


def test_a_wireshark_field_wiretide_lacks_is_named_in_the_error() -> None:
    problem = error_of("tcp.flags.syn == 1")
    assert (problem.position, problem.message) == (
        0,
        "Wireshark field 'tcp.flags.syn' has no Wiretide equivalent",
    )
    assert error_of("ip.sr == 10.0.0.1").hint == "did you mean 'ip.src'?"


def test_a_field_that_names_either_end_cannot_be_used_as_one_value() -> None:
    problem = error_of("size(ip.addr) > 7")
    assert problem.message == "ip.addr stands for src.ip or dst.ip: compare it with a value"
    assert problem.position == 5


# --- bare addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("10.0.1.104", "10.0.1.104"), ("fe80::1", "fe80::1"), ("::1", "::1"), ("2001:DB8:0::1", "2001:db8::1"),
     ("::ffff:10.0.0.1", "::ffff:a00:1")],
)  # fmt: skip
def test_bare_addresses_are_read_as_their_canonical_string(text: str, value: str) -> None:
    token = tokenize(f"src.ip == {text}")[-2]
    assert (token.kind, token.value) == ("address", value)
    assert warnings_of(f"src.ip == {text}") == [(10, f"address {text} read as a string", f'write "{value}"')]


def test_colons_that_are_not_an_address_keep_their_cel_meaning() -> None:
    assert compile_predicate("{1:2}[1] == 2")({}) is True
    assert compile_predicate("(true ? 1:2) == 1")({}) is True
    assert compile_predicate('{"a":1}.a == 1')({}) is True


def test_a_malformed_address_and_a_subnet_are_refused_with_what_to_write() -> None:
    assert error_of("src.ip == 999.1.1.1").message == "not an IPv4 address: '999.1.1.1'"
    problem = error_of("ip.src == 10.0.0.0/8")
    assert problem.message == "subnet matches (10.0.0.0/8) are not supported"
    assert problem.hint == 'for this subnet write src.ip.startsWith("10.") (or dst.ip)'


# --- functions from elsewhere ------------------------------------------------------------------------


def test_limit_is_refused_with_the_limit_parameter_named() -> None:
    problem = error_of("http && limit(5)")
    assert problem.position == 8
    assert problem.message.startswith("limit() is not a KFL function")
    assert "limit=5" in problem.hint and "--limit 5" in problem.hint


def test_datetime_is_refused_with_the_timestamp_spelling_of_its_argument() -> None:
    problem = error_of('timestamp > datetime("1/18/2022, 11:12:53 AM")')
    assert (problem.position, problem.hint) == (12, 'write timestamp("2022-01-18T11:12:53Z")')
    assert error_of("timestamp > datetime(x)").hint == 'write timestamp("2026-03-14T22:00:00Z") (RFC 3339)'
    assert error_of("len(path) > 3").hint == "write size(x)"


# --- one validation path -----------------------------------------------------------------------------


def test_every_translation_comes_back_from_validate_in_the_order_of_the_text() -> None:
    text = 'ip.src == 10.0.1.104 and elapsed_time > 50ms && path =~ "^/api"'
    positions = [p for p, _, _ in warnings_of(text)]
    assert positions == sorted(positions) and len(positions) == 5


def test_a_warning_renders_with_a_caret_under_what_was_translated() -> None:
    (problem,) = validate("elapsed_time > 50ms")
    assert problem.render("elapsed_time > 50ms") == "\n".join(
        [
            'warning: 50ms read as duration("50ms")',
            "  1 | elapsed_time > 50ms",
            "    |                ^",
            'hint: write duration("50ms")',
        ]
    )

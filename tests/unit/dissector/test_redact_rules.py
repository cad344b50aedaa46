"""The redaction rules: how names match, what a rules file and the settings say, and that redaction
never raises on any input (it fails closed instead)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import needs_pcaps, pcap
from wiretide.common.settings import SettingsError, load_settings
from wiretide.dissector.redact import (
    DEFAULT_REDACTOR,
    MARKER,
    MAX_DEPTH,
    MAX_MARKS,
    Names,
    Redactor,
    Rules,
    RulesError,
    luhn,
    parse_rules_text,
    rules_from_settings,
)
from wiretide.dissector.service import DissectorSettings

RULES_SETTING = "WIRETIDE_DISSECTOR_REDACT_RULES"


def http(request: dict[str, Any], response: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "01X", "timestamp": 1, "protocol": "http", "request": request, "response": response}


def json_body(doc: Any) -> dict[str, Any]:
    return {"mime": "application/json", "encoding": "json", "content": json.dumps(doc)}


@pytest.mark.parametrize("name", ["api_key", "API-Key", "apiKey", "X-API-KEY", "x_api_key"])
def test_names_match_ignoring_case_dashes_and_underscores(name: str) -> None:
    assert Names(["*apikey"]).match(name)


def test_a_star_matches_any_run_and_nothing_else_is_implied() -> None:
    names = Names(["*token", "*password*"])
    assert names.match("access_token") and names.match("X-Auth-Token") and names.match("token")
    assert names.match("new_password_confirm")
    assert not names.match("prompt_tokens") and not names.match("token_type")


def test_luhn_accepts_test_card_numbers_and_rejects_a_changed_digit() -> None:
    assert luhn("4111111111111111") and luhn("378282246310005") and luhn("5555555555554444")
    assert not luhn("4111111111111112")


def test_timestamps_and_ids_of_card_length_are_not_cards() -> None:
    # ns timestamps and snowflake ids start with 1: no card network issues numbers there (ISO/IEC 7812).
    body = {"ts": 1700000000000000000, "id": "1234567890123452", "order": "79927398713"}
    entry = http({"body": json_body(body)})
    DEFAULT_REDACTOR.redact(entry)
    assert "redacted" not in entry


def test_a_rules_file_in_yaml_adds_to_the_defaults() -> None:
    rules = parse_rules_text(
        "headers: [x-tenant-pin]\nkeys: [ssn]\npatterns: ['\\d{3}-\\d{2}-\\d{4}']\n", True
    )
    assert "x-tenant-pin" in rules.headers and "authorization" in rules.headers
    assert "ssn" in rules.keys and rules.patterns == (r"\d{3}-\d{2}-\d{4}",)


def test_a_rules_file_in_json_can_drop_the_defaults() -> None:
    rules = parse_rules_text(json.dumps({"defaults": False, "keys": ["pin"]}), False)
    assert rules.keys == ("pin",) and rules.headers == () and rules.cookies == ()
    assert not rules.cards and not rules.credentials
    entry = http(
        {"headers": {"authorization": "Bearer abcdefghijklmnopqrstu"}, "body": json_body({"pin": 1})}
    )
    Redactor(rules).redact(entry)
    assert entry["request"]["headers"]["authorization"] == "Bearer abcdefghijklmnopqrstu"
    assert entry["redacted"] == ["request.body.$.pin"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("heders: [x]", r"unknown key\(s\) heders; known: headers"),
        ("patterns: ['(']", "does not compile"),
        ("keys: x", "keys must be a list of strings"),
        ("cards: maybe", "cards must be true or false"),
        ("- a list", "one mapping"),
    ],
)
def test_a_bad_rules_file_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(RulesError, match=problem):
        parse_rules_text(text, True)


def test_settings_add_names_and_can_switch_redaction_off() -> None:
    rules = rules_from_settings(headers="x-one, x-two", keys="ssn")
    assert {"x-one", "x-two"} <= set(rules.headers) and "ssn" in rules.keys
    assert not rules_from_settings(enabled=False).enabled
    assert rules_from_settings(defaults=False, query="sig").query == ("sig",)


def test_a_rules_file_setting_that_cannot_be_read_or_parsed_stops_start_up_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"WIRETIDE_DISSECTOR_REDACT_RULES.*cannot read"):
        load_settings(
            DissectorSettings, "dissector", {"WIRETIDE_DISSECTOR_REDACT_RULES": str(tmp_path / "no")}
        )
    bad = tmp_path / "rules.yaml"
    bad.write_text("patterns: ['[']\n")
    with pytest.raises(SettingsError, match=r"WIRETIDE_DISSECTOR_REDACT_RULES.*does not compile"):
        load_settings(DissectorSettings, "dissector", {RULES_SETTING: str(bad)})


def test_the_dissector_settings_build_the_rules_with_the_file_and_the_extra_names(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"query": ["otp"], "cards": False}))
    env = {
        "WIRETIDE_DISSECTOR_REDACT_RULES": str(path),
        "WIRETIDE_DISSECTOR_REDACT_KEYS": "ssn",
    }
    rules = load_settings(DissectorSettings, "dissector", env).redaction_rules()
    assert "otp" in rules.query and "ssn" in rules.keys and "authorization" in rules.headers
    assert rules.cards is False
    off = load_settings(DissectorSettings, "dissector", {"WIRETIDE_DISSECTOR_REDACT": "false"})
    assert off.redaction_rules() == Rules.none()


def test_json_nested_beyond_the_depth_bound_is_redacted_whole() -> None:
    doc: Any = {"password": "unread"}
    for _ in range(MAX_DEPTH + 5):
        doc = {"a": doc}
    entry = http({"body": json_body(doc)})
    DEFAULT_REDACTOR.redact(entry)
    content = entry["request"]["body"]["content"]
    assert "unread" not in content and MARKER in content
    assert entry["redacted"] == ["request.body.$" + ".a" * (MAX_DEPTH - 1)]  # `$` is the first level


def test_the_places_listed_are_bounded_but_every_value_is_still_redacted() -> None:
    doc = {f"token{i}x_token": f"v{i}" for i in range(MAX_MARKS * 2)}
    entry = http({"body": json_body(doc)})
    DEFAULT_REDACTOR.redact(entry)
    assert len(entry["redacted"]) == MAX_MARKS
    assert set(json.loads(entry["request"]["body"]["content"]).values()) == {MARKER}


def test_a_defect_while_redacting_fails_closed() -> None:
    # A header name that is not a string cannot come from the parsers: it stands for any defect.
    entry = http({"headers": {1: "secret"}}, {"headers": {}})
    assert DEFAULT_REDACTOR.redact(entry) == ["request", "response"]
    assert entry["request"] is None and entry["response"] is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5),
    query=st.dictionaries(st.text(max_size=10), st.lists(st.text(max_size=20), max_size=3), max_size=3),
    body=_JSON,
    text=st.text(max_size=200),
    path=st.text(max_size=60),
)
def test_redaction_never_raises_and_never_fails_closed_on_well_formed_entries(
    headers: dict[str, str], query: dict[str, list[str]], body: Any, text: str, path: str
) -> None:
    req = {
        "headers": headers,
        "cookies": dict(headers),
        "query": query,
        "query_string": "&".join(f"{k}={v}" for k, vs in query.items() for v in vs),
        "url": "http://h/?x",
        "path": path,
        "body": json_body(body),
        "text": text,
        "variables": body,
    }
    resp = {"body": {"mime": "application/x-www-form-urlencoded", "encoding": "text", "content": text}}
    entry = http(req, resp) | {"path": path, "summary": path}
    found = DEFAULT_REDACTOR.redact(entry)
    assert found != ["request", "response"]  # a rule defect would have dropped both sides


COOKIE_CAPTURE = "http1.1/arkime_http-content-gzip.pcap"  # its request sends a cookie


def analyze(*args: str) -> subprocess.CompletedProcess[bytes]:
    wiretide = str(Path(sys.executable).parent / "wiretide")
    return subprocess.run([wiretide, "analyze", "--quiet", *args], capture_output=True, timeout=120)


@needs_pcaps
def test_analyze_redacts_by_default_and_keeps_values_with_no_redact() -> None:
    capture = str(pcap(COOKIE_CAPTURE))
    (entry,) = [orjson.loads(line) for line in analyze(capture).stdout.splitlines()]
    assert entry["redacted"] == ["request.headers.cookie", "request.cookies.xxxxxxxxxx"]
    (raw,) = [orjson.loads(line) for line in analyze(capture, "--no-redact").stdout.splitlines()]
    assert raw["request"]["cookies"] == {"xxxxxxxxxx": "xxx"} and "redacted" not in raw


@needs_pcaps
def test_analyze_takes_a_rules_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: false\nheaders: [user-agent]\n")
    capture = str(pcap(COOKIE_CAPTURE))
    (entry,) = [
        orjson.loads(line) for line in analyze(capture, "--redact-rules", str(rules)).stdout.splitlines()
    ]
    assert entry["redacted"] == ["request.headers.user-agent"]
    rules.write_text("patterns: ['(']\n")
    done = analyze(capture, "--redact-rules", str(rules))
    assert done.returncode == 2 and b"does not compile" in done.stderr

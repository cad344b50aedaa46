"""Redaction's fast paths change nothing: the module in use and the frozen copy of the module before
them (`redact_reference.py`) give the same entries and the same `redacted` lists — on every entry the
shared captures produce, on large bodies, and on entries generated to sit on the rules' edges
(credentials split by escapes, digit runs with separators, names spelt with dashes, case and
non-ASCII letters that lowercase to ASCII, deep JSON, a gate that one header opens for another).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import require_pcaps
from wiretide.dissector import redact
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from . import redact_reference as reference
from .pcaps import PCAPS, read_columns

# Rule sets: the defaults, and ones that reach the other branches (patterns, named cookies only, odd
# key rules: an empty literal part, a dash alone, a non-ASCII name; switches off).
RULES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "named cookies": {"cookies": ("session", "sid"), "keys": (*redact.DEFAULT_KEYS, "ssn", "*_pin")},
    "patterns": {"patterns": (r"\b\d{3}-\d{2}-\d{4}\b", "s3cr3t"), "cookies": ("session",)},
    "odd key rules, no credentials": {
        "headers": ("x-*", "authorization"),
        "cookies": ("theme",),
        "keys": ("**", "-", "\u0130d", "token"),
        "credentials": False,
    },
    "no cards, custom names": {
        "keys": ("pin", "*secret*", "query"),
        "query": ("otp",),
        "cards": False,
        "cookies": (),
    },
}


def pair(name: str) -> tuple[redact.Redactor, reference.Redactor]:
    fields = RULES[name]
    return redact.Redactor(redact.Rules(**fields)), reference.Redactor(reference.Rules(**fields))


def same_output(name: str, entry: dict[str, Any]) -> None:
    new, old = _PAIRS[name]
    a, b = copy.deepcopy(entry), copy.deepcopy(entry)
    found_new, found_old = new.redact(a), old.redact(b)
    assert found_new == found_old
    assert a == b


_PAIRS = {name: pair(name) for name in RULES}


# ---- captured and large entries -------------------------------------------------------------------


@pytest.fixture(scope="module")
def captured() -> list[dict[str, Any]]:
    """Every entry of every shared capture, unredacted."""
    require_pcaps()
    out: list[dict[str, Any]] = []
    for path in sorted(PCAPS.glob("*/*.pcap*")):
        p = Pipeline(default_registry(), redactor=redact.NO_REDACTION)
        out.extend(p.feed(read_columns(path)) + p.finish())
    return out


def http(request: dict[str, Any], response: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {"id": "01X", "timestamp": 1, "protocol": "http", "request": request, "response": response} | top


def body(content: str, mime: str = "application/json", encoding: str = "json") -> dict[str, Any]:
    return {"size": len(content), "mime": mime, "encoding": encoding, "content": content}


def large_entries() -> list[dict[str, Any]]:
    item = {"id": 42, "name": "widget", "price": 9.99, "tags": ["a", "b"], "stock": 17, "sku": "W-42"}
    listing = json.dumps({"items": [dict(item, id=i) for i in range(200)], "total": 200})
    page = "<p>Lorem ipsum dolor sit amet, basic text.</p>" * 1450
    words = " ".join(f"word{i} basic dXNlcjpwYXNzd29yZA== Bearer abc.def-ghi_{i}xyz0123" for i in range(300))
    deep: Any = {"password": "x"}
    for _ in range(redact.MAX_DEPTH + 3):
        deep = {"a": deep}
    return [
        http({"headers": {"host": "shop"}}, {"body": body(listing)}),
        http({}, {"body": body(page, "text/html", "text")}),
        http({}, {"body": body(words, "text/plain", "text")}),
        http({}, {"body": body(listing.replace('"sku"', '"api_key"'))}),
        http({}, {"body": body(listing.replace("W-42", "4111 1111 1111 1111"))}),
        http({"body": body(json.dumps(deep))}),
        http({"body": body(json.dumps({"note": "x" * 40000 + " 5555555555554444"}))}),
    ]


@pytest.mark.parametrize("rules", list(RULES))
def test_every_captured_entry_is_redacted_exactly_as_before(
    rules: str, captured: list[dict[str, Any]]
) -> None:
    assert len(captured) > 300  # every protocol's captures, not a few
    for entry in captured:
        same_output(rules, entry)


@pytest.mark.parametrize("rules", list(RULES))
def test_large_bodies_are_redacted_exactly_as_before(rules: str) -> None:
    for entry in large_entries():
        same_output(rules, entry)


# ---- generated entries ----------------------------------------------------------------------------

# Pieces that sit on the rules' edges, joined at random with short random text.
FRAGMENTS = (
    "Bearer ",
    "bearer\t",
    "BEARER  ",
    "Basic ",
    "basic ",
    "BASIC ",
    "Basics ",
    "xBasic ",
    "dXNlcjpwYXNz",
    "dXNlcjpwYXNzd29yZA==",
    "abcdefghijklmnop",
    "a1b2c3d4e5f6g7h8i9",
    "eyJhbGciOiJIUzI1NiJ9",
    "eyJzdWIiOiIxIn0",
    "eyJ",
    ".",
    "AWS4-HMAC-SHA256 ",
    "Credential=AKIA/20240101/x",
    "4111 1111 1111 1111",
    "4111111111111111",
    "5555-5555-5555-4444",
    "378282246310005",
    "1234567890123",
    "0",
    "7",
    " ",
    "-",
    "_",
    "password",
    "Pass-Word",
    "passwd",
    "pwd",
    "api_key",
    "apiKey",
    "token",
    "TOKEN",
    "to_ken",
    "to\u212aen",  # KELVIN SIGN: lowercases to an ASCII k
    "api\u212aey",
    "privatekey",
    "secret",
    "query",
    "query_text",
    "authorization",
    "\u0130d",
    "\u03a3",
    "\u00e9",
    "=",
    ": ",
    '"',
    "'",
    "\\",
    "\\u0020",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&",
    ";",
    "%20",
    "+",
    "\n",
    "<p>",
)
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join)
names = st.sampled_from(
    (
        "password",
        "user",
        "api-key",
        "X-Auth-Token",
        "token_type",
        "query",
        "query_text",
        "ssn",
        "pin",
        "card_pin",
        "id",
        "\u0130d",
        "-",
        "",
        "secret_answer",
        "note",
    )
) | texts.map(lambda t: t[:12])
scalars = st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20) | texts
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=16,
)
header_names = st.sampled_from(
    (
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "host",
        "user-agent",
        "x-api-key",
        "x-auth-token",
        "x-trace",
        "content-type",
        "grpc-message",
    )
)
headers = st.dictionaries(header_names | names, texts, max_size=6)
cookie_jars = st.dictionaries(st.sampled_from(("session", "sid", "theme", "x")) | names, texts, max_size=3)
queries = st.dictionaries(
    st.sampled_from(("code", "otp", "q", "token", "state")) | names, st.lists(texts, max_size=3), max_size=3
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(documents)
    kind = draw(st.sampled_from(("json", "json-text", "text", "form", "base64", "cut")))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    if kind == "json":
        return body(text)
    if kind == "json-text":
        return body(text, "text/plain", "text")
    if kind == "form":
        return body(draw(texts), "application/x-www-form-urlencoded", "text")
    if kind == "cut":
        return body(text[: draw(st.integers(0, len(text)))], "application/json", "json")
    return body(draw(texts), "text/plain", "text" if kind == "text" else "base64")


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    query = draw(queries)
    msg: dict[str, Any] = {
        "headers": draw(headers),
        "cookies": draw(cookie_jars),
        "query": query,
        "query_string": "&".join(f"{k}={v}" for k, vs in query.items() for v in vs),
        "url": "http://h/p?" + draw(texts),
        "path": draw(texts),
        "body": draw(bodies()),
    }
    extras = draw(st.sets(st.sampled_from(("trailers", "informational", "messages", "graphql", "text"))))
    if "trailers" in extras:
        msg["trailers"] = draw(headers)
    if "informational" in extras:
        msg["informational"] = [{"headers": draw(headers)}]
    if "messages" in extras:
        msg["messages"] = [
            {"json": draw(documents)},
            {"fields": [{"string": draw(texts)}, {"message": [{"string": draw(texts)}]}]},
        ]
    if "graphql" in extras:
        msg["variables"] = draw(documents)
        msg["query_text"] = draw(texts)
        msg["batch"] = [{"variables": draw(documents), "query_text": draw(texts)}]
    if "text" in extras:
        msg["text"] = draw(st.one_of(texts, documents.map(json.dumps)))
    return msg


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(texts)
    text = draw(texts)
    return {
        "id": "01X",
        "timestamp": 1,
        "protocol": draw(st.sampled_from(("http", "http2", "grpc", "ws", "graphql", "dns"))),
        "path": path,
        "summary": f"GET {path} → {text}",
        "request": draw(messages()),
        "response": draw(st.none() | messages()),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry=entries())
def test_generated_entries_are_redacted_exactly_as_before(entry: dict[str, Any]) -> None:
    for rules in RULES:
        same_output(rules, entry)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(texts, min_size=1, max_size=4), named=texts)
def test_a_header_block_gate_opens_for_the_other_values_exactly_as_before(
    values: list[str], named: str
) -> None:
    # One value opens the gate; the rules then run on every value, the redacted cookie header included.
    hdrs = {f"x-{i}": v for i, v in enumerate(values)} | {
        "cookie": f"theme={named}; session=1",
        "authorization": named,
    }
    for rules in RULES:
        same_output(
            rules, http({"headers": hdrs}, {"headers": {"set-cookie": f"theme={named}, a=b; Path=/"}})
        )


# Texts on one edge each: a fast path that misjudges one of them changes what is redacted.
EDGES = (
    "to\u212aen=abc",
    '{"to\u212aen": "abc"}',
    '{"api\u212aey": 1, "n": 2}',
    "x \u0130d: 1",
    '{"\u0130d": 1}',
    '{"to-ken": 1}',
    '{"query": "{ login(password: \\"x\\") }"}',
    '{"a": "Bearer\\u0020abcdefghijklmnop1"}',
    '{"a": 4111111111111111}',
    '{"a": "4111-1111-1111-1111"}',
    "eyJ",
    "Basic dXNlcjpwYXNz",
    "xBasic dXNlcjpwYXNz",
    "bearer abcdefghijklmnop1",
    "AWS4-HMAC-SHA256 Credential=x",
    "1 2 3 4 5 6 7 8 9 0 1 2 3",
    "<p>basic text.</p>" * 40,
    "w" * 300 + " 4111111111111111",
)


@pytest.mark.parametrize("text", EDGES)
def test_each_edge_text_is_judged_as_before(text: str) -> None:
    for rules in RULES:
        new, old = _PAIRS[rules]
        assert new._may_free(text, False) == old._may_free(text, False)
        assert new._may_free(text, True) == old._may_free(text, True)
        assert new._may_name(text) == old._may_name(text)
        assert new._names_in(text) == old._names_in(text)
        assert new._free(text, True) == old._free(text, True)
        same_output(
            rules, http({"headers": {"x": text, "cookie": "theme=4111 1111 1111 1111"}, "body": body(text)})
        )


@settings(max_examples=500, deadline=None)
@given(text=texts)
def test_every_text_gate_gives_the_answer_it_gave_before(text: str) -> None:
    for rules in RULES:
        new, old = _PAIRS[rules]
        assert new._may_free(text, False) == old._may_free(text, False)
        assert new._may_free(text, True) == old._may_free(text, True)
        assert new._may_name(text) == old._may_name(text)
        assert new._names_in(text) == old._names_in(text)
        assert new._free(text, True) == old._free(text, True)

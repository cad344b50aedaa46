"""Redaction at the source, per protocol: real bytes through the pipeline, and no secret comes out.

Each transcript sends a secret the way a client would (a header, a cookie, a query parameter, a JSON
or form body, gRPC metadata, a GraphQL variable, a WebSocket message) and checks that the entry holds
the marker instead, says where in `redacted`, and holds the secret nowhere — not in any field, not in
the URL or query string, not inside a body written back.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from tests.unit.dissector import test_grpc
from tests.unit.dissector.test_grpc import Echo, call
from tests.unit.dissector.test_http2_support import (
    H2Pair,
    classified,
    conversation,
    grpc_frame,
    registry,
    streams,
)
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import grpc
from wiretide.dissector.redact import MARKER, NO_REDACTION, Redactor, Rules
from wiretide.dissector.registry import default_registry

from .builders import T0, Conversation, columns, http_get, http_ok, udp_frame
from .test_dns import answer, query
from .test_websocket import frame

echo = test_grpc.echo  # the compiled echo.proto schema (a module-scoped fixture)
SECRET = "hunter2-Zq9x"  # a value that appears nowhere else in a transcript


def run(conv: Conversation, redactor: Redactor | None = None) -> list[dict[str, Any]]:
    p = Pipeline(default_registry()) if redactor is None else Pipeline(default_registry(), redactor=redactor)
    return p.feed(conv.columns()) + p.finish()


def nowhere(entry: dict[str, Any], *secrets: str) -> bool:
    text = orjson.dumps(entry).decode()
    return not any(s in text for s in secrets)


def exchange(request: bytes, response: bytes, redactor: Redactor | None = None) -> dict[str, Any]:
    conv = Conversation().handshake().send(True, request).send(False, response).close()
    (entry,) = run(conv, redactor)
    return entry


def post(path: str, body: bytes, ctype: str, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: api.test\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


# ---- HTTP/1 -------------------------------------------------------------------------------------


def test_http1_authorization_keeps_its_scheme_and_loses_its_credential() -> None:
    e = exchange(http_get("/me", extra=f"Authorization: Bearer {SECRET}\r\n"), http_ok())
    assert e["request"]["headers"]["authorization"] == f"Bearer {MARKER}"
    assert e["redacted"] == ["request.headers.authorization"]
    assert nowhere(e, SECRET)


def test_trace_context_ids_stay_intact_while_a_card_number_beside_them_is_redacted() -> None:
    # 4111111111111111 passes the Luhn check; as the start of a trace id it is an id, not a card.
    traceparent = "00-4111111111111111abcdefabcdefabcd-00f067aa0ba902b7-01"
    b3 = "4111111111111111abcdefabcdefabcd-00f067aa0ba902b7-1"
    extra = f"traceparent: {traceparent}\r\nb3: {b3}\r\nX-Note: card 4111111111111111\r\n"
    e = exchange(http_get("/pay", extra=extra), http_ok())
    headers = e["request"]["headers"]
    assert (headers["traceparent"], headers["b3"]) == (traceparent, b3)
    assert headers["x-note"] == f"card {MARKER}"
    assert e["redacted"] == ["request.headers.x-note"]


def test_http1_cookie_values_are_redacted_and_their_names_kept() -> None:
    e = exchange(
        http_get("/", extra=f"Cookie: session={SECRET}; theme=dark\r\n"),
        http_ok(extra=f"Set-Cookie: session={SECRET}x; Path=/; HttpOnly\r\n"),
    )
    assert e["request"]["cookies"] == {"session": MARKER, "theme": MARKER}
    assert e["request"]["headers"]["cookie"] == f"session={MARKER}; theme={MARKER}"
    assert e["response"]["headers"]["set-cookie"] == f"session={MARKER}; Path=/; HttpOnly"
    assert e["response"]["cookies"] == {"session": MARKER}
    assert {"request.cookies.session", "response.headers.set-cookie"} <= set(e["redacted"])
    assert nowhere(e, SECRET)


def test_http1_query_parameters_are_redacted_in_the_query_the_query_string_and_the_url() -> None:
    e = exchange(http_get(f"/cb?state=ok&access_token={SECRET}&api-key={SECRET}"), http_ok())
    req = e["request"]
    assert req["query"] == {"state": ["ok"], "access_token": [MARKER], "api-key": [MARKER]}
    assert req["query_string"] == f"state=ok&access_token={MARKER}&api-key={MARKER}"
    assert req["url"].endswith(f"/cb?state=ok&access_token={MARKER}&api-key={MARKER}")
    assert e["redacted"] == ["request.query.access_token", "request.query.api-key"]
    assert nowhere(e, SECRET)


def test_http1_json_keys_are_redacted_at_any_depth_in_both_directions() -> None:
    body = json.dumps({"user": "bob", "password": SECRET, "profile": {"apiKey": SECRET, "age": 7}}).encode()
    reply = json.dumps({"access_token": SECRET, "items": [{"refresh_token": SECRET}]}).encode()
    e = exchange(post("/login", body, "application/json"), http_ok(reply, "application/json"))
    assert json.loads(e["request"]["body"]["content"]) == {
        "user": "bob",
        "password": MARKER,
        "profile": {"apiKey": MARKER, "age": 7},
    }
    assert e["redacted"] == [
        "request.body.$.password",
        "request.body.$.profile.apiKey",
        "response.body.$.access_token",
        "response.body.$.items[*].refresh_token",
    ]
    assert nowhere(e, SECRET)


def test_http1_a_json_body_cut_by_the_cap_is_still_redacted_by_its_name_value_pairs() -> None:
    body = json.dumps({"password": SECRET, "pad": "x" * 200}).encode()
    conv = (
        Conversation().handshake().send(True, post("/login", body, "application/json")).send(False, http_ok())
    )
    p = Pipeline(default_registry())
    p.config = type(p.config)(body_cap=64)
    (e,) = p.feed(conv.close().columns()) + p.finish()
    assert e["request"]["body"]["truncated"] is True
    assert f'"password": "{MARKER}"' in e["request"]["body"]["content"]
    assert nowhere(e, SECRET)


def test_http1_form_fields_are_redacted_by_name() -> None:
    body = f"username=bob&passwd={SECRET}&client_secret={SECRET}".encode()
    e = exchange(post("/token", body, "application/x-www-form-urlencoded"), http_ok())
    assert e["request"]["body"]["content"] == f"username=bob&passwd={MARKER}&client_secret={MARKER}"
    assert e["redacted"] == ["request.body.passwd", "request.body.client_secret"]


def test_a_card_number_that_passes_the_luhn_check_is_redacted_and_one_that_fails_is_kept() -> None:
    good, bad = "4111 1111 1111 1111", "4111 1111 1111 1112"
    body = json.dumps({"note": f"pay with {good}", "order": bad, "pan": 5555555555554444}).encode()
    e = exchange(post("/pay", body, "application/json"), http_ok())
    doc = json.loads(e["request"]["body"]["content"])
    assert doc == {"note": f"pay with {MARKER}", "order": bad, "pan": MARKER}
    assert e["redacted"] == ["request.body.$.note", "request.body.$.pan"]


def test_bearer_and_basic_credentials_in_any_header_are_redacted_but_prose_is_not() -> None:
    basic = "dXNlcjpodW50ZXIy"  # base64("user:hunter2")
    e = exchange(
        http_get("/", extra=f"X-Upstream-Auth: Basic {basic}\r\nX-Note: basic information\r\n"),
        http_ok(b"Bearer authentication is described in RFC 6750", "text/plain"),
    )
    assert e["request"]["headers"]["x-upstream-auth"] == f"Basic {MARKER}"
    assert e["request"]["headers"]["x-note"] == "basic information"
    assert e["response"]["body"]["content"] == "Bearer authentication is described in RFC 6750"
    assert e["redacted"] == ["request.headers.x-upstream-auth"]


def test_an_entry_with_nothing_secret_has_no_redacted_field() -> None:
    e = exchange(http_get("/healthz"), http_ok(b'{"status": "ok"}', "application/json"))
    assert "redacted" not in e
    assert e["response"]["body"]["content"] == '{"status": "ok"}'  # not rewritten


def test_redaction_can_be_switched_off() -> None:
    e = exchange(http_get("/", extra=f"Authorization: Bearer {SECRET}\r\n"), http_ok(), NO_REDACTION)
    assert e["request"]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert "redacted" not in e


def test_extra_rules_name_headers_query_keys_and_patterns() -> None:
    rules = Rules(
        headers=("x-tenant-pin",),
        query=("ssn",),
        keys=("dob",),
        patterns=(r"\b\d{3}-\d{2}-\d{4}\b",),
        cookies=("session",),
    )
    e = exchange(
        post(
            "/p?ssn=1&ok=2",
            b'{"dob": "1990-01-01", "note": "ssn 123-45-6789"}',
            "application/json",
            "X-Tenant-Pin: 4242\r\nCookie: session=a; theme=b\r\n",
        ),
        http_ok(),
        Redactor(rules),
    )
    req = e["request"]
    assert req["headers"]["x-tenant-pin"] == MARKER
    assert req["cookies"] == {"session": MARKER, "theme": "b"}
    assert req["query"] == {"ssn": [MARKER], "ok": ["2"]}
    assert json.loads(req["body"]["content"]) == {"dob": MARKER, "note": f"ssn {MARKER}"}


def test_a_secret_in_the_path_is_redacted_in_the_path_the_url_and_the_summary() -> None:
    e = exchange(http_get(f"/reset;token={SECRET}/done"), http_ok())
    # A bare value runs to the next delimiter; `/` is not one (base64 tokens hold it): fail closed.
    assert e["path"] == e["request"]["path"] == f"/reset;token={MARKER}"
    assert SECRET not in e["summary"] and SECRET not in e["request"]["url"]
    assert "path" in e["redacted"]
    assert nowhere(e, SECRET)


# ---- HTTP/2, gRPC -------------------------------------------------------------------------------


def h2_entries(p: H2Pair, redactor: Redactor | None = None, schemas: Any = None) -> list[dict[str, Any]]:
    pipe = (
        Pipeline(registry(), schemas=schemas) if redactor is None else Pipeline(registry(), redactor=redactor)
    )
    docs = pipe.feed(conversation(p.wire)) + pipe.finish()
    return [classified(d) for d in streams(docs)]


def test_http2_authorization_and_cookie_headers_are_redacted() -> None:
    p = H2Pair()
    sid = p.request(
        f"/v1/me?token={SECRET}",
        headers=[("authorization", f"Bearer {SECRET}"), ("cookie", f"sid={SECRET}")],
    )
    p.respond(
        sid, body=b"{}", headers=[("content-type", "application/json"), ("set-cookie", f"sid={SECRET}")]
    )
    (e,) = h2_entries(p)
    assert e["request"]["headers"]["authorization"] == f"Bearer {MARKER}"
    assert e["request"]["cookies"] == {"sid": MARKER}
    assert e["request"]["query"] == {"token": [MARKER]}
    assert e["response"]["cookies"] == {"sid": MARKER}
    assert nowhere(e, SECRET)


def test_grpc_metadata_of_the_same_names_is_redacted() -> None:
    p = H2Pair()
    sid = p.client.get_next_available_stream_id()
    head = [(":method", "POST"), (":path", "/pkg.Svc/Call"), (":scheme", "http"), (":authority", "svc")]
    meta = [
        ("content-type", "application/grpc"),
        ("x-api-key", SECRET),
        ("authorization", f"Bearer {SECRET}"),
    ]
    p.client.send_headers(sid, head + meta)
    p.client.send_data(sid, grpc_frame(b"\x0a\x02hi"), end_stream=True)
    p.flush()
    p.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    p.server.send_data(sid, grpc_frame(b""))
    p.server.send_headers(sid, [("grpc-status", "0"), ("x-session-token", SECRET)], end_stream=True)
    p.flush()
    (e,) = h2_entries(p)
    assert e["protocol"] == "grpc"
    assert e["request"]["headers"]["x-api-key"] == MARKER
    assert e["response"]["trailers"]["x-session-token"] == MARKER
    assert {"request.headers.x-api-key", "request.headers.authorization"} <= set(e["redacted"])
    assert nowhere(e, SECRET)


def test_grpc_messages_decoded_by_a_schema_have_their_named_fields_redacted(echo: Echo) -> None:
    store = grpc.SchemaStore.from_descriptor_sets([echo.protoset])
    p = H2Pair()
    req = echo.request(text=SECRET, times=2).SerializeToString()
    call(p, "Unary", [req], [echo.reply(text=SECRET, count=7).SerializeToString()])
    # The echo schema has no secret-looking field: a rule names `text`, as an operator would.
    redactor = Redactor(Rules(keys=("text",)))
    pipe = Pipeline(registry(), schemas=store, redactor=redactor)
    (e,) = [classified(d) for d in streams(pipe.feed(conversation(p.wire)) + pipe.finish())]
    assert e["request"]["messages"][0]["json"] == {"text": MARKER, "times": 2}
    assert e["response"]["messages"][0]["json"] == {"text": MARKER, "count": "7"}
    assert e["redacted"] == ["request.messages[*].json.text", "response.messages[*].json.text"]
    assert nowhere(e, SECRET)


def test_grpc_messages_without_a_schema_have_credentials_in_their_strings_redacted() -> None:
    token = "Bearer " + SECRET * 2
    p = H2Pair()
    call(p, "Unary", [b"\x0a" + bytes([len(token)]) + token.encode()], [b""])
    (e,) = h2_entries(p)
    (field,) = e["request"]["messages"][0]["fields"]
    assert field["string"] == f"Bearer {MARKER}"
    assert e["redacted"] == ["request.messages[*].fields"]


def test_graphql_variables_and_inline_arguments_are_redacted() -> None:
    doc = {
        "query": f'mutation Login($p: String!) {{ login(user: "bob", password: "{SECRET}x") {{ ok }} }}',
        "operationName": "Login",
        "variables": {"password": SECRET, "remember": True},
    }
    e = exchange(
        post("/graphql", json.dumps(doc).encode(), "application/json"),
        http_ok(b'{"data":{}}', "application/json"),
    )
    assert e["protocol"] == "graphql"
    assert e["request"]["variables"] == {"password": MARKER, "remember": True}
    assert "request.variables.password" in e["redacted"]
    assert nowhere(e, SECRET)


def test_graphql_variables_sent_in_a_get_query_are_redacted() -> None:
    from urllib.parse import quote

    variables = quote(json.dumps({"token": SECRET}))
    e = exchange(http_get(f"/graphql?query=%7Bme%7Bid%7D%7D&variables={variables}"), http_ok())
    assert e["protocol"] == "graphql"
    assert e["request"]["variables"] == {"token": MARKER}
    assert nowhere(e, SECRET)


# ---- WebSocket, DNS -----------------------------------------------------------------------------


def test_websocket_json_messages_have_their_keys_redacted() -> None:
    conv = Conversation(sport=8765).handshake()
    conv.send(
        True,
        http_get(
            "/socket", extra="Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ),
    )
    conv.send(False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    conv.send(True, frame(1, json.dumps({"op": "auth", "token": SECRET}).encode(), mask=b"abcd"))
    conv.send(False, frame(1, b"welcome")).close()
    entries = run(conv)
    ws = [e for e in entries if e["protocol"] == "ws"]
    assert json.loads(ws[0]["request"]["text"]) == {"op": "auth", "token": MARKER}
    assert ws[0]["redacted"] == ["request.text.$.token"]
    assert ws[0]["summary"].startswith('→ text {"op":"auth","token":"[REDACTED]"}')  # its quote too
    assert ws[1]["response"]["text"] == "welcome" and "redacted" not in ws[1]
    assert all(nowhere(e, SECRET) for e in entries)


def test_dns_is_not_redacted_by_default() -> None:
    name = "token-4111111111111111.example.test"
    frames = [
        (T0, udp_frame("10.0.0.1", 5353 + 1000, "10.0.0.53", 53, query(7, name))),
        (T0 + 1000, udp_frame("10.0.0.53", 53, "10.0.0.1", 5353 + 1000, answer(7, name, ["10.1.1.1"]))),
    ]
    p = Pipeline(default_registry())
    (e,) = p.feed(columns(frames)) + p.finish()
    assert e["protocol"] == "dns" and e["path"] == name and "redacted" not in e


def test_a_path_seen_before_is_redacted_as_it_was_the_first_time_and_the_cache_stays_bounded() -> None:
    from wiretide.dissector import redact

    r = Redactor()

    def entry(path: str) -> dict[str, Any]:
        return {"protocol": "redis", "path": path, "summary": f"GET {path}", "request": {"command": "GET"},
                "response": {"value": "x", "error": None}}  # fmt: skip

    secret = "session:token=0123456789abcdef"
    for _ in range(2):
        e = entry(secret)
        assert r.redact(e) == ["path"] and e["path"] == f"session:token={MARKER}"
        assert e["summary"] == f"GET session:token={MARKER}" and e["redacted"] == ["path"]
        plain = entry("user:42")
        assert r.redact(plain) == [] and plain["path"] == "user:42" and "redacted" not in plain
    for i in range(redact.VALUE_CACHE_MAX + 10):
        r.redact(entry(f"k:{i}"))
    e = entry(secret)
    assert r.redact(e) == ["path"] and secret not in json.dumps(e)


def test_a_message_without_headers_bodies_or_queries_is_passed_over_but_one_with_them_is_not() -> None:
    r = Redactor()
    bare = {
        "protocol": "kafka",
        "path": "orders",
        "request": {"api": "Produce", "acks": -1},
        "response": None,
    }
    assert r.redact(bare) == [] and bare["request"] == {"api": "Produce", "acks": -1}
    mixed = {
        "protocol": "x",
        "path": None,
        "request": {"api": "P", "headers": {"authorization": "Bearer abcdefgh12345678"}},
        "response": {"text": "password=hunter2hunter2"},
    }
    assert r.redact(mixed) == ["request.headers.authorization", "response.text"]
    assert "hunter2" not in json.dumps(mixed) and "abcdefgh12345678" not in json.dumps(mixed)

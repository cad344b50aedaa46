"""The per-call path of small HTTP/1 exchanges: what it remembers (request lines, media types, quiet
JSON bodies) is bounded, keyed by everything the answer depends on, and never changes an entry."""

from __future__ import annotations

from typing import Any

from wiretide.dissector.api import Message, SessionConfig
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import _body, http1
from wiretide.dissector.redact import MARKER, Redactor, Rules
from wiretide.dissector.registry import default_registry

from .builders import Conversation, columns, http_get, http_ok


def _messages(session: http1.Http1Session, client: bool, data: bytes) -> list[dict[str, Any]]:
    return [e.fields for e in session.feed(client, data, 1) if isinstance(e, Message)]


def test_a_repeated_request_line_gives_every_entry_its_own_url_and_containers() -> None:
    session = http1.Http1Session(SessionConfig())
    line = b"GET /a/b?x=1 HTTP/1.1\r\n"
    first = _messages(session, True, line + b"Host: one\r\n\r\n")[0]
    _messages(session, False, b"HTTP/1.1 204 No Content\r\n\r\n")
    first["path_segments"].append("c")
    first["query"]["x"].append("2")
    second = _messages(session, True, line + b"Host: two\r\n\r\n")[0]
    # The line is remembered, the URL is not: it is built from each request's own Host.
    assert first["url"] == "http://one/a/b?x=1" and second["url"] == "http://two/a/b?x=1"
    assert second["path_segments"] == ["a", "b"] and second["query"] == {"x": ["1"]}
    assert (second["method"], second["http_version"]) == ("GET", "1.1")
    assert line[:-2] in http1._REQUEST_LINES


def test_request_lines_stay_remembered_within_bounds_when_none_repeats() -> None:
    session = http1.Http1Session(SessionConfig())
    for i in range(http1._CACHE_MAX + 300):
        (got,) = _messages(session, True, f"PUT /k/{i} HTTP/1.0\r\nHost: h\r\n\r\n".encode())
        assert (got["method"], got["path"], got["http_version"]) == ("PUT", f"/k/{i}", "1.0")
        _messages(session, False, b"HTTP/1.0 204 No Content\r\n\r\n")
    assert 0 < len(http1._REQUEST_LINES) <= http1._CACHE_MAX
    long_line = b"GET /" + b"x" * (2 * http1._CACHE_KEY_BYTES) + b" HTTP/1.1"
    _messages(session, True, long_line + b"\r\nHost: h\r\n\r\n")
    assert long_line not in http1._REQUEST_LINES


def test_a_malformed_request_line_is_a_violation_and_never_remembered() -> None:
    session = http1.Http1Session(SessionConfig())
    events = session.feed(True, b"GET /x HTTP/2.5\r\nHost: h\r\n\r\n", 1)
    assert not any(isinstance(e, Message) for e in events)
    assert b"GET /x HTTP/2.5" not in http1._REQUEST_LINES


def test_segments_that_start_with_empty_lines_or_end_their_start_line_with_a_bare_lf() -> None:
    # RFC 9112 §2.2: empty lines before a start line are ignored, and a bare LF ends a line.
    session = http1.Http1Session(SessionConfig())
    (a,) = _messages(session, True, b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    _messages(session, False, b"HTTP/1.1 204 No Content\r\n\r\n")
    (b,) = _messages(session, True, b"\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    _messages(session, False, b"HTTP/1.1 204 No Content\r\n\r\n")
    (c,) = _messages(session, True, b"GET /c HTTP/1.1\nHost: h\r\n\r\n")
    (r,) = _messages(session, False, b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok")
    assert [m["path"] for m in (a, b, c)] == ["/a", "/b", "/c"]
    assert all(m["headers"] == {"host": "h"} for m in (a, b, c))
    assert (r["status"], r["reason"], r["body"]["content"]) == (200, "OK", "ok")
    assert session.feed(True, b"", 1) == []


def test_bodies_are_typed_by_their_media_type_in_any_case_and_the_memo_stays_bounded() -> None:
    def body(raw: bytes, mime: str) -> dict[str, Any]:
        return _body.body_object(raw, len(raw), {"content-type": mime}, 1024, False)

    assert body(b'{"a":1}', "Application/JSON; charset=utf-8")["encoding"] == "json"
    assert body(b"hi", "TEXT/Plain")["encoding"] == "text"
    assert body(b"\xff\xfe", "image/png")["encoding"] == "base64"
    assert body(b"hi", "")["content"] == "hi"
    assert body(b"[1]", "text/plain")["encoding"] == "text"
    for i in range(_body._MIME_KINDS_MAX + 50):
        assert body(b"x", f"application/x-{i}")["encoding"] == "base64"
        assert body(b"x", f"text/x-{i}")["encoding"] == "text"
    assert 0 < len(_body._MIME_KINDS) <= _body._MIME_KINDS_MAX
    long_mime = "text/" + "x" * (2 * _body._MIME_KEY_LEN)
    assert body(b"x", long_mime)["encoding"] == "text"
    assert long_mime not in _body._MIME_KINDS


def _entry(content: str) -> dict[str, Any]:
    return {
        "protocol": "http",
        "path": "/a",
        "summary": "GET /a → 200",
        "request": None,
        "response": {
            "headers": {},
            "body": {"content": content, "encoding": "json", "mime": "application/json"},
        },
    }


def test_a_json_body_with_nothing_to_redact_is_remembered_per_rule_set() -> None:
    plain = Redactor()
    quiet = '{"id":5,"stock":5}'
    for _ in range(2):
        entry = _entry(quiet)
        assert plain.redact(entry) == [] and entry["response"]["body"]["content"] == quiet
    assert quiet in plain._quiet_json
    # Another rule set reads the same text differently: what one remembered is not the other's.
    strict = Redactor(Rules(keys=("stock",)))
    for _ in range(2):
        entry = _entry(quiet)
        assert strict.redact(entry) == ["response.body.$.stock"]
        assert entry["response"]["body"]["content"] == f'{{"id":5,"stock":"{MARKER}"}}'
    assert quiet not in strict._quiet_json


def test_a_json_body_with_a_secret_is_redacted_every_time_and_never_remembered() -> None:
    redactor = Redactor()
    secret = '{"password":"hunter2","n":1}'
    for _ in range(3):
        entry = _entry(secret)
        assert redactor.redact(entry) == ["response.body.$.password"]
        assert "hunter2" not in entry["response"]["body"]["content"]
    assert secret not in redactor._quiet_json
    card = '{"card":"4111 1111 1111 1111"}'
    entry = _entry(card)
    redactor.redact(entry)
    assert "4111" not in entry["response"]["body"]["content"] and card not in redactor._quiet_json


def test_the_quiet_body_memo_stays_bounded_and_skips_long_bodies() -> None:
    from wiretide.dissector.redact import VALUE_CACHE_LEN, VALUE_CACHE_MAX

    redactor = Redactor()
    for i in range(VALUE_CACHE_MAX + 20):
        redactor.redact(_entry(f'{{"id":{i}}}'))
    assert 0 < len(redactor._quiet_json) <= VALUE_CACHE_MAX
    long_body = '{"v":"' + "a" * VALUE_CACHE_LEN + '"}'
    redactor.redact(_entry(long_body))
    assert long_body not in redactor._quiet_json


def test_calls_on_a_connection_whose_sequence_numbers_wrap_are_all_entries() -> None:
    # The established-flow path computes sequence numbers modulo 2**32 (RFC 9293 §3.4).
    conv = Conversation(cport=61000, sport=8080, cseq=2**32 - 150, sseq=2**32 - 40).handshake()
    for i in range(4):
        conv.send(True, http_get(f"/w/{i}")).send(False, http_ok(b'{"i": %d}' % i, "application/json"))
    p = Pipeline(default_registry())
    docs = [d for d in p.feed(columns(conv.close().frames)) + p.finish() if d["protocol"] == "http"]
    assert [(d["path"], d["status"], d["response"]["body"]["content"]) for d in docs] == [
        (f"/w/{i}", 200, f'{{"i": {i}}}') for i in range(4)
    ]
    assert all(d["src"]["port"] == 61000 and d["dst"]["port"] == 8080 for d in docs)

"""HTTP/1 parse caches: bounded under traffic that never repeats, and never shared between entries."""

from __future__ import annotations

from typing import Any

from wiretide.dissector.api import Message, SessionConfig
from wiretide.dissector.protocols import http1


def _messages(session: http1.Http1Session, client: bool, data: bytes) -> list[dict[str, Any]]:
    return [e.fields for e in session.feed(client, data, 1) if isinstance(e, Message)]


def test_caches_stay_bounded_when_nothing_repeats() -> None:
    session = http1.Http1Session(SessionConfig())
    n = http1._CACHE_MAX + 500
    for i in range(n):
        req = f"GET /item/{i}?q={i} HTTP/1.1\r\nHost: h{i}\r\nCookie: s={i}\r\nX-I: {i}\r\n\r\n".encode()
        resp = f"HTTP/1.1 200 R{i}\r\nContent-Length: 0\r\nX-R: {i}\r\n\r\n".encode()
        (got,) = _messages(session, True, req)
        assert got["path"] == f"/item/{i}" and got["cookies"] == {"s": str(i)}
        (answer,) = _messages(session, False, resp)
        assert answer["reason"] == f"R{i}"
    for cache in (http1._BLOCKS, http1._LINES, http1._TARGETS, http1._COOKIES, http1._STATUS_LINES):
        assert 0 < len(cache) <= http1._CACHE_MAX


def _message(fields: dict[str, Any]) -> Message:
    return Message(is_request="method" in fields, ts_first=1, ts_last=1, size=0, fields=fields)


def test_presented_fields_are_cached_by_everything_they_show() -> None:
    # The same method, path, status and version share one Presented; a difference in any of them,
    # or in the reason of a response whose request was not captured, must not reuse it.
    def req(method: str, path: str, version: str = "1.1") -> Message:
        return _message({"method": method, "path": path, "http_version": version})

    def resp(status: int, reason: str = "OK", version: str = "1.1") -> Message:
        return _message({"status": status, "reason": reason, "http_version": version})

    a = http1.present(req("GET", "/a"), resp(200))
    assert (a.method, a.path, a.status, a.summary, a.version) == ("GET", "/a", 200, "GET /a → 200", "1.1")
    assert http1.present(req("GET", "/a"), resp(200, "Fine")) is a  # the summary does not show it
    assert http1.present(req("GET", "/a"), resp(201)).summary == "GET /a → 201"
    assert http1.present(req("GET", "/b"), resp(200)).summary == "GET /b → 200"
    assert http1.present(req("PUT", "/a"), resp(200)).summary == "PUT /a → 200"
    assert http1.present(req("GET", "/a", "1.0"), resp(200)).version == "1.0"
    assert http1.present(req("GET", "/a"), None).summary == "GET /a"
    assert http1.present(None, resp(404, "Not Found")).summary == "→ 404 Not Found"
    assert http1.present(None, resp(404, "Gone")).summary == "→ 404 Gone"
    for i in range(http1._CACHE_MAX + 10):
        assert http1.present(req("GET", f"/p/{i}"), resp(200)).path == f"/p/{i}"
    assert 0 < len(http1._PRESENTED) <= http1._CACHE_MAX
    long_path = "/" + "x" * (2 * http1._CACHE_KEY_BYTES)
    http1.present(req("GET", long_path), resp(200))
    assert all(key[1] != long_path for key in http1._PRESENTED)


def test_a_cache_hit_gives_every_entry_its_own_objects() -> None:
    session = http1.Http1Session(SessionConfig())
    req = b"GET /a/b?x=1&x=2 HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\n\r\n"
    resp = b"HTTP/1.1 204 No Content\r\nServer: s\r\n\r\n"
    first = _messages(session, True, req)[0]
    _messages(session, False, resp)
    # Whoever holds the first entry may change it (redaction, enrichment); the next must not see it.
    first["headers"]["host"] = "changed"
    first["query"]["x"].append("3")
    first["cookies"]["a"] = "changed"
    first["path_segments"].append("c")
    second = _messages(session, True, req)[0]
    assert second["headers"] == {"host": "h", "cookie": "a=1; b=2"}
    assert second["query"] == {"x": ["1", "2"]}
    assert second["cookies"] == {"a": "1", "b": "2"}
    assert second["path_segments"] == ["a", "b"]


def test_a_malformed_block_is_never_cached_as_good() -> None:
    session = http1.Http1Session(SessionConfig())
    bad = b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"  # whitespace before the colon (RFC 9112 §5.1)
    events = session.feed(True, bad, 1)
    assert any(not isinstance(e, Message) for e in events)
    assert b"Host : h" not in http1._BLOCKS
    again = http1.Http1Session(SessionConfig()).feed(True, bad, 2)
    assert not any(isinstance(e, Message) for e in again)

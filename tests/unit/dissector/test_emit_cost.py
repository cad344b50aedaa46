"""The per-entry path's cheaper shape keeps its promises: every entry starts as a copy of one key
template in the canonical order, owns its containers (consumers change them), and redaction passes
over a message without redactable parts while still redacting one that has them."""

from __future__ import annotations

from typing import Any

from wiretide.dissector import pipeline as pipeline_module
from wiretide.dissector import redact
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from .builders import Conversation, http_get, http_ok

CANONICAL = [
    "id",
    "node",
    "timestamp",
    "elapsed_us",
    "protocol",
    "version",
    "transport",
    "src",
    "dst",
    "method",
    "path",
    "status",
    "summary",
    "request",
    "response",
    "error",
    "size",
    "tls",
    "capture",
    "flow_id",
    "stream",
    "trace",
]


def _redis_calls(calls: int) -> list[dict[str, Any]]:
    conv = Conversation(sport=6379).handshake()
    for i in range(calls):
        conv.send(True, f"*2\r\n$3\r\nGET\r\n$4\r\nkey{i}\r\n".encode())
        conv.send(False, b"$5\r\nhello\r\n")
    conv.close()
    p = Pipeline(default_registry(), node="node-a")
    return p.feed(conv.columns()) + p.finish()


def test_redis_entries_and_the_connection_entry_keep_the_canonical_key_order() -> None:
    entries = _redis_calls(3)
    redis_entries = [e for e in entries if e["protocol"] == "redis"]
    assert len(redis_entries) == 3
    for e in redis_entries:
        assert list(e) == CANONICAL
        assert e["node"] == "node-a"
        assert e["method"] == "GET"
        assert e["trace"] is None and e["error"] is None and e["tls"] is None
    # A flow nobody claims ends as one raw entry, built by `_base` from the same template.
    conv = Conversation(sport=9).handshake().send(True, b"\x00\x01\x02 nothing known").close()
    p = Pipeline(default_registry())
    raw = [e for e in p.feed(conv.columns()) + p.finish() if e["protocol"] == "tcp"]
    assert len(raw) == 1
    assert list(raw[0])[: len(CANONICAL)] == CANONICAL
    assert raw[0]["request"]["packets"] >= 1


def test_entries_own_their_containers_and_never_change_the_template() -> None:
    before = dict(pipeline_module._ENTRY)
    first, second = [e for e in _redis_calls(2) if e["protocol"] == "redis"]
    for key in ("src", "dst", "size", "capture"):
        assert first[key] == second[key] or key == "size"
        assert first[key] is not second[key]
    first["src"]["process"] = {"pid": 1}
    first["capture"]["interface"] = "changed"
    first["trace"] = {"trace_id": "x"}
    assert "process" not in second["src"]
    assert second["capture"]["interface"] == "test0"
    assert second["trace"] is None
    assert before == pipeline_module._ENTRY
    assert all(pipeline_module._ENTRY[k] is None for k in ("src", "dst", "size", "capture"))


def test_an_http_entry_with_a_secret_header_is_redacted_and_a_plain_one_is_not() -> None:
    conv = Conversation().handshake()
    conv.send(True, http_get("/a", extra="Authorization: Bearer abc.def.ghi\r\n"))
    conv.send(False, http_ok())
    conv.send(True, http_get("/b"))
    conv.send(False, http_ok())
    conv.close()
    p = Pipeline(default_registry())
    calls = [e for e in p.feed(conv.columns()) + p.finish() if e["protocol"] == "http"]
    assert [e["path"] for e in calls] == ["/a", "/b"]
    assert calls[0]["request"]["headers"]["authorization"] == f"Bearer {redact.MARKER}"
    assert calls[0]["redacted"] == ["request.headers.authorization"]
    assert "redacted" not in calls[1]


def test_a_message_is_looked_into_only_when_it_holds_a_part_redaction_reads() -> None:
    assert not redact._has_parts({"command": "GET", "args": ["k"], "args_count": 1, "key": "k"})
    assert not redact._has_parts({})
    for part in redact._MESSAGE_PARTS:
        assert redact._has_parts({"command": "GET", part: None})


def test_entries_by_protocol_counts_every_entry_once_feed_and_finish_return() -> None:
    conv = Conversation(sport=6379).handshake()
    for i in range(3):
        conv.send(True, f"*2\r\n$3\r\nGET\r\n$4\r\nkey{i}\r\n".encode())
        conv.send(False, b"$5\r\nhello\r\n")
    raw = Conversation(cport=40001, sport=9).handshake().send(True, b"\x00\x01\x02 nothing known")
    p = Pipeline(default_registry())
    first = p.feed(conv.columns())
    assert p.entries_by_protocol == {"redis": 3}
    entries = first + p.feed(raw.close().columns()) + p.finish()
    assert dict(p.entries_by_protocol) == {"redis": 3, "tcp": 1}  # the unclaimed flow
    assert sum(p.entries_by_protocol.values()) == len(entries)
    # A protocol first seen earlier comes first, as a Counter counted entry by entry would have it.
    assert list(p.entries_by_protocol) == ["redis", "tcp"]


def test_entries_by_protocol_includes_what_flush_idle_closes() -> None:
    conv = Conversation(sport=6379).handshake()
    conv.send(True, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    p = Pipeline(default_registry())
    assert p.feed(conv.columns()) == []
    assert p.entries_by_protocol == {}
    late = conv.ts + 3_600 * 1_000_000_000
    out = p.flush_idle(late)
    assert [e["protocol"] for e in out] == ["redis"]
    assert out[0]["error"]["message"] == "no response seen"
    assert dict(p.entries_by_protocol) == {"redis": 1}

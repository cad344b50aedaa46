"""Redis transcripts over real RESP bytes: commands paired with replies (pipelined too), MULTI/EXEC,
pub/sub pushes as entries of their own, RESP3, errors, redirections, passwords redacted, values capped,
detection by content, mid-stream pickup, and bad input."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import redis
from wiretide.dissector.protocols.redis import RedisSession, command_of, inline_args, probe
from wiretide.dissector.redact import MARKER
from wiretide.dissector.registry import default_registry

from .builders import Conversation


def cmd(*words: str | bytes) -> bytes:
    """A command as clients send it: an array of bulk strings."""
    parts = [w.encode() if isinstance(w, str) else w for w in words]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def bulk(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def entries(*turns: tuple[bool, bytes], port: int = 6379, handshake: bool = True) -> list[dict[str, Any]]:
    conv = Conversation(sport=port)
    if handshake:
        conv.handshake()
    for from_client, data in turns:
        conv.send(from_client, data)
    conv.close()
    p = Pipeline(default_registry())
    return p.feed(conv.columns()) + p.finish()


def rows(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["protocol"], e["method"], e["path"], e["status"]) for e in found]


def test_a_set_and_a_get_become_two_entries_with_key_value_and_summary() -> None:
    found = entries(
        (True, cmd("SET", "user:1", "alice")), (False, b"+OK\r\n"),
        (True, cmd("GET", "user:1")), (False, bulk("alice")),
    )  # fmt: skip
    assert rows(found) == [("redis", "SET", "user:1", 0), ("redis", "GET", "user:1", 0)]
    get = found[1]
    assert get["summary"] == "GET user:1" and get["error"] is None
    assert get["request"] == {"command": "GET", "args": ["user:1"], "args_count": 1, "key": "user:1"}
    assert get["response"]["type"] == "bulk" and get["response"]["value"] == "alice"
    assert get["version"] == "RESP2"


def test_pipelined_commands_in_one_segment_pair_in_order() -> None:
    found = entries(
        (True, cmd("INCR", "a") + cmd("INCR", "b") + cmd("GET", "missing") + cmd("PING")),
        (False, b":1\r\n:7\r\n$-1\r\n+PONG\r\n"),
    )
    assert [(e["method"], e["response"]["value"]) for e in found] == [
        ("INCR", 1), ("INCR", 7), ("GET", None), ("PING", "PONG"),
    ]  # fmt: skip


def test_inline_commands_are_commands_too() -> None:
    found = entries(
        (True, b'set greeting "hello world"\r\nget greeting\n'), (False, b"+OK\r\n$11\r\nhello world\r\n")
    )
    assert rows(found) == [("redis", "SET", "greeting", 0), ("redis", "GET", "greeting", 0)]
    assert found[0]["request"]["args"] == ["greeting", "hello world"]


def test_multi_exec_pairs_each_queued_command_and_exec_answers_with_an_array() -> None:
    found = entries(
        (True, cmd("MULTI") + cmd("INCR", "n") + cmd("LPUSH", "n", "x") + cmd("EXEC")),
        (False, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n"
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
    )  # fmt: skip
    assert [(e["method"], e["response"]["value"]) for e in found[:3]] == [
        ("MULTI", "OK"), ("INCR", "QUEUED"), ("LPUSH", "QUEUED"),
    ]  # fmt: skip
    exec_ = found[3]
    assert exec_["method"] == "EXEC" and exec_["status"] == 0 and exec_["error"] is None
    assert exec_["response"]["value"][0] == 1
    assert exec_["response"]["value"][1] == {
        "error": "WRONGTYPE Operation against a key holding the wrong kind of value"
    }
    assert exec_["response"]["errors"] == 1


def test_an_error_reply_is_an_error_entry_with_its_text() -> None:
    found = entries((True, cmd("LPUSH", "s", "x")), (False, b"-WRONGTYPE Operation against a key\r\n"))
    (e,) = found
    assert e["status"] == -1
    assert e["error"] == {"type": "WRONGTYPE", "message": "WRONGTYPE Operation against a key"}
    assert e["response"]["error"] == "WRONGTYPE Operation against a key"


def test_moved_and_ask_redirections_are_named_and_not_errors() -> None:
    found = entries(
        (True, cmd("GET", "k")), (False, b"-MOVED 3999 10.0.0.9:6381\r\n"),
        (True, cmd("GET", "j")), (False, b"-ASK 12 10.0.0.8:6380\r\n"),
    )  # fmt: skip
    assert [e["response"]["redirect"] for e in found] == [
        {"kind": "MOVED", "slot": 3999, "address": "10.0.0.9:6381"},
        {"kind": "ASK", "slot": 12, "address": "10.0.0.8:6380"},
    ]
    assert [(e["status"], e["error"]) for e in found] == [(1, None), (1, None)]


def test_resp2_pubsub_confirmations_and_messages_are_entries_of_their_own() -> None:
    found = entries(
        (True, cmd("SUBSCRIBE", "news", "sport")),
        (False, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
                b"*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n"),
        (False, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"),
        (True, cmd("PING")), (False, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
    )  # fmt: skip
    assert [(e["method"], e["path"], e["request"] is None, e["error"]) for e in found] == [
        ("SUBSCRIBE", "news", False, None),
        ("SUBSCRIBE", "news", True, None),
        ("SUBSCRIBE", "sport", True, None),
        ("MESSAGE", "news", True, None),
        ("PING", None, False, None),
    ]
    assert found[3]["response"]["push"] == "message" and found[3]["summary"] == "← message news: hello"
    assert found[4]["response"]["value"] == ["pong", ""]  # PING while subscribed is a reply


def test_resp3_hello_map_and_push_frames() -> None:
    found = entries(
        (True, cmd("HELLO", "3")),
        (False, b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"),
        (True, cmd("CLIENT", "TRACKING", "on")), (False, b"+OK\r\n"),
        (False, b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nfoo\r\n"),
        (True, cmd("GET", "d")), (False, b",3.5\r\n"),
        (True, cmd("EXISTS", "d")), (False, b"#t\r\n"),
        (True, cmd("GET", "none")), (False, b"_\r\n"),
    )  # fmt: skip
    assert [e["method"] for e in found] == ["HELLO", "CLIENT TRACKING", "INVALIDATE", "GET", "EXISTS", "GET"]
    assert found[0]["response"]["value"] == {"server": "redis", "proto": 3}
    assert found[0]["version"] == "RESP3"
    assert found[2]["request"] is None and found[2]["error"] is None
    assert [e["response"]["value"] for e in found[3:]] == [3.5, True, None]


def test_resp3_attributes_annotate_the_reply_that_follows() -> None:
    found = entries(
        (True, b"FAKE COMMAND\r\n"),
        (False, b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:1\r\n:2\r\n"),
    )
    (e,) = found
    assert e["response"]["value"] == [1, 2]
    assert e["response"]["attributes"] == {"key-popularity": {"a": 0.19}}


def test_passwords_never_reach_an_entry() -> None:
    found = entries(
        (True, cmd("AUTH", "s3cret-one")), (False, b"+OK\r\n"),
        (True, cmd("AUTH", "alice", "s3cret-two")), (False, b"-WRONGPASS invalid username-password pair\r\n"),
        (True, cmd("HELLO", "3", "AUTH", "bob", "s3cret-three", "SETNAME", "app")), (False, b"%0\r\n"),
        (True, b"AUTH s3cret-four\r\n"), (False, b"+OK\r\n"),
        (True, cmd("CONFIG", "SET", "requirepass", "s3cret-five")), (False, b"+OK\r\n"),
        (True, cmd("ACL", "SETUSER", "carol", "on", ">s3cret-six")), (False, b"+OK\r\n"),
    )  # fmt: skip
    assert len(found) == 6
    assert "s3cret" not in repr(found)
    assert found[1]["request"]["args"] == ["alice", MARKER]
    assert found[2]["request"]["args"] == ["3", "AUTH", "bob", MARKER, "SETNAME", "app"]
    assert found[5]["request"]["args"] == ["SETUSER", "carol", "on", ">" + MARKER]
    assert found[0]["redacted"] == ["request.args.0"]
    assert redis.REDACTED == MARKER


def test_big_values_are_capped_like_bodies_and_counted() -> None:
    big = b"v" * 300_000
    found = entries(
        (True, cmd("SET", "blob", big)), (False, b"+OK\r\n"),
        (True, cmd("GET", "blob")), (False, bulk(big)),
        (True, cmd("LRANGE", "l", "0", "-1")), (False, b"*3000\r\n" + b"$1\r\nx\r\n" * 3000),
    )  # fmt: skip
    set_, get, lrange = found
    cap = SessionConfig().body_cap
    assert len(set_["request"]["args"][1]) <= cap and set_["request"]["truncated"] is True
    assert len(get["response"]["value"]) == cap and get["response"]["truncated"] is True
    assert get["size"]["response"] == len(bulk(big))
    assert lrange["response"]["count"] == redis.MAX_ITEMS and lrange["response"]["truncated"] is True
    assert all(e["error"] is None for e in found)


def test_subcommands_and_keys_follow_each_commands_shape() -> None:
    assert command_of(["client", "setname", "app"]) == ("CLIENT SETNAME", None)
    assert command_of(["OBJECT", "ENCODING", "k"]) == ("OBJECT ENCODING", "k")
    assert command_of(["EVAL", "return 1", "1", "k1"]) == ("EVAL", "k1")
    assert command_of(["EVAL", "return 1", "0"]) == ("EVAL", None)
    assert command_of(["XREAD", "COUNT", "2", "STREAMS", "s1", "0"]) == ("XREAD", "s1")
    assert command_of(["PING"]) == ("PING", None)
    assert inline_args(b'SET k "a \\"b\\"\\n" \'c d\'') == [b"SET", b"k", b'a "b"\n', b"c d"]


def test_redis_is_found_by_content_on_any_port() -> None:
    found = entries((True, cmd("GET", "k")), (False, bulk("v")), port=7777)
    assert rows(found) == [("redis", "GET", "k", 0)]


def test_a_capture_that_starts_mid_command_picks_up_at_the_next_frame() -> None:
    tail = b"\r\n$5\r\nhello\r\n"  # the end of a SET whose start was not captured
    found = entries(
        (True, tail + cmd("GET", "a")), (False, b"+OK\r\n$1\r\n1\r\n"),
        (True, cmd("GET", "b")), (False, bulk("2")),
        handshake=False,
    )  # fmt: skip
    redis_rows = [e for e in found if e["protocol"] == "redis"]
    # The reply to the cut command is passed over (never paired with the next command).
    assert [(e["method"], e["response"]["value"]) for e in redis_rows] == [("GET", "1"), ("GET", "2")]
    assert all(e["error"] is None for e in redis_rows)


def test_probe_answers() -> None:
    assert probe(cmd("GET", "k"), b"") == Verdict.YES
    assert probe(b"*2\r\n$3\r\nGE", b"") == Verdict.MAYBE
    assert probe(b"PING\r\n", b"+PONG\r\n") == Verdict.YES
    assert probe(b"PING\r\n", b"") == Verdict.MAYBE
    assert probe(b"USER bob\r\n", b"+OK POP3 ready\r\n") == Verdict.NO  # POP3 is not Redis
    assert probe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n") == Verdict.NO
    assert probe(b"\x16\x03\x01\x02\x00", b"") == Verdict.NO
    assert probe(b"junk\r\n*1\r\n$4\r\nPING\r\n", b"") == Verdict.YES


# ---- bad input ---------------------------------------------------------------------------------


def session() -> RedisSession:
    return RedisSession(SessionConfig())


def test_a_bulk_string_whose_length_lies_is_a_violation() -> None:
    s = session()
    events = s.feed(True, b"*1\r\n$2\r\nPING\r\n", 0)
    assert any(isinstance(e, Violation) for e in events)


def test_unknown_type_bytes_and_absurd_nesting_are_violations() -> None:
    assert any(isinstance(e, Violation) for e in session().feed(False, b"+OK\r\n?what\r\n", 0))
    deep = b"*1\r\n" * (redis.MAX_DEPTH + 1)
    assert any(isinstance(e, Violation) for e in session().feed(False, deep, 0))
    assert any(isinstance(e, Violation) for e in session().feed(False, b"$-7\r\n", 0))


def test_a_truncated_frame_waits_and_a_gap_gives_the_flow_up() -> None:
    s = session()
    assert s.feed(True, b"*2\r\n$3\r\nGET\r\n$1", 0) == []
    assert [type(e) for e in s.gap(True, 100, 1)] == [Violation]


def test_an_endless_line_is_a_violation_not_a_growing_buffer() -> None:
    s = session()
    s.feed(False, b"+OK\r\n", 0)
    events = s.feed(False, b"+" + b"a" * (redis.MAX_LINE + 10), 1)
    assert any(isinstance(e, Violation) for e in events)


# ---- properties --------------------------------------------------------------------------------

STREAM_C = (
    cmd("HELLO", "3") + cmd("SET", "k", "v" * 300) + b"GET k\r\n" + cmd("SUBSCRIBE", "c") + cmd("AUTH", "pw")
)
STREAM_S = (
    b"%1\r\n$5\r\nproto\r\n:3\r\n+OK\r\n" + bulk("v" * 300) + b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
    b"|1\r\n+a\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n=7\r\ntxt:hey\r\n-ERR nope\r\n"
)


def _run(chunks_c: list[bytes], chunks_s: list[bytes]) -> list[tuple[bool, dict[str, Any]]]:
    s = session()
    out: list[tuple[bool, dict[str, Any]]] = []
    for c in chunks_c:
        out += [(m.is_request, m.fields) for m in s.feed(True, c, 0) if isinstance(m, Message)]
    for c in chunks_s:
        out += [(m.is_request, m.fields) for m in s.feed(False, c, 0) if isinstance(m, Message)]
    return out


def _chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=12), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_of_the_same_bytes_gives_the_same_messages(cut_c: list[int], cut_s: list[int]) -> None:
    whole = _run([STREAM_C], [STREAM_S])
    assert len(whole) == 11
    assert _run(_chunk(STREAM_C, cut_c), _chunk(STREAM_S, cut_s)) == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(a: bytes, b: bytes, client: bool) -> None:
    probe(a, b)
    s = session()
    s.feed(client, a, 0)
    s.feed(not client, b, 0)
    s.close(1)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, len(STREAM_S)))
def test_resp_with_random_bytes_spliced_in_never_raises(noise: bytes, at: int) -> None:
    s = session()
    s.feed(True, STREAM_C, 0)
    s.feed(False, STREAM_S[:at] + noise + STREAM_S[at:], 0)


def test_values_beyond_the_item_cap_are_still_checked_and_sized() -> None:
    counted = (
        b"*1100\r\n" + b":1\r\n+ok\r\n$2\r\nab\r\n,1.5\r\n#t\r\n_\r\n(12\r\n-E x\r\n" * 137 + b":9\r\n" * 4
    )
    s = session()
    (reply,) = s.feed(False, counted, 0)
    assert isinstance(reply, Message) and reply.size == len(counted)
    assert reply.fields["count"] == redis.MAX_ITEMS and reply.fields["truncated"] is True
    for bad in (b":1x\r\n", b"#x\r\n", b",one\r\n", b"(1.5\r\n"):  # past the cap, as bad as before it
        events = session().feed(False, b"*1030\r\n" + b":1\r\n" * 1025 + bad, 0)
        assert [type(e) for e in events] == [Violation], bad


def test_a_value_within_the_cap_split_over_many_segments_is_read_once_whole() -> None:
    value = "v" * 50_000
    reply = bulk(value) + b":5\r\n"
    s = session()
    s.feed(True, cmd("GET", "k") + cmd("INCR", "n"), 0)
    got: list[Any] = []
    for i in range(0, len(reply), 1448):
        got += s.feed(False, reply[i : i + 1448], i)
    assert [m.fields["value"] for m in got if isinstance(m, Message)] == [value, 5]
    assert s.server.buf == bytearray() and s.server.need == 0


def _frames(chunks: list[bytes], is_client: bool, cap: int) -> list[tuple[int, Any, bool, int, int]]:
    side = redis._Direction(is_client, cap)
    out: list[tuple[int, Any, bool, int, int]] = []
    for c in chunks:
        side.feed(c, 7, out)
    return [(t, v.text if isinstance(v, redis._Error) else v, cut, ts, size) for t, v, cut, ts, size in out]


def test_a_whole_message_read_in_one_pass_equals_the_token_by_token_reading() -> None:
    # Whole in a segment, these take the one-pass path; one byte at a time, the general one. Sizes,
    # cuts at the cap (inside a command and inside a reply) and types must agree.
    client = (
        cmd("SET", "k", "v" * 40) + cmd("GET", "k") + cmd("MSET", "a", "1" * 30, "b", "2" * 30) + cmd("X")
    )
    server = (
        b"+OK\r\n" + bulk("v" * 40) + b":-12\r\n" + b"-ERR wrong\r\n" + b"*2\r\n" + bulk("a") + bulk("b" * 50)
        + b"$0\r\n\r\n" + b"$-1\r\n" + b"*0\r\n" + b":99999999999999999999\r\n" + b"*2\r\n:1\r\n$1\r\nx\r\n"
    )  # fmt: skip
    for is_client, data in ((True, client), (False, server)):
        for cap in (16, 45, 64 * 1024):
            whole = _frames([data], is_client, cap)
            assert whole == _frames([data[i : i + 1] for i in range(len(data))], is_client, cap)
            assert sum(f[4] for f in whole) == len(data)
    assert [f[2] for f in _frames([client], True, 16)] == [True, False, True, False]
    assert _frames([server], False, 16)[1] == (ord("$"), "v" * 16, True, 7, len(bulk("v" * 40)))
    assert _frames([server], False, 16)[3][1] == "ERR wrong"

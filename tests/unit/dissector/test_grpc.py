"""gRPC over HTTP/2 transcripts: real protobuf messages (compiled from tests/data/http2/echo.proto by
protoc) in length-prefixed frames, carried by a real `h2` client and server."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.unit.dissector.test_http2_support import (
    H2Pair,
    classified,
    compile_echo,
    conversation,
    grpc_frame,
    registry,
    streams,
)
from wiretide.dissector.api import SessionConfig
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import grpc

SERVICE = "wiretide.test.Echo"
GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
OK_TRAILERS = [("grpc-status", "0")]


@dataclass(frozen=True)
class Echo:
    protoset: bytes
    request: Any
    reply: Any


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Echo:
    blob = compile_echo(tmp_path_factory.mktemp("echo")).read_bytes()
    pool = descriptor_pool.DescriptorPool()  # private pool: nothing registered process-wide
    for f in descriptor_pb2.FileDescriptorSet.FromString(blob).file:
        pool.Add(f)
    return Echo(
        blob,
        message_factory.GetMessageClass(pool.FindMessageTypeByName("wiretide.test.EchoRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("wiretide.test.EchoReply")),
    )


@dataclass(frozen=True, slots=True)
class SchemaConfig(SessionConfig):
    """A session config carrying a schema store (the field the pipeline is asked to add)."""

    schemas: Any = None


def run_grpc(
    p: H2Pair, schemas: grpc.SchemaStore | None = None, body_cap: int = 64 * 1024
) -> list[dict[str, Any]]:
    pipe = Pipeline(registry())
    pipe.config = SchemaConfig(body_cap=body_cap, schemas=schemas)
    docs = pipe.feed(conversation(p.wire)) + pipe.finish()
    return [classified(d) for d in streams(docs)]


def call(
    p: H2Pair,
    method: str,
    requests: list[bytes],
    replies: list[bytes],
    trailers: list[tuple[str, str]] = OK_TRAILERS,
    extra: list[tuple[str, str]] | None = None,
) -> int:
    sid = p.client.get_next_available_stream_id()
    head = [
        (":method", "POST"),
        (":path", f"/{SERVICE}/{method}"),
        (":scheme", "http"),
        (":authority", "echo"),
    ]
    p.client.send_headers(sid, head + GRPC_HEADERS + (extra or []))
    for r in requests:
        p.client.send_data(sid, grpc_frame(r))
    p.client.send_data(sid, b"", end_stream=True)
    p.flush()
    p.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    for r in replies:
        p.server.send_data(sid, grpc_frame(r))
        p.flush()
    p.server.send_headers(sid, trailers, end_stream=True)
    p.flush()
    return sid


def test_a_unary_call_is_a_grpc_entry_with_service_method_status_and_deadline(echo: Echo) -> None:
    p = H2Pair()
    req = echo.request(text="hello", times=3, tags=["a", "b"]).SerializeToString()
    rep = echo.reply(text="hello hello hello", count=3).SerializeToString()
    call(p, "Unary", [req], [rep], extra=[("grpc-timeout", "1500m")])
    (d,) = run_grpc(p)
    assert (d["protocol"], d["version"], d["method"], d["path"], d["status"]) == (
        "grpc",
        "2",
        "Unary",
        f"/{SERVICE}/Unary",
        200,
    )
    r, s = d["request"], d["response"]
    assert (r["service"], r["method"], r["http_method"], r["timeout_ms"]) == (
        SERVICE,
        "Unary",
        "POST",
        1500.0,
    )
    assert r["message_count"] == 1 and r["messages"][0]["size"] == len(req)
    tree = r["messages"][0]["fields"]
    assert tree[0] == {"field": 1, "wire": "len", "size": 5, "string": "hello"}
    assert [f["string"] for f in tree if f["field"] == 3] == ["a", "b"]
    assert (s["grpc_status"], s["grpc_message"], s["message_count"]) == (0, "", 1)
    assert s["messages"][0]["fields"][0]["string"] == "hello hello hello"
    assert d["summary"] == f"{SERVICE}/Unary → OK"
    assert d["error"] is None


def test_the_streaming_kinds_list_every_message_with_its_size(echo: Echo) -> None:
    p = H2Pair()
    reqs = [echo.request(text=f"q{i}").SerializeToString() for i in range(3)]
    reps = [echo.reply(text="r" * (i + 1), count=i).SerializeToString() for i in range(4)]
    call(p, "ServerStream", reqs[:1], reps)
    call(p, "ClientStream", reqs, reps[:1])
    call(p, "Bidi", reqs, reps)
    got = {d["method"]: d for d in run_grpc(p)}
    expect = {"ServerStream": (1, 4), "ClientStream": (3, 1), "Bidi": (3, 4)}
    for method, (n_req, n_rep) in expect.items():
        d = got[method]
        assert d["request"]["message_count"] == n_req
        assert d["response"]["message_count"] == n_rep
        assert [m["size"] for m in d["response"]["messages"]] == [len(x) for x in reps[:n_rep]]


def test_a_trailers_only_error_carries_grpc_status_and_decoded_message() -> None:
    p = H2Pair()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(
        sid,
        [
            (":method", "POST"),
            (":path", f"/{SERVICE}/Fail"),
            (":scheme", "http"),
            (":authority", "e"),
            *GRPC_HEADERS,
        ],
    )
    p.client.send_data(sid, grpc_frame(b""), end_stream=True)
    p.flush()
    p.server.send_headers(
        sid,
        [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "5"),
            ("grpc-message", "no%20such%20item"),
        ],
        end_stream=True,
    )
    p.flush()
    (d,) = run_grpc(p)
    assert d["status"] == 200
    assert (d["response"]["grpc_status"], d["response"]["grpc_message"]) == (5, "no such item")
    assert d["response"]["grpc_status_name"] == "NOT_FOUND"
    assert d["summary"].endswith("→ NOT_FOUND")


def test_gzip_compressed_messages_are_decoded(echo: Echo) -> None:
    p = H2Pair()
    plain = echo.request(text="squeezed " * 50).SerializeToString()
    sid = p.client.get_next_available_stream_id()
    head = [(":method", "POST"), (":path", f"/{SERVICE}/Unary"), (":scheme", "http"), (":authority", "e")]
    p.client.send_headers(sid, head + GRPC_HEADERS + [("grpc-encoding", "gzip")])
    p.client.send_data(sid, grpc_frame(gzip.compress(plain), compressed=True), end_stream=True)
    p.flush()
    p.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    p.server.send_headers(sid, OK_TRAILERS, end_stream=True)
    p.flush()
    (d,) = run_grpc(p)
    m = d["request"]["messages"][0]
    assert m["compressed"] is True and m["decompressed_size"] == len(plain)
    assert m["fields"][0]["string"] == "squeezed " * 50


def test_a_decompression_bomb_is_bounded_by_the_cap_and_counted() -> None:
    p = H2Pair()
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    sid = p.client.get_next_available_stream_id()
    head = [(":method", "POST"), (":path", f"/{SERVICE}/Unary"), (":scheme", "http"), (":authority", "e")]
    p.client.send_headers(sid, head + GRPC_HEADERS + [("grpc-encoding", "deflate")])
    frame = grpc_frame(bomb, compressed=True)
    for i in range(0, len(frame), 16_000):
        p.client.send_data(sid, frame[i : i + 16_000])
        p.flush()
    p.client.send_data(sid, b"", end_stream=True)
    p.flush()
    p.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    p.server.send_headers(sid, OK_TRAILERS, end_stream=True)
    p.flush()
    cap = 256 * 1024
    (d,) = run_grpc(p, body_cap=cap)
    m = d["request"]["messages"][0]
    assert m["truncated"] is True
    assert m["decompressed_size"] == cap
    assert d["request"]["decompression_capped"] == 1


def test_messages_decode_with_field_names_given_a_descriptor_set(echo: Echo) -> None:
    store = grpc.SchemaStore.from_descriptor_sets([echo.protoset])
    assert store.knows(f"/{SERVICE}/Unary")
    p = H2Pair()
    inner = {"delta": "-5", "ratio": 0.25}
    req = echo.request(text="typed", times=2, inner={"delta": -5, "ratio": 0.25}).SerializeToString()
    call(p, "Unary", [req], [echo.reply(text="ok", count=7).SerializeToString()])
    (d,) = run_grpc(p, schemas=store)
    assert d["request"]["messages"][0]["json"] == {"text": "typed", "times": 2, "inner": inner}
    assert d["response"]["messages"][0]["json"] == {"text": "ok", "count": "7"}


def _len_field(number: int, payload: bytes) -> bytes:
    key = (number << 3) | 2
    n = len(payload)
    out = bytearray([key])
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + payload


def test_server_reflection_seen_on_the_wire_teaches_the_schema_for_later_calls(echo: Echo) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(echo.protoset).file
    echo_file = next(f for f in files if f.name == "echo.proto").SerializeToString()
    # ServerReflectionResponse{file_descriptor_response(4): FileDescriptorResponse{file_descriptor_proto(1)}}
    reflection_reply = _len_field(4, _len_field(1, echo_file))
    p = H2Pair()
    sid = p.client.get_next_available_stream_id()
    head = [
        (":method", "POST"),
        (":path", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
        (":scheme", "http"),
        (":authority", "e"),
    ]
    p.client.send_headers(sid, head + GRPC_HEADERS)
    p.client.send_data(sid, grpc_frame(_len_field(4, b"wiretide.test.Echo")), end_stream=True)
    p.flush()
    p.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    p.server.send_data(sid, grpc_frame(reflection_reply))
    p.server.send_headers(sid, OK_TRAILERS, end_stream=True)
    p.flush()
    call(p, "Unary", [echo.request(text="learned").SerializeToString()], [])
    docs = run_grpc(p)
    assert docs[-1]["request"]["messages"][0]["json"] == {"text": "learned"}


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("1H", 3_600_000.0),
        ("2M", 120_000.0),
        ("3S", 3000.0),
        ("250m", 250.0),
        ("1500u", 1.5),
        ("bad", None),
        ("123456789S", None),
    ],
)
def test_grpc_timeout_units_become_milliseconds(value: str, ms: float | None) -> None:
    assert grpc._timeout_ms(value) == ms


def test_the_message_framer_counts_messages_beyond_the_cap_without_keeping_them() -> None:
    f = grpc.MessageFramer(cap=100)
    stream = b"".join(grpc_frame(bytes([i]) * 60) for i in range(5))
    for i in range(0, len(stream), 7):
        f.feed(stream[i : i + 7])
    assert f.count == 5
    assert f.kept == 100
    assert f.dropped == 5 * 60 - 100
    assert [m.size for m in f.messages] == [60] * 5


def test_a_descriptor_directory_without_valid_sets_gives_an_empty_store(tmp_path: Path) -> None:
    (tmp_path / "empty.protoset").write_bytes(b"")
    store = grpc.SchemaStore.from_directory(str(tmp_path))
    assert not store.knows(f"/{SERVICE}/Unary")
    assert store.decode(f"/{SERVICE}/Unary", True, b"\x0a\x01x") is None


def test_grpc_web_over_http1_is_a_grpc_entry_with_status_from_the_trailers_frame(echo: Echo) -> None:
    import base64

    from tests.unit.dissector.builders import Conversation
    from tests.unit.dissector.test_http2_support import run

    req = grpc_frame(echo.request(text="web", times=1).SerializeToString())
    trailer_block = b"grpc-status:7\r\ngrpc-message:denied%21\r\n"
    reply = grpc_frame(echo.reply(text="no").SerializeToString())
    reply += bytes([0x80]) + len(trailer_block).to_bytes(4, "big") + trailer_block
    body = base64.b64encode(reply)  # grpc-web-text: the response body is base64
    conv = Conversation(sport=8080).handshake()
    conv.send(
        True,
        b"POST /wiretide.test.Echo/Unary HTTP/1.1\r\nHost: web\r\n"
        b"Content-Type: application/grpc-web+proto\r\nContent-Length: %d\r\n\r\n" % len(req) + req,
    )
    conv.send(
        False,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc-web-text+proto\r\nContent-Length: %d\r\n\r\n"
        % len(body)
        + body,
    )
    conv.close()
    (d,) = [x for x in run(conv.columns()) if x["protocol"] != "tcp"]
    assert (d["protocol"], d["method"], d["status"]) == ("grpc", "Unary", 200)
    assert d["request"]["grpc_web"] is True and d["request"]["service"] == SERVICE
    assert d["request"]["messages"][0]["fields"][0]["string"] == "web"
    assert (d["response"]["grpc_status"], d["response"]["grpc_message"]) == (7, "denied!")
    assert d["response"]["messages"][0]["fields"][0]["string"] == "no"

"""HAR from real captures and real peers: every document the writer makes is HAR 1.2, for HTTP/1,
HTTP/2, gRPC, GraphQL and WebSocket upgrades, from the library and from `wiretide analyze --format har`."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h2.errors
import orjson
import pytest

from tests.helpers.har import assert_valid_har, har_errors
from tests.helpers.pcaps import PCAPS, files_or_missing, needs_pcaps, pcap, require_pcaps
from tests.unit.dissector.builders import Conversation
from tests.unit.dissector.pcaps import read_columns
from tests.unit.dissector.test_http2_support import H2Pair, conversation, run
from wiretide.common.har import HarWriter, har_log, is_http
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

HTTP_DIRS = ("http1.0", "http1.1", "http2", "grpc", "websocket")
CAPTURES = files_or_missing(sorted(p for d in HTTP_DIRS for p in (PCAPS / d).glob("*.pcap*")))


def dissect(path: Path) -> list[dict[str, Any]]:
    p = Pipeline(default_registry(), source="pcap")
    return p.feed(read_columns(path)) + p.finish()


def http_carried(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if is_http(d["protocol"])]


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["_id"]: e for e in doc["log"]["entries"]}


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_http_call_of_every_shared_capture_is_a_valid_har_entry(path: Path) -> None:
    require_pcaps(path)
    docs = dissect(path)
    doc = har_log(docs)
    assert_valid_har(doc)
    assert sorted(by_id(doc)) == sorted(d["id"] for d in http_carried(docs))
    started = [e["startedDateTime"] for e in doc["log"]["entries"]]
    assert started == sorted(started)


def test_the_schema_refuses_what_har_1_2_does_not_allow() -> None:
    (entry,) = har_log(run(conversation(_h2_get_wire())))["log"]["entries"]
    assert not har_errors(
        {"log": {"version": "1.2", "creator": {"name": "x", "version": "1"}, "entries": [entry]}}
    )
    broken = json.loads(json.dumps(entry))
    broken["startedDateTime"] = "2024-01-01 10:00:00"  # no T, no time zone
    broken["response"]["content"]["size"] = "12"
    broken["request"]["unknown"] = 1  # custom fields must start with "_"
    errors = har_errors(
        {"log": {"version": "1.2", "creator": {"name": "x", "version": "1"}, "entries": [broken]}}
    )
    assert len(errors) == 3


def _h2_get_wire() -> list[tuple[bool, bytes]]:
    p = H2Pair()
    sid = p.request("/items?color=red&color=blue", headers=[("cookie", "session=abc")])
    p.respond(sid, 200, body=b'{"ok": true}', headers=[("content-type", "application/json")])
    return p.wire


def test_an_http2_call_is_http_2_0_with_its_pseudo_headers_and_connection() -> None:
    docs = run(conversation(_h2_get_wire()))
    (e,) = har_log(docs)["log"]["entries"]
    req, resp = e["request"], e["response"]
    assert req["httpVersion"] == resp["httpVersion"] == "HTTP/2.0"
    assert req["url"] == "http://svc.test/items?color=red&color=blue"
    assert req["headers"][:4] == [
        {"name": ":method", "value": "GET"},
        {"name": ":authority", "value": "svc.test"},
        {"name": ":scheme", "value": "http"},
        {"name": ":path", "value": "/items?color=red&color=blue"},
    ]
    assert req["queryString"] == [{"name": "color", "value": "red"}, {"name": "color", "value": "blue"}]
    assert req["cookies"] == [{"name": "session", "value": "abc"}]
    assert resp["headers"][0] == {"name": ":status", "value": "200"}
    assert resp["content"] == {"size": 12, "mimeType": "application/json", "text": '{"ok": true}'}
    assert e["connection"] == docs[0]["flow_id"] and e["serverIPAddress"] == "10.0.0.2"
    assert e["startedDateTime"].endswith("Z") and e["_protocol"] == "http2"


@needs_pcaps
def test_streams_of_one_http2_connection_share_its_connection_id() -> None:
    doc = har_log(dissect(pcap("http2/arkime_http2-nghttp2.pcap")))
    assert_valid_har(doc)
    entries = doc["log"]["entries"]
    assert len(entries) > 1 and len({e["connection"] for e in entries}) == 1
    assert {e["request"]["httpVersion"] for e in entries} == {"HTTP/2.0"}


def test_a_gzip_response_has_its_decoded_size_and_the_bytes_saved() -> None:
    text = b"wiretide " * 200
    packed = gzip.compress(text)
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(packed)}\r\n\r\n"
    )
    conv = Conversation().handshake()
    conv.send(True, b"GET /big HTTP/1.1\r\nHost: example.test\r\nAccept-Encoding: gzip\r\n\r\n")
    conv.send(False, head.encode() + packed)
    p = Pipeline(default_registry())
    doc = har_log(p.feed(conv.close().columns()) + p.finish())
    assert_valid_har(doc)
    (e,) = doc["log"]["entries"]
    content = e["response"]["content"]
    assert content["size"] == len(text) and content["compression"] == len(text) - len(packed)
    assert content["text"] == text.decode()
    assert e["response"]["bodySize"] == len(packed)
    assert e["response"]["headersSize"] == len(head)
    assert e["request"]["httpVersion"] == "HTTP/1.1"


def test_a_form_post_lists_its_params_and_a_binary_body_is_base64() -> None:
    form = b"name=J%C3%BCrgen&tags=a&tags=b+c&empty="
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    conv = Conversation().handshake()
    conv.send(
        True,
        b"POST /signup HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(form)}\r\n\r\n".encode()
        + form,
    )
    conv.send(
        False,
        b"HTTP/1.1 302 Found\r\nLocation: /welcome\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {len(png)}\r\n\r\n".encode()
        + png,
    )
    p = Pipeline(default_registry())
    doc = har_log(p.feed(conv.close().columns()) + p.finish())
    assert_valid_har(doc)
    (e,) = doc["log"]["entries"]
    post = e["request"]["postData"]
    assert post["text"] == form.decode()
    assert post["params"] == [
        {"name": "name", "value": "Jürgen"},
        {"name": "tags", "value": "a"},
        {"name": "tags", "value": "b c"},
        {"name": "empty", "value": ""},
    ]
    content = e["response"]["content"]
    assert content["encoding"] == "base64" and content["size"] == len(png)
    assert e["response"]["redirectURL"] == "/welcome" and e["response"]["statusText"] == "Found"


@needs_pcaps
def test_grpc_bodies_are_the_captured_messages() -> None:
    docs = dissect(pcap("grpc/deepflow_grpc-server-stream.pcap"))
    doc = har_log(docs)
    assert_valid_har(doc)
    (call,) = [d for d in docs if d["protocol"] == "grpc"]
    e = by_id(doc)[call["id"]]
    assert e["request"]["method"] == "POST" and e["request"]["httpVersion"] == "HTTP/2.0"
    assert e["request"]["postData"]["mimeType"].startswith("application/grpc")
    assert json.loads(e["request"]["postData"]["text"]) == call["request"]["messages"]
    assert json.loads(e["response"]["content"]["text"]) == call["response"]["messages"]
    assert len(call["response"]["messages"]) == 5
    assert {"name": "grpc-status", "value": "0"} in e["response"]["_trailers"]
    assert e["_status"] == "OK (0)" or e["_status"].startswith("OK")


def test_a_graphql_call_over_http2_is_in_the_har() -> None:
    p = H2Pair()
    body = json.dumps({"query": "query GetUser { user { id } }", "operationName": "GetUser"}).encode()
    sid = p.request("/graphql", "POST", body=body, headers=[("content-type", "application/json")])
    p.respond(sid, 200, body=b'{"data": {"user": {"id": 7}}}', headers=[("content-type", "application/json")])
    docs = run(conversation(p.wire))
    doc = har_log(docs)
    assert_valid_har(doc)
    (e,) = doc["log"]["entries"]
    assert e["_protocol"] == "graphql" and e["request"]["method"] == "POST"
    assert json.loads(e["request"]["postData"]["text"])["operationName"] == "GetUser"
    assert "params" not in e["request"]["postData"]


def test_a_reset_stream_keeps_its_error() -> None:
    p = H2Pair()
    sid = p.request("/slow")
    p.client.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
    p.flush()
    doc = har_log(run(conversation(p.wire)))
    assert_valid_har(doc)
    (e,) = doc["log"]["entries"]
    assert e["response"]["status"] == 0
    assert e["_error"] == "connection: CANCEL from the client on stream 1"


@needs_pcaps
def test_websocket_messages_ride_on_their_upgrade_request_as_chrome_writes_them() -> None:
    docs = dissect(pcap("websocket/suricata_basic_websockets.pcap"))
    writer = HarWriter()
    for d in docs:  # one at a time, as batches arrive
        writer.add([d])
    doc = writer.document()
    assert_valid_har(doc)
    upgrades = [e for e in doc["log"]["entries"] if e["response"]["status"] == 101]
    (e,) = upgrades
    messages = e["_webSocketMessages"]
    ws = [d for d in docs if d["protocol"] == "ws"]
    assert e["_resourceType"] == "websocket" and len(messages) == len(ws)
    assert messages[0] == {
        "type": "receive",
        "time": ws[0]["timestamp"] / 1e9,
        "opcode": 1,
        "data": "connected,",
    }
    assert {m["type"] for m in messages} == {"send", "receive"}
    assert writer.count == len(http_carried(docs))


def analyze_har(path: Path, *args: str) -> dict[str, Any]:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "wiretide.cli.main",
            "analyze",
            str(path),
            "--format",
            "har",
            "--quiet",
            *args,
        ],
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = orjson.loads(r.stdout)
    return doc


@needs_pcaps
@pytest.mark.parametrize(
    "rel",
    ["http1.1/zeek_post.pcap", "http2/arkime_http2-nghttp2.pcap", "grpc/deepflow_h2c_ascii.pcap",
     "websocket/suricata_basic_websockets.pcap"],
)  # fmt: skip
def test_analyze_format_har_writes_every_http_call_as_har_1_2(rel: str) -> None:
    path = pcap(rel)
    doc = analyze_har(path)
    assert_valid_har(doc)
    want = http_carried(dissect(path))
    assert len(doc["log"]["entries"]) == len(want) > 0
    assert {e["_protocol"] for e in doc["log"]["entries"]} == {d["protocol"] for d in want}


@needs_pcaps
def test_analyze_format_har_with_two_jobs_is_the_same_document() -> None:
    path = pcap("http2/arkime_http2-nghttp2.pcap")
    one, two = analyze_har(path), analyze_har(path, "--jobs", "2")

    def calls(doc: dict[str, Any]) -> list[tuple[str, str, int]]:
        return [
            (e["startedDateTime"], e["request"]["url"], e["response"]["status"])
            for e in doc["log"]["entries"]
        ]

    assert calls(one) == calls(two)

"""`HarStream` writes the HAR document as entries come, in bounded memory: byte for byte what
`HarWriter` writes for every shared capture, entries put back in start order within its window,
WebSocket messages on their upgrade entry, and tens of thousands of calls held in a few megabytes."""

from __future__ import annotations

import io
import random
import tracemalloc
from typing import Any

import orjson
import pytest

from tests.helpers.har import assert_valid_har
from tests.helpers.pcaps import needs_pcaps, pcap
from tests.unit.common.test_har import dissect
from wiretide.common.har import HarStream, HarWriter

T0 = 1_700_000_000_000_000_000


def call(i: int, start: int, body: int = 200) -> dict[str, Any]:
    return {
        "id": f"01J{i:023d}",
        "timestamp": start,
        "elapsed_us": 1500,
        "protocol": "http",
        "version": "1.1",
        "src": {"ip": "10.0.0.1", "port": 40000 + i % 20000},
        "dst": {"ip": "10.0.0.2", "port": 80},
        "method": "GET",
        "path": f"/items/{i}",
        "status": 200,
        "request": {"method": "GET", "url": f"/items/{i}", "headers": {"host": "shop", "accept": "*/*"}},
        "response": {
            "status": 200,
            "reason": "OK",
            "headers": {"content-type": "text/plain", "content-length": str(body)},
            "body": {"size": body, "mime": "text/plain", "content": "y" * body},
        },
        "size": {"request": 60, "response": 80 + body},
    }


def streamed(docs: list[dict[str, Any]], **kw: int) -> bytes:
    out = io.BytesIO()
    stream = HarStream(out.write, **kw)
    for d in docs:  # one at a time, as batches arrive
        stream.add([d])
    stream.close()
    return out.getvalue()


def written(docs: list[dict[str, Any]]) -> bytes:
    w = HarWriter()
    w.add(docs)
    return orjson.dumps(w.document(), option=orjson.OPT_INDENT_2) + b"\n"


@needs_pcaps
@pytest.mark.parametrize(
    "rel",
    ["http1.1/zeek_post.pcap", "http2/arkime_http2-nghttp2.pcap", "grpc/deepflow_h2c_ascii.pcap",
     "websocket/suricata_basic_websockets.pcap"],
)  # fmt: skip
def test_the_stream_writes_byte_for_byte_what_the_whole_document_writer_writes(rel: str) -> None:
    docs = dissect(pcap(rel))
    data = streamed(docs)
    assert data == written(docs)
    assert_valid_har(orjson.loads(data))


def test_an_empty_stream_is_a_valid_document_with_no_entries_and_a_comment_goes_in_the_log() -> None:
    assert streamed([]) == written([])
    out = io.BytesIO()
    s = HarStream(out.write)
    s.add([call(1, T0)])
    s.close("replayed from x.pcap")
    doc = orjson.loads(out.getvalue())
    assert_valid_har(doc)
    assert doc["log"]["comment"] == "replayed from x.pcap" and len(doc["log"]["entries"]) == 1


def test_entries_arriving_out_of_start_order_come_out_sorted_within_the_window() -> None:
    rnd = random.Random(7)
    docs = [call(i, T0 + i * 1_000_000) for i in range(500)]
    shuffled = docs[:]
    rnd.shuffle(shuffled)
    doc = orjson.loads(streamed(shuffled))
    starts = [e["startedDateTime"] for e in doc["log"]["entries"]]
    assert starts == sorted(starts) and len(starts) == 500
    # A window too small to sort everything still writes every entry exactly once.
    tiny = orjson.loads(streamed(shuffled, reorder_bytes=4_000))
    assert sorted(e["_id"] for e in tiny["log"]["entries"]) == sorted(d["id"] for d in docs)


def test_twenty_thousand_calls_are_written_in_bounded_memory() -> None:
    sent = 0

    def sink(data: bytes) -> None:
        nonlocal sent
        sent += len(data)

    tracemalloc.start()
    try:
        stream = HarStream(sink, reorder_bytes=2 << 20)
        batch: list[dict[str, Any]] = []
        for i in range(20_000):
            batch.append(call(i, T0 + i * 1_000_000, body=400))
            if len(batch) == 256:
                stream.add(batch)
                batch = []
        stream.add(batch)
        stream.close()
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stream.count == 20_000
    assert sent > 30_000_000  # ~1.7 KB per HAR entry written: the whole document went out
    assert peak < 12_000_000  # the 2 MiB window and one batch of entries, not 20,000 entries (~100 MB)


def ws_message(i: int, upgrade: str, ts: int, data: str = "hello") -> dict[str, Any]:
    return {
        "id": f"ws{i}",
        "timestamp": ts,
        "protocol": "ws",
        "request": {"upgrade_id": upgrade, "opcode": 1, "text": data},
    }


def upgrade_call(i: int, start: int) -> dict[str, Any]:
    e = call(i, start, body=0)
    e["status"] = 101
    e["response"] = {"status": 101, "reason": "Switching Protocols", "headers": {"upgrade": "websocket"}}
    return e


def test_websocket_messages_wait_on_their_upgrade_and_past_the_bound_are_counted_not_lost_silently() -> None:
    up = upgrade_call(1, T0)
    msgs = [ws_message(i, up["id"], T0 + (i + 1) * 1_000, "m" * 1_000) for i in range(50)]
    doc = orjson.loads(streamed([up, *msgs]))
    (entry,) = doc["log"]["entries"]
    assert len(entry["_webSocketMessages"]) == 50 and entry["_resourceType"] == "websocket"
    # With room for a few messages only, the upgrade is written early with what it had; the rest
    # are counted in the log's comment.
    doc = orjson.loads(streamed([up, *msgs], ws_bytes=10_000))
    (entry,) = doc["log"]["entries"]
    kept = len(entry.get("_webSocketMessages", []))
    assert 0 < kept < 50
    assert doc["log"]["comment"].startswith(f"{50 - kept} WebSocket message(s) left out")
    assert_valid_har(doc)

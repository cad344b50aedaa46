"""Kafka transcripts: a real Java client's bytes, built frames of every flavour (flexible and classic
versions, compressed record batches, errors, acks=0), the shared captures against tshark, mid-stream
pickup, gaps, hostile bytes, and the KFL variables and status text of the entries."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cramjam
import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import PCAPS, files_or_missing, require_pcaps
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.common import protocols
from wiretide.common.kfl import compile_predicate, parse_query
from wiretide.common.packets import ColumnBuilder, PacketColumns
from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import kafka
from wiretide.dissector.protocols.kafka import KafkaSession, probe
from wiretide.dissector.registry import default_registry

from .builders import Conversation

# ---- a small builder of Kafka frames ----------------------------------------------------------------


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(n: int) -> bytes:
    return uvarint((n << 1) ^ (n >> 63))


def i16(n: int) -> bytes:
    return struct.pack("!h", n)


def i32(n: int) -> bytes:
    return struct.pack("!i", n)


def i64(n: int) -> bytes:
    return struct.pack("!q", n)


def string(s: str | None, flexible: bool) -> bytes:
    if s is None:
        return b"\x00" if flexible else i16(-1)
    raw = s.encode()
    return (uvarint(len(raw) + 1) if flexible else i16(len(raw))) + raw


def blob(b: bytes, flexible: bool) -> bytes:
    return (uvarint(len(b) + 1) if flexible else i32(len(b))) + b


def array(items: list[bytes], flexible: bool) -> bytes:
    return (uvarint(len(items) + 1) if flexible else i32(len(items))) + b"".join(items)


def tags(flexible: bool) -> bytes:
    return b"\x00" if flexible else b""


def record(delta: int, key: bytes | None, value: bytes, headers: list[tuple[bytes, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    body = b"\x00" + varint(delta) + varint(delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(len(value)) + value + varint(len(headers))
    for k, v in headers:
        body += varint(len(k)) + k + varint(len(v)) + v
    return varint(len(body)) + body


COMPRESS: dict[int, Callable[[bytes], bytes]] = {
    0: lambda b: b,
    1: gzip.compress,
    2: lambda b: bytes(cramjam.snappy.compress_raw(b)),
    3: lambda b: bytes(cramjam.lz4.compress(b)),
    4: lambda b: bytes(cramjam.zstd.compress(b)),
}


def batch(records: list[bytes], codec: int = 0, base_offset: int = 0, ts: int = 1_700_000_000_000) -> bytes:
    """A magic-2 record batch (KIP-98); the CRC is not checked by the dissector and left 0."""
    payload = COMPRESS[codec](b"".join(records))
    after_crc = (
        i16(codec) + i32(len(records) - 1) + i64(ts) + i64(ts) + i64(-1) + i16(-1) + i32(-1)
        + i32(len(records)) + payload
    )  # fmt: skip
    return i64(base_offset) + i32(4 + 1 + 4 + len(after_crc)) + i32(0) + b"\x02" + i32(0) + after_crc


def request(key: int, version: int, corr: int, body: bytes, client_id: str = "orders-svc") -> bytes:
    flexible = kafka.is_flexible(key, version)
    head = i16(key) + i16(version) + i32(corr) + string(client_id, False) + tags(flexible)
    return i32(len(head) + len(body)) + head + body


def response(key: int, version: int, corr: int, body: bytes) -> bytes:
    head = i32(corr) + tags(kafka.is_flexible(key, version) and key != kafka.API_VERSIONS)
    return i32(len(head) + len(body)) + head + body


def produce(corr: int, topic: str, records: bytes, version: int = 9, acks: int = -1) -> bytes:
    f = kafka.is_flexible(0, version)
    part = i32(0) + blob(records, f) + tags(f)
    t = string(topic, f) + array([part], f) + tags(f)
    txn = string(None, f) if version >= 3 else b""
    body = txn + i16(acks) + i32(30_000) + array([t], f) + tags(f)
    return request(0, version, corr, body)


def produce_ok(corr: int, topic: str, version: int = 9, error: int = 0, base_offset: int = 0) -> bytes:
    f = kafka.is_flexible(0, version)
    part = i32(0) + i16(error) + i64(base_offset) + i64(-1) + i64(0)
    part += (array([], f) + string(None, f) if version >= 8 else b"") + tags(f)
    body = array([string(topic, f) + array([part], f) + tags(f)], f) + i32(0) + tags(f)
    return response(0, version, corr, body)


def metadata_req(corr: int, topics: list[str], version: int = 12) -> bytes:
    f = kafka.is_flexible(3, version)
    items = [bytes(16) + string(t, f) + tags(f) for t in topics]
    return request(3, version, corr, array(items, f) + b"\x01\x00" + tags(f))


def heartbeat(corr: int, group: str = "billing", version: int = 4) -> bytes:
    f = kafka.is_flexible(12, version)
    body = string(group, f) + i32(3) + string("member-1", f) + string(None, f) + tags(f)
    return request(12, version, corr, body)


def heartbeat_resp(corr: int, error: int = 0, version: int = 4) -> bytes:
    return response(12, version, corr, i32(0) + i16(error) + tags(kafka.is_flexible(12, version)))


def entries_of(conv: Conversation) -> list[dict[str, Any]]:
    p = Pipeline(default_registry())
    return [e for e in p.feed(conv.columns()) + p.finish() if e["protocol"] == "kafka"]


def events(chunks: list[tuple[bool, bytes]], body_cap: int = 64 * 1024) -> list[Any]:
    s = KafkaSession(SessionConfig(body_cap=body_cap))
    out: list[Any] = []
    for from_client, data in chunks:
        out += s.feed(from_client, data, 0)
    return out + s.close(0)


# ---- a real client's bytes ----------------------------------------------------------------------

# apache-kafka-java 3.6.1 `kafka-console-producer` against a broker (ndpi_kafka.pcapng, port 46136):
# ApiVersions v3, InitProducerId v4, Metadata v12 and Produce v9 with their responses.
JAVA_CLIENT = [
    (True, "0000003400120003000000030010636f6e736f6c652d70726f647563657200126170616368652d6b61666b612d6a"
           "61766106332e362e3100"),
    (True, "0000002b00160004000000040010636f6e736f6c652d70726f647563657200007fffffffffffffffffffffffffff"
           "00"),
    (False, "0000001600000004000000000000000000000000000000000000"),
    (True, "0000003c0003000c000000050010636f6e736f6c652d70726f647563657200020000000000000000000000000000"
           "00000c73616d706c65546f70696300010000"),
    (False, "0000007a00000005000000000002000000000a6c6f63616c686f7374000023840000176e452d4f4a76326f517975"
            "4363784c7a4d7855634677000000000200000c73616d706c65546f706963c4a4c0df715f41b79ca495c62744d56c"
            "00020000000000000000000000000000020000000002000000000100800000000000"),
    (True, "0000008800000009000000060010636f6e736f6c652d70726f64756365720000ffff000005dc020c73616d706c65"
           "546f706963020000000051000000000000000000000044ffffffff02a1c4dc2a0000000000000000018c8a9f8fd9"
           "0000018c8a9f8fd900000000000000000000000000000000000124000000011848656c6c6f20776f726c64210000"
           "0000"),
    (False, "0000003a0000000600020c73616d706c65546f706963020000000000000000000000000000ffffffffffffffff00"
            "00000000000000010000000000000000"),
]  # fmt: skip


def test_a_java_producers_real_bytes_become_paired_named_entries() -> None:
    conv = Conversation(sport=9092).handshake()
    for from_client, hexed in JAVA_CLIENT:
        conv.send(from_client, bytes.fromhex(hexed))
    es = entries_of(conv.close())
    assert [(e["method"], e["version"], e["path"], e["status"], e["error"]) for e in es] == [
        ("InitProducerId", "4", "", 0, None),
        ("Metadata", "12", "sampleTopic", 0, None),
        ("Produce", "9", "sampleTopic", 0, None),
        # Its answer is left out of this transcript: the request waits until the connection ends.
        ("ApiVersions", "3", "", None, {"type": "unmatched", "message": "no response seen"}),
    ]
    produce_entry = es[2]
    assert produce_entry["summary"] == "Produce sampleTopic (1 record)"
    assert produce_entry["stream"] == "6" and produce_entry["request"]["client_id"] == "console-producer"
    part = produce_entry["request"]["topics"][0]["partitions"][0]
    assert part["record_count"] == 1 and part["compression"] == "none" and part["base_offset"] == 0
    assert part["records"] == [
        {"offset": 0, "timestamp": 1703132762073, "key": None, "value": "Hello world!", "value_size": 12}
    ]
    meta = es[1]["response"]
    assert meta["brokers"] == [{"node_id": 0, "host": "localhost", "port": 9092, "rack": None}]
    assert meta["topics"][0]["topic_id"] == "c4a4c0df-715f-41b7-9ca4-95c62744d56c"
    assert es[0]["request"]["transactional_id"] is None and es[0]["response"]["producer_id"] == 0
    assert es[3]["request"]["client_software_name"] == "apache-kafka-java"


# ---- built frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "name"), list(enumerate(kafka.COMPRESSION)))
def test_a_compressed_produce_lists_its_records_keys_headers_and_values(codec: int, name: str) -> None:
    records = [record(i, f"k{i}".encode(), f"order {i}".encode(), [(b"trace", b"t-1")]) for i in range(3)]
    conv = Conversation(sport=9092).handshake()
    conv.send(True, produce(7, "orders", batch(records, codec, base_offset=40)))
    conv.send(False, produce_ok(7, "orders", base_offset=40)).close()
    (e,) = entries_of(conv)
    assert (e["method"], e["path"], e["status"], e["summary"]) == (
        "Produce",
        "orders",
        0,
        "Produce orders (3 records)",
    )
    part = e["request"]["topics"][0]["partitions"][0]
    assert part["compression"] == name and part["record_count"] == 3 and part["base_offset"] == 40
    assert [(r["offset"], r["key"], r["value"], r["headers"]) for r in part["records"]] == [
        (40 + i, f"k{i}", f"order {i}", [{"key": "trace", "value": "t-1"}]) for i in range(3)
    ]


def test_classic_and_flexible_versions_of_one_api_read_alike() -> None:
    rec = batch([record(0, b"k", b"v")])
    for version in (3, 7, 9, 11):
        conv = Conversation(sport=9092).handshake()
        conv.send(True, produce(1, "orders", rec, version)).send(False, produce_ok(1, "orders", version))
        (e,) = entries_of(conv.close())
        assert (e["version"], e["path"], e["status"], e["summary"]) == (
            str(version),
            "orders",
            0,
            "Produce orders (1 record)",
        ), version


def test_an_error_code_is_the_status_and_named_in_the_summary_and_by_the_table() -> None:
    conv = Conversation(sport=9092).handshake()
    conv.send(True, produce(3, "ghost", batch([record(0, None, b"x")])))
    conv.send(False, produce_ok(3, "ghost", error=3))
    conv.send(True, heartbeat(4)).send(False, heartbeat_resp(4, error=27)).close()
    es = entries_of(conv)
    assert [(e["method"], e["status"], e["summary"]) for e in es] == [
        ("Produce", 3, "Produce ghost (1 record) → UNKNOWN_TOPIC_OR_PARTITION"),
        ("Heartbeat", 27, "Heartbeat billing → REBALANCE_IN_PROGRESS"),
    ]
    assert protocols.status_text(es[0]) == "UNKNOWN_TOPIC_OR_PARTITION (3)"
    assert protocols.is_error(es[1]) and protocols.server_error(es[1]) == "REBALANCE_IN_PROGRESS"
    assert not protocols.is_error({**es[1], "status": 0})


def test_responses_pair_by_correlation_id_out_of_order_and_acks_0_stands_alone() -> None:
    conv = Conversation(sport=9092).handshake()
    conv.send(True, heartbeat(10) + metadata_req(11, ["orders", "payments"]))
    conv.send(True, produce(12, "audit", batch([record(0, None, b"fire and forget")]), acks=0))
    meta_resp = response(3, 12, 11, i32(0) + b"\x01" + b"\x00" + i32(1) + b"\x01" + i32(0) + b"\x00")
    conv.send(False, meta_resp + heartbeat_resp(10)).close()
    es = entries_of(conv)
    got = {e["stream"]: (e["method"], e["path"], e["status"], e["error"]) for e in es}
    assert got == {
        "10": ("Heartbeat", "billing", 0, None),
        "11": ("Metadata", "orders,payments", 0, None),
        "12": ("Produce", "audit", None, None),
    }


def test_an_api_this_module_does_not_decode_is_still_named_and_paired() -> None:
    describe_cluster = request(60, 1, 5, b"\x00\x00")
    conv = Conversation(sport=9092).handshake().send(True, heartbeat(4)).send(False, heartbeat_resp(4))
    conv.send(True, describe_cluster).send(False, response(60, 1, 5, i32(0) + i16(0))).close()
    es = entries_of(conv)
    assert [(e["method"], e["stream"], e["status"], e["error"]) for e in es][1] == (
        "DescribeCluster",
        "5",
        None,
        None,
    )
    unknown_key = request(4000, 0, 6, b"")  # a future API, after the stream proved to be Kafka
    conv = Conversation(sport=9092).handshake().send(True, heartbeat(4)).send(False, heartbeat_resp(4))
    conv.send(True, unknown_key).send(False, response(4000, 0, 6, b"")).close()
    assert [e["method"] for e in entries_of(conv)] == ["Heartbeat", "ApiKey4000"]


def test_an_api_versions_answer_in_v0_to_a_newer_request_is_read_as_v0() -> None:
    """KIP-511: a broker that does not know the version answers UNSUPPORTED_VERSION in v0's layout."""
    req = request(18, 4, 1, string("librdkafka", True) + string("2.16", True) + b"\x00")
    resp = response(18, 4, 1, i16(35) + i32(1) + i16(18) + i16(0) + i16(3))
    conv = Conversation(sport=9092).handshake().send(True, req).send(False, resp).close()
    (e,) = entries_of(conv)
    assert e["status"] == 35 and e["response"]["api_keys"] == [
        {"api_key": 18, "min_version": 0, "max_version": 3}
    ]


def test_fetch_by_topic_id_is_named_from_a_metadata_answer_seen_on_another_connection() -> None:
    tid = bytes.fromhex("c4a4c0df715f41b79ca495c62744d56c")
    partition = i32(0) + i32(0) + i16(0) + b"\x01" + i32(0) + i32(0) + i32(0) + i16(0) + b"\x01\x01" + b"\x00"
    meta = response(3, 12, 2, i32(0) + b"\x01" + b"\x00" + i32(-1) + b"\x02" + i16(0)
                    + string("orders", True) + tid + b"\x00" + b"\x02" + partition + i32(0) + b"\x00"
                    + b"\x00")  # fmt: skip
    first = Conversation(cport=41000, sport=9092).handshake().send(True, metadata_req(2, ["orders"]))
    first.send(False, meta).close()
    recs = batch([record(0, b"k", b"v")], base_offset=5)
    fetch_req = request(1, 13, 9, i32(-1) + i32(500) + i32(1) + i32(1 << 20) + b"\x00" + i32(0) + i32(-1)
                        + b"\x02" + tid + b"\x02" + i32(0) + i32(0) + i64(5) + i32(-1) + i64(-1)
                        + i32(1 << 20) + b"\x00" + b"\x00" + b"\x01" + b"\x01" + b"\x00")  # fmt: skip
    fetch_resp = response(1, 13, 9, i32(0) + i16(0) + i32(0) + b"\x02" + tid + b"\x02" + i32(0) + i16(0)
                          + i64(6) + i64(6) + i64(0) + b"\x01" + i32(-1) + blob(recs, True) + b"\x00"
                          + b"\x00" + b"\x00")  # fmt: skip
    second = Conversation(cport=41001, sport=9092).handshake().send(True, fetch_req)
    second.send(False, fetch_resp).close()
    second.frames = first.frames + [(ts + 10**9, f) for ts, f in second.frames]
    p = Pipeline(default_registry())
    es = p.feed(second.columns()) + p.finish()
    fetch = [e for e in es if e["method"] == "Fetch"]
    assert [(e["path"], e["status"], e["summary"]) for e in fetch] == [
        ("orders", 0, "Fetch orders (1 record)")
    ]
    assert fetch[0]["response"]["topics"][0]["partitions"][0]["records"][0]["value"] == "v"


def test_sasl_authentication_bytes_are_never_kept() -> None:
    handshake = request(17, 1, 1, string("PLAIN", False))
    handshake_ok = response(17, 1, 1, i16(0) + i32(1) + string("PLAIN", False))
    secret = b"\x00alice\x00hunter2-password"
    auth = request(36, 2, 2, blob(secret, True) + b"\x00")
    auth_ok = response(36, 2, 2, i16(0) + string(None, True) + blob(b"", True) + i64(0) + b"\x00")
    conv = Conversation(sport=9092).handshake().send(True, handshake).send(False, handshake_ok)
    conv.send(True, auth).send(False, auth_ok).close()
    es = entries_of(conv)
    assert [e["method"] for e in es] == ["SaslHandshake", "SaslAuthenticate"]
    assert es[1]["request"]["auth_bytes_size"] == len(secret)
    assert "hunter2" not in repr(es)


def test_values_are_capped_by_the_body_cap_and_records_by_their_listing_cap() -> None:
    big = [record(i, None, b"v" * 1000) for i in range(kafka.MAX_RECORDS_LISTED + 20)]
    (msg,) = events([(True, produce(1, "bulk", batch(big)))], body_cap=2500)
    assert isinstance(msg, Message)
    part = msg.fields["topics"][0]["partitions"][0]
    assert part["record_count"] == kafka.MAX_RECORDS_LISTED + 20
    assert len(part["records"]) == kafka.MAX_RECORDS_LISTED
    kept = [len(r["value"]) for r in part["records"][:4]]
    assert kept == [1000, 1000, 500, 0] and part["records"][3]["value_size"] == 1000


def test_a_message_set_of_the_old_formats_is_counted() -> None:
    def message(value: bytes, magic: int = 1) -> bytes:
        body = (
            b"\x00" * 4 + bytes([magic, 0]) + (i64(0) if magic else b"") + i32(-1) + i32(len(value)) + value
        )
        return i64(0) + i32(len(body)) + body

    msgs = message(b"a") + message(b"bc") + message(b"d", magic=0)
    conv = Conversation(sport=9092).handshake().send(True, produce(1, "legacy", msgs, version=2))
    conv.send(False, produce_ok(1, "legacy", version=2)).close()
    (e,) = entries_of(conv)
    assert e["summary"] == "Produce legacy (3 records)"


# ---- the shared captures, counted as tshark counts them -----------------------------------------

KAFKA_PCAPS = sorted((PCAPS / "kafka").glob("*.pcap*"))
# The deepflow captures use the broker port 36333, which tshark only decodes as Kafka when told.
TSHARK_PORTS = ("9092", "36333")


def tshark_messages(path: Path) -> int:
    """Kafka PDUs tshark finds (a frame may hold several: one correlation id each)."""
    decode = [arg for port in TSHARK_PORTS for arg in ("-d", f"tcp.port=={port},kafka")]
    out = subprocess.run(
        ["tshark", "-r", str(path), *decode, "-Y", "kafka", "-T", "fields", "-e", "kafka.correlation_id"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return sum(len(line.split(",")) for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("path", files_or_missing(KAFKA_PCAPS), ids=lambda p: p.name)
def test_every_kafka_capture_gives_as_many_messages_as_tshark_finds(path: Path) -> None:
    require_pcaps(path)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (the Makefile's APT_PACKAGES installs it)")
    p = Pipeline(default_registry())
    entries = [e for cols in read_batches(path) for e in p.feed(cols)] + p.finish()
    assert all(e["protocol"] == "kafka" for e in entries), [e["protocol"] for e in entries]
    ours = sum((e["request"] is not None) + (e["response"] is not None) for e in entries)
    assert ours == tshark_messages(path)
    assert not [e for e in entries if e["error"] and e["error"]["type"] == "dissection"]


def _late(path: Path, skip: int) -> PacketColumns:
    """The capture as if it had started `skip` packets late (mid-connection: no SYN, cut frames)."""
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        builder = ColumnBuilder()
        iface = builder.interface("file", reader.datalink())
        for n, (ts, frame) in enumerate(reader):
            if n >= skip:
                builder.append(frame, len(frame), int(ts * 1_000_000_000), iface)
    return builder.take()


@pytest.mark.parametrize("skip", [0, 3, 5])
def test_no_capture_of_another_protocol_is_taken_for_kafka_even_joined_late(skip: int) -> None:
    """Every shared capture outside kafka/, whole and joined late: SMB's NetBIOS frames and a late
    HTTP/2 SETTINGS frame once read as Kafka requests."""
    require_pcaps()
    others = [f for f in sorted(PCAPS.rglob("*.pcap*")) if f.parent.name != "kafka"]
    assert others
    claimed = []
    for path in others:
        p = Pipeline(default_registry())
        entries = p.feed(_late(path, skip)) + p.finish()
        claimed += [path.name for e in entries if e["protocol"] == "kafka"]
    assert claimed == []


def test_the_captures_give_the_calls_tshark_shows() -> None:
    path = PCAPS / "kafka" / "deepflow_mixed-with-unsupported.pcap"
    require_pcaps(path)
    p = Pipeline(default_registry())
    es = [e for cols in read_batches(path) for e in p.feed(cols)] + p.finish()
    assert sorted((e["method"], e["version"], e["stream"], e["status"]) for e in es) == [
        ("Fetch", "13", "15551976", 0),
        ("Heartbeat", "4", "15551978", 0),
        ("OffsetCommit", "8", "15551977", 0),
    ]


# ---- mid-stream pickup, gaps, bad input ----------------------------------------------------------


def _stream() -> tuple[bytes, bytes]:
    client = b"".join(heartbeat(c) for c in range(1, 6))
    server = b"".join(heartbeat_resp(c) for c in range(1, 6))
    return client, server


def test_a_capture_starting_mid_frame_finds_the_next_frame_by_content() -> None:
    client, server = _stream()
    cut_c, cut_s = len(heartbeat(1)) + 7, len(heartbeat_resp(1)) + 5  # inside the second frames
    assert probe(client[cut_c:], b"") == Verdict.YES
    out = events([(True, client[cut_c:]), (False, server[cut_s:])])
    pairs = [(m.is_request, m.key) for m in out if isinstance(m, Message)]
    assert pairs == [(True, 3), (True, 4), (True, 5), (False, 3), (False, 4), (False, 5)]
    # Through the whole pipeline, without the handshake: the flow is still claimed and paired.
    conv = Conversation(cport=40000, sport=9092)
    conv.frames = [(t, f) for t, f in conv.send(True, client[cut_c:]).send(False, server[cut_s:]).frames]
    es = entries_of(conv)
    assert [(e["stream"], e["status"], e["error"]) for e in es] == [
        ("3", 0, None),
        ("4", 0, None),
        ("5", 0, None),
    ]


def test_a_gap_inside_a_frame_flags_it_and_one_across_frames_resyncs() -> None:
    client, server = _stream()
    n = len(heartbeat(1))
    s = KafkaSession(SessionConfig())
    out = s.feed(True, client[: n + 20], 0)
    out += s.gap(True, 5, 0)  # inside the second request
    out += s.feed(True, client[n + 25 :], 0)
    msgs = [m for m in out if isinstance(m, Message)]
    assert [(m.key, m.truncated) for m in msgs] == [(1, False), (2, True), (3, False), (4, False), (5, False)]
    s = KafkaSession(SessionConfig())
    out = s.feed(True, client[: n + 20], 0) + s.gap(True, 2 * n, 0) + s.feed(True, client[3 * n + 20 :], 0)
    assert [m.key for m in out if isinstance(m, Message)] == [1, 2, 5]  # 2 kept its head; 3, 4 lost


def test_two_holes_in_one_frame_the_second_ending_it_leave_the_next_frame_whole() -> None:
    # The fuzzer's finding: a hole inside a frame leaves the rest of that frame to drop; a second hole
    # that ended exactly at the frame's end left that drop pending, which then ate the next frame (and
    # read a frame head from nothing: a struct.error out of `feed`).
    big = produce(1, "orders", batch([record(0, None, b"x" * 4000)]))
    s = KafkaSession(SessionConfig())
    out = s.feed(True, big[:100], 0)
    out += s.gap(True, 1000, 0)  # inside the frame
    out += s.gap(True, len(big) - 1100, 0)  # the rest of it, to its last byte
    out += s.feed(True, heartbeat(2) + heartbeat(3), 0)
    msgs = [m for m in out if isinstance(m, Message)]
    assert [(m.key, m.truncated) for m in msgs] == [(1, True), (2, False), (3, False)]


def test_truncated_frames_lying_lengths_and_garbage_never_raise() -> None:
    # A frame cut by the end of the capture: its head is kept and flagged.
    (cut,) = events([(True, produce(1, "orders", batch([record(0, None, b"x" * 100)]))[:60])])
    assert isinstance(cut, Message) and cut.truncated and cut.fields["api"] == "Produce"
    # An array claiming a billion topics inside a small frame: flagged malformed, header kept.
    lying = request(3, 12, 2, uvarint(1_000_000_000) + b"\x00")
    (m,) = events([(True, lying)])
    assert isinstance(m, Message) and m.fields["malformed"] and m.fields["api"] == "Metadata"
    # A record batch whose length runs past its record set: a partial batch, not counted (a Fetch
    # response's last batch often is one), after the whole batches before it.
    whole = batch([record(0, None, b"abc")])
    liar = whole[:8] + i32(10_000) + whole[12:]
    (m,) = events([(True, produce(1, "orders", whole + liar))])
    assert isinstance(m, Message)
    part = m.fields["topics"][0]["partitions"][0]
    assert part["record_count"] == 1 and part["partial_batch"] and len(part["records"]) == 1
    # A size prefix beyond any Kafka frame on a stream that is not Kafka at all.
    assert probe(b"GET / HTTP/1.1\r\n\r\n", b"") == Verdict.NO
    assert probe(i32(kafka.MAX_FRAME + 1) + i16(0) + i16(9) + i32(1) + i16(3) + b"abc", b"") == Verdict.NO
    assert probe(i32(40) + i16(9999) + i16(0) + i32(1) + i16(3) + b"abc", b"") == Verdict.NO
    # Garbage on a client direction never yields a frame: the session gives up with a violation.
    out = events([(True, b"\xff" * (kafka.MAX_RESYNC + kafka.RESYNC_CHUNK * 2))])
    assert out and isinstance(out[-1], Violation)


def test_a_compression_bomb_inflates_no_further_than_the_bound() -> None:
    bomb = record(0, None, b"\x00" * (8 * 1024 * 1024))
    (m,) = events([(True, produce(1, "bomb", batch([bomb], codec=1)))], body_cap=1024)
    assert isinstance(m, Message)
    part = m.fields["topics"][0]["partitions"][0]
    assert part["record_count"] == 1 and "records" not in part  # the record ends past the bound


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40))
def test_any_chunking_of_the_same_bytes_gives_the_same_messages(cuts: list[int]) -> None:
    client, server = _stream()
    client += produce(9, "orders", batch([record(i, b"k", b"v" * 30) for i in range(4)], codec=1))
    whole = [(m.key, m.is_request, m.fields) for m in events([(True, client), (False, server)])]
    chunks: list[tuple[bool, bytes]] = []
    for from_client, data in ((True, client), (False, server)):
        pos, i = 0, 0
        while pos < len(data):
            step = cuts[i % len(cuts)]
            chunks.append((from_client, data[pos : pos + step]))
            pos += step
            i += 1
    assert [(m.key, m.is_request, m.fields) for m in events(chunks)] == whole


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600), st.integers(min_value=0, max_value=2000))
def test_random_bytes_never_raise(client: bytes, server: bytes, hole: int) -> None:
    probe(client, server)
    probe(server, client)
    s = KafkaSession(SessionConfig(body_cap=256))
    s.feed(True, heartbeat(1) + client, 0)
    s.feed(False, server, 0)
    s.gap(False, hole, 0)
    s.feed(False, heartbeat_resp(1) + server, 0)
    s.gap(True, hole, 0)
    s.feed(True, client, 0)
    s.close(0)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=8))
def test_flipped_bytes_inside_real_frames_never_raise(at: int, junk: bytes) -> None:
    for from_client, hexed in JAVA_CLIENT:
        raw = bytes.fromhex(hexed)
        pos = at % len(raw)
        events([(from_client, raw[:pos] + junk + raw[pos + len(junk) :])])


# ---- KFL --------------------------------------------------------------------------------------------


def test_kfl_selects_kafka_entries_by_topic_api_key_and_client_id() -> None:
    conv = Conversation(sport=9092).handshake()
    conv.send(True, produce(7, "orders", batch([record(0, None, b"x")]))).send(False, produce_ok(7, "orders"))
    conv.send(True, heartbeat(8)).send(False, heartbeat_resp(8)).close()
    es = entries_of(conv)
    for query, expected in [
        ('kafka && kafka_topic == "orders"', ["Produce"]),
        ('"orders" in kafka_topics', ["Produce"]),
        ("kafka && kafka_api_key == 12", ["Heartbeat"]),
        ('kafka_client_id == "orders-svc" && status_code == 0', ["Produce", "Heartbeat"]),
    ]:
        match = compile_predicate(parse_query(query))
        assert [e["method"] for e in es if match(e)] == expected, query


def test_the_tracer_names_topic_group_and_client_by_the_messaging_conventions() -> None:
    from wiretide.tracer.spans import describe

    conv = Conversation(sport=9092).handshake()
    conv.send(True, produce(7, "orders", batch([record(0, None, b"x")]))).send(False, produce_ok(7, "orders"))
    conv.send(True, heartbeat(8)).send(False, heartbeat_resp(8, error=27)).close()
    produced, beat = entries_of(conv)
    attrs = describe(produced).attributes
    assert attrs["messaging.system"] == "kafka" and attrs["messaging.operation.name"] == "Produce"
    assert attrs["messaging.destination.name"] == "orders" and attrs["messaging.operation.type"] == "send"
    assert attrs["messaging.client.id"] == "orders-svc"
    shown = describe(beat)
    assert shown.attributes["messaging.consumer.group.name"] == "billing"
    assert "messaging.destination.name" not in shown.attributes  # a group is not a destination
    assert shown.server_error == "REBALANCE_IN_PROGRESS"

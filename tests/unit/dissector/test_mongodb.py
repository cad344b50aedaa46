"""MongoDB wire transcripts over real BSON bytes (encoded by the driver's own `bson`): OP_MSG commands
paired with their replies by requestID, document sequences counted, `ok: 0` as an error entry, auth
credentials redacted, moreToCome standalone, legacy OP_QUERY/OP_REPLY, OP_COMPRESSED (zlib, snappy),
detection by content, and bad input (truncated frames, lying lengths, unknown opcodes, random bytes)."""

from __future__ import annotations

import contextlib
import struct
import zlib
from typing import Any

import bson
import cramjam
from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.common import protocols
from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import mongodb
from wiretide.dissector.protocols.mongodb import MongoSession, probe, read_document
from wiretide.dissector.redact import MARKER
from wiretide.dissector.registry import default_registry

from .builders import Conversation


def header(length: int, rid: int, to: int, opcode: int) -> bytes:
    return struct.pack("<iiii", length, rid, to, opcode)


def op_msg(rid: int, to: int, body: dict[str, Any], flags: int = 0, **seqs: list[dict[str, Any]]) -> bytes:
    payload = struct.pack("<I", flags) + b"\x00" + bson.encode(body)
    for ident, docs in seqs.items():
        raw = ident.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        payload += b"\x01" + struct.pack("<i", 4 + len(raw)) + raw
    return header(16 + len(payload), rid, to, 2013) + payload


def op_query(rid: int, ns: str, query: dict[str, Any]) -> bytes:
    payload = struct.pack("<i", 0) + ns.encode() + b"\x00" + struct.pack("<ii", 0, -1) + bson.encode(query)
    return header(16 + len(payload), rid, 0, 2004) + payload


def op_reply(rid: int, to: int, *docs: dict[str, Any], flags: int = 0) -> bytes:
    payload = struct.pack("<iqii", flags, 0, 0, len(docs)) + b"".join(bson.encode(d) for d in docs)
    return header(16 + len(payload), rid, to, 1) + payload


def compressed(message: bytes, compressor: int) -> bytes:
    _, rid, to, opcode = struct.unpack_from("<iiii", message)
    inner = message[16:]
    packed = zlib.compress(inner) if compressor == 2 else bytes(cramjam.snappy.compress_raw(inner))
    payload = struct.pack("<iiB", opcode, len(inner), compressor) + packed
    return header(16 + len(payload), rid, to, 2012) + payload


def entries(*turns: tuple[bool, bytes], port: int = 27017) -> list[dict[str, Any]]:
    conv = Conversation(sport=port)
    conv.handshake()
    for from_client, data in turns:
        conv.send(from_client, data)
    conv.close()
    p = Pipeline(default_registry())
    return [e for e in p.feed(conv.columns()) + p.finish() if e["protocol"] != "tcp"]


FIND = op_msg(7, 0, {"find": "orders", "filter": {"sku": "a", "qty": {"$gt": 1}}, "$db": "shop"})
FOUND = op_msg(
    90,
    7,
    {
        "cursor": {"firstBatch": [{"sku": "a"}, {"sku": "a", "qty": 3}], "id": 0, "ns": "shop.orders"},
        "ok": 1.0,
    },
)


def test_find_insert_and_a_failed_aggregate_become_paired_entries() -> None:
    insert = op_msg(8, 0, {"insert": "orders", "$db": "shop"}, documents=[{"sku": "a"}, {"sku": "b"}])
    inserted = op_msg(91, 8, {"n": 2, "ok": 1.0})
    agg = op_msg(9, 0, {"aggregate": "orders", "pipeline": [{"$bogus": 1}], "cursor": {}, "$db": "shop"})
    failed = op_msg(92, 9, {"ok": 0.0, "errmsg": "Unrecognized pipeline stage name: '$bogus'",
                            "code": 40324, "codeName": "Location40324"})  # fmt: skip
    found = entries(
        (True, FIND), (False, FOUND), (True, insert), (False, inserted), (True, agg), (False, failed)
    )
    assert [(e["method"], e["path"], e["status"], e["summary"][:22]) for e in found] == [
        ("find", "shop.orders", 0, "find shop.orders"),
        ("insert", "shop.orders", 0, "insert shop.orders"),
        ("aggregate", "shop.orders", 40324, "aggregate shop.orders "),
    ]
    find, ins, bad = found
    assert find["request"]["filter"] == {"sku": "a", "qty": {"$gt": 1}}
    assert find["response"] == {"op": "OP_MSG", "ok": 1, "cursor_id": 0, "ns": "shop.orders", "batch": 2}
    assert ins["request"]["documents"] == {"documents": 2} and ins["response"]["n"] == 2
    assert bad["error"] == {"type": "Location40324", "message": "Unrecognized pipeline stage name: '$bogus'"}
    assert bad["response"]["error"]["code"] == 40324 and protocols.is_error(bad)
    assert not protocols.is_error(find) and protocols.status_text(find) == "0"


def test_replies_pair_by_response_to_even_out_of_order() -> None:
    a = op_msg(1, 0, {"count": "a", "$db": "d"})
    b = op_msg(2, 0, {"count": "b", "$db": "d"})
    found = entries(
        (True, a + b), (False, op_msg(11, 2, {"n": 5, "ok": 1}) + op_msg(10, 1, {"n": 4, "ok": 1}))
    )
    assert sorted((e["path"], e["response"]["n"]) for e in found) == [("d.a", 4), ("d.b", 5)]


def test_ok_zero_without_a_code_is_a_command_failed_error() -> None:
    found = entries((True, FIND), (False, op_msg(90, 7, {"ok": 0, "errmsg": "boom"})))
    assert found[0]["status"] == -1 and found[0]["error"]["type"] == "CommandFailed"
    assert protocols.status_text(found[0]) == "CommandFailed (-1)"


def test_sasl_and_create_user_credentials_never_reach_an_entry() -> None:
    sasl = op_msg(3, 0, {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": b"n,,n=bob,r=s3cretnonce",
                         "$db": "admin"})  # fmt: skip
    reply = op_msg(30, 3, {"conversationId": 1, "done": False, "payload": b"r=s3cretnonce,s=salt", "ok": 1})
    create = op_msg(4, 0, {"createUser": "bob", "pwd": "hunter2-pw", "roles": [], "$db": "admin"})
    found = entries((True, sasl), (False, reply), (True, create), (False, op_msg(31, 4, {"ok": 1})))
    text = repr(found)
    assert "s3cret" not in text and "hunter2" not in text and "bob,r" not in text
    assert found[0]["request"]["payload"] == MARKER == mongodb.REDACTED
    assert found[0]["redacted"] == ["request.payload"] and found[1]["redacted"] == ["request.pwd"]
    assert found[0]["request"]["mechanism"] == "SCRAM-SHA-256" and "collection" not in found[1]["request"]


def test_a_more_to_come_request_is_an_entry_of_its_own() -> None:
    fire = op_msg(5, 0, {"insert": "logs", "$db": "d"}, flags=mongodb.MORE_TO_COME, documents=[{"x": 1}])
    found = entries((True, fire), (True, FIND), (False, FOUND))
    assert [(e["method"], e["error"]) for e in found] == [("insert", None), ("find", None)]
    assert found[0]["request"]["flags"] == ["moreToCome"] and found[0]["response"] is None


def test_legacy_op_query_command_and_collection_query_with_op_reply() -> None:
    hello = op_query(1, "admin.$cmd", {"isMaster": 1, "client": {"driver": {"name": "x"}}})
    query = op_query(2, "shop.orders", {"$query": {"sku": "a"}, "$orderby": {"qty": 1}})
    failed = op_reply(21, 2, {"$err": "bad query", "code": 2}, flags=mongodb.QUERY_FAILURE)
    found = entries((True, hello), (False, op_reply(20, 1, {"ismaster": True, "ok": 1.0})), (True, query),
                    (False, failed))  # fmt: skip
    assert [(e["method"], e["path"], e["status"]) for e in found] == [
        ("isMaster", "admin", 0), ("query", "shop.orders", 2)
    ]  # fmt: skip
    assert found[0]["request"]["op"] == "OP_QUERY" and found[0]["response"]["ok"] == 1
    assert found[1]["request"]["filter"] == {"sku": "a"} and found[1]["error"]["type"] == "BadValue"


def test_op_compressed_counts_as_the_message_it_wraps() -> None:
    found = entries((True, compressed(FIND, 2)), (False, compressed(FOUND, 1)))
    assert [(e["method"], e["path"], e["status"]) for e in found] == [("find", "shop.orders", 0)]
    assert found[0]["request"]["op"] == "OP_MSG" and found[0]["request"]["compressor"] == "zlib"
    assert found[0]["response"]["batch"] == 2 and found[0]["response"]["compressor"] == "snappy"


def test_detected_on_any_port_by_its_header_and_not_from_other_bytes() -> None:
    assert entries((True, FIND), (False, FOUND), port=40123)[0]["protocol"] == "mongodb"
    assert probe(FIND, b"") == Verdict.YES and probe(FIND[:10], b"") == Verdict.MAYBE
    assert probe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"") == Verdict.NO
    assert probe(op_msg(1, 5, {"ping": 1}), b"") == Verdict.NO  # a client's first message answers nothing
    assert probe(b"", FOUND) == Verdict.YES


def test_large_documents_are_capped_and_batches_counted_without_decoding() -> None:
    big = op_msg(7, 0, {"find": "t", "filter": {f"k{i}": "v" * 1100 for i in range(300)}, "$db": "d"})
    many = op_msg(90, 7, {"cursor": {"firstBatch": [{"i": i} for i in range(20000)], "id": 0}, "ok": 1})
    found = entries((True, big), (False, many))
    flt = found[0]["request"]["filter"]
    assert len(flt) == mongodb.MAX_ELEMENTS + 1 and flt["…"] == "truncated"
    assert found[0]["path"] == "d.t"
    assert all(len(v) <= mongodb.MAX_STRING + 1 for k, v in flt.items() if k != "…")
    assert found[0]["response"]["batch"] == 20000


def test_a_message_beyond_the_hold_size_keeps_its_head_and_the_stream_continues() -> None:
    huge = op_msg(7, 0, {"insert": "t", "$db": "d"}, documents=[{"blob": "x" * 600_000}] * 4)
    found = entries((True, huge), (False, op_msg(90, 7, {"n": 4, "ok": 1})), (True, FIND), (False, FOUND))
    assert [(e["method"], e["path"]) for e in found] == [("insert", "d.t"), ("find", "shop.orders")]
    assert found[0]["size"]["request"] == len(huge) and found[0]["error"]["type"] == "dissection"


def test_a_cut_message_keeps_the_command_it_begins_with() -> None:
    big = op_msg(7, 0, {"find": "t", "$db": "d", "filter": {"blob": "x" * 2_000_000}})
    found = entries((True, big), (False, op_msg(90, 7, {"cursor": {"firstBatch": [], "id": 0}, "ok": 1})))
    assert [(e["method"], e["path"], e["response"]["batch"]) for e in found] == [("find", "d.t", 0)]


def feed_all(chunks: list[bytes], client: bool = True) -> list[Any]:
    s = MongoSession(SessionConfig())
    out: list[Any] = []
    for c in chunks:
        out += s.feed(client, c, 1)
    return out


def test_lying_lengths_truncated_frames_and_unknown_opcodes_are_violations_not_exceptions() -> None:
    assert isinstance(feed_all([header(10**9, 1, 0, 2013) + b"\x00" * 8])[0], Violation)
    assert isinstance(feed_all([header(30, 1, 0, 9999) + b"\x00" * 14])[0], Violation)
    lying_bson = bytearray(FIND)
    lying_bson[21:25] = struct.pack("<i", 5000)  # the body document claims more than the message holds
    assert isinstance(feed_all([bytes(lying_bson)])[0], Violation)
    assert feed_all([FIND[:-3]]) == []  # need more bytes, not an error
    s = MongoSession(SessionConfig())
    assert isinstance(s.gap(True, 100, 1)[0], Violation) and s.feed(True, FIND, 2) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=30))
def test_any_chunking_of_the_same_bytes_gives_the_same_messages(cuts: list[int]) -> None:
    stream = FIND + op_msg(8, 0, {"insert": "o", "$db": "s"}, documents=[{"a": 1}] * 3) + compressed(FIND, 2)
    chunks, i = [], 0
    for n in cuts:
        chunks.append(stream[i : i + n])
        i += n
    chunks.append(stream[i:])
    whole = [m.fields for m in feed_all([stream]) if isinstance(m, Message)]
    assert len(whole) == 3
    assert [m.fields for m in feed_all(chunks) if isinstance(m, Message)] == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(data: bytes, client: bool) -> None:
    probe(data, b"")
    probe(b"", data)
    MongoSession(SessionConfig()).feed(client, header(16 + len(data), 1, 0, 2013) + data, 1)
    MongoSession(SessionConfig()).feed(client, data, 1)
    with contextlib.suppress(mongodb.BsonError):
        read_document(data)


REPLIES: list[dict[str, Any]] = [
    {"cursor": {"firstBatch": [{"_id": i, "v": [1.5, {"x": "y"}]} for i in range(40)], "id": 7, "ns": "d.c"},
     "ok": 1.0},
    {"n": 1, "nModified": 1, "ok": 1.0, "$clusterTime": {"clusterTime": bson.Timestamp(1, 2)}},
    {"ok": 0.0, "errmsg": "E11000", "code": 11000, "codeName": "DuplicateKey"},
    {"writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup", "keyValue": {"a": 1}}], "n": 0, "ok": 1},
    {"cursor": {"id": 0, "nextBatch": [{"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}]}, "ok": 1},
    {f"k{i}": i for i in range(300)} | {"ok": 1},  # beyond the element budget: ok is not reached
    {"cursor": {"firstBatch": list(range(400)), "id": 3}, "ok": 1},  # the budget ends inside the cursor
    {"cursor": "not a document", "ok": 1, "$err": "legacy"},
]  # fmt: skip


def test_a_reply_reads_only_what_its_entry_shows_and_shows_the_same() -> None:
    for body in REPLIES:
        raw = bson.encode(body)
        whole, end = read_document(raw)
        kept, kept_end = mongodb.read_reply(raw, 0)
        assert kept_end == end == len(raw)
        assert mongodb.reply_fields(kept, 5) == mongodb.reply_fields(whole, 5), body
        assert set(kept) <= set(mongodb.REPLY_KEEP) | {"…"}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REPLIES), st.integers(0, 10_000), st.binary(min_size=1, max_size=6))
def test_a_damaged_reply_fails_the_same_whether_read_whole_or_in_part(body: dict[str, Any], at: int,
                                                                       junk: bytes) -> None:  # fmt: skip
    raw = bytearray(bson.encode(body))
    at %= len(raw)
    raw[at : at + len(junk)] = junk
    data = bytes(raw)

    def outcome(read: Any) -> Any:
        try:
            doc, end = read(data, 0)
        except mongodb.BsonError as exc:
            return str(exc)
        return mongodb.reply_fields(doc, None), end

    assert outcome(mongodb.read_reply) == outcome(read_document)

"""AMQP 0-9-1: transcripts encoded by pika's own frame marshalling (client and broker methods), the
real captures in shared/pcaps/amqp against tshark's method counts, chunking and fuzz properties, and
hostile input (truncated frames, lying sizes, unknown methods)."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import files_or_missing, require_pcaps
from wiretide.common.protocols import client_error, is_error, status_text
from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols.amqp import PROTOCOL_HEADER, AmqpSession, probe
from wiretide.dissector.registry import default_registry

from .builders import Conversation
from .pcaps import PCAPS, read_columns
from .test_golden_pcaps import needs_tshark, tshark

# pika's own marshalling writes the frames (both the client's methods and the broker's).
pf = pytest.importorskip("pika.frame")
ps = pytest.importorskip("pika.spec")

PASSWORD = "s3cret-pw"


def m(channel: int, method: Any) -> bytes:
    return bytes(pf.Method(channel, method).marshal())


def content(channel: int, method: Any, body: bytes, props: Any = None, frame_max: int = 4096) -> bytes:
    """A content-bearing method, its header and its body split into frames of at most frame_max - 8."""
    out = m(channel, method) + bytes(pf.Header(channel, len(body), props or ps.BasicProperties()).marshal())
    step = frame_max - 8
    for i in range(0, len(body), step):
        out += bytes(pf.Body(channel, body[i : i + step]).marshal())
    return out


def handshake() -> list[tuple[bool, bytes]]:
    return [
        (True, bytes(pf.ProtocolHeader().marshal())),
        (False, m(0, ps.Connection.Start(server_properties={"product": "RabbitMQ", "version": "3.10.8"}))),
        (True, m(0, ps.Connection.StartOk(
            client_properties={"product": "pika", "capabilities": {"consumer_cancel_notify": True}},
            mechanism="PLAIN", response=f"\0guest\0{PASSWORD}",
        ))),
        (False, m(0, ps.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))),
        (True, m(0, ps.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60))),
        (True, m(0, ps.Connection.Open(virtual_host="/"))),
        (False, m(0, ps.Connection.OpenOk())),
        (True, m(1, ps.Channel.Open())),
        (False, m(1, ps.Channel.OpenOk())),
    ]  # fmt: skip


def shop() -> list[tuple[bool, bytes]]:
    """Declare, publish two orders, consume and ack them, then a refused redeclare (406)."""
    props = ps.BasicProperties(
        content_type="application/json", delivery_mode=2, headers={"tenant": "acme", "retries": 3},
        message_id="m-1", correlation_id="c-1",
    )  # fmt: skip
    order = b'{"id": 1, "sku": "book"}'
    return [
        *handshake(),
        (True, m(1, ps.Queue.Declare(queue="orders", durable=False))),
        (False, m(1, ps.Queue.DeclareOk(queue="orders", message_count=0, consumer_count=0))),
        (True, content(1, ps.Basic.Publish(exchange="amq.direct", routing_key="orders"), order, props)),
        (True, content(1, ps.Basic.Publish(exchange="", routing_key="orders"), b"x" * 10_000)),
        (True, m(1, ps.Basic.Consume(queue="orders", consumer_tag="ctag-1"))),
        (False, m(1, ps.Basic.ConsumeOk(consumer_tag="ctag-1"))),
        (False, content(1, ps.Basic.Deliver("ctag-1", 1, False, "amq.direct", "orders"), order, props)),
        (False, content(1, ps.Basic.Deliver("ctag-1", 2, False, "", "orders"), b"x" * 10_000)),
        (True, m(1, ps.Basic.Ack(delivery_tag=1))),
        (True, m(1, ps.Basic.Ack(delivery_tag=2))),
        (True, m(1, ps.Queue.Declare(queue="orders", durable=True))),
        (False, m(1, ps.Channel.Close(406, "PRECONDITION_FAILED - inequivalent arg 'durable'", 50, 10))),
        (True, m(1, ps.Channel.CloseOk())),
        (True, m(0, ps.Connection.Close(200, "Normal shutdown", 0, 0))),
        (False, m(0, ps.Connection.CloseOk())),
    ]


def run(script: list[tuple[bool, bytes]], mss: int = 1400, cap: int = 64 * 1024) -> list[dict[str, Any]]:
    conv = Conversation(sport=5672).handshake()
    for from_client, data in script:
        conv.send(from_client, data, mss)
    conv.close()
    p = Pipeline(default_registry())
    if cap != 64 * 1024:
        p.config = SessionConfig(body_cap=cap)
    return [e for e in p.feed(conv.columns()) + p.finish() if e["protocol"] == "amqp"]


def test_the_shop_transcript_reads_as_the_client_did_it() -> None:
    entries = run(shop())
    assert [(e["stream"], e["method"], e["response"] and e["response"]["method"]) for e in entries] == [
        ("0", "connection.start", "connection.start-ok"),
        ("0", "connection.tune", "connection.tune-ok"),
        ("0", "connection.open", "connection.open-ok"),
        ("1", "channel.open", "channel.open-ok"),
        ("1", "queue.declare", "queue.declare-ok"),
        ("1", "basic.publish", None),
        ("1", "basic.publish", None),
        ("1", "basic.consume", "basic.consume-ok"),
        ("1", "basic.deliver", "basic.ack"),
        ("1", "basic.deliver", "basic.ack"),
        ("1", "queue.declare", "channel.close"),
        ("1", "channel.close-ok", None),
        ("0", "connection.close", "connection.close-ok"),
    ]
    publish = entries[5]
    assert publish["path"] == "amq.direct/orders"
    assert publish["summary"] == "basic.publish amq.direct → orders (24 B)"
    assert publish["error"] is None and publish["version"] == "0-9-1"
    props = publish["request"]["properties"]
    assert props["content_type"] == "application/json" and props["delivery_mode"] == 2
    assert props["headers"] == {"tenant": "acme", "retries": 3}
    assert props["message_id"] == "m-1" and props["correlation_id"] == "c-1"
    assert publish["request"]["body"]["encoding"] == "json"
    assert publish["request"]["body"]["content"] == '{"id": 1, "sku": "book"}'
    # A 10 000-byte body in three body frames is one message.
    assert entries[6]["path"] == "(default)/orders" and entries[6]["request"]["body"]["size"] == 10_000
    deliver = entries[9]
    assert deliver["request"]["arguments"]["delivery_tag"] == 2
    assert deliver["response"]["arguments"]["delivery_tag"] == 2 and deliver["error"] is None
    refused = entries[10]
    assert refused["status"] == 406 and refused["path"] == "orders"
    assert status_text(refused) == "PRECONDITION_FAILED (406)"
    assert is_error(refused) and client_error(refused) == "PRECONDITION_FAILED"
    assert not any(is_error(e) for e in entries if e is not refused)
    assert entries[-1]["status"] == 200


def test_plain_credentials_never_reach_an_entry() -> None:
    entries = run(shop())
    start_ok = entries[0]["response"]
    assert start_ok["arguments"]["response"] == {"size": 16, "redacted": True, "user": "guest"}
    assert start_ok["arguments"]["mechanism"] == "PLAIN"
    assert PASSWORD not in repr(entries)


def test_deliveries_settle_with_a_multiple_ack_and_no_ack_consumers_stand_alone() -> None:
    script = [
        *handshake(),
        (True, m(1, ps.Basic.Consume(queue="q", consumer_tag="manual"))),
        (False, m(1, ps.Basic.ConsumeOk(consumer_tag="manual"))),
        (True, m(1, ps.Basic.Consume(queue="q", consumer_tag="auto", no_ack=True))),
        (False, m(1, ps.Basic.ConsumeOk(consumer_tag="auto"))),
        *[(False, content(1, ps.Basic.Deliver("manual", t, False, "", "q"), b"m")) for t in (1, 2, 3)],
        (False, content(1, ps.Basic.Deliver("auto", 4, False, "", "q"), b"a")),
        (True, m(1, ps.Basic.Ack(delivery_tag=2, multiple=True))),
        (True, m(1, ps.Basic.Nack(delivery_tag=3, requeue=False))),
    ]
    delivers = [e for e in run(script) if e["method"] == "basic.deliver"]
    got = [
        (e["request"]["arguments"]["delivery_tag"], e["response"] and e["response"]["method"])
        for e in delivers
    ]
    assert sorted(got, key=lambda g: g[0]) == [
        (1, "basic.ack"),
        (2, "basic.ack"),
        (3, "basic.nack"),
        (4, None),
    ]
    assert all(e["error"] is None for e in delivers)


def test_publisher_confirms_pair_each_publish_with_the_brokers_ack() -> None:
    script = [
        *handshake(),
        (True, m(1, ps.Confirm.Select())),
        (False, m(1, ps.Confirm.SelectOk())),
        *[(True, content(1, ps.Basic.Publish(exchange="ex", routing_key=f"k{i}"), b"p")) for i in (1, 2)],
        (False, m(1, ps.Basic.Ack(delivery_tag=2, multiple=True))),
    ]
    pubs = [e for e in run(script) if e["method"] == "basic.publish"]
    assert [(e["path"], e["response"]["method"]) for e in pubs] == [
        ("ex/k1", "basic.ack"),
        ("ex/k2", "basic.ack"),
    ]


def test_a_refused_vhost_is_the_open_requests_error() -> None:
    script = [*handshake()[:6], (False, m(0, ps.Connection.Close(530, "NOT_ALLOWED - vhost /bad", 10, 40)))]
    (*_, opened) = run(script)
    assert opened["method"] == "connection.open" and opened["status"] == 530
    assert status_text(opened) == "NOT_ALLOWED (530)" and is_error(opened)


def test_an_unroutable_mandatory_publish_comes_back_as_a_return() -> None:
    script = [
        *handshake(),
        (True, content(1, ps.Basic.Publish(exchange="ex", routing_key="nowhere", mandatory=True), b"lost")),
        (False, content(1, ps.Basic.Return(312, "NO_ROUTE", "ex", "nowhere"), b"lost")),
    ]
    ret = run(script)[-1]
    assert ret["method"] == "basic.return" and ret["status"] == 312 and ret["request"]["sender"] == "server"
    assert ret["summary"] == "basic.return ex → nowhere (4 B) 312 NO_ROUTE"


def test_bodies_beyond_the_cap_keep_the_cap_and_count_the_rest() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB in 128 KiB frames: streamed, not buffered
    script = [
        *handshake(),
        (True, content(1, ps.Basic.Publish(exchange="", routing_key="q"), big, None, 131072)),
    ]
    body = run(script, cap=1000)[-1]["request"]["body"]
    assert body["size"] == len(big) and body["truncated"]


def test_field_tables_decode_rabbitmq_types() -> None:
    # Every type RabbitMQ writes (0-9-1 errata): t b B s u I i l f d D S T F A V x.
    items = [
        (b"t", b"t\x01"), (b"b", b"b\xff"), (b"B", b"B\xff"), (b"s", b"s\xff\xfe"), (b"u", b"u\xff\xfe"),
        (b"I", b"I" + struct.pack("!i", -5)), (b"i", b"i" + struct.pack("!I", 5)),
        (b"l", b"l" + struct.pack("!q", -7)), (b"f", b"f" + struct.pack("!f", 1.5)),
        (b"d", b"d" + struct.pack("!d", 2.25)), (b"D", b"D\x02" + struct.pack("!i", 12345)),
        (b"S", b"S" + struct.pack("!I", 2) + b"hi"), (b"T", b"T" + struct.pack("!Q", 1700000000)),
        (b"F", b"F" + struct.pack("!I", 4) + b"\x01kt\x01"),
        (b"A", b"A" + struct.pack("!I", 4) + b"t\x01VV"), (b"V", b"V"),
        (b"x", b"x" + struct.pack("!I", 3) + b"\x00\x01\x02"),
    ]  # fmt: skip
    table = b"".join(bytes([len(k)]) + k + v for k, v in items)
    start = bytes(pf.Method(0, ps.Connection.Start()).marshal())
    # Replace pika's (empty) server-properties table with ours.
    payload = struct.pack("!HHBB", 10, 10, 0, 9) + struct.pack("!I", len(table)) + table
    payload += struct.pack("!I", 5) + b"PLAIN" + struct.pack("!I", 5) + b"en_US"
    frame = struct.pack("!BHI", 1, 0, len(payload)) + payload + b"\xce"
    assert start[:1] == frame[:1]
    (msg,) = AmqpSession(SessionConfig()).feed(False, frame, 1)
    assert isinstance(msg, Message)
    got = msg.fields["arguments"]["server_properties"]
    assert got == {
        "t": True, "b": -1, "B": 255, "s": -2, "u": 65534, "I": -5, "i": 5, "l": -7, "f": 1.5,
        "d": 2.25, "D": "123.45", "S": "hi", "T": 1700000000, "F": {"k": True}, "A": [True, None, None],
        "V": None, "x": "AAEC",
    }  # fmt: skip


def test_an_unknown_field_type_is_reported_not_raised() -> None:
    table = b"\x01kZ\x00"
    payload = struct.pack("!HHBB", 10, 10, 0, 9) + struct.pack("!I", len(table)) + table
    payload += struct.pack("!I", 0) + struct.pack("!I", 0)
    frame = struct.pack("!BHI", 1, 0, len(payload)) + payload + b"\xce"
    (msg,) = AmqpSession(SessionConfig()).feed(False, frame, 1)
    assert isinstance(msg, Message)
    assert msg.fields["arguments"]["server_properties"]["_reason"] == "unknown field type 0x5a"


# ---- detection -----------------------------------------------------------------------------


def test_probe_knows_the_header_and_mid_stream_frames_by_their_direction() -> None:
    publish = content(1, ps.Basic.Publish(exchange="e", routing_key="k"), b"b")
    deliver = content(1, ps.Basic.Deliver("c", 1, False, "e", "k"), b"b")
    assert probe(PROTOCOL_HEADER, b"") == Verdict.YES
    assert probe(PROTOCOL_HEADER[:4], b"") == Verdict.MAYBE
    assert probe(publish, b"") == Verdict.YES
    assert probe(b"", deliver) == Verdict.YES
    assert probe(deliver, b"") == Verdict.NO  # a client never delivers: the other orientation is right
    assert probe(m(1, ps.Basic.Ack(delivery_tag=1)), b"") == Verdict.MAYBE  # both sides ack
    assert probe(b"GET / HTTP/1.1\r\n", b"") == Verdict.NO
    assert probe(b"AMQP\x01\x01\x00\x09", b"") == Verdict.NO  # AMQP 0-9 / 0-8 / 1.0 are not this


def test_a_connection_picked_up_mid_stream_is_found_on_any_port() -> None:
    conv = Conversation(sport=15999)  # no SYN, no protocol header, no usual port
    conv.send(False, content(1, ps.Basic.Deliver("c", 7, False, "ex", "rk"), b"late"))
    conv.send(True, m(1, ps.Basic.Ack(delivery_tag=7)))
    p = Pipeline(default_registry())
    (e,) = [x for x in p.feed(conv.columns()) + p.finish() if x["protocol"] != "tcp"]
    assert (
        e["protocol"] == "amqp" and e["method"] == "basic.deliver" and e["response"]["method"] == "basic.ack"
    )
    assert e["src"]["port"] == conv.cport


# ---- real captures ------------------------------------------------------------------------


def _amqp_pcaps() -> list[Path]:
    return files_or_missing(sorted((PCAPS / "amqp").glob("*.pcap*")))


def method_counts(entries: list[dict[str, Any]]) -> Counter[tuple[int, int]]:
    """Each method frame once: a multiple ack settling several deliveries is one frame."""
    seen: set[int] = set()
    out: Counter[tuple[int, int]] = Counter()
    for e in entries:
        for side in (e["request"], e["response"]):
            if side is None or id(side) in seen:
                continue
            seen.add(id(side))
            out[(side["class_id"], side["method_id"])] += 1
    return out


def tshark_counts(path: Path) -> Counter[tuple[int, int]]:
    out: Counter[tuple[int, int]] = Counter()
    text = tshark(path, "-Y", "amqp", "-T", "fields", "-e", "amqp.method.class", "-e", "amqp.method.method")
    for line in text.splitlines():
        classes, _, methods = line.partition("\t")
        if classes:
            for c, mm in zip(classes.split(","), methods.split(","), strict=True):
                out[(int(c), int(mm))] += 1
    return out


@needs_tshark
@pytest.mark.parametrize("path", _amqp_pcaps(), ids=lambda p: p.name)
def test_real_captures_match_tsharks_method_counts(path: Path) -> None:
    require_pcaps(path)
    p = Pipeline(default_registry())
    entries = p.feed(read_columns(path)) + p.finish()
    ours = [e for e in entries if e["protocol"] == "amqp"]
    assert ours and not any(
        e["protocol"] == "tcp" and e["error"] and e["error"]["type"] == "dissection" for e in entries
    )
    assert method_counts(ours) == tshark_counts(path)


def test_the_error_capture_shows_the_refused_vhost_and_the_406() -> None:
    path = PCAPS / "amqp" / "deepflow_amqp-error.pcap"
    require_pcaps(path)
    p = Pipeline(default_registry())
    errors = [(e["method"], e["status"]) for e in p.feed(read_columns(path)) + p.finish() if is_error(e)]
    assert errors == [
        ("connection.open", 530), ("connection.open", 530), ("exchange.declare", 406), ("basic.return", 312)
    ]  # fmt: skip


# ---- properties and hostile input ---------------------------------------------------------


def _stream(script: list[tuple[bool, bytes]]) -> tuple[bytes, bytes]:
    return (
        b"".join(d for c, d in script if c),
        b"".join(d for c, d in script if not c),
    )


def _shape(events: list[Any]) -> list[Any]:
    return [
        (type(ev).__name__, ev.fields["method"], ev.key, ev.standalone, ev.size, repr(ev.fields))
        if isinstance(ev, Message)
        else (type(ev).__name__, getattr(ev, "reason", None))
        for ev in events
    ]


def _feed_in_chunks(script: list[tuple[bool, bytes]], cuts: list[int]) -> list[Any]:
    s = AmqpSession(SessionConfig(body_cap=2000))
    out: list[Any] = []
    for from_client, data in script:
        pos = 0
        for c in cuts:
            if 0 < c < len(data) and c > pos:
                out += s.feed(from_client, data[pos:c], 1)
                pos = c
        out += s.feed(from_client, data[pos:], 1)
    return _shape(out + s.close(2))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12_000), max_size=6))
def test_any_chunking_gives_the_same_messages(cuts: list[int]) -> None:
    script = shop()
    assert _feed_in_chunks(script, sorted(cuts)) == _feed_in_chunks(script, [])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600), st.booleans())
def test_random_bytes_never_raise(client: bytes, server: bytes, header: bool) -> None:
    probe(client, server)
    s = AmqpSession(SessionConfig(body_cap=100))
    s.feed(True, (PROTOCOL_HEADER if header else b"") + client, 1)
    s.feed(False, server, 2)
    s.gap(True, 10, 3)
    s.feed(True, client, 4)
    s.close(5)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=4))
def test_mutated_transcripts_never_raise(at: int, junk: bytes) -> None:
    client, server = _stream(shop())
    s = AmqpSession(SessionConfig())
    i = at % len(server)
    s.feed(True, client, 1)
    s.feed(False, server[:i] + junk + server[i + len(junk) :], 2)
    s.close(3)


def _violations(data: bytes, from_client: bool = True) -> list[str]:
    s = AmqpSession(SessionConfig())
    events = s.feed(from_client, PROTOCOL_HEADER + data if from_client else data, 1)
    return [ev.reason for ev in events if isinstance(ev, Violation)]


def test_a_missing_frame_end_is_a_violation() -> None:
    frame = bytearray(m(1, ps.Channel.Open()))
    frame[-1] = 0
    assert _violations(bytes(frame)) == ["amqp: frame end octet missing"]


def test_a_lying_frame_size_is_a_violation_not_a_wait() -> None:
    assert _violations(struct.pack("!BHI", 1, 1, 1 << 30) + b"\x00" * 20) == ["amqp: frame too large"]


def test_a_lying_argument_length_is_a_violation() -> None:
    payload = struct.pack("!HH", 50, 10) + b"\x00\x00" + b"\xff" + b"q"  # queue name claims 255 bytes
    frame = struct.pack("!BHI", 1, 1, len(payload)) + payload + b"\xce"
    assert _violations(frame) == ["amqp: queue.declare: short string past the end"]


def test_an_unknown_method_is_a_violation() -> None:
    payload = struct.pack("!HH", 60, 999)
    assert _violations(struct.pack("!BHI", 1, 1, 4) + payload + b"\xce") == ["amqp: unknown method 60.999"]


def test_content_without_its_method_is_a_violation_from_the_start() -> None:
    header = bytes(pf.Header(1, 3, ps.BasicProperties()).marshal())
    assert _violations(header) == ["amqp: content header without a content method"]


def test_a_truncated_message_at_flow_end_is_kept_and_marked() -> None:
    data = content(1, ps.Basic.Publish(exchange="e", routing_key="k"), b"y" * 5000)
    s = AmqpSession(SessionConfig())
    assert s.feed(True, PROTOCOL_HEADER + data[:3000], 1) == []
    (msg,) = s.close(2)
    assert isinstance(msg, Message) and msg.truncated and msg.fields["body"]["size"] == 5000


def test_spans_name_the_exchange_routing_key_and_delivery_tag() -> None:
    from wiretide.tracer.spans import describe

    entries = run(shop())
    publish = describe(entries[5])
    assert publish.name == "basic.publish amq.direct/orders"
    assert publish.attributes["messaging.system"] == "rabbitmq"
    assert publish.attributes["messaging.destination.name"] == "amq.direct"
    assert publish.attributes["messaging.rabbitmq.destination.routing_key"] == "orders"
    assert describe(entries[6]).attributes["messaging.destination.name"] == ""  # the default exchange
    assert describe(entries[9]).attributes["messaging.rabbitmq.message.delivery_tag"] == 2
    refused = describe(entries[10])
    assert refused.client_error == refused.server_error == "PRECONDITION_FAILED"


# ---- confirm mode picked up mid-stream --------------------------------------------------------

SECOND = 1_000_000_000


def publish(i: int) -> bytes:
    return content(1, ps.Basic.Publish(exchange="", routing_key="orders"), f'{{"n": {i}}}'.encode())


def feed_timed(script: list[tuple[bool, bytes, int]]) -> tuple[AmqpSession, list[tuple[int, Message]]]:
    """Feed a session (no handshake: the capture began mid-stream) at the given capture times; every
    message with the time of the feed that let it out."""
    session = AmqpSession(SessionConfig())
    out: list[tuple[int, Message]] = []
    for from_client, data, ts in script:
        out += [(ts, e) for e in session.feed(from_client, data, ts) if isinstance(e, Message)]
    out += [(-1, e) for e in session.close(script[-1][2]) if isinstance(e, Message)]
    return session, out


def pairs(out: list[tuple[int, Message]]) -> list[tuple[str, int | None]]:
    """Each publish with the delivery tag of the broker ack/nack it paired with (None: alone)."""
    answers = {e.key: e for _, e in out if not e.is_request and e.key is not None}
    got: list[tuple[str, int | None]] = []
    for _, e in out:
        if e.is_request and e.fields["method"] == "basic.publish":
            ans = None if e.standalone else answers.get(e.key)
            tag = None if ans is None else int(ans.fields["arguments"]["delivery_tag"])
            got.append((str(e.fields["body"]["content"]), tag))
    return got


def test_a_confirm_mode_publisher_picked_up_mid_stream_pairs_by_order_then_by_tag() -> None:
    ms = 1_000_000
    script = [
        (True, publish(1), 1 * ms),
        (True, publish(2), 2 * ms),
        (False, m(1, ps.Basic.Ack(delivery_tag=41)), 3 * ms),  # the first ack: publish 1 was #41
        (False, m(1, ps.Basic.Ack(delivery_tag=42)), 4 * ms),
        (True, publish(3), 5 * ms),
        (True, publish(4), 6 * ms),
        (False, m(1, ps.Basic.Nack(delivery_tag=44, multiple=True)), 7 * ms),
    ]
    session, out = feed_timed(script)
    assert pairs(out) == [('{"n": 1}', 41), ('{"n": 2}', 42), ('{"n": 3}', 44), ('{"n": 4}', 44)]
    nacked = {e.key: e.fields["method"] for _, e in out if not e.is_request}
    assert sorted(nacked.values()) == ["basic.ack", "basic.ack", "basic.nack", "basic.nack"]
    assert session.counters["confirms_inferred"] == 1 and session.counters["publishes_unconfirmed"] == 0
    assert all(ts != -1 for ts, _ in out)  # nothing waited for the end of the flow


def test_a_multiple_ack_first_seen_covers_every_earlier_publish() -> None:
    script = [
        *[(True, publish(i), i) for i in (1, 2, 3)],
        (False, m(1, ps.Basic.Ack(delivery_tag=9, multiple=True)), 4),
        (True, publish(4), 5),
        (False, m(1, ps.Basic.Ack(delivery_tag=10)), 6),
    ]
    _, out = feed_timed(script)
    assert pairs(out) == [('{"n": 1}', 9), ('{"n": 2}', 9), ('{"n": 3}', 9), ('{"n": 4}', 10)]


def test_an_ack_of_a_publish_sent_before_the_capture_stands_alone_and_numbers_the_next() -> None:
    script = [
        (False, m(1, ps.Basic.Ack(delivery_tag=7)), 1),
        (True, publish(8), 2),
        (False, m(1, ps.Basic.Ack(delivery_tag=8)), 3),
    ]
    _, out = feed_timed(script)
    assert [e.fields["method"] for _, e in out if e.standalone] == ["basic.ack"]
    assert pairs(out) == [('{"n": 8}', 8)]


def test_publishes_without_confirms_picked_up_mid_stream_go_alone_after_the_wait() -> None:
    from wiretide.dissector.protocols.amqp import CONFIRM_GIVE_UP, CONFIRM_WAIT_NS

    step = CONFIRM_WAIT_NS + SECOND  # each publish long after the previous one, no ack between
    script = [(True, publish(i), i * step) for i in range(1, CONFIRM_GIVE_UP + 3)]
    session, out = feed_timed(script)
    assert all(answer is None for _, answer in pairs(out))
    released = [ts for ts, e in out if e.fields["method"] == "basic.publish"]
    # The first ones wait for the next frame past the wait; once given up, each goes out at once.
    assert released[:CONFIRM_GIVE_UP] == [(i + 1) * step for i in range(1, CONFIRM_GIVE_UP + 1)]
    assert released[CONFIRM_GIVE_UP:] == [(CONFIRM_GIVE_UP + 1) * step, (CONFIRM_GIVE_UP + 2) * step]
    assert session.counters["publishes_unconfirmed"] == CONFIRM_GIVE_UP and not session.provisional


def test_a_broker_ack_after_giving_up_turns_confirm_mode_back_on() -> None:
    from wiretide.dissector.protocols.amqp import CONFIRM_GIVE_UP, CONFIRM_WAIT_NS

    step = CONFIRM_WAIT_NS + SECOND
    n = CONFIRM_GIVE_UP + 1
    script = [(True, publish(i), i * step) for i in range(1, n + 1)]
    script += [
        (False, m(1, ps.Basic.Ack(delivery_tag=30)), (n + 1) * step),  # of publish n, which went alone
        (True, publish(31), (n + 2) * step),
        (False, m(1, ps.Basic.Ack(delivery_tag=31)), (n + 2) * step + 1),
    ]
    _, out = feed_timed(script)
    assert pairs(out)[-1] == ('{"n": 31}', 31)


def test_a_channel_opened_in_view_without_confirm_select_publishes_alone_at_once() -> None:
    script = [
        (True, m(1, ps.Channel.Open()), 1),
        (False, m(1, ps.Channel.OpenOk()), 2),
        (True, publish(1), 3),
    ]
    _, out = feed_timed(script)
    assert [(ts, e.fields["method"], e.standalone) for ts, e in out][-1] == (3, "basic.publish", True)


def test_held_publishes_of_a_mid_stream_channel_are_bounded_and_flushed_at_close() -> None:
    from wiretide.dissector.protocols.amqp import MAX_UNSETTLED

    script = [(True, publish(i), i) for i in range(MAX_UNSETTLED + 10)]
    session, out = feed_timed(script)
    assert session.counters["unsettled_evicted"] == 10
    assert sum(1 for ts, _ in out if ts != -1) == 10  # the oldest ten, pushed out by the bound
    assert len(out) == MAX_UNSETTLED + 10 and not session.provisional


def test_a_confirm_mode_publisher_picked_up_mid_stream_pairs_in_the_pipeline() -> None:
    conv = Conversation(sport=5672)  # no SYN, no protocol header, no channel.open
    for i in (1, 2):
        conv.send(True, publish(i))
        conv.send(False, m(1, ps.Basic.Ack(delivery_tag=100 + i)))
    p = Pipeline(default_registry())
    pubs = [e for e in p.feed(conv.columns()) + p.finish() if e.get("method") == "basic.publish"]
    assert [(e["response"]["method"], e["response"]["arguments"]["delivery_tag"]) for e in pubs] == [
        ("basic.ack", 101),
        ("basic.ack", 102),
    ]
    assert all(e["error"] is None and e["summary"].endswith("→ basic.ack") for e in pubs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.booleans(), st.integers(0, 3 * SECOND))))
def test_any_mix_of_publishes_and_broker_acks_mid_stream_never_raises_or_loses_a_publish(
    steps: list[tuple[bool, int, bool, int]],
) -> None:
    script: list[tuple[bool, bytes, int]] = []
    ts, sent = 0, 0
    for is_publish, tag, multiple, wait in steps:
        ts += wait
        if is_publish:
            sent += 1
            script.append((True, publish(sent), ts))
        else:
            script.append((False, m(1, ps.Basic.Ack(delivery_tag=tag, multiple=multiple)), ts))
    if not script:
        return
    _, out = feed_timed(script)
    assert sorted(c for c, _ in pairs(out)) == sorted(f'{{"n": {i}}}' for i in range(1, sent + 1))

"""The short ways through the Kafka and Redis parsers give what the long ways give: a first frame read
in place, a header scan that skips offsets no header can start at, the schema's word on which messages
can name topics by id or hold nested error codes, topic ids formatted without `uuid.UUID`."""

from __future__ import annotations

import struct
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import Message, SessionConfig, Verdict
from wiretide.dissector.protocols import kafka, redis
from wiretide.dissector.protocols.kafka import KafkaSession

from .test_kafka import JAVA_CLIENT, batch, heartbeat, heartbeat_resp, i16, i32, produce, produce_ok, record


def _plausible_long_way(data: bytes, pos: int, strict: bool) -> bool:
    """plausible_request with the header unpacked as a struct."""
    if pos < 0 or pos + kafka.MIN_REQUEST > len(data):
        return False
    size, key, version, corr, cid = struct.unpack_from("!ihhih", data, pos)
    api = kafka.APIS.get(key)
    if api is None or not kafka.MIN_REQUEST - 4 <= size <= kafka.MAX_FRAME or corr < 0:
        return False
    if not 0 <= version <= api[1] + kafka.VERSION_SLACK:
        return False
    if not -1 <= cid <= kafka.MAX_CLIENT_ID or 10 + max(cid, 0) > size or (strict and cid < 1):
        return False
    raw = data[pos + kafka.MIN_REQUEST : pos + kafka.MIN_REQUEST + max(cid, 0)]
    return not (strict and len(raw) < cid) and all(32 <= b < 127 for b in raw)


_HEADERISH = st.lists(st.sampled_from([0, 0, 0, 1, 3, 4, 9, 0x12, 0x41, 0x7F, 0x80, 0xFF]), max_size=40)


@settings(max_examples=500, deadline=None)
@given(_HEADERISH, st.integers(min_value=-1, max_value=30), st.booleans())
def test_a_header_read_in_place_is_judged_as_the_unpacked_one(raw: list[int], pos: int, strict: bool) -> None:
    data = bytes(raw)
    assert kafka.plausible_request(data, pos, strict) == _plausible_long_way(data, pos, strict)
    real = heartbeat(3) + b"tail"
    for cut in range(len(real) + 1):
        assert kafka.plausible_request(real[:cut], 0, strict) == _plausible_long_way(real[:cut], 0, strict)


def _scan(data: bytes, start: int, limit: int) -> int:
    """find_request the long way: every offset read as a header."""
    for pos in range(start, min(limit, len(data) - kafka.MIN_REQUEST + 1)):
        if (
            data[pos] == 0
            and data[pos + 4] == 0
            and kafka.plausible_request(data, pos, True)
            and kafka._chained(data, pos)
        ):
            return pos
    return -1


# Mostly zeros and the bytes a header is made of, with a real request somewhere now and then.
_NOISE = st.lists(st.sampled_from([0, 0, 0, 0, 0, 1, 4, 5, 0x0C, 0x20, 0x41, 0x7F, 0x80, 0xFF]), max_size=200)


@settings(max_examples=300, deadline=None)
@given(_NOISE, _NOISE, st.booleans(), st.integers(min_value=0, max_value=20))
def test_the_header_scan_finds_what_reading_every_offset_finds(
    before: list[int], after: list[int], planted: bool, start: int
) -> None:
    data = bytes(before) + (heartbeat(7) if planted else b"") + bytes(after)
    for limit in (len(data), len(data) // 2):
        assert kafka.find_request(data, start, limit) == _scan(data, start, limit)


def test_a_binary_answer_taken_for_a_client_is_scanned_without_a_false_header() -> None:
    # A Metadata answer seen first (the capture joined after the request): mostly zero bytes.
    answer = bytes.fromhex(JAVA_CLIENT[4][1]) * 3
    assert kafka.find_request(answer, 1, len(answer)) == _scan(answer, 1, len(answer)) == -1
    assert kafka.probe(answer, b"") == Verdict.NO


def _run(chunks: list[tuple[bool, bytes]]) -> tuple[list[Any], dict[str, int], list[int]]:
    s = KafkaSession(SessionConfig())
    out: list[Any] = []
    for from_client, data in chunks:
        out += s.feed(from_client, data, 5)
    out += s.close(9)
    msgs = [
        (m.is_request, m.ts_first, m.size, m.key, m.standalone, m.truncated, m.fields)
        if isinstance(m, Message)
        else m
        for m in out
    ]
    return msgs, dict(s.counters), list(s.pending)


def _bytewise(chunks: list[tuple[bool, bytes]]) -> list[tuple[bool, bytes]]:
    return [(c, data[i : i + 1]) for c, data in chunks for i in range(len(data))]


def _header_split(chunks: list[tuple[bool, bytes]]) -> list[tuple[bool, bytes]]:
    """Each segment cut one byte short of a header: its first frame is looked for the buffered way."""
    out: list[tuple[bool, bytes]] = []
    for c, data in chunks:
        at = (kafka.MIN_REQUEST if c else 8) - 1
        out += [(c, data[:at]), (c, data[at:])]
    return out


def test_a_first_frame_whole_in_its_segment_reads_as_it_does_byte_by_byte() -> None:
    java = [(c, bytes.fromhex(h)) for c, h in JAVA_CLIENT]
    odd_client_id = i32(16) + i16(12) + i16(4) + i32(1) + i16(2) + b"\x01\x02"  # not printable
    cases: list[list[tuple[bool, bytes]]] = [
        java,
        java[2:],  # answers first: to requests never seen
        [(False, heartbeat_resp(3)), (True, heartbeat(4)), (False, heartbeat_resp(4))],
        [(False, i32(6) + i32(-5) + b"\x00\x00")],  # a negative correlation id: no frame here
        [(True, heartbeat(1)), (False, heartbeat_resp(2) + heartbeat_resp(1))],  # not pending
        [(True, odd_client_id), (True, heartbeat(2))],
        [(True, heartbeat(1)[3:] + heartbeat(2) + heartbeat(3))],  # started mid-frame
        [(True, produce(1, "orders", batch([record(0, b"k", b"v" * 50)]))), (False, produce_ok(1, "orders"))],
    ]
    for chunks in cases:
        whole = _run(chunks)
        assert whole == _run(_header_split(chunks))  # the same messages, counters and pending requests
        assert whole[0] == _run(_bytewise(chunks))[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_a_topic_id_reads_as_uuid_writes_it(raw: bytes) -> None:
    assert kafka._Reader(raw, 0, False).uuid() == str(uuid.UUID(bytes=raw))


def _schema_has(fields: tuple[kafka.Field, ...], name: str, v: int) -> bool:
    return any(lo <= v <= hi and (n == name or _schema_has(sub, name, v)) for n, _, lo, hi, sub in fields)


def _nested(fields: tuple[kafka.Field, ...], name: str) -> bool:
    return any(
        typ == "[]" and (any(f[0] == name for f in sub) or _nested(sub, name)) for _, typ, _, _, sub in fields
    )


def test_only_versions_that_read_a_topic_id_are_searched_for_topics_to_name() -> None:
    for key, (req, resp) in kafka.SCHEMAS.items():
        for version in range(-1, kafka._ALL + 3):
            for request, schema in ((True, req), (False, resp)):
                expected = 0 <= version <= kafka._ALL and _schema_has(schema, "topic_id", version)
                assert kafka._names_topic_ids(key, version, request) == expected
    assert not kafka._names_topic_ids(0, 9, True) and kafka._names_topic_ids(1, 13, True)
    assert not kafka._names_topic_ids(12345, 1, True)


def test_only_answers_whose_schema_nests_an_error_code_are_walked_for_one() -> None:
    nested = {key for key, (_, resp) in kafka.SCHEMAS.items() if _nested(resp, "error_code")}
    assert nested == kafka._NESTED_ERRORS and {0, 1, 3} <= nested and 18 not in nested
    # The status is the same either way: a partition's error, a top-level error, none.
    cases = [
        (produce(1, "orders", batch([record(0, None, b"x")])), produce_ok(1, "orders", error=6), 6),
        (heartbeat(2), heartbeat_resp(2, error=27), 27),
        (heartbeat(3), heartbeat_resp(3), 0),
    ]
    for req, resp, status in cases:
        s = KafkaSession(SessionConfig())
        (q,) = s.feed(True, req, 1)
        (r,) = s.feed(False, resp, 2)
        assert isinstance(q, Message) and isinstance(r, Message)
        assert kafka.present(q, r).status == kafka.first_error(r.fields) == status


def test_offsets_and_timestamps_wrap_as_a_java_long_does() -> None:
    def wrapped(v: int) -> int:
        return ((v + 2**63) % 2**64) - 2**63

    edges = (2**62 - 1, 2**62, -(2**62), -(2**62) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64)
    for v in (0, -1, *edges):
        assert kafka._int64(v) == wrapped(v)


# ---- Redis --------------------------------------------------------------------------------------


def _redis_probe_long_way(client: bytes, server: bytes) -> Verdict:
    """redis.probe with its frame search made wherever it may apply (the probe makes it once)."""
    if not client:
        return Verdict.MAYBE if not server or server[0] in redis.RESP_TYPES else Verdict.NO
    if client[0] == redis._STAR:
        found = redis._array_of_bulk(client, 0)
        if found != Verdict.NO:
            return found
    elif client[0] not in redis.RESP_TYPES:
        m = redis._RESYNC_CLIENT.search(client)
        if m is not None and redis._array_of_bulk(client, m.end()) == Verdict.YES:
            return Verdict.YES
        word = redis._inline_word(client[:64])
        if word and (b"\n" in client or len(client) >= 64):
            if not server:
                return Verdict.MAYBE
            return redis._reply_looks_ok(server, word in redis.INLINE_COMMANDS)
        if word and len(client) < 64:
            return Verdict.MAYBE
    m = redis._RESYNC_CLIENT.search(client)
    if m is not None and redis._array_of_bulk(client, m.end()) == Verdict.YES:
        return Verdict.YES
    return Verdict.NO


_RESP_BITS = st.lists(
    st.sampled_from([b"*1\r\n", b"$4\r\n", b"PING", b"\r\n", b"get k\r\n", b"+OK\r\n", b"\x00", b"x", b"*"]),
    max_size=12,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_RESP_BITS, _RESP_BITS)
def test_the_redis_probe_answers_as_with_its_search_made_twice(client: bytes, server: bytes) -> None:
    assert redis.probe(client, server) == _redis_probe_long_way(client, server)


def _read(fields: tuple[Any, ...], data: bytes, version: int, flexible: bool) -> tuple[dict[str, Any], str]:
    out: dict[str, Any] = {}
    try:
        kafka.read_struct(kafka._Reader(data, 0, flexible), fields, version, out, kafka._Budget(1024))
    except (IndexError, kafka.KafkaError) as exc:
        return out, type(exc).__name__
    return out, ""


def test_structs_of_integers_read_in_one_loop_read_as_field_by_field() -> None:
    for version, flexible in ((0, False), (2, False), (3, True)):
        tag = b"\x00" if flexible else b""
        items = [i16(k) + i16(0) + i16(k % 13) + tag for k in range(kafka.MAX_LISTED + 20)]
        count = bytes([len(items) + 1]) if flexible else i32(len(items))  # fewer than 127: one byte
        body = i16(0) + count + b"".join(items) + i32(7) + tag
        fast = kafka._fields(kafka._API_VERSIONS_RESP)
        slow = kafka._fields(kafka._API_VERSIONS_RESP)
        slow[1].mixed.update(range(kafka._ALL + 1))  # the field-by-field way, at every version
        for cut in (len(body), len(body) - 1, 40, 9, 6):
            got = _read(fast, body[:cut], version, flexible)
            assert got == _read(slow, body[:cut], version, flexible)
        assert version in fast[1].ints and version not in slow[1].ints
        whole = _read(fast, body, version, flexible)[0]
        assert len(whole["api_keys"]) == kafka.MAX_LISTED and whole["api_keys_count"] == len(items)
        assert whole["api_keys"][5] == {"api_key": 5, "min_version": 0, "max_version": 5}


def _command_long_way(args: list[str]) -> tuple[str, str | None]:
    """redis.command_of with every rule asked of every command."""
    name = args[0].upper()
    method = f"{name} {args[1].upper()}" if name in redis.CONTAINERS and len(args) > 1 else name
    rest = args[1:]
    if name in redis._SCRIPTS:
        try:
            has_keys = len(rest) > 2 and int(rest[1]) > 0
        except ValueError:
            has_keys = False
        return method, rest[2] if has_keys else None
    if name in redis._STREAM_READS:
        for i, word in enumerate(rest):
            if word.upper() == "STREAMS":
                return method, rest[i + 1] if i + 1 < len(rest) else None
        return method, None
    at = redis.KEY_AT.get(name)
    if at is not None:
        return method, rest[at] if at < len(rest) else None
    return method, None if name in redis.KEYLESS or not rest else rest[0]


_NAMES = sorted(redis.CONTAINERS | redis.KEYLESS | redis._SCRIPTS | redis._STREAM_READS | set(redis.KEY_AT))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([*_NAMES, "get", "SET", "incr", "hget", "Lpush", "x"]),
    st.lists(st.sampled_from(["k", "1", "0", "streams", "s", "get"]), max_size=5),
)
def test_a_redis_commands_method_and_key_are_told_as_by_every_rule(name: str, rest: list[str]) -> None:
    assert redis.command_of([name, *rest]) == _command_long_way([name, *rest])


def test_a_redis_reply_names_its_protocol_version() -> None:
    for resp, shown in ((2, "RESP2"), (3, "RESP3"), (4, "RESP4"), (True, "RESPTrue")):
        reply = Message(False, 1, 2, 5, {"type": "simple", "resp": resp, "value": "OK", "error": None})
        assert redis.present(None, reply).version == shown


def test_what_is_remembered_per_api_and_version_stays_bounded_whatever_the_wire_says() -> None:
    for key in range(-3, 300, 7):
        for version in (-1, 0, 9, kafka._ALL, kafka._ALL + 1, 30_000):
            kafka._names_topic_ids(key, version, key % 2 == 0)
    assert len(kafka._NAMING) <= len(kafka.SCHEMAS) * (kafka._ALL + 1) * 2
    api_keys = kafka._fields(kafka._API_VERSIONS_RESP)[1]
    for version in (-1, kafka._ALL + 1, 30_000):
        assert api_keys.int_plan(version) == ()  # no field is read at such a version
        assert version not in api_keys.ints and version not in api_keys.mixed

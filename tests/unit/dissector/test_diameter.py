"""Diameter transcripts over TCP: capabilities exchange, credit control, a request the server sends,
3GPP experimental results, vendor-specific and grouped AVPs, secrets never kept; pairing by
identifiers in both directions; the status, KFL variables and span name an entry gets; and hostile
bytes (AVP length bombs, zero-length AVPs, deep grouping, huge message lengths) that never raise."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import diameter as dia
from wiretide.common import protocols
from wiretide.common.kfl import compile_predicate, parse_query
from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import diameter
from wiretide.dissector.protocols.diameter import DiameterSession, probe
from wiretide.dissector.registry import default_registry

from .builders import ACK, Conversation, tcp_frame

GX = 16777238
S6A = 16777251
CCR = 272


def base(origin: str, session: str | None = None) -> list[bytes]:
    avps = [dia.utf8(dia.SESSION_ID, session)] if session else []
    return [
        *avps,
        dia.utf8(dia.ORIGIN_HOST, f"{origin}.example.net"),
        dia.utf8(dia.ORIGIN_REALM, "example.net"),
    ]


def cer(hbh: int = 1) -> bytes:
    return dia.message(257, 0, True, hbh, hbh + 100, [
        *base("pcef"), dia.address(dia.HOST_IP_ADDRESS, b"\x0a\x00\x00\x01"), dia.u32(dia.VENDOR_ID, 10415),
        dia.utf8(dia.PRODUCT_NAME, "wiretide-test"), dia.u32(dia.AUTH_APPLICATION_ID, GX),
    ])  # fmt: skip


def cea(hbh: int = 1, result: int = 2001) -> bytes:
    return dia.message(257, 0, False, hbh, hbh + 100, [
        dia.u32(dia.RESULT_CODE, result), *base("pcrf"), dia.u32(dia.AUTH_APPLICATION_ID, GX),
    ])  # fmt: skip


def ccr(hbh: int, kind: int = 1, session: str = "pcef.example.net;1;42") -> bytes:
    return dia.message(CCR, GX, True, hbh, hbh + 100, [
        *base("pcef", session), dia.utf8(dia.DESTINATION_REALM, "example.net"),
        dia.u32(dia.AUTH_APPLICATION_ID, GX), dia.u32(dia.CC_REQUEST_TYPE, kind),
        dia.u32(dia.CC_REQUEST_NUMBER, kind - 1),
        dia.grouped(dia.SUBSCRIPTION_ID, [dia.u32(dia.SUBSCRIPTION_ID_TYPE, 1),
                                          dia.utf8(dia.SUBSCRIPTION_ID_DATA, "001010123456789")]),
        dia.u32(1032, 1004, vendor=dia.VENDOR_3GPP),  # RAT-Type EUTRAN
    ])  # fmt: skip


def cca(hbh: int, result: int = 2001, session: str = "pcef.example.net;1;42") -> bytes:
    return dia.message(CCR, GX, False, hbh, hbh + 100, [
        dia.utf8(dia.SESSION_ID, session), dia.u32(dia.RESULT_CODE, result), *base("pcrf"),
        dia.u32(dia.CC_REQUEST_TYPE, 1),
    ], error=result >= 3000 and result < 4000)  # fmt: skip


def run(conv: Conversation) -> list[dict[str, Any]]:
    p = Pipeline(default_registry())
    return [e for e in p.feed(conv.columns()) + p.finish() if e["protocol"] == "diameter"]


def tcp(*exchanges: tuple[bool, bytes], mss: int = 1400) -> Conversation:
    conv = Conversation(sport=3868).handshake()
    for from_client, data in exchanges:
        conv.send(from_client, data, mss)
    return conv.close()


def test_a_capabilities_exchange_and_a_credit_control_session_become_entries_with_their_results() -> None:
    found = run(tcp((True, cer()), (False, cea()), (True, ccr(2)), (False, cca(2)), (True, ccr(3, 3)),
                    (False, cca(3, 5030))))  # fmt: skip
    assert [(e["method"], e["path"], e["status"]) for e in found] == [
        ("CER", "base", 2001), ("CCR", "Gx", 2001), ("CCR", "Gx", 5030),
    ]  # fmt: skip
    first, ok, unknown = found
    assert first["request"]["origin_host"] == "pcef.example.net"
    assert first["request"]["avps"][2] == {"code": 257, "name": "Host-IP-Address", "flags": "M",
                                           "value": "10.0.0.1"}  # fmt: skip
    assert first["response"]["avps"][1]["value"] == "pcrf.example.net"
    assert ok["summary"] == "CCR Gx INITIAL_REQUEST → DIAMETER_SUCCESS (2001)"
    assert ok["request"]["session_id"] == "pcef.example.net;1;42"
    sub = next(a for a in ok["request"]["avps"] if a["code"] == dia.SUBSCRIPTION_ID)
    assert [(a["name"], a["value"]) for a in sub["avps"]] == [
        ("Subscription-Id-Type", 1),
        ("Subscription-Id-Data", "001010123456789"),
    ]
    rat = next(a for a in ok["request"]["avps"] if a["code"] == 1032)
    assert rat == {"code": 1032, "name": "RAT-Type", "vendor": 10415, "flags": "VM", "value": 1004,
                   "text": "EUTRAN"}  # fmt: skip
    assert unknown["summary"] == "CCR Gx TERMINATION_REQUEST → DIAMETER_USER_UNKNOWN (5030)"
    assert ok["stream"] == "0x00000002" and ok["version"] == "1" and ok["transport"] == "tcp"
    assert all(e["error"] is None for e in found)
    # The table: 5030 is the caller's failure, not the server's; 3002 is both's.
    assert protocols.status_text(unknown) == "DIAMETER_USER_UNKNOWN (5030)"
    assert protocols.client_error(unknown) == "DIAMETER_USER_UNKNOWN" and not protocols.is_error(unknown)
    assert protocols.is_error({**unknown, "status": 3002}) and not protocols.is_error(ok)
    assert protocols.span_name(ok) == "CCR Gx"


def test_answers_pair_by_identifiers_whatever_their_order_and_a_server_request_pairs_the_other_way() -> None:
    rar = dia.message(258, GX, True, 77, 177, [*base("pcrf", "pcef.example.net;1;42"),
                                               dia.u32(285, 0)])  # fmt: skip
    raa = dia.message(258, GX, False, 77, 177, [dia.utf8(dia.SESSION_ID, "pcef.example.net;1;42"),
                                                dia.u32(dia.RESULT_CODE, 2001), *base("pcef")])  # fmt: skip
    # Two requests in flight, answered in the other order; the PCRF's Re-Auth-Request meanwhile, with
    # the same hop-by-hop id as none of them.
    found = run(tcp((True, ccr(5) + ccr(6, 2)), (False, rar), (False, cca(6) + cca(5)), (True, raa)))
    assert [(e["method"], e["request"]["hop_by_hop_id"], e["response"]["hop_by_hop_id"]) for e in found] == [
        ("CCR", "0x00000006", "0x00000006"), ("CCR", "0x00000005", "0x00000005"),
        ("RAR", "0x0000004d", "0x0000004d"),
    ]  # fmt: skip
    rar_entry = found[2]
    assert rar_entry["request"]["sender"] == "server" and rar_entry["response"]["sender"] == "client"
    assert all(e["error"] is None for e in found)


def test_the_same_identifiers_in_both_directions_do_not_cross_pair() -> None:
    # Each peer numbers its own requests: both send a Device-Watchdog-Request with hop-by-hop id 9.
    dwr = dia.message(280, 0, True, 9, 9, base("a"))
    dwa = dia.message(280, 0, False, 9, 9, [dia.u32(dia.RESULT_CODE, 2001), *base("b")])
    found = run(tcp((True, dwr), (False, dwr), (False, dwa), (True, dwa)))
    assert [(e["request"].get("sender", "client"), e["response"]["sender"]) for e in found] == [
        ("client", "server"), ("server", "client"),
    ]  # fmt: skip


def test_a_3gpp_experimental_result_is_the_status_with_its_3gpp_name() -> None:
    ulr = dia.message(
        316, S6A, True, 4, 4, [*base("mme", "mme;1"), dia.utf8(dia.USER_NAME, "001010000000001")]
    )
    ula = dia.message(316, S6A, False, 4, 4, [
        dia.utf8(dia.SESSION_ID, "mme;1"), *base("hss"),
        dia.grouped(dia.EXPERIMENTAL_RESULT, [dia.u32(dia.VENDOR_ID, 10415),
                                              dia.u32(dia.EXPERIMENTAL_RESULT_CODE, 5001)]),
    ])  # fmt: skip
    (entry,) = run(tcp((True, ulr), (False, ula)))
    assert entry["status"] == 5001 and entry["path"] == "S6a"
    assert entry["summary"] == "ULR S6a → DIAMETER_ERROR_USER_UNKNOWN (5001)"
    # The base protocol's 5001 is DIAMETER_AVP_UNSUPPORTED: the table reads the experimental code first.
    assert protocols.status_text(entry) == "DIAMETER_ERROR_USER_UNKNOWN (5001)"
    assert protocols.client_error(entry) == "DIAMETER_ERROR_USER_UNKNOWN"
    assert entry["request"]["user_name"] == "001010000000001"


def test_secrets_are_replaced_while_parsing_and_listed_in_redacted() -> None:
    kasme = b"\x13" * 32
    v = dia.VENDOR_3GPP
    rand, xres, autn = (
        dia.avp(1449, b"\x01" * 16, v),
        dia.avp(1447, b"\x02" * 8, v),
        dia.avp(1448, b"\x03" * 16, v),
    )
    vector = dia.grouped(1414, [rand, xres, autn, dia.avp(1450, kasme, v)], v)
    air = dia.message(
        318, S6A, True, 8, 8, [*base("mme", "mme;2"), dia.avp(dia.USER_PASSWORD, b"hunter2-secret")]
    )
    aia = dia.message(318, S6A, False, 8, 8, [
        dia.utf8(dia.SESSION_ID, "mme;2"), dia.u32(dia.RESULT_CODE, 2001), *base("hss"),
        dia.grouped(1413, [vector], dia.VENDOR_3GPP),
    ])  # fmt: skip
    (entry,) = run(tcp((True, air), (False, aia)))
    text = repr(entry)
    assert "hunter2" not in text and kasme.hex() not in text and (b"\x02" * 8).hex() not in text
    assert entry["redacted"] == ["request.avps.User-Password", "response.avps.XRES", "response.avps.KASME"]
    rand = entry["response"]["avps"][-1]["avps"][0]["avps"][0]
    assert rand["name"] == "RAND" and rand["value"] == "01" * 16  # not a secret: shown


def test_a_message_split_across_many_segments_and_one_cut_by_a_gap() -> None:
    conv = Conversation(sport=3868).handshake()
    conv.send(True, ccr(11), mss=7)
    conv.send(False, cca(11), mss=5)
    found = run(conv.close())
    assert [(e["method"], e["status"]) for e in found] == [("CCR", 2001)]
    # A gap inside the next request: its head is kept (truncated), the stream resumes at the next one.
    # (Frames 300 ms apart: TCP declares the hole lost once the peer acknowledged past it that long.)
    conv = Conversation(sport=3868, step=300_000_000).handshake().send(True, cer()).send(False, cea())
    lost = conv.segments(True, ccr(12), mss=40)
    conv.frames.extend([lost[0], lost[2], *lost[3:]])
    conv.send(True, ccr(13))
    for _ in range(2):  # the server acknowledges everything (the hole too), twice
        ack = tcp_frame(conv.server, conv.sport, conv.client, conv.cport, conv.sseq, conv.cseq, ACK)
        conv.frames.append((conv._tick(), ack))
    conv.send(False, cca(12) + cca(13))
    found = run(conv.close())
    assert [(e["method"], e["status"]) for e in found] == [("CER", 2001), ("CCR", 2001), ("CCR", 2001)]
    cut, after = found[1:]
    assert (
        cut["request"]["hop_by_hop_id"] == "0x0000000c" and after["request"]["hop_by_hop_id"] == "0x0000000d"
    )
    assert cut["request"]["truncated"] and cut["error"]["type"] == "dissection"
    assert after["error"] is None and "truncated" not in after["request"]


def test_the_probe_takes_diameter_and_refuses_lookalikes() -> None:
    assert probe(ccr(1), b"") == Verdict.YES
    assert probe(b"", cca(1)) == Verdict.YES
    assert probe(cca(1), b"") == Verdict.NO  # an answer is not the client's first message
    assert probe(ccr(1)[:12], b"") == Verdict.MAYBE
    assert probe(b"GET / HTTP/1.1\r\n\r\n", b"") == Verdict.NO
    assert probe(b"\x01\x00\x00\x15" + ccr(1)[4:], b"") == Verdict.NO  # length not a multiple of 4
    bad_avp = bytearray(ccr(1))
    struct.pack_into("!I", bad_avp, 24, (0x40 << 24) | 4)  # the first AVP claims 4 bytes
    assert probe(bytes(bad_avp), b"") == Verdict.NO
    # A message larger than the probes see is taken on a consistent prefix of a known command.
    big = dia.message(
        CCR, GX, True, 1, 1, [*base("pcef", "s;1"), dia.avp(1066, b"x" * 9000, dia.VENDOR_3GPP)]
    )
    assert probe(big[:4096], b"") == Verdict.YES


def test_on_any_port_diameter_is_found_by_content() -> None:
    conv = Conversation(sport=13868).handshake().send(True, cer()).send(False, cea()).close()
    assert [e["method"] for e in run(conv)] == ["CER"]


# ---- hostile input ---------------------------------------------------------------------------------


def feed_all(data: bytes, chunk: int = 1 << 20) -> tuple[list[Message], list[Violation], DiameterSession]:
    s = DiameterSession(SessionConfig())
    events = []
    for i in range(0, len(data), chunk):
        events += s.feed(True, data[i : i + chunk], i)
    events += s.close(len(data))
    return (
        [e for e in events if isinstance(e, Message)],
        [e for e in events if isinstance(e, Violation)],
        s,
    )


def test_avp_length_bombs_and_zero_length_avps_end_that_level_and_are_marked_malformed() -> None:
    # An AVP claiming 16 MiB inside a 60-byte message; an AVP of length 0 (would loop forever if read
    # as "advance by length"); a vendor AVP shorter than its own header.
    for bad in ((0x40 << 24) | 0xFFFFFF, (0x40 << 24) | 0, (0xC0 << 24) | 10):
        body = struct.pack("!II", 263, bad) + b"x" * 32
        msg = struct.pack("!IIIII", (1 << 24) | (20 + len(body)), (0x80 << 24) | CCR, GX, 1, 1) + body
        (m,), violations, _ = feed_all(msg)
        assert not violations and m.fields["malformed"] and m.fields["avps"] == []


def test_deep_grouping_and_avp_floods_are_bounded() -> None:
    inner = dia.u32(dia.RESULT_CODE, 2001)
    for _ in range(50):
        inner = dia.grouped(dia.EXPERIMENTAL_RESULT, [inner])
    flood = [dia.u32(dia.CC_REQUEST_NUMBER, i) for i in range(3000)]
    msg = dia.message(CCR, GX, True, 1, 1, [inner, *flood])
    (m,), _, _ = feed_all(msg)
    depth, node = 0, m.fields["avps"][0]
    while "avps" in node:
        node, depth = node["avps"][0], depth + 1
    assert depth == diameter.MAX_DEPTH and m.fields["avps_too_deep"] == 1
    assert m.fields["avp_count"] == 3000 + diameter.MAX_DEPTH + 1
    assert len(m.fields["avps"]) + m.fields["avps_dropped"] == 3001
    assert m.fields["avps_dropped"] == m.fields["avp_count"] - diameter.MAX_AVPS


def test_a_huge_message_is_streamed_past_not_held() -> None:
    size = 8 * 1024 * 1024
    head = dia.message(CCR, GX, True, 1, 1, [*base("pcef", "s;1")])
    body = struct.pack("!II", 1066, (0x40 << 24) | (size - len(head) - 0)) + b"\x00" * (size - len(head) - 8)
    msg = struct.pack("!I", (1 << 24) | (len(head) + len(body))) + head[4:] + body
    s = DiameterSession(SessionConfig())
    events = []
    for i in range(0, len(msg), 65536):
        events += s.feed(True, msg[i : i + 65536], i)
        assert len(s.dirs[True].buf) <= s.keep + 65536  # never the whole message
    events += s.feed(True, ccr(2), len(msg))
    (big, after) = [e for e in events if isinstance(e, Message)]
    assert big.fields["truncated"] and not big.truncated  # kept in part, not lost to a gap
    assert big.size == len(msg) and big.fields["session_id"] == "s;1"
    assert after.fields["hop_by_hop_id"] == "0x00000002" and not after.truncated
    assert s.counters["oversized"] == 1


def test_a_garbage_header_after_diameter_is_a_violation() -> None:
    _, violations, _ = feed_all(ccr(1) + b"\x02" + b"\x00" * 40)
    assert violations and "not a Diameter header" in violations[0].reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    probe(data, b"")
    probe(b"", data)
    s = DiameterSession(SessionConfig())
    s.feed(True, data, 0)
    s.gap(True, 7, 1)
    s.feed(True, data, 2)
    s.close(3)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=20, max_value=400))
def test_a_real_message_with_its_tail_overwritten_never_raises(tail: bytes, cut: int) -> None:
    msg = ccr(1)
    mutated = msg[: min(cut, len(msg))] + tail
    s = DiameterSession(SessionConfig())
    s.feed(True, mutated, 0)
    s.close(1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40))
def test_any_chunking_of_the_same_bytes_gives_the_same_messages(sizes: list[int]) -> None:
    data = cer() + ccr(2) + ccr(3, 2) + ccr(4, 3)
    whole, _, _ = feed_all(data)
    s = DiameterSession(SessionConfig())
    events = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        events += s.feed(True, data[pos : pos + n], 0)
        pos += n
        i += 1
    events += s.close(0)
    assert [m.fields for m in events if isinstance(m, Message)] == [m.fields for m in whole]


# ---- KFL ---------------------------------------------------------------------------------------------


def test_kfl_variables_read_a_diameter_entry() -> None:
    found = run(tcp((True, ccr(2)), (False, cca(2, 4012))))
    (entry,) = found
    for query, expected in [
        ("diameter && diameter_command_code == 272", True),
        ("diameter_application_id == 16777238", True),
        ('diameter_session_id.startsWith("pcef.example.net;")', True),
        ('diameter_origin_host == "pcef.example.net"', True),
        ("diameter_result_code == 4012", True),
        ("diameter_result_code >= 5000", False),
        ('method == "CCR" && path == "Gx"', True),
    ]:
        assert compile_predicate(parse_query(query))(entry) is expected, query

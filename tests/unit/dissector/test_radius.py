"""RADIUS (protocols/radius.py): requests and answers paired by identifier, attributes by name, secrets
never shown, EAP named, retransmissions counted, bad input bounded — and every capture in
shared/pcaps/radius gives tshark's message counts.

Packets are built as a NAS and a server build them (RFC 2865 §3: Response Authenticator = MD5 over the
answer and the request's authenticator and the secret; §5.2: User-Password hidden by the secret).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import files_or_missing, needs_pcaps
from wiretide.common.kfl import compile_predicate
from wiretide.common.protocols import is_error, span_name, status_text
from wiretide.dissector.api import Message, SessionConfig, Verdict, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols import radius
from wiretide.dissector.redact import MARKER
from wiretide.dissector.registry import default_registry

from .builders import T0, columns, udp_frame
from .pcaps import PCAPS, read_columns

TSHARK = shutil.which("tshark")
MS = 1_000_000
SECRET = b"testing123"
NAS, SERVER = "10.0.0.1", "10.0.0.2"
NAS_PORT = 40001


# ---- building packets as a NAS and a server do ---------------------------------------------------


def attr(atype: int, value: bytes | str | int) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = struct.pack("!I", value)
    return bytes([atype, 2 + len(value)]) + value


def vsa(vendor: int, vtype: int, value: bytes | str | int) -> bytes:
    return attr(26, struct.pack("!I", vendor) + attr(vtype, value))


def hide_password(password: bytes, authenticator: bytes, secret: bytes = SECRET) -> bytes:
    """RFC 2865 §5.2: the password, padded to 16 octets, XORed with MD5(secret + previous block)."""
    padded = password + b"\0" * (-len(password) % 16 or (16 if not password else 0))
    out, prev = b"", authenticator
    for i in range(0, len(padded), 16):
        key = hashlib.md5(secret + prev).digest()
        block = bytes(a ^ b for a, b in zip(padded[i : i + 16], key, strict=True))
        out += block
        prev = block
    return out


def request(code: int, ident: int, attrs: bytes, authenticator: bytes | None = None) -> bytes:
    if authenticator is None:
        if code == 1:
            authenticator = os.urandom(16)  # RFC 2865 §3: unpredictable
        else:  # RFC 2866 §3 / RFC 5176 §2.3: MD5 over the packet with a zero authenticator, and the secret
            head = struct.pack("!BBH", code, ident, 20 + len(attrs))
            authenticator = hashlib.md5(head + bytes(16) + attrs + SECRET).digest()
    return struct.pack("!BBH", code, ident, 20 + len(attrs)) + authenticator + attrs


def answer(code: int, req: bytes, attrs: bytes = b"") -> bytes:
    head = struct.pack("!BBH", code, req[1], 20 + len(attrs))
    return head + hashlib.md5(head + req[4:20] + attrs + SECRET).digest() + attrs


def access_request(
    ident: int, user: str = "alice", password: bytes = b"wonderland", extra: bytes = b""
) -> bytes:
    auth = os.urandom(16)
    attrs = (
        attr(1, user)
        + attr(2, hide_password(password, auth))
        + attr(4, socket.inet_aton(NAS))
        + attr(5, 7)
        + attr(61, 15)
        + attr(31, "00-11-22-33-44-55")
        + attr(32, "ap-7")
        + extra
    )
    return request(1, ident, attrs, auth)


def up(payload: bytes) -> bytes:
    return udp_frame(NAS, NAS_PORT, SERVER, 1812, payload)


def down(payload: bytes) -> bytes:
    return udp_frame(SERVER, 1812, NAS, NAS_PORT, payload)


def run(frames: list[tuple[int, bytes]]) -> tuple[Pipeline, list[dict[str, Any]]]:
    p = Pipeline(default_registry())
    out = p.feed(columns(frames)) + p.finish()
    return p, [e for e in out if e["protocol"] == "radius"]


# ---- transcripts ------------------------------------------------------------------------------


def test_an_access_request_and_its_accept_are_one_entry_with_named_attributes() -> None:
    req = access_request(7)
    acc = answer(2, req, attr(6, 2) + attr(8, socket.inet_aton("172.16.3.33")) + attr(27, 3600))
    p, [e] = run([(T0, up(req)), (T0 + 3 * MS, down(acc))])
    assert (e["method"], e["path"], e["status"], e["stream"]) == ("Access-Request", "alice", 2, "7")
    assert (e["src"]["ip"], e["dst"]["ip"], e["dst"]["port"]) == (NAS, SERVER, 1812)
    assert e["elapsed_us"] == 3000 and e["error"] is None
    a = e["request"]["attributes"]
    assert a["User-Name"] == "alice"
    assert a["NAS-IP-Address"] == NAS and a["NAS-Port"] == 7 and a["NAS-Port-Type"] == "Ethernet"
    assert a["Calling-Station-Id"] == "00-11-22-33-44-55"
    r = e["response"]["attributes"]
    assert r == {"Service-Type": "Framed", "Framed-IP-Address": "172.16.3.33", "Session-Timeout": 3600}
    assert e["response"]["code_name"] == "Access-Accept"
    assert e["summary"] == "Access-Request alice → Access-Accept"
    assert status_text(e) == "Access-Accept" and not is_error(e)
    assert span_name(e) == "Access-Request"
    assert e["size"] == {"request": len(req), "response": len(acc)}


def test_user_password_and_every_secret_attribute_are_replaced_by_the_marker_and_listed() -> None:
    extra = (
        attr(3, b"\x01" + bytes(16))  # CHAP-Password
        + attr(60, bytes(16))  # CHAP-Challenge
        + attr(69, b"\x00\x12\x34" + b"s" * 16)  # Tunnel-Password (tag, salt, data)
        + attr(80, bytes(16))  # Message-Authenticator
        + vsa(radius.MICROSOFT, 11, bytes(16))  # MS-CHAP-Challenge
        + vsa(radius.MICROSOFT, 25, bytes(50))  # MS-CHAP2-Response
        + vsa(radius.MICROSOFT, 16, bytes(34))  # MS-MPPE-Send-Key
    )
    req = access_request(9, password=b"hunter2-hunter2-hunter2", extra=extra)
    _, [e] = run([(T0, up(req)), (T0 + MS, down(answer(3, req)))])
    a = e["request"]["attributes"]
    secret_names = (
        "User-Password", "CHAP-Password", "CHAP-Challenge", "Tunnel-Password", "Message-Authenticator",
        "MS-CHAP-Challenge", "MS-CHAP2-Response", "MS-MPPE-Send-Key",
    )  # fmt: skip
    assert all(a[name] == MARKER for name in secret_names)
    assert sorted(e["redacted"]) == sorted(f"request.attributes.{n}" for n in secret_names)
    text = str(e)
    assert "hunter2" not in text and hide_password(b"x", req[4:20]).hex() not in text
    assert radius.REDACTED == MARKER


def test_an_access_reject_is_an_error_for_both_sides_with_its_reply_message() -> None:
    req = access_request(11, user="mallory")
    rej = answer(3, req, attr(18, "Invalid password"))
    _, [e] = run([(T0, up(req)), (T0 + 2 * MS, down(rej))])
    assert e["status"] == 3 and is_error(e)
    assert status_text(e) == "Access-Reject"
    assert e["summary"] == "Access-Request mallory → Access-Reject: Invalid password"
    assert e["error"] is None  # the status rule says it; `error` is for dissection/matching failures


def test_requests_pair_by_identifier_in_any_order() -> None:
    reqs = [access_request(i, user=f"u{i}") for i in (1, 2, 3)]
    frames = [(T0 + i * MS, up(r)) for i, r in enumerate(reqs)]
    frames += [(T0 + 10 * MS, down(answer(2, reqs[2]))), (T0 + 11 * MS, down(answer(3, reqs[0])))]
    frames += [(T0 + 12 * MS, down(answer(2, reqs[1])))]
    _, out = run(frames)
    assert {(e["path"], e["status"]) for e in out} == {("u1", 3), ("u2", 2), ("u3", 2)}


def test_a_retransmission_is_counted_on_its_request_not_paired_twice_and_a_duplicate_answer_is_dropped() -> (
    None
):
    req = access_request(184)
    acc = answer(2, req)
    p, out = run(
        [
            (T0, up(req)),
            (T0 + 5_000 * MS, up(req)),
            (T0 + 10_000 * MS, up(req)),
            (T0 + 10_001 * MS, down(acc)),
            (T0 + 10_002 * MS, down(acc)),  # the server's cache answers the earlier copy again
        ]
    )
    [e] = out
    assert e["request"]["retransmissions"] == 2 and e["status"] == 2 and e["error"] is None
    assert e["summary"].endswith("(2 retransmissions)")
    assert p.stats["radius_retransmissions"] == 2
    assert p.stats["radius_duplicate_responses"] == 1


def test_a_new_authenticator_under_the_same_identifier_is_a_new_request_and_the_old_one_times_out() -> None:
    first, second = access_request(5, user="a"), access_request(5, user="b")
    _, out = run([(T0, up(first)), (T0 + MS, up(second)), (T0 + 2 * MS, down(answer(2, second)))])
    by_user = {e["path"]: e for e in out}
    assert by_user["a"]["error"]["type"] == "timeout" and by_user["a"]["response"] is None
    assert by_user["b"]["status"] == 2 and by_user["b"]["error"] is None


def test_an_unanswered_request_is_a_timeout_and_an_answer_without_request_is_unmatched() -> None:
    req = access_request(1)
    stray = answer(2, access_request(99))
    _, out = run([(T0, up(req)), (T0 + MS, down(stray))])
    errors = sorted((e["error"]["type"], e["method"]) for e in out)
    assert errors == [("timeout", "Access-Request"), ("unmatched", "Access-Accept")]


def test_accounting_start_and_stop_name_their_status_type_and_session() -> None:
    start = request(4, 1, attr(40, 1) + attr(1, "bob") + attr(44, "sess-1") + attr(55, 1_700_000_000))
    stop = request(4, 2, attr(40, 2) + attr(1, "bob") + attr(44, "sess-1") + attr(46, 61) + attr(49, 1))
    frames = [
        (T0, udp_frame(NAS, NAS_PORT, SERVER, 1813, start)),
        (T0 + MS, udp_frame(SERVER, 1813, NAS, NAS_PORT, answer(5, start))),
        (T0 + 2 * MS, udp_frame(NAS, NAS_PORT, SERVER, 1813, stop)),
        (T0 + 3 * MS, udp_frame(SERVER, 1813, NAS, NAS_PORT, answer(5, stop))),
    ]
    _, out = run(frames)
    assert [e["summary"] for e in out] == [
        "Accounting-Request Start bob → Accounting-Response",
        "Accounting-Request Stop bob → Accounting-Response",
    ]
    a = out[1]["request"]["attributes"]
    assert a["Acct-Terminate-Cause"] == "User-Request" and a["Acct-Session-Time"] == 61
    assert out[0]["request"]["attributes"]["Event-Timestamp"] == "2023-11-14T22:13:20Z"
    assert compile_predicate('radius && radius_acct_status_type == "Stop"')(out[1])
    assert not compile_predicate('radius_acct_status_type == "Stop"')(out[0])


def test_coa_and_disconnect_requests_from_the_server_pair_with_their_ack_and_nak() -> None:
    coa = request(
        43,
        3,
        attr(1, "carol") + attr(44, "sess-9") + vsa(radius.CISCO, 1, "subscriber:command=reauthenticate"),
    )
    disc = request(40, 4, attr(1, "carol") + attr(44, "sess-9"))
    frames = [
        (T0, udp_frame(SERVER, 50000, NAS, 3799, coa)),
        (T0 + MS, udp_frame(NAS, 3799, SERVER, 50000, answer(44, coa))),
        (T0 + 2 * MS, udp_frame(SERVER, 50000, NAS, 3799, disc)),
        (T0 + 3 * MS, udp_frame(NAS, 3799, SERVER, 50000, answer(42, disc, attr(101, 503)))),
    ]
    _, [c, d] = run(frames)
    assert (c["method"], c["status"], c["src"]["ip"], c["dst"]["port"]) == ("CoA-Request", 44, SERVER, 3799)
    assert c["request"]["attributes"]["Cisco-AVPair"] == "subscriber:command=reauthenticate"
    assert not is_error(c)
    assert (d["method"], d["status"], status_text(d)) == ("Disconnect-Request", 42, "Disconnect-NAK")
    assert is_error(d) and d["response"]["attributes"]["Error-Cause"] == "Session-Context-Not-Found"
    assert d["summary"].endswith("→ Disconnect-NAK: Session-Context-Not-Found")


def test_eap_inside_is_named_by_code_and_method_never_shown() -> None:
    identity = bytes([2, 102, 0, 10, 1]) + b"steve"  # EAP-Response/Identity
    md5 = bytes([1, 103, 0, 22, 4, 16]) + bytes(range(16))  # EAP-Request/MD5-Challenge
    req = access_request(3, user="steve", extra=attr(79, identity) + attr(80, bytes(16)))
    chal = answer(11, req, attr(79, md5) + attr(24, b"state-1") + attr(80, bytes(16)))
    p, [e] = run([(T0, up(req)), (T0 + MS, down(chal))])
    assert e["request"]["eap"] == {
        "code": 2, "code_name": "Response", "id": 102, "length": 10, "type": 1, "type_name": "Identity",
        "identity": "steve", "fragments": 1,
    }  # fmt: skip
    assert e["response"]["eap"]["type_name"] == "MD5-Challenge"
    assert "EAP-Message" not in e["response"]["attributes"]
    assert bytes(range(16)).hex() not in str(e)
    assert e["summary"] == "Access-Request steve [EAP Identity] → Access-Challenge"
    assert e["response"]["attributes"]["State"] == b"state-1".hex()
    assert p.stats["radius_eap_messages"] == 2
    assert compile_predicate('radius_eap_type == "Identity"')(e)


def test_eap_tls_fragments_joined_across_attributes_show_their_flags() -> None:
    record = bytes([1, 5, 0x01, 0x06, 13, 0xC0]) + struct.pack("!I", 3000) + bytes(252)
    parts = [record[i : i + 253] for i in range(0, len(record), 253)]
    req = access_request(4, extra=b"".join(attr(79, part) for part in parts))
    _, [e] = run([(T0, up(req))])
    eap = e["request"]["eap"]
    assert (eap["type_name"], eap["fragments"], eap["length"]) == ("EAP-TLS", 2, 262)
    assert eap["flags"] == {"length_included": True, "more_fragments": True, "start": False}


def test_vendor_attributes_of_the_common_vendors_are_named_and_others_kept_as_hex() -> None:
    extra = (
        vsa(radius.WISPR, 1, "isocc=us,cc=1,ac=408,network=ACMEWISP")
        + vsa(radius.WISPR, 7, 10_000_000)
        + vsa(radius.THREE_GPP, 1, "001010123456789")
        + vsa(radius.THREE_GPP, 21, 6)
        + vsa(radius.MICROSOFT, 7, 1)
        + vsa(radius.CISCO, 1, "shell:priv-lvl=15")
        + vsa(radius.CISCO, 1, "ip:addr-pool=pool1")
        + vsa(99999, 3, b"\xab\xcd")
        + attr(26, struct.pack("!I", 4242) + b"\x00\x01\x00")  # not the suggested format
        + attr(64, b"\x00\x00\x00\x0d")  # Tunnel-Type VLAN, no tag
        + attr(81, b"\x01100")  # Tunnel-Private-Group-Id, tag 1
        + attr(200, b"\x01\x02")  # unassigned
    )
    _, [e] = run([(T0, up(access_request(6, extra=extra)))])
    a = e["request"]["attributes"]
    assert a["WISPr-Location-ID"] == "isocc=us,cc=1,ac=408,network=ACMEWISP"
    assert a["WISPr-Bandwidth-Max-Up"] == 10_000_000
    assert (a["3GPP-IMSI"], a["3GPP-RAT-Type"]) == ("001010123456789", "EUTRAN")
    assert a["MS-MPPE-Encryption-Policy"] == "Encryption-Allowed"
    assert a["Cisco-AVPair"] == ["shell:priv-lvl=15", "ip:addr-pool=pool1"]
    assert a["Vendor-99999-Attr-3"] == "abcd"
    assert a["Vendor-4242"] == "000100"
    assert a["Tunnel-Type"] == "VLAN" and a["Tunnel-Private-Group-Id:1"] == "100"
    assert a["Attribute-200"] == "0102"


def test_status_server_is_answered_and_paired() -> None:
    ping = request(12, 77, attr(80, bytes(16)), os.urandom(16))
    _, [e] = run([(T0, up(ping)), (T0 + MS, down(answer(2, ping, attr(18, "alive"))))])
    assert (e["method"], e["status"], e["request"]["attributes"]["Message-Authenticator"]) == (
        "Status-Server",
        2,
        MARKER,
    )


def test_kfl_variables_read_the_request() -> None:
    req = access_request(8, user="dave")
    _, [e] = run([(T0, up(req)), (T0 + MS, down(answer(2, req)))])
    for query in (
        "radius && radius_code == 1",
        'radius_user_name == "dave"',
        'radius_nas_identifier == "ap-7"',
        'radius_calling_station_id == "00-11-22-33-44-55"',
        "radius && status_code == 2",
    ):
        assert compile_predicate(query)(e), query
    assert not compile_predicate('radius_user_name == "eve"')(e)


# ---- detection ----------------------------------------------------------------------------------


def test_found_by_content_on_any_port_and_oriented_by_request_or_answer() -> None:
    req = access_request(2)
    assert radius.probe(req, b"") == Verdict.YES
    assert radius.probe(b"", answer(2, req)) == Verdict.YES
    assert radius.probe(answer(2, req), b"") == Verdict.NO
    frames = [
        (T0, udp_frame(SERVER, 31812, NAS, 45000, answer(2, req))),  # capture starts at an answer
        (T0 + MS, udp_frame(NAS, 45000, SERVER, 31812, req)),
    ]
    _, out = run(frames)
    assert sorted((e["src"]["ip"], e["error"]["type"] if e["error"] else None) for e in out) == [
        (NAS, "timeout"),
        (NAS, "unmatched"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00\x00\x14",  # shorter than a header
        b"\x63" + bytes(19),  # unknown code
        struct.pack("!BBH", 1, 0, 19) + bytes(16),  # Length below 20
        struct.pack("!BBH", 1, 0, 30) + bytes(16),  # Length beyond the datagram
        struct.pack("!BBH", 1, 0, 24) + bytes(16) + b"\x01\x00\x00\x00",  # attribute length 0
        struct.pack("!BBH", 1, 0, 24) + bytes(16) + b"\x01\x09ab",  # attribute past Length
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_probe_says_no_to_what_is_not_a_whole_radius_packet(data: bytes) -> None:
    assert radius.probe(data, b"") == Verdict.NO
    assert radius.probe(b"", data) == Verdict.NO


# ---- bad input ----------------------------------------------------------------------------------


def session() -> radius.RadiusSession:
    return radius.RadiusSession(SessionConfig())


def test_attribute_length_zero_or_one_stops_the_walk_at_once_with_a_dissection_error() -> None:
    for bad in (0, 1):
        good = attr(1, "zed")
        data = (
            struct.pack("!BBH", 1, 1, 20 + len(good) + 2 + 400)
            + bytes(16)
            + good
            + bytes([5, bad])
            + bytes(400)
        )
        [msg] = session().feed(True, data, T0)
        assert isinstance(msg, Message)
        assert msg.fields["attributes"] == {"User-Name": "zed"}
        assert msg.fields["malformed"] == f"attribute 5 at offset {20 + len(good)} has length {bad}"
    # On a flow already known as RADIUS (the probe wants a whole packet) it is an entry of its own with
    # the error: a server discards such a packet silently (RFC 2865 §3), so no answer is awaited.
    _, out = run([(T0, up(access_request(2))), (T0 + MS, up(data))])
    [e] = [x for x in out if x["stream"] == "1"]
    assert e["error"]["type"] == "dissection" and "has length 1" in e["error"]["message"]


def test_an_attribute_lying_about_its_length_is_reported_and_what_came_before_kept() -> None:
    body = attr(1, "yan") + bytes([18, 200]) + b"hello"
    data = struct.pack("!BBH", 1, 1, 20 + len(body)) + bytes(16) + body
    [msg] = session().feed(True, data, T0)
    assert isinstance(msg, Message)
    assert msg.fields["attributes"] == {"User-Name": "yan"}
    assert "claims 200 bytes" in msg.fields["malformed"]


def test_a_datagram_cut_short_of_its_length_is_a_truncated_message() -> None:
    req = access_request(3)
    [msg] = session().feed(True, req[:40], T0)
    assert isinstance(msg, Message) and msg.truncated and "malformed" not in msg.fields
    # The server got it whole (the capture cut it): its answer still pairs, the entry says it was cut.
    _, out = run([(T0, up(access_request(2))), (T0 + MS, up(req[:40])), (T0 + 2 * MS, down(answer(2, req)))])
    [e] = [x for x in out if x["stream"] == "3"]
    assert e["status"] == 2
    assert e["error"] == {"type": "dissection", "message": "message cut by a capture gap"}


def test_junk_first_is_not_radius_but_junk_after_radius_is_counted_and_skipped() -> None:
    s = session()
    assert s.feed(True, b"\x99" * 30, T0) == [Violation("radius: not a RADIUS packet")]
    s = session()
    assert len(s.feed(True, access_request(1), T0)) == 1
    assert s.feed(True, b"\x99" * 30, T0 + 1) == []
    assert s.counters["malformed_headers"] == 1


def test_padding_after_the_length_is_ignored() -> None:
    req = access_request(4)
    [msg] = session().feed(True, req + b"\0" * 7, T0)
    assert isinstance(msg, Message) and "malformed" not in msg.fields and not msg.truncated


def test_more_attributes_than_listed_are_counted() -> None:
    body = attr(18, "") * 1000  # 2-byte empty Reply-Messages
    data = struct.pack("!BBH", 1, 1, 20 + len(body)) + bytes(16) + body
    [msg] = session().feed(True, data, T0)
    assert isinstance(msg, Message)
    assert msg.fields["attributes_count"] == 1000
    assert len(msg.fields["attributes"]["Reply-Message"]) == radius.MAX_ATTRIBUTES


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600), client=st.booleans())
def test_random_datagrams_never_raise(data: bytes, client: bool) -> None:
    s = session()
    s.feed(True, access_request(1), T0)  # pinned: later junk is counted, not a violation
    for ev in s.feed(client, data, T0 + 1):
        assert isinstance(ev, Message | Violation)
    radius.probe(data, data)


@settings(max_examples=300, deadline=None)
@given(
    attrs=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=30),
    cut=st.integers(0, 400),
    flip=st.integers(0, 399),
    code=st.sampled_from(sorted(radius.CODES)),
)
def test_mutated_packets_never_raise_and_keep_their_header(
    attrs: list[tuple[int, bytes]], cut: int, flip: int, code: int
) -> None:
    body = b"".join(attr(t, v) for t, v in attrs)
    data = bytearray(struct.pack("!BBH", code, 9, 20 + len(body)) + bytes(16) + body)
    if flip >= 20 and flip < len(data):
        data[flip] ^= 0xFF  # a lying attribute length, type or value
    data = data[: max(20, len(data) - cut)] if cut % 3 == 0 else data
    events = session().feed(True, bytes(data), T0)
    for ev in events:
        assert isinstance(ev, Message)
        assert ev.fields["code"] == code and ev.fields["id"] == 9
        assert len(ev.fields["attributes"]) <= radius.MAX_ATTRIBUTES


# ---- shared captures against tshark ---------------------------------------------------------------


def tshark_radius(path: Path) -> tuple[int, int, int, int]:
    """(requests, duplicate requests, answers paired with a request, answers without one)."""
    assert TSHARK is not None
    lines = subprocess.run(
        [TSHARK, "-r", str(path), "-Y", "radius", "-T", "fields", "-E", "separator=;",
         "-e", "radius.code", "-e", "radius.req.dup", "-e", "radius.reqframe"],
        capture_output=True, check=True, text=True, timeout=120,
    ).stdout.splitlines()  # fmt: skip
    requests = dups = paired = unpaired = 0
    for line in lines:
        code, dup, reqframe = line.split(";")
        if int(code) in radius.REQUESTS:
            requests += 1
            dups += bool(dup)
        elif reqframe:
            paired += 1
        else:
            unpaired += 1
    return requests, dups, paired, unpaired


def radius_captures() -> list[Path]:
    return files_or_missing(sorted((PCAPS / "radius").glob("*.pcap*")))


@needs_pcaps
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", radius_captures(), ids=lambda p: p.name)
def test_each_radius_capture_gives_tsharks_requests_answers_and_duplicates(path: Path) -> None:
    requests, dups, paired, unpaired = tshark_radius(path)
    p = Pipeline(default_registry())
    out = [e for e in p.feed(read_columns(path)) + p.finish() if e["protocol"] == "radius"]
    assert p.entries_by_protocol["radius"] == len(out)
    with_request = [e for e in out if e["request"] is not None]
    assert len(with_request) == requests - dups
    assert sum(e["request"].get("retransmissions", 0) for e in with_request) == dups
    assert sum(1 for e in with_request if e["response"] is not None) == paired
    assert sum(1 for e in out if e["request"] is None) == unpaired
    assert all("malformed" not in (e["request"] or e["response"]) for e in out)
    assert all(e["request"]["attributes"].get("User-Password") in (None, MARKER) for e in with_request)


@needs_pcaps
def test_the_zeek_capture_reads_as_its_exchanges() -> None:
    path = PCAPS / "radius" / "zeek_radius_localhost.pcap"
    p = Pipeline(default_registry())
    out = [e for e in p.feed(read_columns(path)) + p.finish() if e["protocol"] == "radius"]
    statuses = [(e["stream"], status_text(e) or e["error"]["type"]) for e in out]
    assert statuses == [
        ("103", "Access-Challenge"), ("104", "Access-Reject"), ("113", "Access-Challenge"),
        ("114", "Access-Accept"), ("97", "Access-Accept"), ("168", "Access-Accept"),
        ("43", "Access-Reject"), ("184", "timeout"), ("148", "Access-Accept"),
    ]  # fmt: skip
    first = out[0]
    assert first["request"]["eap"]["identity"] == "steve"
    assert first["response"]["eap"]["type_name"] == "MD5-Challenge"
    assert first["request"]["attributes"]["User-Password"] == MARKER
    assert "request.attributes.User-Password" in first["redacted"]
    assert out[7]["request"]["retransmissions"] == 2
    assert p.stats["radius_retransmissions"] == 2

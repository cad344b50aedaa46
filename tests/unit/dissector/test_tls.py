"""TLS handshake transcripts: ClientHello/ServerHello fields, JA3/JA4, bounded and never raising."""

from __future__ import annotations

import hashlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import FlowMark, Message, SessionConfig, Verdict
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols.tls import TlsSession, client_hello, is_grease, probe
from wiretide.dissector.registry import default_registry

from .builders import Conversation


def ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def vec(n: int, body: bytes) -> bytes:
    return len(body).to_bytes(n, "big") + body


def hello_body(sni: str | None = "api.example.com", alpn: tuple[bytes, ...] = (b"h2", b"http/1.1")) -> bytes:
    ciphers = [0x0A0A, 0x1301, 0x1302, 0xC02B]
    exts = b""
    exts += ext(0x1A1A, b"")  # GREASE
    if sni is not None:
        exts += ext(0, vec(2, b"\x00" + vec(2, sni.encode())))
    exts += ext(10, vec(2, struct.pack("!HHH", 0x2A2A, 29, 23)))
    exts += ext(11, vec(1, b"\x00"))
    exts += ext(13, vec(2, struct.pack("!HH", 0x0403, 0x0804)))
    if alpn:
        exts += ext(16, vec(2, b"".join(vec(1, a) for a in alpn)))
    exts += ext(43, vec(1, struct.pack("!HHH", 0x3A3A, 0x0304, 0x0303)))
    return (
        b"\x03\x03"
        + b"\x11" * 32
        + vec(1, b"")
        + vec(2, b"".join(struct.pack("!H", c) for c in ciphers))
        + vec(1, b"\x00")
        + vec(2, exts)
    )


def record(handshake_type: int, body: bytes) -> bytes:
    hs = bytes([handshake_type]) + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def server_hello_body(version: int = 0x0304, cipher: int = 0x1301) -> bytes:
    exts = ext(43, struct.pack("!H", version)) + ext(16, vec(2, vec(1, b"h2")))
    return b"\x03\x03" + b"\x22" * 32 + vec(1, b"") + struct.pack("!H", cipher) + b"\x00" + vec(2, exts)


def test_the_client_hello_yields_sni_alpn_versions_and_fingerprints() -> None:
    f = client_hello(hello_body())
    assert f is not None
    assert f["sni"] == "api.example.com" and f["alpn"] == ["h2", "http/1.1"]
    assert f["supported_versions"] == ["1.3", "1.2"]
    # JA3 text: legacy version, then GREASE-free ciphers, extensions, groups, point formats.
    assert f["ja3_string"] == "771,4865-4866-49195,0-10-11-13-16-43,29-23,0"
    assert f["ja3"] == hashlib.md5(f["ja3_string"].encode(), usedforsecurity=False).hexdigest()
    a, b, c = f["ja4"].split("_")
    assert a == "t13d0306h2"  # TCP, TLS 1.3, SNI present, 3 ciphers, 6 extensions, ALPN h2
    assert b == hashlib.sha256(b"1301,1302,c02b").hexdigest()[:12]
    assert c == hashlib.sha256(b"000a,000b,000d,002b_0403,0804").hexdigest()[:12]


def test_no_sni_and_no_alpn_show_in_ja4() -> None:
    f = client_hello(hello_body(sni=None, alpn=()))
    assert f is not None and f["ja4"].startswith("t13i0304") and f["ja4"][8:10] == "00"


def test_grease_values_are_recognised() -> None:
    assert all(is_grease(v) for v in (0x0A0A, 0x1A1A, 0xFAFA))
    assert not any(is_grease(v) for v in (0x0A1A, 0x1301, 0x0000))


def test_a_hello_split_across_records_and_segments_is_reassembled() -> None:
    rec = record(1, hello_body())
    s = TlsSession(SessionConfig())
    events = []
    for i in range(0, len(rec), 7):
        events += s.feed(True, rec[i : i + 7], 1)
    events += s.feed(False, record(2, server_hello_body()), 2)
    msgs = [e for e in events if isinstance(e, Message)]
    marks = [e for e in events if isinstance(e, FlowMark)]
    assert [m.is_request for m in msgs] == [True, False]
    assert msgs[1].fields["version"] == "1.3" and msgs[1].fields["cipher"] == "TLS_AES_128_GCM_SHA256"
    assert marks[0].value["sni"] == "api.example.com" and marks[0].value["decrypted"] is False


def test_a_tls_flow_on_an_unusual_port_is_marked_and_gives_one_handshake_entry() -> None:
    conv = Conversation(sport=9999).handshake()
    conv.send(True, record(1, hello_body())).send(False, record(2, server_hello_body()))
    conv.send(True, b"\x17\x03\x03\x00\x05hello").close()
    p = Pipeline(default_registry())
    (e,) = p.feed(conv.columns()) + p.finish()
    assert e["protocol"] == "tls" and e["tls"]["sni"] == "api.example.com" and e["tls"]["alpn"] == "h2"
    assert e["tls"]["ja4"].startswith("t13d")


def test_the_probe_says_yes_to_hellos_and_no_to_http() -> None:
    assert probe(record(1, hello_body()), b"") == Verdict.YES
    assert probe(b"", record(2, server_hello_body())) == Verdict.YES
    assert probe(b"GET / HTTP/1.1\r\n", b"") == Verdict.NO
    assert probe(b"\x16\x03", b"") == Verdict.MAYBE


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=400))
def test_random_and_truncated_bytes_never_raise(data: bytes, cut: int) -> None:
    s = TlsSession(SessionConfig())
    s.feed(True, record(1, hello_body())[:cut] + data, 1)
    s.feed(False, b"\x16\x03\x03" + data, 2)
    s.close(3)
    assert client_hello(data) is None or isinstance(client_hello(data), dict)

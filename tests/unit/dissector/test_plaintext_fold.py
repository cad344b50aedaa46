"""A decrypted connection is one set of entries: the packet side's `tls` entry of a connection whose
plaintext arrives is folded into its decrypted calls; one whose plaintext never comes is released."""

from __future__ import annotations

from typing import Any

from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.plaintext import TLS_HOLD_NS, PlaintextFlows
from wiretide.dissector.registry import default_registry
from wiretide.proto.v1 import packets_pb2

T0 = 1_700_000_000_000_000_000
CLIENT = (bytes([10, 91, 0, 1]), 40000)
SERVER = (bytes([10, 91, 0, 2]), 8443)
REQUEST = b"GET /one HTTP/1.1\r\nHost: example\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def chunk(from_client: bool, data: bytes, ts: int) -> packets_pb2.PlaintextChunk:
    (src, sport), (dst, dport) = (CLIENT, SERVER) if from_client else (SERVER, CLIENT)
    return packets_pb2.PlaintextChunk(
        src_ip=src, src_port=sport, dst_ip=dst, dst_port=dport, from_client=from_client, offset=0, data=data,
        timestamp_ns=ts, pid=1, tid=1, comm="curl", library="openssl 3", local_is_sender=from_client,
    )  # fmt: skip


def handshake(ts: int = T0, client_port: int = 40000) -> dict[str, Any]:
    """The packet side's entry of a TLS handshake (as tls.py's session gives it)."""
    return {
        "protocol": "tls",
        "timestamp": ts,
        "src": {"ip": "10.91.0.1", "port": client_port},
        "dst": {"ip": "10.91.0.2", "port": 8443},
        "capture": {"source": "af_packet", "interface": "eth0"},
    }


def flows() -> PlaintextFlows:
    return PlaintextFlows(Pipeline(default_registry(), node="test"))


def test_a_handshake_entry_is_folded_when_its_plaintext_follows() -> None:
    f = flows()
    assert f.fold([handshake()], T0) == []
    out = f.feed([chunk(True, REQUEST, T0 + 1000), chunk(False, RESPONSE, T0 + 2000)])
    out += f.fold([], T0 + 10 * TLS_HOLD_NS) + f.finish()
    assert [e["protocol"] for e in out] == ["http"]
    assert f.pipeline.stats["plaintext_tls_folded"] == 1


def test_a_handshake_entry_arriving_after_its_plaintext_is_folded_too() -> None:
    f = flows()
    f.feed([chunk(True, REQUEST, T0 + 1000), chunk(False, RESPONSE, T0 + 2000)])
    f.finish()  # the plaintext flow has ended before the packets came
    assert f.fold([handshake()], T0 + 3000) == []


def test_a_handshake_without_plaintext_is_released_after_the_hold() -> None:
    f = flows()
    assert f.fold([handshake()], T0) == []
    assert f.fold([], T0 + TLS_HOLD_NS - 1) == []
    assert [e["protocol"] for e in f.fold([], T0 + TLS_HOLD_NS)] == ["tls"]


def test_a_later_connection_reusing_the_4_tuple_keeps_its_handshake_entry() -> None:
    f = flows()
    f.feed([chunk(True, REQUEST, T0 + 1000)])
    f.finish()
    later = T0 + 60 * TLS_HOLD_NS
    f.fold([handshake(later)], later)
    assert [e["protocol"] for e in f.fold([], later + TLS_HOLD_NS)] == ["tls"]


def test_held_entries_leave_at_the_end_and_other_entries_pass_at_once() -> None:
    f = flows()
    other = {"protocol": "http", "src": {}, "dst": {}}
    assert f.fold([handshake(), other, {"protocol": "tls"}], T0) == [other, {"protocol": "tls"}]
    assert [e["protocol"] for e in f.finish()] == ["tls"]


def test_held_entries_are_bounded() -> None:
    f = flows()
    from wiretide.dissector import plaintext

    n = plaintext.MAX_HELD_TLS + 3
    out = f.fold([handshake(T0, 1024 + i) for i in range(n)], T0)
    assert len(out) == 3  # the oldest released early, never lost

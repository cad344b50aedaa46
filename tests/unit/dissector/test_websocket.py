"""WebSocket transcripts: masked frames, fragments, control frames, and the link to the upgrade entry."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.api import Message, SessionConfig, Violation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols.websocket import WebSocketSession
from wiretide.dissector.registry import default_registry

from .builders import Conversation, http_get


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        head = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + payload
    return head + payload


def test_masked_client_text_is_unmasked() -> None:
    (m,) = WebSocketSession(SessionConfig()).feed(
        True, frame(1, b"hello server", mask=b"\x01\x02\x03\x04"), 1
    )
    assert (
        isinstance(m, Message) and m.is_request and m.fields["text"] == "hello server" and m.fields["masked"]
    )


def test_fragments_join_and_a_ping_in_between_stands_alone() -> None:
    data = frame(2, b"ab", fin=False) + frame(9, b"p") + frame(0, b"cd", fin=False) + frame(0, b"ef")
    msgs = WebSocketSession(SessionConfig()).feed(False, data, 1)
    assert [m.fields["type"] for m in msgs] == ["ping", "binary"]  # type: ignore[union-attr]
    assert msgs[1].fields["data"] == "YWJjZGVm" and msgs[1].fields["size"] == 6  # type: ignore[union-attr]


def test_a_close_frame_carries_its_code() -> None:
    (m,) = WebSocketSession(SessionConfig()).feed(False, frame(8, struct.pack("!H", 1000) + b"bye"), 1)
    assert m.fields["close_code"] == 1000 and m.fields["text"] == "bye"  # type: ignore[union-attr]


def test_a_continuation_without_a_start_is_a_violation() -> None:
    (v,) = WebSocketSession(SessionConfig()).feed(False, frame(0, b"x"), 1)
    assert isinstance(v, Violation)


def test_large_messages_keep_the_cap_and_count_the_rest() -> None:
    (m,) = WebSocketSession(SessionConfig(body_cap=100)).feed(False, frame(1, b"x" * 70000), 1)
    assert m.fields["size"] == 70000 and m.fields["truncated"] and len(m.fields["text"]) == 100  # type: ignore[union-attr]


def test_messages_after_an_upgrade_are_entries_linked_to_it() -> None:
    conv = Conversation(sport=8765).handshake()
    conv.send(
        True,
        http_get(
            "/socket", extra="Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ),
    )
    conv.send(False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    conv.send(True, frame(1, b"ping?", mask=b"abcd")).send(False, frame(1, b"pong!")).close()
    p = Pipeline(default_registry())
    entries = p.feed(conv.columns()) + p.finish()
    assert [e["protocol"] for e in entries] == ["http", "ws", "ws"]
    up = entries[0]
    assert up["status"] == 101
    assert entries[1]["request"]["text"] == "ping?" and entries[1]["request"]["upgrade_id"] == up["id"]
    assert entries[2]["response"]["text"] == "pong!" and entries[2]["response"]["upgrade_id"] == up["id"]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=500))
def test_random_bytes_never_raise(data: bytes) -> None:
    s = WebSocketSession(SessionConfig(body_cap=64))
    for ev in s.feed(True, data, 1) + s.feed(False, data, 2):
        assert isinstance(ev, Message | Violation)

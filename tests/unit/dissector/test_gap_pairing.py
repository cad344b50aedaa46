"""A keep-alive HTTP/1 connection that crosses a capture gap (the capture restarted, a ring overflowed)
goes on pairing each request with its own response: the calls lost in the hole are lost, the ones
after it are whole and right.

Known defect, kept as a failing transcript until it is fixed: when both directions have a hole, the
response direction resynchronises first (its hole is given up as soon as the client has acknowledged
past it), so the first response after the hole finds no request waiting and is emitted alone; the
request it answers, released a moment later from behind the client's hole, is then paired with the
next call's response, and so is every call after it, for the rest of the connection.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.dissector.builders import ACK, Conversation, columns, tcp_frame
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

CALLS = 30
HOLE = range(10, 20)  # calls whose packets, both ways, the capture never saw


def keep_alive_with_a_hole() -> list[dict[str, Any]]:
    """GET /c/<i> answered with body r<i>, one connection, each call 200 ms apart, fed packet by packet."""
    conv = Conversation(step=200_000_000).handshake()
    seen = list(conv.frames)
    for i in range(CALLS):
        first = len(conv.frames)
        conv.send(True, f"GET /c/{i} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
        conv.send(False, b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n" + f"r{i:03d}".encode())
        ack = tcp_frame(conv.client, conv.cport, conv.server, conv.sport, conv.cseq, conv.sseq, ACK)
        conv.frames.append((conv._tick(), ack))
        if i not in HOLE:
            seen += conv.frames[first:]
    p = Pipeline(default_registry(), source="af_packet")
    out: list[dict[str, Any]] = []
    for frame in seen:
        out += p.feed(columns([frame]))
    return out + p.finish()


def pairs(entries: list[dict[str, Any]]) -> dict[str, str | None]:
    return {str(e["path"]): (e.get("response") or {}).get("body", {}).get("content") for e in entries}


def test_calls_before_the_hole_are_paired_right() -> None:
    got = pairs(keep_alive_with_a_hole())
    assert all(got[f"/c/{i}"] == f"r{i:03d}" for i in range(HOLE.start))


@pytest.mark.xfail(strict=True, reason="known defect: calls after a two-way gap are paired off by one")
def test_calls_after_the_hole_are_each_paired_with_their_own_response() -> None:
    entries = keep_alive_with_a_hole()
    got = pairs(entries)
    assert {f"/c/{i}": got.get(f"/c/{i}") for i in range(HOLE.stop, CALLS)} == {
        f"/c/{i}": f"r{i:03d}" for i in range(HOLE.stop, CALLS)
    }
    assert not [e for e in entries if e.get("path") is None]  # no response emitted without its request

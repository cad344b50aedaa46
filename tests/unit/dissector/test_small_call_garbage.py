"""Small calls leave no work for the cyclic garbage collector: a connection's parser objects form no
reference cycle, so they are freed by reference counting when the connection ends, and the
collector never has a connection's worth of garbage to find per new-connection call."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from wiretide.dissector.api import Message, SessionConfig, Upgrade
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.protocols.http1 import Http1Session
from wiretide.dissector.registry import default_registry

from .builders import Conversation, columns, http_get, http_ok


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The collector stopped (and emptied first), so that only what the test leaves is found."""
    was_on = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _connection(cport: int, calls: int, ts: int) -> Conversation:
    conv = Conversation(client="10.8.0.1", cport=cport, server="10.9.0.1", sport=80, ts=ts).handshake()
    for i in range(calls):
        conv.send(True, http_get(f"/items/{i}")).send(False, http_ok(b'{"id": %d}' % i, "application/json"))
    return conv.close()


@pytest.mark.usefixtures("collector_off")
def test_an_http1_session_that_is_dropped_leaves_no_cycle_to_collect() -> None:
    s = Http1Session(SessionConfig())
    out: list[Any] = s.feed(True, http_get("/a"), 1) + s.feed(False, http_ok(b"hi"), 2) + s.close(3)
    assert [type(e) for e in out] == [Message, Message]
    del s, out
    assert gc.collect() == 0


@pytest.mark.usefixtures("collector_off")
def test_an_upgraded_http1_session_still_answers_and_leaves_no_cycle() -> None:
    s = Http1Session(SessionConfig())
    up = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ok = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00"
    out: list[Any] = s.feed(True, up, 1) + s.feed(False, ok, 2)
    assert [type(e) for e in out] == [Message, Message, Upgrade]
    assert out[2].protocol == "ws" and out[2].server_rest == b"\x81\x00"
    del s, out
    assert gc.collect() == 0


@pytest.mark.usefixtures("collector_off")
def test_many_short_http_connections_through_the_pipeline_leave_no_cycle() -> None:
    frames = []
    ts = 1_700_000_000 * 10**9
    for n in range(50):
        conv = _connection(40000 + n, 2, ts)
        frames.extend(conv.frames)
        ts = conv.ts
    p = Pipeline(default_registry())  # (a pipeline refers to itself: it lives on, found by nobody)
    gc.collect()
    docs = p.feed(columns(frames)) + p.finish()
    assert sum(d["protocol"] == "http" for d in docs) == 100
    del docs
    assert gc.collect() == 0


def test_a_closed_connection_lingers_without_its_parser_pairing_or_reassembly_state() -> None:
    conv = _connection(40000, 2, 1_700_000_000 * 10**9)
    late = Conversation(client="10.8.0.1", cport=40000, server="10.9.0.1", sport=80, ts=conv.ts)
    late.cseq, late.sseq = conv.cseq - 30, conv.sseq
    p = Pipeline(default_registry())
    docs = p.feed(columns(conv.frames))
    assert [d["path"] for d in docs if d["protocol"] == "http"] == ["/items/0", "/items/1"]
    (flow,) = p.tcp.values()  # closed by the FINs, kept a while for stragglers
    assert flow.closed
    assert flow.session is None and flow.matcher is None and flow.streams is None
    # A straggler (a retransmitted request) is counted on the flow and gives no entry.
    packets = flow.pkts_a + flow.pkts_b
    late.send(True, http_get("/items/1"))
    assert p.feed(columns(late.frames)) == []
    assert flow.pkts_a + flow.pkts_b == packets + 1
    assert p.finish() == []

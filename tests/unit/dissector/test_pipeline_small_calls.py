"""Many short connections (a call or a few per connection, as `ab`/curl against nginx): every call is
an entry named with its own connection's ends, however many addresses pass through the pipeline."""

from __future__ import annotations

from wiretide.dissector import pipeline
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from .builders import Conversation, columns, http_get, http_ok


def _connection(client: str, cport: int, calls: int, ts: int) -> Conversation:
    conv = Conversation(client=client, cport=cport, server="10.9.0.1", sport=80, ts=ts).handshake()
    for i in range(calls):
        conv.send(True, http_get(f"/items/{i}")).send(False, http_ok(b'{"id": %d}' % i, "application/json"))
    return conv.close()


def test_each_short_connection_gives_its_calls_with_its_own_ends() -> None:
    frames = []
    ts = 1_700_000_000 * 10**9
    expected = []
    for n in range(40):
        client = f"10.8.{n // 4}.{n % 4 + 1}"  # ten addresses, four ports each
        conv = _connection(client, 40000 + n, 3, ts)
        frames.extend(conv.frames)
        ts = conv.ts
        expected += [(client, 40000 + n, f"/items/{i}") for i in range(3)]
    p = Pipeline(default_registry())
    docs = p.feed(columns(frames)) + p.finish()
    http = [d for d in docs if d["protocol"] == "http"]
    assert [(d["src"]["ip"], d["src"]["port"], d["path"]) for d in http] == expected
    assert all(d["dst"] == {"ip": "10.9.0.1", "port": 80} and d["status"] == 200 for d in http)
    assert len({d["flow_id"] for d in http}) == 40
    assert p.stats["closed_fin"] == 40 and p.stats["flows_tcp"] == 40


def test_the_address_text_memo_stays_bounded_and_right_past_its_size() -> None:
    limit = pipeline._IP_TEXT_MAX
    many = limit + 50
    frames = []
    ts = 1_700_000_000 * 10**9
    for n in range(many):
        conv = _connection(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 40000, 1, ts)
        frames.extend(conv.frames)
        ts = conv.ts
    p = Pipeline(default_registry())
    docs = [d for d in p.feed(columns(frames)) + p.finish() if d["protocol"] == "http"]
    assert len(docs) == many
    assert [d["src"]["ip"] for d in docs[-3:]] == [
        f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(many - 3, many)
    ]
    assert len(pipeline._IP_TEXT) <= limit


def test_ipv6_ends_are_written_as_text_too() -> None:
    raw4 = bytes([192, 0, 2, 7])
    raw6 = bytes.fromhex("20010db8000000000000000000000001")
    assert pipeline._ip(raw4) == "192.0.2.7" and pipeline._ip(raw4) == "192.0.2.7"
    assert pipeline._ip(raw6) == "2001:db8::1"

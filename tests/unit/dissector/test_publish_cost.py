"""The dissector's work per published entry beyond dissecting it: the entries counter is added to once
per protocol of a batch, and an end the pipeline wrote (ip and port alone) is named without a copy."""

from __future__ import annotations

from typing import Any

import pytest

from wiretide.common.identity import NS, IdentityTable
from wiretide.common.settings import load_settings
from wiretide.dissector import service
from wiretide.dissector.service import DissectorService, DissectorSettings, enrich
from wiretide.proto.v1 import resolver_pb2

T0 = 1_700_000_000 * NS


class _Counted:
    """A labelled counter that records each `labels()` call and what was added per label."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.totals: dict[str, float] = {}

    def labels(self, protocol: str) -> Any:
        self.calls.append(protocol)
        totals = self.totals

        class _Child:
            def inc(self, n: float = 1) -> None:
                totals[protocol] = totals.get(protocol, 0) + n

        return _Child()


def test_a_batch_adds_to_the_entries_counter_once_per_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = _Counted()
    monkeypatch.setattr(service, "ENTRIES", counted)
    svc = DissectorService(load_settings(DissectorSettings, "dissector", {}))
    protocols = ["http", "http", "dns", "http", "redis", "dns"]
    entries = [{"protocol": p, "timestamp": T0 + i, "src": {}, "dst": {}} for i, p in enumerate(protocols)]
    svc._publish("node-a", entries)
    assert counted.totals == {"http": 3, "dns": 2, "redis": 1}
    assert sorted(counted.calls) == ["dns", "http", "redis"]
    assert svc.entries == 6


def _table() -> IdentityTable:
    t = IdentityTable()
    web = resolver_pb2.Identity(ip="10.1.0.2", name="web-0", namespace="shop", kind="pod", valid_from_ns=T0)
    t.upsert(web)
    return t


def test_an_end_of_ip_and_port_becomes_the_named_endpoint_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table()
    e: dict[str, Any] = {
        "protocol": "http",
        "timestamp": T0 + NS,
        "src": {"ip": "10.1.0.2", "port": 40000},
        "dst": {"ip": "10.9.9.9", "port": 80},
    }
    named: list[dict[str, Any]] = []
    endpoint = table.endpoint

    def remember(ip: str, port: int, ts: int, raw: bytes | None = None) -> dict[str, Any]:
        out = endpoint(ip, port, ts, raw)
        named.append(out)
        return out

    monkeypatch.setattr(table, "endpoint", remember)
    merged = [{**end, **endpoint(end["ip"], end["port"], e["timestamp"])} for end in (e["src"], e["dst"])]
    enrich(table, [e])
    assert e["src"] is named[0] and e["dst"] is named[1]  # no copy of what the table answered
    for got, want in zip((e["src"], e["dst"]), merged, strict=True):
        assert list(got.items()) == list(want.items())  # the same keys in the same order
    assert e["src"]["name"] == "web-0" and e["dst"]["resolution"] == "none"


def test_an_end_with_more_than_ip_and_port_keeps_its_own_fields_first() -> None:
    e: dict[str, Any] = {
        "protocol": "http",
        "timestamp": T0 + NS,
        "src": {"port": 40000, "ip": "10.1.0.2"},
        "dst": {"ip": "10.9.9.9", "port": 80, "extra": 1},
    }
    enrich(_table(), [e])
    assert list(e["src"])[:2] == ["port", "ip"] and e["src"]["name"] == "web-0"
    assert list(e["dst"])[:3] == ["ip", "port", "extra"] and e["dst"]["extra"] == 1

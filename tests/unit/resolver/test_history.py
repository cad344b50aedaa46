"""The IP history: an entry is named by who held the address at the entry's time, within bounds."""

from __future__ import annotations

import random
import socket

from wiretide.common.identity import EARLY_SLACK_NS, LINGER_NS, NS, IdentityTable
from wiretide.proto.v1.resolver_pb2 import Identity

IP = "10.20.0.7"
T0 = 1_700_000_000 * NS


def pod(name: str, start: int, end: int = 0, ip: str = IP, port: int = 0, ns: str = "shop") -> Identity:
    return Identity(
        ip=ip, port=port, name=name, namespace=ns, kind="pod", valid_from_ns=start, valid_until_ns=end
    )


def name_at(table: IdentityTable, ts: int, port: int = 80, ip: str | bytes = IP) -> str | None:
    fields, _ = table.lookup(ip, port, ts)
    return None if fields is None else fields["name"]


def test_an_ip_reused_one_second_later_names_old_and_new_entries_correctly() -> None:
    table = IdentityTable()
    table.upsert(pod("cart-old", T0, T0 + 60 * NS))
    table.upsert(pod("cart-new", T0 + 61 * NS))
    assert name_at(table, T0 + 30 * NS) == "cart-old"
    assert name_at(table, T0 + 59 * NS) == "cart-old"
    assert name_at(table, T0 + 61 * NS) == "cart-new"
    assert name_at(table, T0 + 3600 * NS) == "cart-new"


def test_a_new_holder_cuts_the_older_open_span_short() -> None:
    table = IdentityTable()
    table.upsert(pod("a", T0))
    stored, changed = table.upsert(pod("b", T0 + 10 * NS))
    assert [c.name for c in changed] == ["a"] and changed[0].valid_until_ns == T0 + 10 * NS
    assert stored.valid_from_ns == T0 + 10 * NS
    assert name_at(table, T0 + 5 * NS) == "a"
    assert name_at(table, T0 + 11 * NS) == "b"


def test_a_new_holder_starts_no_earlier_than_the_old_one_let_go() -> None:
    table = IdentityTable()
    table.upsert(pod("old", T0, T0 + 20 * NS))
    stored, _ = table.upsert(pod("new", T0 + 5 * NS))  # created while the old one was terminating
    assert stored.valid_from_ns == T0 + 20 * NS
    assert name_at(table, T0 + 10 * NS) == "old"
    assert name_at(table, T0 + 21 * NS) == "new"


def test_late_packets_of_a_gone_holder_linger_then_resolve_to_nothing() -> None:
    table = IdentityTable()
    table.upsert(pod("gone", T0, T0 + 10 * NS))
    assert name_at(table, T0 + 10 * NS + LINGER_NS - 1) == "gone"
    assert table.lookup(IP, 80, T0 + 10 * NS + LINGER_NS) == (None, "none")


def test_entries_before_the_first_holder_resolve_only_within_clock_slack() -> None:
    table = IdentityTable()
    table.upsert(pod("p", T0))
    assert name_at(table, T0 - EARLY_SLACK_NS) == "p"
    assert name_at(table, T0 - EARLY_SLACK_NS - 1) is None


def test_packed_address_bytes_resolve_like_text() -> None:
    table = IdentityTable()
    table.upsert(pod("p", T0))
    table.upsert(pod("p6", T0, ip="fd00::7"))
    assert name_at(table, T0, ip=socket.inet_aton(IP)) == "p"
    assert name_at(table, T0, ip=socket.inet_pton(socket.AF_INET6, "fd00::7")) == "p6"


def test_a_port_specific_identity_wins_over_the_address_and_says_so() -> None:
    table = IdentityTable()
    table.upsert(Identity(ip=IP, name="node-1", kind="node", node="node-1", valid_from_ns=T0))
    table.upsert(pod("dns-host", T0, port=53, ns="kube-system"))
    fields, how = table.lookup(IP, 53, T0 + NS)
    assert fields is not None and fields["name"] == "dns-host" and how == "ip-and-port"
    fields, how = table.lookup(IP, 8080, T0 + NS)
    assert fields is not None and fields["node"] == "node-1" and how == "ip"


def test_process_identities_report_the_process_mechanism_and_fields() -> None:
    table = IdentityTable()
    table.upsert(
        Identity(
            ip=IP, port=8080, name="web", kind="process", pid=42, process_name="python3", valid_from_ns=T0
        )
    )
    fields, how = table.lookup(IP, 8080, T0)
    assert how == "process"
    assert fields is not None and fields["process"] == {"pid": 42, "name": "python3", "container_id": None}


def test_history_per_address_is_bounded_and_evictions_are_counted() -> None:
    table = IdentityTable(max_spans_per_key=3)
    for i in range(10):
        table.upsert(pod(f"p{i}", T0 + i * 10 * NS, T0 + i * 10 * NS + 5 * NS))
    assert len(table) == 3 and table.evicted == 7
    assert name_at(table, T0 + 95 * NS) == "p9"
    assert name_at(table, T0 + 2 * NS) is None  # p0 is gone


def test_the_whole_table_is_bounded() -> None:
    table = IdentityTable(max_spans=100)
    for i in range(250):
        table.upsert(pod(f"p{i}", T0, ip=f"10.30.{i // 250}.{i % 250}"))
    assert len(table) == 100 and table.evicted == 150
    assert name_at(table, T0, ip="10.30.0.249") == "p249"
    assert name_at(table, T0, ip="10.30.0.0") is None


def test_dns_names_are_a_fallback_and_expire_with_their_ttl() -> None:
    table = IdentityTable()
    table.learn_dns("api.example.com.", "93.184.0.9", T0, ttl_s=30)
    fields, how = table.lookup("93.184.0.9", 443, T0 + 10 * NS)
    assert how == "dns" and fields is not None and fields["name"] == "api.example.com"
    assert table.lookup("93.184.0.9", 443, T0 + 30 * NS + LINGER_NS) == (None, "none")
    table.learn_dns("pod.example", IP, T0, ttl_s=30)
    table.upsert(pod("real", T0))
    assert name_at(table, T0 + NS) == "real"


def test_learning_garbage_from_dns_is_ignored() -> None:
    table = IdentityTable()
    table.learn_dns("x.example", "not-an-ip", T0, ttl_s=30)
    table.learn_dns("", "10.1.1.1", T0, ttl_s=30)
    assert table.stats().dns_names == 0


def test_removing_a_span_forgets_it_under_both_address_forms() -> None:
    table = IdentityTable()
    ident = pod("p", T0, port=443)
    table.upsert(ident)
    assert table.remove(ident)
    assert table.lookup(socket.inet_aton(IP), 443, T0) == (None, "none")
    assert table.lookup(IP, 443, T0) == (None, "none")
    assert not table.remove(ident)


def test_the_fast_path_agrees_with_the_full_history_under_random_churn() -> None:
    rng = random.Random(11)
    table = IdentityTable(max_spans_per_key=4)
    ips = [f"10.21.0.{i}" for i in range(6)]
    live: list[Identity] = []
    for step in range(600):
        roll = rng.random()
        if roll < 0.15 and live:
            table.remove(live.pop(rng.randrange(len(live))))
        else:
            start = T0 + rng.randrange(0, 300) * NS
            end = 0 if rng.random() < 0.5 else start + rng.randrange(1, 60) * NS
            port = 0 if rng.random() < 0.8 else rng.choice((53, 8080))
            stored, _ = table.upsert(pod(f"p{step}", start, end, ip=rng.choice(ips), port=port))
            live.append(stored)
        for _ in range(5):
            ip, port, ts = rng.choice(ips), rng.choice((53, 80, 8080)), T0 + rng.randrange(-5, 400) * NS
            fields, how = table.lookup(ip, port, ts)
            ident, how_full = table.find(ip, port, ts)
            assert how == how_full
            assert (fields or {}).get("name") == (ident.name if ident is not None else None)
            assert table.lookup(socket.inet_aton(ip), port, ts) == (fields, how)


def test_endpoint_builds_a_fresh_complete_entry_endpoint() -> None:
    table = IdentityTable()
    table.upsert(pod("web", T0))
    first = table.endpoint(IP, 8080, T0 + NS, raw=socket.inet_aton(IP))
    assert first["ip"] == IP and first["port"] == 8080 and first["name"] == "web"
    assert first["resolution"] == "ip" and first["pod"]["namespace"] == "shop"
    first["name"] = "changed"
    assert table.endpoint(IP, 8080, T0 + NS)["name"] == "web"
    unknown = table.endpoint("10.99.0.1", 80, T0)
    assert unknown["resolution"] == "none" and unknown["name"] is None and unknown["pod"] is None

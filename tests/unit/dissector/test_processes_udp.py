"""UDP socket owners (eBPF) name DNS-style packet entries: a server bound to any address by its port
and the peer it answered, never by its port alone."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wiretide.dissector.processes import ProcessTable
from wiretide.proto.v1 import packets_pb2

ANY4, ANY6 = bytes(4), bytes(16)
CLIENT = (bytes([10, 94, 0, 1]), 51719)
SERVER = (bytes([10, 94, 0, 2]), 53)
V6_CLIENT = (bytes.fromhex("fd000000000000000000000000000001"), 40001)


def owner(
    local: tuple[bytes, int], remote: tuple[bytes, int], pid: int, comm: str
) -> packets_pb2.SocketOwner:
    return packets_pb2.SocketOwner(
        local_ip=local[0], local_port=local[1], remote_ip=remote[0], remote_port=remote[1], pid=pid, comm=comm
    )


def dns(src: tuple[str, int], dst: tuple[str, int]) -> dict[str, Any]:
    return {"protocol": "dns", "src": {"ip": src[0], "port": src[1]}, "dst": {"ip": dst[0], "port": dst[1]}}


def test_a_server_bound_to_any_address_names_the_queries_it_answered() -> None:
    t = ProcessTable()
    t.learn([owner(CLIENT, SERVER, 11, "getent"), owner((ANY4, 53), CLIENT, 22, "dnsd")])
    e = dns(("10.94.0.1", 51719), ("10.94.0.2", 53))
    t.name([e])
    assert (e["src"]["process"]["pid"], e["dst"]["process"]["pid"]) == (11, 22)


def test_a_server_bound_to_any_address_names_no_query_from_a_peer_it_never_answered() -> None:
    t = ProcessTable()
    t.learn([owner((ANY4, 53), CLIENT, 22, "dnsd")])
    other_peer, other_port = (
        dns(("10.94.0.9", 51719), ("10.94.0.2", 53)),
        dns(("10.94.0.1", 51720), ("10.94.0.2", 53)),
    )
    t.name([other_peer, other_port])
    assert "process" not in other_peer["dst"] and "process" not in other_port["dst"]


def test_an_ipv6_socket_is_matched_by_the_unspecified_ipv6_address_not_the_ipv4_one() -> None:
    t = ProcessTable()
    t.learn([owner((ANY6, 53), V6_CLIENT, 33, "dnsd6"), owner((ANY4, 53), CLIENT, 22, "dnsd")])
    e6 = dns(("fd00::1", 40001), ("fd00::2", 53))
    e4 = dns(("10.94.0.1", 51719), ("10.94.0.2", 53))
    t.name([e6, e4])
    assert (e6["dst"]["process"]["pid"], e4["dst"]["process"]["pid"]) == (33, 22)


def test_an_own_socket_wins_over_one_bound_to_any_address() -> None:
    t = ProcessTable()
    t.learn([owner((ANY4, 53), CLIENT, 22, "wild"), owner(SERVER, CLIENT, 44, "exact")])
    e = dns(("10.94.0.1", 51719), ("10.94.0.2", 53))
    t.name([e])
    assert e["dst"]["process"]["pid"] == 44


@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(0, 65535), st.binary(max_size=20))), st.text())
def test_any_owners_and_any_entry_ends_never_raise(raw: list[tuple[bytes, int, bytes]], ip: str) -> None:
    t = ProcessTable(max_sockets=8)
    t.learn(owner((a, p), (b, p), 1, "x") for a, p, b in raw)
    for e in (
        dns((ip, 1), ("0.0.0.0", 53)),
        {"src": {"ip": None, "port": "x"}, "dst": {"ip": 5}},
        {"src": 1},
    ):
        t.name([e])
    assert len(t) <= 8

"""Socket owners (eBPF) ride to the dissector in the endpoint's one queue, behind what was queued
before them and ahead of what comes after, bounded and counted like plaintext."""

from __future__ import annotations

from wiretide.capture.sender import (
    PLAINTEXT_QUEUE_FULL,
    PLAINTEXT_UNAVAILABLE,
    SOCKET_OWNER_BYTES,
    Drops,
    EndpointSender,
)
from wiretide.capture.sources.ebpf.source import SocketOwner
from wiretide.proto.v1 import packets_pb2

OWNER = SocketOwner(bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 2]), 80, False, 42, "curl", 7, 1)


def sender(max_bytes: int = 1 << 20) -> tuple[EndpointSender, Drops]:
    drops = Drops({})
    s = EndpointSender("127.0.0.1:1", "node-a", 0, drops, lambda: None, max_bytes=max_bytes)
    s.up = True  # as once its stream is open (nothing is sent here: the task is not started)
    return s, drops


def test_owners_are_queued_in_an_ebpf_batch_of_their_own() -> None:
    s, _ = sender()
    assert s.offer_plaintext([], [OWNER.to_proto()])
    (queued,) = s.queue
    batch = queued.request.batch
    assert batch.source == packets_pb2.CAPTURE_SOURCE_EBPF_TLS and not batch.plaintext
    (owner,) = batch.sockets
    assert (owner.pid, owner.comm, owner.local_port, owner.remote_port) == (42, "curl", 40000, 80)
    assert s.queued_bytes == SOCKET_OWNER_BYTES


def test_owners_beyond_the_queue_bound_are_counted_not_queued() -> None:
    s, drops = sender(max_bytes=SOCKET_OWNER_BYTES * 2)
    assert s.offer_plaintext([], [OWNER.to_proto()] * 2)
    assert not s.offer_plaintext([], [OWNER.to_proto()] * 3)
    assert drops.counts[PLAINTEXT_QUEUE_FULL] == 3 and len(s.queue) == 1


def test_owners_for_an_endpoint_that_is_down_are_counted() -> None:
    s, drops = sender()
    s.up = False
    assert not s.offer_plaintext([], [OWNER.to_proto()])
    assert drops.counts[PLAINTEXT_UNAVAILABLE] == 1


# -- which dissector learns an owner --------------------------------------------------------------

ENDPOINTS = [f"10.1.0.{i}:50052" for i in range(1, 5)]


def routed(owners: list[SocketOwner]) -> dict[str, list[packets_pb2.SocketOwner]]:
    """What `_on_sockets` offers each endpoint of a four-dissector ring."""
    from types import SimpleNamespace

    from wiretide.capture.service import CaptureService
    from wiretide.capture.shard import HashRing

    offered: dict[str, list[packets_pb2.SocketOwner]] = {}

    def offer(endpoint: str, _chunks: object, protos: list[packets_pb2.SocketOwner]) -> None:
        offered.setdefault(endpoint, []).extend(protos)

    pool = SimpleNamespace(offer_plaintext=offer)
    me = SimpleNamespace(sharder=SimpleNamespace(ring=HashRing.of(ENDPOINTS)), pool=pool)
    CaptureService._on_sockets(me, owners)  # type: ignore[arg-type]
    return offered


def packet_owner(src: bytes, sport: int, dst: bytes, dport: int, proto: int) -> str:
    """The endpoint a packet of that flow goes to (as the sharder places it)."""
    from wiretide.capture.shard import HashRing
    from wiretide.common.packets import flow_hash

    return HashRing.of(ENDPOINTS).owner(flow_hash(src, sport, dst, dport, proto))


def test_a_tcp_owner_goes_to_the_dissector_of_its_connection_s_packets() -> None:
    got = routed([OWNER])
    (endpoint,) = got
    assert endpoint == packet_owner(OWNER.remote_ip, 80, OWNER.local_ip, 40000, 6)
    assert got[endpoint][0].protocol == 6


def test_a_connected_udp_owner_goes_where_its_udp_packets_go() -> None:
    # Ports picked so that the TCP and UDP hashes of the same 4-tuple land on different dissectors.
    local, remote = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    port = next(
        p
        for p in range(30000, 31000)
        if packet_owner(local, p, remote, 53, 17) != packet_owner(local, p, remote, 53, 6)
    )
    udp = SocketOwner(local, port, remote, 53, False, 7, "resolver", 1, 2, protocol=17)
    got = routed([udp])
    (endpoint,) = got
    assert endpoint == packet_owner(remote, 53, local, port, 17)
    assert got[endpoint][0].protocol == 17


def test_a_udp_owner_bound_to_any_address_reaches_every_dissector() -> None:
    server = SocketOwner(bytes(4), 53, bytes([10, 0, 0, 9]), 41000, True, 9, "dnsd", 1, 3, protocol=17)
    got = routed([server, OWNER])
    assert sorted(got) == sorted(ENDPOINTS)
    assert sum(len(v) for v in got.values()) == len(ENDPOINTS) + 1
    assert all(any(o.comm == "dnsd" for o in v) for v in got.values())

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

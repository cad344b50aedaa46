"""Entries: ULIDs sort by time, documents are validated, batches round-trip through protobuf."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wiretide.common.entry import (
    RANDOM_BLOCK,
    InvalidEntry,
    UlidGenerator,
    encode_batch,
    from_proto,
    ulid_time_ns,
    validate_entry,
)
from wiretide.proto.v1 import entries_pb2


def test_ulids_are_26_chars_monotonic_and_carry_their_time() -> None:
    gen = UlidGenerator()
    ts = 1_700_000_000_123_000_000
    ids = [gen.new(ts) for _ in range(1000)]
    assert all(len(i) == 26 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert ulid_time_ns(ids[0]) == ts
    assert gen.new(ts + 1_000_000) > ids[-1]


def _decode(ulid: str) -> tuple[int, int]:
    """(ms, random part) of a ULID, decoded digit by digit."""
    value = 0
    for ch in ulid:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(ch)
    return value >> 80, value & ((1 << 80) - 1)


@pytest.mark.parametrize("start", [0, 1021, (1 << 20) - 3, (1 << 80) - 2])
def test_ulids_within_a_millisecond_count_up_through_every_carry(
    start: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Within one millisecond each ULID is the previous one plus one, also where the increment carries
    # out of the last digits (the cached head must be re-encoded) and where the random part wraps.
    # Every 10 bytes of the kernel's randomness read as `start`.
    monkeypatch.setattr("wiretide.common.entry.os.urandom", lambda n: start.to_bytes(10, "big") * (n // 10))
    gen = UlidGenerator()
    ms = 1_700_000_000_123
    got = [_decode(gen.new(ms * 1_000_000 + i % 7)) for i in range(2050)]
    assert got == [(ms, (start + i) & ((1 << 80) - 1)) for i in range(2050)]
    assert _decode(gen.new((ms + 1) * 1_000_000)) == (ms + 1, start)


def test_a_batch_round_trips_through_protobuf() -> None:
    docs = [{"id": f"e{i}", "timestamp": i, "protocol": "http", "node": "n", "status": 200} for i in range(3)]
    batch = entries_pb2.EntryBatch.FromString(encode_batch(docs, "n", "p", 7))
    assert batch.seq == 7
    assert [from_proto(e) for e in batch.entries] == docs
    assert batch.entries[1].protocol == "http"


@pytest.mark.parametrize(
    "doc",
    [
        [],
        "x",
        {},
        {"id": "", "timestamp": 1, "protocol": "http"},
        {"id": "a", "timestamp": -1, "protocol": "x"},
        {"id": "a", "timestamp": True, "protocol": "x"},
        {"id": "a", "timestamp": 1, "protocol": ""},
    ],
)
def test_documents_that_are_not_entries_are_refused(doc: object) -> None:
    with pytest.raises(InvalidEntry):
        validate_entry(doc)


@given(st.binary(max_size=200))
def test_garbage_json_never_raises_anything_but_invalid_entry(data: bytes) -> None:
    with contextlib.suppress(InvalidEntry):
        from_proto(entries_pb2.Entry(json=data))


def test_randomness_is_read_from_the_kernel_a_block_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = os.urandom

    def counted(n: int) -> bytes:
        reads.append(n)
        return real(n)

    monkeypatch.setattr("wiretide.common.entry.os.urandom", counted)
    gen = UlidGenerator()
    ms = 1_700_000_000_000
    ids = [gen.new((ms + i) * 1_000_000) for i in range(200)]  # a new millisecond every time
    assert len(set(ids)) == 200 and ids == sorted(ids)
    assert reads == [RANDOM_BLOCK] * -(-200 * 10 // RANDOM_BLOCK)
    randoms = {_decode(u)[1] for u in ids}
    assert len(randoms) == 200  # each millisecond its own random part


def test_a_forked_child_does_not_repeat_its_parents_ulids() -> None:
    gen = UlidGenerator()
    ms = 1_700_000_000_000
    gen.new(ms * 1_000_000)  # the pool is filled before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ULID, then gone
        try:
            os.write(write, gen.new((ms + 1) * 1_000_000).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        child = os.read(read, 64).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    parent = gen.new((ms + 1) * 1_000_000)
    assert len(child) == 26 and child != parent

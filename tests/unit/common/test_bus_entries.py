"""The entry contract on the bus: what a producer lifts out of each document is what the document says,
consumers read every version up to theirs alike, and refuse a newer one by name."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.helpers.entries import entries
from wiretide.common.bus.entries import (
    CONTRACT_VERSION,
    MAX_UNPACKED,
    PACKING,
    UNPACKED_VERSION,
    NewerContract,
    Skipped,
    count_entries,
    documents_in_end_order,
    encode_entries,
    fetch_entries,
    indexed_entries,
    indexed_of_doc,
    open_batch,
    unpacked_bytes,
)
from wiretide.common.entry import encode_batch, from_proto
from wiretide.gateway.writer import Batch, decode
from wiretide.proto.v1 import entries_pb2

DOCS = entries(40, seed=7)
# Fields of types the store does not index (kept in the JSON, absent from the lifted fields), a float
# status (indexed as a float), a status beyond int64 (orjson still encodes it), a negative elapsed
# time and no ends at all.
ODD: list[dict[str, Any]] = [
    dict(DOCS[0], id="odd-a", status="500", src="nowhere", path=7, node=None),
    dict(DOCS[1], id="odd-b", status=True, dst={"namespace": 3, "name": None}, method=None),
    dict(DOCS[2], id="odd-c", status=2.5e2, elapsed_us=-4),
    dict(DOCS[3], id="odd-d", status=2**63, src={}, dst=None),
    {"id": "odd-e", "timestamp": 5, "protocol": "tcp"},
    dict(DOCS[4], id="odd-f", node="", method="", path=""),
]


@dataclass
class Message:
    data: bytes
    subject: str = "wt.entries.node-a"


def test_lifted_fields_hold_exactly_what_each_document_holds() -> None:
    docs = [*DOCS, *ODD]
    got = list(indexed_entries([Message(encode_entries(docs, "node-a", "t", 1))], Skipped()))
    assert got == [indexed_of_doc(d, orjson.dumps(d)) for d in docs]
    assert got[len(DOCS) + 2][2][2] == 250.0  # a float status stays a float
    assert got[len(DOCS)][2][1] is None and got[-1][2][1] == ""  # no node is not node ""


def test_batches_of_the_first_version_read_the_same_as_the_current_one() -> None:
    docs = [*DOCS, *ODD]
    old = Message(encode_batch(docs, "node-a", "t", 1))  # as a dissector before version 2 writes them
    new = Message(encode_entries(docs, "node-a", "t", 1))
    assert entries_pb2.EntryBatch.FromString(old.data).version == 0
    assert entries_pb2.EntryBatch.FromString(new.data).version == CONTRACT_VERSION
    assert list(indexed_entries([old], Skipped())) == list(indexed_entries([new], Skipped()))
    assert documents_in_end_order([old], Skipped(), []) == documents_in_end_order([new], Skipped(), [])


def test_a_consumer_of_the_first_version_reads_unpacked_batches_unchanged() -> None:
    batch = entries_pb2.EntryBatch.FromString(encode_entries(DOCS, "node-a", "t", 1, pack=False))
    assert batch.version == UNPACKED_VERSION
    assert [from_proto(e) for e in batch.entries] == DOCS  # what every v1 consumer runs


def newer() -> Message:
    batch = entries_pb2.EntryBatch(node="node-a", producer="dissector-x", seq=9, version=CONTRACT_VERSION + 1)
    batch.entries.extend(
        entries_pb2.EntryBatch.FromString(encode_entries(DOCS[:3], "node-a", "t", 1, pack=False)).entries
    )
    return Message(batch.SerializeToString())


def test_a_newer_version_is_refused_with_both_versions_named() -> None:
    with pytest.raises(NewerContract) as caught:
        list(indexed_entries([newer()], Skipped()))
    text = str(caught.value)
    assert f"version {CONTRACT_VERSION + 1}" in text and f"up to {CONTRACT_VERSION}" in text
    assert "dissector-x" in text and "upgrade" in text


def test_the_store_writer_leaves_a_newer_batch_unread_and_unacknowledged_and_stores_the_rest() -> None:
    current = Message(encode_entries(DOCS[:5], "node-a", "t", 1))
    b = Batch([newer(), current])
    decode(b)
    assert [e[0] for e in b.entries] == [d["id"] for d in DOCS[:5]]
    assert b.readable == [current]  # only these are acknowledged once committed
    assert f"up to {CONTRACT_VERSION}" in b.refused


def test_the_tracer_skips_a_newer_batch_and_says_why() -> None:
    class Subscription:
        async def fetch(self, n: int, timeout: float) -> list[Message]:
            return [newer(), Message(encode_entries(DOCS[:5], "node-a", "t", 1))]

    got = asyncio.run(fetch_entries(Subscription(), 10, 0.1))
    assert sorted(d["id"] for d in got.entries) == sorted(d["id"] for d in DOCS[:5])
    assert len(got.refused) == 1 and f"up to {CONTRACT_VERSION}" in got.refused[0]


def test_documents_come_in_the_order_their_calls_ended() -> None:
    docs = [
        dict(DOCS[0], id="slow", timestamp=100, elapsed_us=50),  # ends at 50,100
        dict(DOCS[1], id="fast", timestamp=200, elapsed_us=1),  # ends at 1,200
        dict(DOCS[2], id="tie-1", timestamp=1_200, elapsed_us=0),
        dict(DOCS[3], id="negative", timestamp=150, elapsed_us=-3),  # counted as 0
    ]
    for encode in (encode_entries, encode_batch):
        out = documents_in_end_order([Message(encode(docs, "n", "t", 1))], Skipped(), [])
        assert [d["id"] for d in out] == ["negative", "fast", "tie-1", "slow"]


def test_a_lifted_entry_that_is_not_an_entry_is_counted_and_skipped() -> None:
    batch = entries_pb2.EntryBatch(version=CONTRACT_VERSION)
    good = entries_pb2.EntryBatch.FromString(encode_entries(DOCS[:1], "n", "t", 1, pack=False)).entries[0]
    batch.entries.extend(
        [
            entries_pb2.Entry(id="", timestamp_ns=1, protocol="http", json=b"{}"),
            entries_pb2.Entry(id="x", timestamp_ns=-1, protocol="http", json=b"{}"),
            entries_pb2.Entry(id="x", timestamp_ns=1, protocol="", json=b"{}"),
            entries_pb2.Entry(id="x", timestamp_ns=1, protocol="http", json=b"[1]"),
            good,
        ]
    )
    msg = Message(batch.SerializeToString())
    skipped = Skipped()
    assert [e[0] for e in indexed_entries([msg], skipped)] == [DOCS[0]["id"]]
    assert skipped.entries == 4
    skipped = Skipped()
    assert [d["id"] for d in documents_in_end_order([msg], skipped, [])] == [DOCS[0]["id"]]
    assert skipped.entries == 4


class Fixed:
    """A subscription whose one fetch returns these messages."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages

    async def fetch(self, n: int, timeout: float) -> list[Message]:
        return self.messages


def test_a_fetch_that_only_counts_decodes_no_entry_and_counts_every_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []
    loads = orjson.loads

    def counting(data: bytes | str) -> Any:
        decoded.append(data if isinstance(data, bytes) else data.encode())
        return loads(data)

    monkeypatch.setattr(orjson, "loads", counting)
    messages = [
        Message(encode_entries(DOCS[:7], "node-a", "t", 1)),
        Message(encode_batch(DOCS[7:10], "node-a", "t", 2)),  # version 0
        newer(),  # 3 entries: counted, never read
        Message(b"\xff\xff not a batch"),
    ]
    got = asyncio.run(fetch_entries(Fixed(messages), 10, 0.1, decode=False))
    assert decoded == []
    assert got.count == 13 and got.entries == [] and got.messages == messages
    # The same messages decoded: the JSON is read, the newer batch refused, the broken one skipped.
    got = asyncio.run(fetch_entries(Fixed(messages), 10, 0.1))
    assert len(decoded) == 10
    assert got.count == 10 and sorted(d["id"] for d in got.entries) == sorted(d["id"] for d in DOCS[:10])
    assert len(got.refused) == 1


def test_counting_entries_survives_any_bytes() -> None:
    data = encode_entries(DOCS[:5], "node-a", "t", 1)
    assert count_entries([Message(data)]) == 5
    for cut in range(0, len(data), 97):  # truncated batches: counted as invalid or as what they hold
        assert 0 <= count_entries([Message(data[:cut])]) <= 5
    assert count_entries([Message(bytes(range(256)) * 4)]) == 0


# ---- packed entries (contract version 3) -----------------------------------------------------------


def test_packed_batches_read_the_same_as_unpacked_ones_and_carry_a_fraction_of_the_bytes() -> None:
    docs = [*DOCS, *ODD]
    packed = Message(encode_entries(docs, "node-a", "t", 1))
    plain = Message(encode_entries(docs, "node-a", "t", 1, pack=False))
    batch = entries_pb2.EntryBatch.FromString(packed.data)
    assert (batch.version, batch.packing, batch.packed_count, len(batch.entries)) == (
        CONTRACT_VERSION, PACKING, len(docs), 0,
    )  # fmt: skip
    assert len(packed.data) < len(plain.data) / 3
    assert unpacked_bytes(packed.data) == batch.unpacked_size > len(packed.data)
    assert unpacked_bytes(plain.data) == len(plain.data)
    assert list(indexed_entries([packed], Skipped())) == list(indexed_entries([plain], Skipped()))
    texts_a: list[bytes] = []
    texts_b: list[bytes] = []
    assert documents_in_end_order([packed], Skipped(), [], texts_a) == documents_in_end_order(
        [plain], Skipped(), [], texts_b
    )
    assert texts_a == texts_b
    assert count_entries([packed]) == count_entries([plain]) == len(docs)


def _packed(**change: Any) -> Message:
    batch = entries_pb2.EntryBatch.FromString(encode_entries(DOCS[:5], "node-a", "t", 1))
    for name, value in change.items():
        setattr(batch, name, value)
    return Message(batch.SerializeToString())


def _raw_zstd(data: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.zstd.compress(data))


BAD_PACKINGS = {
    "unknown packing": {"packing": "lz4"},
    "declared size beyond the bound": {"unpacked_size": MAX_UNPACKED + 1},
    "more bytes than declared": {"unpacked_size": 10},
    "fewer bytes than declared": {"unpacked_size": 1 << 20},
    "not a Zstandard frame": {"packed": b"\x28\xb5\x2f\xfd garbage"},
    "an empty frame": {"packed": b""},
    "a count that lies": {"packed_count": 6},
    "bytes that are not entries": {"packed": _raw_zstd(b"\xff\xff\xff"), "unpacked_size": 3},
    "a header field hidden in the entries": {
        "packed": _raw_zstd(bytes([0x28, 0x63])),  # field 5 (version) = 99
        "unpacked_size": 2,
        "packed_count": 0,
    },
}


@pytest.mark.parametrize("change", BAD_PACKINGS.values(), ids=list(BAD_PACKINGS))
def test_a_batch_that_does_not_unpack_as_declared_is_counted_and_skipped(change: dict[str, Any]) -> None:
    bad = _packed(**change)
    assert open_batch(bad.data, bad.subject) is None
    good = Message(encode_entries(DOCS[5:8], "node-a", "t", 2))
    skipped = Skipped()
    assert [e[0] for e in indexed_entries([bad, good], skipped)] == [d["id"] for d in DOCS[5:8]]
    assert [d["id"] for d in documents_in_end_order([bad, good], Skipped(), [])] == [
        d["id"] for d in DOCS[5:8]
    ]


def test_a_batch_both_packed_and_not_is_refused() -> None:
    batch = entries_pb2.EntryBatch.FromString(encode_entries(DOCS[:2], "node-a", "t", 1))
    batch.entries.extend(
        entries_pb2.EntryBatch.FromString(encode_entries(DOCS[2:3], "n", "t", 1, pack=False)).entries
    )
    assert open_batch(batch.SerializeToString(), "wt.entries.node-a") is None


def test_a_batch_too_large_to_pack_within_the_bound_goes_unpacked() -> None:
    big = {**DOCS[0], "response": {"body": {"content": "x" * (MAX_UNPACKED // 2)}}}
    data = encode_entries([big, {**big, "id": DOCS[1]["id"]}, {**big, "id": DOCS[2]["id"]}], "n", "t", 1)
    batch = entries_pb2.EntryBatch.FromString(data)
    assert not batch.packing and len(batch.entries) == 3 and batch.version == CONTRACT_VERSION
    assert open_batch(data, "wt.entries.n") is not None

"""The tracer's intake: a fetch of EntryBatch messages gives the entries the bus readers give, in the
same order, decoded a slice at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tests.helpers.entries import entries
from wiretide.common.bus.entries import CONTRACT_VERSION, Skipped, documents_in_end_order, encode_entries
from wiretide.common.entry import encode_batch
from wiretide.proto.v1 import entries_pb2
from wiretide.tracer.intake import end_ordered, slices

DOCS = entries(300, seed=7)


@dataclass
class Message:
    data: bytes
    subject: str = "wt.entries.node-a"


def newer() -> Message:
    batch = entries_pb2.EntryBatch.FromString(encode_entries(DOCS[:3], "node-b", "t", 9))
    batch.version = CONTRACT_VERSION + 1
    return Message(batch.SerializeToString())


def broken() -> Message:
    """A batch of five entries: one whose lifted fields are no Entry, one whose JSON does not parse."""
    batch = entries_pb2.EntryBatch(version=CONTRACT_VERSION)
    good = entries_pb2.EntryBatch.FromString(encode_entries(DOCS[200:203], "n", "t", 1, pack=False)).entries
    batch.entries.extend(
        [
            good[0],
            entries_pb2.Entry(id="", timestamp_ns=1, protocol="http", json=b"{}"),
            entries_pb2.Entry(id="x", timestamp_ns=1, protocol="http", json=b"{not json}"),
            good[1],
            good[2],
        ]
    )
    return Message(batch.SerializeToString())


def fetch() -> list[Message]:
    # Calls that end out of order across messages, of every contract version, with what is refused
    # or invalid among them.
    return [
        Message(encode_entries(DOCS[:120], "node-a", "t", 1)),
        newer(),
        Message(encode_batch(DOCS[120:150], "node-b", "t", 1)),  # version 0: the end is in the JSON
        Message(encode_entries(DOCS[150:200], "node-a", "t", 2, pack=False)),
        broken(),
        Message(b"\xff\xff not a batch"),
        Message(encode_entries(DOCS[203:], "node-c", "t", 3)),
    ]


def test_a_fetch_gives_the_entries_of_the_bus_readers_in_their_order_a_slice_at_a_time() -> None:
    want_skipped, want_refused, want_texts = Skipped(), list[str](), list[bytes]()
    want = documents_in_end_order(fetch(), want_skipped, want_refused, want_texts)
    skipped, refused = Skipped(), list[str]()
    got: list[dict[str, Any]] = []
    texts: list[bytes] = []
    sizes = []
    for docs, jsons in slices(end_ordered(fetch(), skipped, refused), skipped, size=64):
        sizes.append(len(docs))
        got += docs
        texts += jsons
    assert len(want) == len(DOCS) and [d["id"] for d in got] == [d["id"] for d in want]
    assert got == want and texts == want_texts
    assert all(orjson.loads(t) == d for t, d in zip(texts, got, strict=True))
    assert skipped.entries == want_skipped.entries == 2
    assert refused == want_refused and len(refused) == 1
    assert max(sizes) == 64 and sum(sizes) == len(want)


def test_nothing_is_decoded_before_its_slice_is_taken() -> None:
    fetched = end_ordered([Message(encode_entries(DOCS, "node-a", "t", 1))], Skipped(), [])
    assert len(fetched) == len(DOCS) and all(item[3] is None for item in fetched)
    taken = slices(fetched, Skipped(), size=100)
    first, _ = next(taken)
    assert len(first) == 100

"""The store writer's decoding of EntryBatch messages (contract version 1, as an older dissector writes
them): valid entries kept with their JSON as received, the rest counted and skipped — the same entries
and counts as every other reader of the bus."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from tests.helpers.entries import entries
from wiretide.common.bus.entries import fetch_entries, indexed_of_doc
from wiretide.common.entry import to_proto
from wiretide.common.metrics import BUS_INVALID
from wiretide.gateway.writer import Batch, decode
from wiretide.proto.v1 import entries_pb2

DOCS = entries(6, seed=3)


@dataclass
class Message:
    data: bytes
    subject: str = "wt.entries.node-a"


class Subscription:
    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages

    async def fetch(self, n: int, timeout: float) -> list[Message]:
        return self.messages[:n]


def batch(*items: entries_pb2.Entry) -> Message:
    out = entries_pb2.EntryBatch(node="node-a", producer="test", seq=1)
    out.entries.extend(items)
    return Message(out.SerializeToString())


def entry(json: bytes) -> entries_pb2.Entry:
    return entries_pb2.Entry(id="x", timestamp_ns=1, protocol="http", json=json)


def messages() -> list[Message]:
    indented = orjson.dumps(DOCS[1], option=orjson.OPT_INDENT_2)  # not how the store would write it
    return [
        batch(to_proto(DOCS[0]), entry(indented), entry(b"{not json"), to_proto(DOCS[2])),
        Message(b"\xff\xff not a protobuf"),
        batch(
            entry(orjson.dumps({"id": "no-protocol", "timestamp": 5})), entry(b"[1, 2]"), to_proto(DOCS[3])
        ),
    ]


def test_valid_entries_are_kept_with_their_json_as_received_and_the_rest_counted() -> None:
    msgs = messages()
    b = Batch(msgs)
    counted = BUS_INVALID.labels(msgs[0].subject)._value.get()
    decode(b)
    assert BUS_INVALID.labels(msgs[0].subject)._value.get() == counted + 4  # and the undecodable message
    raw = [orjson.dumps(DOCS[0]), orjson.dumps(DOCS[1], option=orjson.OPT_INDENT_2),
           orjson.dumps(DOCS[2]), orjson.dumps(DOCS[3])]  # fmt: skip
    assert b.entries == [indexed_of_doc(doc, json) for doc, json in zip(DOCS[:4], raw, strict=True)]
    assert b.invalid == 3  # bad JSON, no protocol, not an object; the undecodable message counts apart
    decode(b)  # once only
    assert len(b.entries) == 4
    assert b.invalid == 3


def test_the_writer_and_fetch_entries_agree_on_entries_and_counts() -> None:
    msgs = messages()
    b = Batch(msgs)
    decode(b)
    fetched = asyncio.run(fetch_entries(Subscription(msgs), 10, 0.1))
    assert fetched.messages == msgs
    assert sorted(e["id"] for e in fetched.entries) == sorted(e[0] for e in b.entries)
    assert fetched.invalid == b.invalid


def test_a_batch_of_nothing_valid_decodes_to_nothing() -> None:
    b = Batch([Message(b"\x00garbage"), batch(entry(b"null"))])
    decode(b)
    assert (b.entries, b.invalid) == ([], 1)

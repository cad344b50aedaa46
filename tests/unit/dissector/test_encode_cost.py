"""The dissector's entries on the bus: `encode_entries` writes the bytes protobuf writes for the whole
batch, without building the batch message out of entry messages (which copies every entry, its JSON
included, before serializing it)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from wiretide.common.bus.entries import CONTRACT_VERSION, UNPACKED_VERSION, encode_entries, lift, open_batch
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry
from wiretide.proto.v1 import entries_pb2

from .builders import Conversation, http_get, http_ok


def _whole_batch(docs: list[dict[str, Any]], node: str, producer: str, seq: int) -> bytes:
    """What protobuf writes for the (unpacked) batch built as one message."""
    batch = entries_pb2.EntryBatch(node=node, producer=producer, seq=seq, version=UNPACKED_VERSION)
    batch.entries.extend([lift(d, orjson.dumps(d)) for d in docs])
    return batch.SerializeToString()


def _http_entries() -> list[dict[str, Any]]:
    conv = Conversation().handshake()
    for i in range(3):
        conv.send(True, http_get(f"/items/{i}")).send(False, http_ok(b'{"id": %d}' % i, "application/json"))
    conv.close()
    pipeline = Pipeline(default_registry(), node="node-a")
    docs = [*pipeline.feed(conv.columns()), *pipeline.finish()]
    assert [d["protocol"] for d in docs].count("http") == 3
    return docs


ODD_VALUES: list[dict[str, Any]] = [
    {},
    {"status": -5},
    {"status": 2**63 - 1},
    {"status": -(2**63)},
    {"status": 2**63},
    {"status": 1.5},
    {"status": True},
    {"node": ""},
    {"node": None},
    {"method": "ÜBER", "path": "/ü/☃/😀"},
    {"path": ""},
    {"src": {"ip": "10.0.0.1", "port": 1, "namespace": "shop", "name": "web-0"}},
    {"dst": {"namespace": "", "name": "db"}},
    {"src": "not an endpoint", "dst": {}},
    {"elapsed_us": 0},
    {"elapsed_us": -1},
    {"elapsed_us": 2**40},
    {"elapsed_us": 1.5},
    {"timestamp": 0},
    {"timestamp": -1},
    {"id": "é" * 100},
]


@pytest.mark.parametrize("change", ODD_VALUES)
def test_a_batch_is_byte_for_byte_what_protobuf_writes_for_it(change: dict[str, Any]) -> None:
    docs = _http_entries()
    docs[0] = {**docs[0], **change}
    for node, producer, seq in (("node-a", "dissector-0", 7), ("", "", 0), ("n", "p", 2**64 - 1)):
        assert encode_entries(docs, node, producer, seq, pack=False) == _whole_batch(
            docs, node, producer, seq
        )
        # Packed, the same entries come out of the consumer's side.
        packed = open_batch(encode_entries(docs, node, producer, seq), "wt.entries.test")
        assert packed is not None and packed.version == CONTRACT_VERSION and not packed.packed
        whole = entries_pb2.EntryBatch.FromString(_whole_batch(docs, node, producer, seq))
        assert list(packed.entries) == list(whole.entries)
        assert (packed.node, packed.producer, packed.seq) == (node, producer, seq)
    assert encode_entries([], "node-a", "p", 1, pack=False) == _whole_batch([], "node-a", "p", 1)


def test_a_batch_message_is_never_built_out_of_entry_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    real = entries_pb2.EntryBatch

    class NoEntries:
        """An EntryBatch whose `entries` may not be touched: only its own fields are written."""

        def __init__(self, **fields: Any) -> None:
            self._message = real(**fields)

        @property
        def entries(self) -> Any:
            raise AssertionError("entries copied into a batch message")

        def SerializeToString(self) -> bytes:
            return self._message.SerializeToString()

    docs = _http_entries()
    expected = _whole_batch(docs, "node-a", "dissector-0", 3)
    monkeypatch.setattr(entries_pb2, "EntryBatch", NoEntries)
    assert encode_entries(docs, "node-a", "dissector-0", 3, pack=False) == expected

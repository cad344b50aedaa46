"""The entry contract on the bus (`EntryBatch`, protos/wiretide/proto/v1/entries.proto): writing it, and
reading what a consumer needs from it — the indexed fields alone (the store writer) or the documents
(the tracer) — fetched from a durable pull consumer.

Rule: one pass per batch, and the JSON is decoded only by a consumer that needs the document (one
that needs none, as an agents service with no agent on entries, counts them off the batches). The
producer lifts the indexed fields out of each document (`lift`, the one rule of what they hold) and
marks the batch `CONTRACT_VERSION`; a consumer reads every version up to its own (an older batch's
fields are lifted here from its JSON, by the same rule) and refuses a newer one with a message naming
both versions. The entries travel packed (one Zstandard frame per batch, `PACKING`) and are unpacked
here, within a bound. A message that does not decode or unpack and an entry that is not an Entry are
counted and skipped, never raised; the caller acknowledges the messages once it has used their entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cramjam
import orjson
from google.protobuf.message import DecodeError
from nats.errors import TimeoutError as NatsTimeout

from wiretide.common.bus.subscribe import decode_or_count
from wiretide.common.entry import InvalidEntry, validate_entry
from wiretide.common.metrics import BUS_INVALID
from wiretide.proto.v1 import entries_pb2

log = logging.getLogger(__name__)

# 3: the entries may travel packed (`PACKING`). 2: the indexed fields are lifted into each Entry. 0 (a
# producer that predates the field) and 1: only id, timestamp, protocol and node are, the rest is in
# the JSON.
CONTRACT_VERSION: Final = 3
# What a producer that does not pack writes (`encode_entries(pack=False)`): consumers of version 2 read it.
UNPACKED_VERSION: Final = 2
# How packed entries are compressed: one Zstandard frame (level `PACK_LEVEL`). Entries of one node are
# alike (the same keys, hosts, headers): a batch of small HTTP calls packs to a tenth or less, and
# everything on the bus — the JetStream store, each consumer's delivery — carries that much less.
PACKING: Final = "zstd"
PACK_LEVEL: Final = 1
# The most a consumer unpacks from one message (a batch that would be larger is not packed: it is then
# beyond any NATS message and the publisher cuts it down).
MAX_UNPACKED: Final = 16 << 20
RETRY_AFTER_ERROR_S = 0.5  # pause after a failed fetch; the client reconnects by itself meanwhile
MAX_ID_CHARS: Final = 64  # as `validate_entry`
INT64: Final = (-(2**63), 2**63 - 1)
# The fields the store indexes, in the order of `Indexed.values` (the store's columns follow it).
INDEXED_FIELDS: Final = ("protocol", "node", "status", "method", "src_ns", "src_name", "dst_ns", "dst_name")

Values = tuple[Any, ...]  # of INDEXED_FIELDS; None where the document has no value of the field's type
# One entry as the store writes it: (id, timestamp ns, values, path, JSON as received). A tuple, not a
# dataclass: one is made per entry.
Indexed = tuple[str, int, Values, str | None, bytes]


class NewerContract(ValueError):
    """An EntryBatch of a contract version this consumer does not read yet."""


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def _status(value: Any) -> int | float | None:
    """The status the store indexes: an int64 or a float (250 and 250.0 are equal for SQL as for KFL)."""
    if type(value) is int:
        return value if INT64[0] <= value <= INT64[1] else None
    return value if type(value) is float else None


def lift(doc: dict[str, Any], json: bytes) -> entries_pb2.Entry:
    """The Entry of one document (already encoded as `json`), its indexed fields lifted."""
    get = doc.get
    elapsed = get("elapsed_us")
    entry = entries_pb2.Entry(
        id=doc["id"],
        timestamp_ns=doc["timestamp"],
        protocol=doc["protocol"],
        json=json,
        elapsed_us=elapsed if type(elapsed) is int and 0 <= elapsed <= INT64[1] else 0,
    )
    # The optional fields are set only when the document has a value of their type: most are absent
    # on most entries, and each keyword costs the constructor a lookup even when it is None.
    node, status, method, path = get("node"), get("status"), get("method"), get("path")
    if type(node) is str:
        entry.node = node
    if type(status) is int:
        if INT64[0] <= status <= INT64[1]:
            entry.status = status
    elif type(status) is float:
        entry.status_real = status
    if type(method) is str:
        entry.method = method
    if type(path) is str:
        entry.path = path
    src, dst = get("src"), get("dst")
    if type(src) is dict and src:
        namespace, name = src.get("namespace"), src.get("name")
        if type(namespace) is str:
            entry.src_namespace = namespace
        if type(name) is str:
            entry.src_name = name
    if type(dst) is dict and dst:
        namespace, name = dst.get("namespace"), dst.get("name")
        if type(namespace) is str:
            entry.dst_namespace = namespace
        if type(name) is str:
            entry.dst_name = name
    return entry


# EntryBatch's `entries` (field 4, length-delimited) on the wire (protobuf.dev/programming-guides/encoding).
_ENTRIES_KEY: Final = b"\x22"
_VARINT_1: Final = tuple(bytes((n,)) for n in range(0x80))


def _varint(n: int) -> bytes:
    """A length as a base-128 varint, low group first."""
    if n < 0x80:
        return _VARINT_1[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_entries(
    docs: Sequence[dict[str, Any]], node: str, producer: str, seq: int, pack: bool = True
) -> bytes:
    """One EntryBatch: of the current contract version, its entries packed (`PACKING`); or, with `pack`
    false, of `UNPACKED_VERSION`, which consumers of that version read too."""
    # The entries are written as protobuf would write them in the batch (field 4, each serialized alone
    # and framed here: adding built entries to a batch message copies each one, its JSON included,
    # before serializing it: nearly twice the cost).
    dumps = orjson.dumps
    parts: list[bytes] = []
    for d in docs:
        entry = lift(d, dumps(d)).SerializeToString()
        parts += (_ENTRIES_KEY, _varint(len(entry)), entry)
    body = b"".join(parts)
    if pack and 0 < len(body) <= MAX_UNPACKED:
        return entries_pb2.EntryBatch(
            node=node, producer=producer, seq=seq, version=CONTRACT_VERSION,
            packed=bytes(cramjam.zstd.compress(body, level=PACK_LEVEL)), packing=PACKING,
            unpacked_size=len(body), packed_count=len(docs),
        ).SerializeToString()  # fmt: skip
    # Unpacked: the batch's fields in number order, `entries` between `producer` and `version`.
    version = CONTRACT_VERSION if pack else UNPACKED_VERSION
    return b"".join(
        (
            entries_pb2.EntryBatch(node=node, producer=producer, seq=seq).SerializeToString(),
            body,
            entries_pb2.EntryBatch(version=version).SerializeToString(),
        )
    )


def unpack_problem(batch: entries_pb2.EntryBatch) -> str:
    """Unpack a packed batch's entries into `entries` (nothing to do for one not packed); "" when done,
    else why it cannot be (the batch is then not to be used). Bounded: never more than the declared
    size, itself at most `MAX_UNPACKED`, is allocated or written."""
    if not batch.packing:
        return ""
    if batch.packing != PACKING:
        return f"entries packed as {batch.packing!r}: this consumer unpacks {PACKING!r} only"
    size = batch.unpacked_size
    if size > MAX_UNPACKED:
        return f"packed entries declare {size} bytes unpacked, beyond the {MAX_UNPACKED} this consumer takes"
    if len(batch.entries):
        return "entries both packed and not"
    out = bytearray(size)
    try:
        written = cramjam.zstd.decompress_into(batch.packed, out) if size else 0
    except cramjam.DecompressionError as exc:  # more bytes than declared, or not a Zstandard frame
        return f"packed entries do not unpack to the {size} bytes declared: {exc}"
    if written != size:
        return f"packed entries unpack to {written} bytes, not the {size} declared"
    head = (batch.node, batch.seq, batch.producer, batch.version, batch.packing, batch.unpacked_size)
    count = batch.packed_count
    try:
        batch.MergeFromString(bytes(out))
    except (DecodeError, ValueError, RuntimeError) as exc:
        return f"unpacked entries do not decode: {exc}"
    if (batch.node, batch.seq, batch.producer, batch.version, batch.packing, batch.unpacked_size) != head:
        return "unpacked bytes hold more than entries"
    if len(batch.entries) != count:
        return f"unpacked {len(batch.entries)} entries, not the {count} declared"
    batch.ClearField("packed")
    return ""


def open_batch(data: bytes, subject: str) -> entries_pb2.EntryBatch | None:
    """One EntryBatch message, its version checked (raises NewerContract) and its entries unpacked;
    None (counted in BUS_INVALID, logged) when it does not decode or unpack."""
    batch = decode_or_count(entries_pb2.EntryBatch, data, subject)
    if batch is None:
        return None
    _check(batch, subject)
    why = unpack_problem(batch)
    if why:
        BUS_INVALID.labels(subject).inc()
        log.warning("invalid message skipped", extra={"subject": subject, "error": why, "bytes": len(data)})
        return None
    return batch


def unpacked_bytes(data: bytes) -> int:
    """What one EntryBatch message holds once unpacked (its own size when it is not packed): what a
    consumer sizes its fetches by."""
    batch = entries_pb2.EntryBatch()
    try:
        batch.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return len(data)
    return max(len(data), batch.unpacked_size) if batch.packing else len(data)


def indexed_of_doc(doc: dict[str, Any], json: bytes) -> Indexed:
    """What the store indexes of a (valid) document, by the rule `lift` keeps."""
    get = doc.get
    src, dst, status, path = get("src"), get("dst"), get("status"), get("path")
    src = src if type(src) is dict else {}
    dst = dst if type(dst) is dict else {}
    values = (
        doc["protocol"],
        _str(get("node")),
        _status(status),
        _str(get("method")),
        _str(src.get("namespace")),
        _str(src.get("name")),
        _str(dst.get("namespace")),
        _str(dst.get("name")),
    )
    return doc["id"], doc["timestamp"], values, _str(path), json


def _check(batch: entries_pb2.EntryBatch, subject: str) -> None:
    if batch.version > CONTRACT_VERSION:
        producer = batch.producer or "an unnamed producer"
        raise NewerContract(
            f"EntryBatch version {batch.version} on {subject} (from {producer})"
            f" is newer than this consumer reads (up to {CONTRACT_VERSION}): upgrade this service"
        )


def count_invalid(subject: str, skipped: Skipped, error: str) -> None:
    skipped.entries += 1
    BUS_INVALID.labels(subject).inc()
    log.warning("invalid entry skipped", extra={"error": error})


def lifted_problem(e: entries_pb2.Entry) -> str:
    """Why a lifted entry is not an Entry ("" when it is); its JSON is trusted to be a JSON object."""
    if not 1 <= len(e.id) <= MAX_ID_CHARS:
        return "entry id must be a non-empty string of at most 64 characters"
    if e.timestamp_ns < 0:
        return "entry timestamp must be a non-negative integer (ns since epoch)"
    if not e.protocol:
        return "entry protocol must be a non-empty string"
    json = e.json
    if json[:1] != b"{" or json[-1:] != b"}":
        return "entry JSON is not an object"
    return ""


@dataclass(slots=True)
class Skipped:
    """Entries skipped as not valid Entry documents (a message that does not decode is counted apart)."""

    entries: int = 0


def indexed_entries(messages: Iterable[Any], skipped: Skipped) -> Iterator[Indexed]:
    """What the store needs of each valid entry of these EntryBatch messages, the JSON decoded only for
    batches older than version 2. Raises NewerContract (before yielding anything of that
    message) for a batch of a newer version."""
    for msg in messages:
        subject = msg.subject
        batch = open_batch(msg.data, subject)
        if batch is None:
            continue
        if batch.version < UNPACKED_VERSION:
            for doc, json in batch_documents(batch, subject, skipped):
                yield indexed_of_doc(doc, json)
            continue
        for e in batch.entries:
            why = lifted_problem(e)
            if why:
                count_invalid(subject, skipped, why)
                continue
            has = e.HasField
            yield (
                e.id,
                e.timestamp_ns,
                (
                    e.protocol,
                    e.node if has("node") else None,
                    e.status if has("status") else e.status_real if has("status_real") else None,
                    e.method if has("method") else None,
                    e.src_namespace if has("src_namespace") else None,
                    e.src_name if has("src_name") else None,
                    e.dst_namespace if has("dst_namespace") else None,
                    e.dst_name if has("dst_name") else None,
                ),
                e.path if has("path") else None,
                e.json,
            )


def batch_documents(
    batch: entries_pb2.EntryBatch, subject: str, skipped: Skipped
) -> Iterator[tuple[dict[str, Any], bytes]]:
    loads = orjson.loads
    for entry in batch.entries:
        json = entry.json
        try:
            doc = validate_entry(loads(json))
        except orjson.JSONDecodeError as exc:
            count_invalid(subject, skipped, f"entry JSON does not parse: {exc}")
        except InvalidEntry as exc:
            count_invalid(subject, skipped, str(exc))
        else:
            yield doc, json


def valid_entries(messages: Iterable[Any], skipped: Skipped) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each valid entry of these EntryBatch messages, with its JSON as received; what is not valid is
    counted (in `skipped` and BUS_INVALID) and logged. Raises NewerContract for a newer batch."""
    for msg in messages:
        batch = open_batch(msg.data, msg.subject)
        if batch is None:
            continue
        yield from batch_documents(batch, msg.subject, skipped)


def documents_in_end_order(
    messages: Iterable[Any], skipped: Skipped, refused: list[str], texts: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """The valid documents of these messages ordered by when their call ended (dissectors emit in
    response order), the order read off the lifted fields where the batch has them; their JSON as
    received is appended to `texts` in the same order when it is given. A message of a newer version
    is skipped and its reason appended to `refused`."""
    keyed: list[tuple[int, int, dict[str, Any], bytes]] = []
    loads = orjson.loads
    n = 0
    for msg in messages:
        subject = msg.subject
        try:
            batch = open_batch(msg.data, subject)
        except NewerContract as exc:
            refused.append(str(exc))
            continue
        if batch is None:
            continue
        if batch.version < UNPACKED_VERSION:
            for doc, json in batch_documents(batch, subject, skipped):
                elapsed = doc.get("elapsed_us")
                end = doc["timestamp"] + (elapsed * 1000 if type(elapsed) is int and elapsed > 0 else 0)
                keyed.append((end, n, doc, json))
                n += 1
            continue
        for e in batch.entries:
            why = lifted_problem(e)
            if why:
                count_invalid(subject, skipped, why)
                continue
            json = e.json
            try:
                doc = loads(json)
            except orjson.JSONDecodeError as exc:
                count_invalid(subject, skipped, f"entry JSON does not parse: {exc}")
                continue
            keyed.append((e.timestamp_ns + e.elapsed_us * 1000, n, doc, json))
            n += 1
    keyed.sort()  # by end, then arrival: n is unique, the rest is never compared
    if texts is not None:
        texts.extend([k[3] for k in keyed])
    return [k[2] for k in keyed]


def count_entries(messages: Iterable[Any]) -> int:
    """How many entries these EntryBatch messages carry, of any version, read off each batch's framing:
    no entry's JSON is decoded, nothing is validated (a consumer with no use for the entries counts them
    this way). A message that does not decode is counted as such (BUS_INVALID) and adds nothing."""
    n = 0
    for msg in messages:
        batch = decode_or_count(entries_pb2.EntryBatch, msg.data, msg.subject)
        if batch is not None:
            n += batch.packed_count if batch.packing else len(batch.entries)
    return n


@dataclass(slots=True)
class Fetched:
    messages: list[Any] = field(default_factory=list)  # ack these after the entries are used
    entries: list[dict[str, Any]] = field(default_factory=list)  # in the order their calls ended
    texts: list[bytes] = field(default_factory=list)  # the JSON of each of `entries`, as received
    count: int = 0  # entries received: the valid ones decoded, or all of them when not decoded
    invalid: int = 0  # entries skipped as not valid Entry documents
    refused: list[str] = field(default_factory=list)  # why messages of a newer version were skipped

    async def ack(self) -> None:
        for msg in self.messages:
            await msg.ack()


async def fetch_entries(
    sub: Any, max_messages: int, timeout_s: float, *, decode: bool | Callable[[], bool] = True
) -> Fetched:
    """One fetch of up to `max_messages` EntryBatches; empty when nothing came or the fetch failed.
    When `decode` is (or, asked once the messages are in, answers) False the entries are only counted
    (`count_entries`) and `entries` stays empty."""
    out = Fetched()
    try:
        out.messages = await sub.fetch(max_messages, timeout=timeout_s)
    except (TimeoutError, NatsTimeout):
        return out
    except Exception as exc:  # connection trouble: the client reconnects by itself
        log.warning("fetch failed", extra={"error": str(exc)})
        await asyncio.sleep(RETRY_AFTER_ERROR_S)
        return out
    if not (decode() if callable(decode) else decode):
        out.count = count_entries(out.messages)
        return out
    skipped = Skipped()
    out.entries = documents_in_end_order(out.messages, skipped, out.refused, out.texts)
    out.count = len(out.entries)
    out.invalid = skipped.entries
    return out

"""The tracer's intake: the entries of one fetch of EntryBatch messages, in the order their calls ended,
handed over a slice at a time.

Rule: the order is read off the lifted fields (no document decoded for it, as `documents_in_end_order`
does), and each document is decoded only when its slice is handed over, so the decoded entries held
at once are a slice's, not a fetch's (a fetch of a burst is thousands of them: tens of megabytes, and
objects the collector walks). What is refused, invalid or undecodable is counted as the bus readers
count it (`wiretide.common.bus.entries`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson

from wiretide.common.bus.entries import (
    UNPACKED_VERSION,
    NewerContract,
    Skipped,
    batch_documents,
    count_invalid,
    lifted_problem,
    open_batch,
)

# Entries decoded and handed to the engine at once: enough that per-slice work (the store, export,
# metrics) is spread thin, few enough that a burst's fetch is not held decoded all at once.
SLICE: Final = 256

# One entry as fetched: (end ns, arrival, JSON as received, its document when already decoded, subject).
Fetched = tuple[int, int, bytes, dict[str, Any] | None, str]


def end_ordered(messages: Iterable[Any], skipped: Skipped, refused: list[str]) -> list[Fetched]:
    """The entries of these messages ordered by when their call ended, then by arrival; a message of
    a newer contract version is skipped and its reason appended to `refused`. Only batches older than
    the lifted fields (version < 2) are decoded here (their end is in the document)."""
    out: list[Fetched] = []
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
                out.append((end, n, json, doc, subject))
                n += 1
            continue
        for e in batch.entries:
            why = lifted_problem(e)
            if why:
                count_invalid(subject, skipped, why)
                continue
            out.append((e.timestamp_ns + e.elapsed_us * 1000, n, e.json, None, subject))
            n += 1
    out.sort()  # by end, then arrival: the arrival is unique, the rest is never compared
    return out


def slices(
    fetched: list[Fetched], skipped: Skipped, size: int = SLICE
) -> Iterator[tuple[list[dict[str, Any]], list[bytes]]]:
    """`fetched` a slice at a time: its documents (decoded now; one whose JSON does not parse is
    counted in `skipped` and left out) and their JSON, in the same order."""
    loads = orjson.loads
    for i in range(0, len(fetched), size):
        docs: list[dict[str, Any]] = []
        texts: list[bytes] = []
        for _end, _n, json, decoded, subject in fetched[i : i + size]:
            if decoded is not None:  # a batch of the first versions: decoded to find its end
                docs.append(decoded)
                texts.append(json)
                continue
            try:
                docs.append(loads(json))
            except orjson.JSONDecodeError as exc:
                count_invalid(subject, skipped, f"entry JSON does not parse: {exc}")
                continue
            texts.append(json)
        if docs:
            yield docs, texts

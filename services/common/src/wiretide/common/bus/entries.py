"""Reading EntryBatches from a durable pull consumer: fetch, decode, validate, count what is invalid.

Rule: a message that does not decode and an entry that is not an Entry are counted and skipped, never
raised; the caller acknowledges the messages once it has used their entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nats.errors import TimeoutError as NatsTimeout

from wiretide.common.bus.subscribe import decode_or_count
from wiretide.common.entry import InvalidEntry, from_proto
from wiretide.common.metrics import BUS_INVALID
from wiretide.proto.v1 import entries_pb2

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR_S = 0.5  # pause after a failed fetch; the client reconnects by itself meanwhile


@dataclass(slots=True)
class Skipped:
    """Entries skipped as not valid Entry documents (a message that does not decode is counted apart)."""

    entries: int = 0


def valid_entries(messages: Iterable[Any], skipped: Skipped) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each valid entry of these EntryBatch messages, with its JSON as received; what is not valid is
    counted (in `skipped` and BUS_INVALID) and logged."""
    for msg in messages:
        batch = decode_or_count(entries_pb2.EntryBatch, msg.data, msg.subject)
        if batch is None:
            continue
        for entry in batch.entries:
            try:
                doc = from_proto(entry)
            except InvalidEntry as exc:
                skipped.entries += 1
                BUS_INVALID.labels(msg.subject).inc()
                log.warning("invalid entry skipped", extra={"error": str(exc)})
            else:
                yield doc, entry.json


@dataclass(slots=True)
class Fetched:
    messages: list[Any] = field(default_factory=list)  # ack these after the entries are used
    entries: list[dict[str, Any]] = field(default_factory=list)
    invalid: int = 0  # entries skipped as not valid Entry documents

    async def ack(self) -> None:
        for msg in self.messages:
            await msg.ack()


async def fetch_entries(sub: Any, max_messages: int, timeout_s: float) -> Fetched:
    """One fetch of up to `max_messages` EntryBatches; empty when nothing came or the fetch failed."""
    out = Fetched()
    try:
        out.messages = await sub.fetch(max_messages, timeout=timeout_s)
    except (TimeoutError, NatsTimeout):
        return out
    except Exception as exc:  # connection trouble: the client reconnects by itself
        log.warning("fetch failed", extra={"error": str(exc)})
        await asyncio.sleep(RETRY_AFTER_ERROR_S)
        return out
    skipped = Skipped()
    out.entries = [doc for doc, _ in valid_entries(out.messages, skipped)]
    out.invalid = skipped.entries
    return out

"""How many EntryBatches a pull consumer fetches at once: sized by bytes, not by messages alone.

Rule: a consumer holds about `max_bytes` of fetched EntryBatches per fetch, however large each is. In a
keep-alive burst a batch is as full as a NATS message allows (~800 KB); 64 of them are 50 MB held at
once, and every copy made of them (decoded documents, the JSON lifted out, compressed blobs) multiplies
that (docs/reliability.md, "A keep-alive burst").
"""

from __future__ import annotations

FETCH_MESSAGES = 64  # EntryBatch messages per fetch at most (small ones: a quiet node's batches)
FETCH_BYTES = 4 << 20  # EntryBatch bytes per fetch, about


class FetchSize:
    """How many messages the next fetch asks for: as many as carry about `max_bytes`, judged by the
    size of the messages of the last fetch (a message alone may exceed it: one is always asked for)."""

    __slots__ = ("max_bytes", "max_messages", "messages")

    def __init__(self, max_messages: int = FETCH_MESSAGES, max_bytes: int = FETCH_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.messages = 1  # the first fetch, before any size is known

    def seen(self, sizes: list[int]) -> None:
        """The payload sizes of the messages one fetch brought (none: keep the size asked for)."""
        if sizes:
            average = max(sum(sizes) // len(sizes), 1)
            self.messages = max(1, min(self.max_messages, self.max_bytes // average))

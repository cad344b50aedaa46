"""Request/response pairing per flow: FIFO (HTTP/1, pipelining) or by key (DNS id).

Rule: every table is bounded; a request pushed out by the bound is handed back as unanswered so that
it still becomes an entry (with an error), and the caller counts it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from wiretide.dissector.api import Message

# Requests waiting for a response per flow: far beyond any sane pipelining depth.
MAX_PENDING = 256

Pair = tuple[Message | None, Message | None]


class Matcher:
    """Pairs messages of one flow. `add` returns finished pairs (request or response may be None)."""

    __slots__ = ("_by_key", "_fifo", "mode")

    def __init__(self, mode: str) -> None:
        self.mode = mode
        # Both allocated by the first request that waits. A list, not a deque: a deque costs 600
        # bytes from its first item, and most flows hold one request at a time (popping the head of
        # at most MAX_PENDING pointers is one small memmove).
        self._fifo: list[Message] | None = None
        self._by_key: OrderedDict[Hashable, Message] | None = None

    def add(self, msg: Message) -> list[Pair]:
        if msg.standalone or self.mode == "none":
            return [(msg, None)] if msg.is_request else [(None, msg)]
        if self.mode == "key":
            return self._add_keyed(msg)
        fifo = self._fifo
        if msg.is_request:
            if fifo is None:
                fifo = self._fifo = []
            fifo.append(msg)
            if len(fifo) > MAX_PENDING:
                return [(fifo.pop(0), None)]
            return []
        if fifo:
            return [(fifo.pop(0), msg)]
        return [(None, msg)]

    def _add_keyed(self, msg: Message) -> list[Pair]:
        table = self._by_key
        if table is None:
            table = self._by_key = OrderedDict()
        if msg.is_request:
            out: list[Pair] = []
            old = table.pop(msg.key, None)
            if old is not None:  # same id reused before an answer: the first one went unanswered
                out.append((old, None))
            table[msg.key] = msg
            if len(table) > MAX_PENDING:
                out.append((table.popitem(last=False)[1], None))
            return out
        req = table.pop(msg.key, None)
        return [(req, msg)]

    def expire(self, before_ns: int) -> list[Pair]:
        """Requests older than `before_ns` that will not be answered any more."""
        out: list[Pair] = []
        fifo = self._fifo
        while fifo and fifo[0].ts_last < before_ns:
            out.append((fifo.pop(0), None))
        table = self._by_key
        while table:
            key, first = next(iter(table.items()))
            if first.ts_last >= before_ns:
                break
            del table[key]
            out.append((first, None))
        return out

    def drain(self) -> list[Pair]:
        """Everything still pending (flow end)."""
        out: list[Pair] = [(m, None) for m in self._fifo or ()]
        if self._by_key:
            out.extend((m, None) for m in self._by_key.values())
        self._fifo = None
        self._by_key = None
        return out

    @property
    def pending(self) -> int:
        return len(self._fifo or ()) + len(self._by_key or ())

"""Request/response pairing per flow: FIFO (HTTP/1, pipelining) or by key (DNS id).

Rule: every table is bounded; a request pushed out by the bound is handed back as unanswered so that
it still becomes an entry (with an error), and the caller counts it.

FIFO after a capture gap: each direction resynchronises on its own, so a response may reach the matcher
before the request it answers (released later from behind the other direction's hole), or answer a
request that was lost in the hole. Two rules keep the pairs right: a response that finds no request
waiting is held — the next request that started no later than it pairs with it, while a request
that started after it cannot be what it answers, so the response leaves as an orphan; and a waiting
request that started after a response is not what that response answers either, so the response
leaves as an orphan and the request goes on waiting. Times are capture times of the first byte, and
"after" means by more than CLOCK_SKEW_NS.

And a request whose response went in a hole takes no later response: when the response direction gives
up a gap, the waiting requests after which the request direction lost bytes too (a gap it gave up
since, or a hole it is still held behind) leave unanswered. A client that sent more after a request
had its response (one call at a time on a connection, as HTTP/1 clients do), so that response was in
the hole; a pipelining client loses those pairs, never gets them shifted by one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from wiretide.dissector.api import Message

# Requests waiting for a response per flow: far beyond any sane pipelining depth.
MAX_PENDING = 256
# How far apart two capture times must be before one message is taken to have started after the
# other: captures over several NIC queues or interfaces stamp packets slightly out of order, and a
# pair wrongly refused would shift every later pair of the flow by one.
CLOCK_SKEW_NS = 1_000_000

Pair = tuple[Message | None, Message | None]


class Matcher:
    """Pairs messages of one flow. `add` returns finished pairs (request or response may be None)."""

    __slots__ = ("_by_key", "_cut", "_fifo", "_orphans", "mode")

    def __init__(self, mode: str) -> None:
        self.mode = mode
        # Both allocated by the first request that waits. A list, not a deque: a deque costs 600
        # bytes from its first item, and most flows hold one request at a time (popping the head of
        # at most MAX_PENDING pointers is one small memmove).
        self._fifo: list[Message] | None = None
        self._by_key: OrderedDict[Hashable, Message] | None = None
        # FIFO: responses that found no request waiting, oldest first (see the module rule).
        self._orphans: list[Message] | None = None
        # FIFO: how many of the oldest waiting requests the request direction lost bytes after.
        self._cut = 0

    def add(self, msg: Message) -> list[Pair]:
        if msg.standalone or self.mode == "none":
            return [(msg, None)] if msg.is_request else [(None, msg)]
        if self.mode == "key":
            return self._add_keyed(msg)
        fifo = self._fifo
        if msg.is_request:
            if self._orphans:
                return self._request_after_orphans(msg)
            if fifo is None:
                fifo = self._fifo = []
            fifo.append(msg)
            if len(fifo) > MAX_PENDING:
                return [(self._pop_head(fifo), None)]
            return []
        if fifo:
            if fifo[0].ts_first <= msg.ts_first + CLOCK_SKEW_NS:
                return [(self._pop_head(fifo), msg)]
            return [(None, msg)]  # answers a request lost before the one waiting
        orphans = self._orphans
        if orphans is None:
            orphans = self._orphans = []
        orphans.append(msg)
        if len(orphans) > MAX_PENDING:
            return [(None, orphans.pop(0))]
        return []

    def _pop_head(self, fifo: list[Message]) -> Message:
        if self._cut:
            self._cut -= 1
        return fifo.pop(0)

    def gap(self, requests: bool, other_behind: bool) -> list[Pair]:
        """One direction gave up a gap (`requests`: the requests' direction); `other_behind`: the other
        direction is held behind a hole of its own. Returns the requests that will get no response
        (see the module rule)."""
        fifo = self._fifo
        if self.mode != "fifo" or not fifo:
            return []
        if requests:
            self._cut = len(fifo)
            return []
        cut = len(fifo) if other_behind else self._cut
        self._cut = 0
        out: list[Pair] = [(m, None) for m in fifo[:cut]]
        del fifo[:cut]
        return out

    def _request_after_orphans(self, req: Message) -> list[Pair]:
        """A request while responses wait: those that started before it do not answer it."""
        orphans = self._orphans
        assert orphans is not None
        out: list[Pair] = []
        while orphans and orphans[0].ts_first + CLOCK_SKEW_NS < req.ts_first:
            out.append((None, orphans.pop(0)))
        if orphans:
            out.append((req, orphans.pop(0)))
        else:
            if self._fifo is None:
                self._fifo = []
            self._fifo.append(req)
        return out

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
            out.append((self._pop_head(fifo), None))
        orphans = self._orphans
        while orphans and orphans[0].ts_last < before_ns:
            out.append((None, orphans.pop(0)))
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
        out.extend((None, m) for m in self._orphans or ())
        self._fifo = None
        self._by_key = None
        self._orphans = None
        self._cut = 0
        return out

    @property
    def pending(self) -> int:
        return len(self._fifo or ()) + len(self._by_key or ()) + len(self._orphans or ())

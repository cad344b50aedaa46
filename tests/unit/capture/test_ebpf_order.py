"""The eBPF source releases chunks in kernel order even when another CPU's buffer delivers an earlier
event one read late (a Go goroutine's Read answered on one CPU, its next Write on another).

The kernel side is replaced by a scripted reader of per-CPU buffers: each read of them appends the
events that "reached their buffers" by then, as BCC's perf_buffer_consume calls the source back.
"""

from __future__ import annotations

import time

from wiretide.capture.sources.ebpf import Chunk, EbpfSource
from wiretide.capture.sources.ebpf.source import SETTLE_NS

LO = bytes([127, 0, 0, 1])


def _chunk(offset: int, ts: int, data: bytes) -> Chunk:
    return Chunk(LO, 40000, LO, 8443, False, offset, data, ts, 7, 7, "peer", 0, "go", False)


class Buffers:
    """The per-CPU buffers: a wait (`perf_buffer_poll`) that ends by its timeout, fewer events than a
    wake-up needs having come; every read of the buffers (`perf_buffer_consume`) delivers the next
    scripted group of events to the source."""

    def __init__(self, source: EbpfSource, groups: list[list[Chunk]]) -> None:
        self.source, self.groups = source, groups

    def perf_buffer_poll(self, timeout: int = 0) -> None:
        pass

    def perf_buffer_consume(self) -> None:
        if self.groups:
            self.source._out.extend(self.groups.pop(0))


def _source(groups: list[list[Chunk]]) -> EbpfSource:
    s = EbpfSource()
    s._bpf = Buffers(s, groups)
    return s


def test_an_event_delivered_one_poll_late_is_released_before_later_ones() -> None:
    now = time.time_ns()
    first = _chunk(0, now - 50_000_000, b"HTTP/1.1 200")
    second = _chunk(12, now - 40_000_000, b"HTTP/1.1 201")
    # The first poll's drain sees only the later event; the second drain (the settle) brings the earlier.
    s = _source([[second], [first]])
    assert [c.offset for c in s.poll(0)] == [0, 12]


def test_a_chunk_stamped_within_the_settle_time_waits_for_the_next_poll() -> None:
    now = time.time_ns()
    old, recent = _chunk(0, now - 50_000_000, b"a"), _chunk(1, now + 10 * SETTLE_NS, b"b")
    s = _source([[old, recent]])
    assert [c.offset for c in s.poll(0)] == [0]
    later = _chunk(2, now + 11 * SETTLE_NS, b"c")
    s._bpf.groups = [[later]]
    assert s.poll(0) == []  # both still too recent
    assert [c.offset for c in s.drain()] == [1, 2]


def test_a_poll_without_events_returns_nothing_and_holds_nothing() -> None:
    s = _source([])
    assert s.poll(0) == [] and s.drain() == []

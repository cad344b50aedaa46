"""The eBPF feed: a source that cannot start is a reason in the status, never a crash."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.helpers.wait import wait_for_async
from wiretide.capture.sources.ebpf import Chunk, EbpfSource, EbpfUnavailable
from wiretide.capture.sources.ebpf.feed import EbpfFeed


class NoBcc(EbpfSource):
    def start(self) -> None:
        raise EbpfUnavailable("BCC is not importable")


class OneChunk(EbpfSource):
    def start(self) -> None:
        self.given = False

    def poll(self, timeout_ms: int = 100) -> list[Chunk]:
        if self.given:
            time.sleep(timeout_ms / 1000)  # as the perf buffer's poll waits for events
            return []
        self.given = True
        lo = bytes([127, 0, 0, 1])
        return [
            Chunk(
                lo, 40000, lo, 8443, True, 0, b"GET / HTTP/1.1\r\n\r\n", 1, 7, 7, "curl", 0, "openssl", True
            )
        ]


async def test_a_source_that_cannot_start_leaves_its_reason_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = EbpfFeed(lambda chunks: None, asyncio.get_running_loop(), NoBcc)
    with caplog.at_level(logging.WARNING):
        feed.start()
        await wait_for_async("the reason", lambda: feed.error)
    feed.close()
    assert feed.error == "BCC is not importable" and not feed.running
    assert "eBPF TLS source unavailable: BCC is not importable" in caplog.text


async def test_chunks_reach_the_event_loop_in_order() -> None:
    got: list[list[Chunk]] = []
    feed = EbpfFeed(got.append, asyncio.get_running_loop(), OneChunk)
    feed.start()
    await wait_for_async("the chunk", lambda: got)
    feed.close()
    assert [c.data for batch in got for c in batch] == [b"GET / HTTP/1.1\r\n\r\n"]
    assert feed.error == ""

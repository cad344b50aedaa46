"""A store writer whose fetches keep failing (NATS gone) still ends when its task is cancelled, even
when the client swallows the cancellation as the NATS client can (raising its own error instead)."""

from __future__ import annotations

import asyncio
from typing import Any

from wiretide.common.bus.fetch import FetchSize
from wiretide.gateway.writer import StoreWriter


class SwallowingSub:
    """fetch() fails at once, as on a closed connection; a cancellation inside it becomes an error."""

    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, _n: int, timeout: float) -> list[Any]:
        self.calls += 1
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise RuntimeError("nats: connection closed") from None
        raise RuntimeError("nats: connection closed")


async def test_a_cancelled_writer_ends_even_if_the_client_swallows_the_cancellation(
    monkeypatch: Any,
) -> None:
    writer = StoreWriter.__new__(StoreWriter)
    writer._stop = asyncio.Event()
    sub = SwallowingSub()
    writer._sub = sub  # type: ignore[assignment]
    writer.fetch_size = FetchSize()
    monkeypatch.setattr("wiretide.gateway.writer.RETRY_AFTER_FETCH_ERROR_S", 0.0)
    task = asyncio.create_task(writer._run())
    for _ in range(1000):  # a few failed fetches first
        if sub.calls >= 3:
            break
        await asyncio.sleep(0)
    assert sub.calls >= 3
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done, "the writer kept fetching after it was cancelled"
    assert task.cancelled()

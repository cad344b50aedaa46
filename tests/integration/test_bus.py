"""The bus: batched publishing survives NATS going away within its bound and counts what it drops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import nats

from tests.helpers.nats import NatsServer
from wiretide.common.bus import BatchPublisher, connect_with_retry, entries_subject
from wiretide.common.bus.subjects import ENTRIES_ALL, ENTRIES_STREAM


def encode(items: Sequence[int], seq: int) -> tuple[bytes, str]:
    return b",".join(str(i).encode() for i in items), f"test-{seq}-{items[0]}"


async def stored_items(url: str) -> list[int]:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    sub = await js.pull_subscribe(ENTRIES_ALL, durable="reader", stream=ENTRIES_STREAM.name)
    out: list[int] = []
    while True:
        try:
            msgs = await sub.fetch(10, timeout=5)
        except TimeoutError:  # nats.errors.TimeoutError, or a bare one when fetch runs out of time
            break
        for m in msgs:
            out.extend(int(x) for x in m.data.split(b","))
            await m.ack()
    await nc.close()
    return out


async def test_items_are_batched_many_per_message(nats_server: NatsServer) -> None:
    bus = await connect_with_retry(nats_server.url, "t")
    pub: BatchPublisher[int] = BatchPublisher(bus, entries_subject("n1"), encode, max_items=100)
    pub.start()
    pub.extend(list(range(1000)))
    await pub.close()
    assert pub.seq == 10  # 1,000 items in 10 messages
    assert pub.published_items == 1000
    await bus.close()
    assert await stored_items(nats_server.url) == list(range(1000))


async def test_while_nats_is_away_items_buffer_to_the_bound_then_the_oldest_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        bus = await connect_with_retry(server.url, "t")
        pub: BatchPublisher[int] = BatchPublisher(
            bus, entries_subject("n1"), encode, max_items=50, max_buffered=300, max_delay_s=0.01
        )
        pub.start()
        server.stop()
        await asyncio.sleep(0.3)
        pub.extend(list(range(1000)))  # 700 more than the bound
        await asyncio.sleep(0.3)
        assert pub.dropped == 700
        server.start()
        for _ in range(200):
            if not pub.buffer:
                break
            await asyncio.sleep(0.05)
        await pub.close()
        await bus.close()
        got = await stored_items(server.url)
        assert got == list(range(700, 1000))  # the newest survived, in order, none twice
    finally:
        server.stop()


async def test_a_batch_larger_than_the_servers_max_payload_is_split_and_an_oversized_item_dropped(
    nats_server: NatsServer,
) -> None:
    bus = await connect_with_retry(nats_server.url, "t")

    def encode_big(items: Sequence[int], seq: int) -> tuple[bytes, str]:
        # item 13 alone is larger than a message may be; the others are 100 KB each
        body = b"".join((b"%d," % i).ljust(2_000_000 if i == 13 else 100_000, b" ") for i in items)
        return body, f"big-{seq}-{items[0]}"

    pub: BatchPublisher[int] = BatchPublisher(bus, entries_subject("n1"), encode_big, max_items=50)
    pub.start()
    pub.extend(list(range(30)))
    await pub.close()
    await bus.close()
    assert pub.dropped == 1
    assert pub.published_items == 29
    assert pub.seq >= 3  # 29 × 100 KB cannot travel in fewer than three 1 MB messages
    got = await stored_items_raw(nats_server.url)
    assert got == [i for i in range(30) if i != 13]


async def stored_items_raw(url: str) -> list[int]:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    sub = await js.pull_subscribe(ENTRIES_ALL, durable="raw", stream=ENTRIES_STREAM.name)
    out: list[int] = []
    while True:
        try:
            msgs = await sub.fetch(10, timeout=5)
        except TimeoutError:  # nats.errors.TimeoutError, or a bare one when fetch runs out of time
            break
        for m in msgs:
            out.extend(int(x) for x in m.data.replace(b" ", b"").split(b",") if x)
            await m.ack()
    await nc.close()
    return out

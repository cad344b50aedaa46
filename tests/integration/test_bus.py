"""The bus: batched publishing survives NATS going away within its bound and counts what it drops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats

from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from wiretide.common.bus import BatchPublisher, connect_with_retry, entries_subject
from wiretide.common.bus.publish import FILL
from wiretide.common.bus.spool import Spool, SpoolBudget, leftover
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


def encode_10k(items: Sequence[int], seq: int) -> tuple[bytes, str]:
    """Items of 10 KB each: a message of the default 500 would be 5 MB, five times what NATS carries."""
    return b"".join((b"%d," % i).ljust(10_000, b" ") for i in items), f"10k-{seq}-{items[0]}"


async def test_messages_are_filled_to_what_the_server_carries_not_cut_to_max_items(
    nats_server: NatsServer,
) -> None:
    bus = await connect_with_retry(nats_server.url, "t")
    sizes: list[int] = []

    def encode(items: Sequence[int], seq: int) -> tuple[bytes, str]:
        payload, msg_id = encode_10k(items, seq)
        sizes.append(len(payload))
        return payload, msg_id

    pub: BatchPublisher[int] = BatchPublisher(bus, entries_subject("n1"), encode, max_items=5_000)
    pub.start()
    pub.extend(list(range(1000)))
    await pub.close()
    await bus.close()
    limit = 1024 * 1024  # nats-server's default max_payload
    assert pub.batch == int(limit * FILL / 10_000)  # learned from the first message that fitted
    assert pub.published_items == 1000 and pub.dropped == 0
    assert pub.seq == -(-1000 // pub.batch)  # full messages, then the rest
    # One message was encoded too large (the first, before the size of an item was known); every
    # other encoding was sent.
    assert sum(size > limit for size in sizes) == 1 and len(sizes) == pub.seq + 1
    assert await stored_items_raw(nats_server.url) == list(range(1000))


async def test_packed_messages_are_filled_by_what_they_hold_unpacked_not_by_their_payload(
    nats_server: NatsServer,
) -> None:
    """Items that pack to almost nothing (as entries with repetitive bodies do): a message is still cut
    to what fills one unpacked, learned once; no message is encoded too large again and again."""
    bus = await connect_with_retry(nats_server.url, "t")
    weights: list[int] = []

    def encode(items: Sequence[int], seq: int) -> tuple[bytes, str, int]:
        payload, msg_id = b",".join(b"%d" % i for i in items), f"p-{seq}-{items[0]}"
        weights.append(10_000 * len(items))  # 10 KB each unpacked, a few bytes packed
        return payload, msg_id, weights[-1]

    pub: BatchPublisher[int] = BatchPublisher(bus, entries_subject("n1"), encode, max_items=5_000)
    pub.start()
    pub.extend(list(range(3000)))
    await pub.close()
    await bus.close()
    limit = 1024 * 1024
    assert pub.batch == int(limit * FILL / 10_000)  # by the unpacked size, not the payload's
    assert pub.published_items == 3000 and pub.dropped == 0
    assert sum(w > limit for w in weights) == 1  # the first, before an item's size was known
    assert await stored_items(nats_server.url) == list(range(3000))


async def test_a_messages_worth_is_sent_at_once_and_less_after_the_linger(nats_server: NatsServer) -> None:
    bus = await connect_with_retry(nats_server.url, "t")
    slow: BatchPublisher[int] = BatchPublisher(
        bus, entries_subject("n1"), encode, max_items=100, max_delay_s=3600.0
    )
    slow.start()
    slow.extend(list(range(250)))  # two messages' worth: sent without waiting out the hour
    await wait_for_async("two full messages sent", lambda: slow.published_items, lambda n: n == 200)
    assert slow.seq == 2 and len(slow.buffer) == 50
    quick: BatchPublisher[int] = BatchPublisher(
        bus, entries_subject("n2"), encode, max_items=100, max_delay_s=0.05
    )
    quick.start()
    quick.extend([1000, 1001, 1002])  # far from a message's worth: sent once the linger is over
    await wait_for_async("the few items sent", lambda: quick.published_items, lambda n: n == 3)
    assert quick.seq == 1
    await quick.close()
    await slow.close()  # the 50 left are flushed on close
    await bus.close()
    assert sorted(await stored_items(nats_server.url)) == [*range(250), 1000, 1001, 1002]


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


def spooling(bus: Any, tmp: Path, budget: int, **kw: Any) -> BatchPublisher[int]:
    spool = Spool(tmp / "spool", "wt.entries.n1", SpoolBudget(budget))
    return BatchPublisher(
        bus,
        entries_subject("n1"),
        encode,
        max_items=50,
        max_buffered=300,
        max_delay_s=0.01,
        spool=spool,
        **kw,
    )


async def test_while_nats_is_away_what_is_beyond_memory_is_spooled_and_all_delivered_in_order_after(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        bus = await connect_with_retry(server.url, "t")
        pub = spooling(bus, tmp_path, budget=10 * 1024 * 1024)
        pub.start()
        server.stop()
        await wait_for_async("the client to notice", lambda: not bus.connected)
        for start in range(0, 2000, 100):  # as a capture keeps sending while NATS is away
            pub.extend(list(range(start, start + 100)))
            await asyncio.sleep(0)
        assert pub.spool is not None and pub.spool.messages == 34  # 1,700 beyond memory, 50 a message
        assert pub.spool.pending_bytes > 0 and pub.dropped == 0
        server.start()
        await wait_for_async("everything sent", lambda: pub.waiting, done=lambda n: n == 0)
        await pub.close()
        await bus.close()
        assert await stored_items(server.url) == list(range(2000))  # all of it, in order, none twice
    finally:
        server.stop()


async def test_beyond_the_spools_budget_items_are_dropped_and_counted_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        bus = await connect_with_retry(server.url, "t")
        one_message = len(encode(list(range(300, 350)), 1)[0]) + 64
        pub = spooling(bus, tmp_path, budget=3 * one_message)  # room for three messages of 50
        pub.start()
        server.stop()
        await wait_for_async("the client to notice", lambda: not bus.connected)
        pub.extend(list(range(1000)))
        assert pub.spool is not None and pub.spool.messages == 3
        assert pub.dropped == 1000 - 300 - 150
        server.start()
        await wait_for_async("everything sent", lambda: pub.waiting, done=lambda n: n == 0)
        await pub.close()
        await bus.close()
        assert await stored_items(server.url) == list(range(450))  # memory, then the spool, in order
    finally:
        server.stop()


async def test_a_spool_left_by_a_stopped_publisher_is_delivered_by_the_next(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        bus = await connect_with_retry(server.url, "t")
        first = spooling(bus, tmp_path, budget=10 * 1024 * 1024)
        first.start()
        server.stop()
        await wait_for_async("the client to notice", lambda: not bus.connected)
        first.extend(list(range(500)))
        await first.close()  # NATS still away: memory goes to the spool too
        await bus.close()
        assert leftover(tmp_path / "spool") == ["wt.entries.n1"]
        server.start()
        bus = await connect_with_retry(server.url, "t2")
        second = spooling(bus, tmp_path, budget=10 * 1024 * 1024)
        assert second.waiting == 10
        second.start()
        await wait_for_async("the spool delivered", lambda: second.waiting, done=lambda n: n == 0)
        await second.close()
        await bus.close()
        assert leftover(tmp_path / "spool") == []
        assert await stored_items(server.url) == list(range(500))
    finally:
        server.stop()

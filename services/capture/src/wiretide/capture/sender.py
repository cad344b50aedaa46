"""Streams of `PacketBatch`es to dissector endpoints over `DissectorService.Ingest`, with credits.

Rule: a sender never holds more than its bound. Batches wait in a bounded queue, already encoded (a
packet costs its frame and ~20 bytes of packed columns there, not Python objects), until the
endpoint's credits allow them out; past a high-water mark the pool says it has no room, so the
capture stops reading its ring and the kernel ring holds the rest of a burst. When the queue is full
anyway, when the endpoint is gone, or when a stream breaks with batches unacknowledged, those packets
are dropped and counted by reason — never silently.
A broken stream is reopened with exponential backoff; the pool tells its listener whenever the set
of reachable endpoints changes so the shard ring can be rebuilt. An endpoint is `ready` once its
dissector has answered the stream (it answers only when it can publish what it dissects); the end of
a replayed input travels in order behind the input's last batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import grpc

from wiretide.capture import metrics
from wiretide.common.packets import PacketColumns
from wiretide.common.rpc import channel
from wiretide.common.settings import parse_hostport
from wiretide.common.tls import PLAINTEXT, Transport
from wiretide.proto.v1 import dissector_pb2, dissector_pb2_grpc, packets_pb2

log = logging.getLogger(__name__)

DEFAULT_QUEUE_BATCHES: Final = 512  # batches are ~2k packets; the byte bound is the one that binds
DEFAULT_QUEUE_BYTES: Final = 128 << 20  # of frame data per endpoint: ~1 s of a 1 Gbit/s line
# The pool has no room once a queue holds this share of its bound, and room again below the low-water
# share: the capture reads at most a block of its ring between checks, which fits in the gap.
HIGH_WATER: Final = 0.75
LOW_WATER: Final = 0.5
CONNECT_TIMEOUT_S: Final = 2.0
BACKOFF_MIN_S: Final = 0.2
BACKOFF_MAX_S: Final = 5.0
INITIAL_CREDITS: Final = 1  # until the server's first answer says how many it grants
# What a queued packet costs besides its frame: its columns in the message (caplen, origlen,
# timestamp, interface: 4 + 4 + 8 + 4 bytes as the message holds them) and a little slack. Charged
# to the byte bound, so a queue of small frames (a SYN flood) is bounded by what it really holds.
PACKET_OVERHEAD: Final = 24

# Drop reasons (also the keys of PacketBatch.dropped and GetStatusResponse.drops).
QUEUE_FULL: Final = "queue_full"
UNAVAILABLE: Final = "dissector_unavailable"
UNACKED: Final = "unacknowledged"
# Plaintext chunks (eBPF) lost the same ways, counted apart from packets.
PLAINTEXT_QUEUE_FULL: Final = "ebpf_queue_full"
PLAINTEXT_UNAVAILABLE: Final = "ebpf_dissector_unavailable"
SOCKET_OWNER_BYTES: Final = 64  # what a socket owner counts against the queue's byte bound

# Queued behind an input's last batch (compared by identity): sent as an empty batch marked
# `end_of_input`, it tells the dissector to close the input's flows.
END_OF_INPUT: Final = PacketColumns(b"", [], [], [], [])


@dataclass(frozen=True, slots=True)
class Queued:
    """A batch waiting for credits, encoded; `seq` and the drop counts are set when it goes out."""

    request: dissector_pb2.IngestRequest
    packets: int
    nbytes: int  # frame bytes
    charge: int  # what it counts against the queue's byte bound: frames and per-packet overhead


@dataclass(slots=True)
class Drops:
    """Packets dropped by reason, shared by every sender of a process."""

    counts: dict[str, int]

    def add(self, reason: str, packets: int) -> None:
        if packets:
            self.counts[reason] = self.counts.get(reason, 0) + packets
            metrics.DROPPED.labels(reason).inc(packets)


class EndpointSender:
    """One endpoint: a bounded queue and a task that keeps an Ingest stream open and feeds it."""

    def __init__(
        self,
        endpoint: str,
        node: str,
        source: int,
        drops: Drops,
        on_change: Callable[[], None],
        *,
        max_batches: int = DEFAULT_QUEUE_BATCHES,
        max_bytes: int = DEFAULT_QUEUE_BYTES,
        transport: Transport = PLAINTEXT,
        metadata: tuple[tuple[str, str], ...] = (),  # the service token (the dissector checks callers)
    ) -> None:
        parse_hostport(endpoint, "dissector endpoint")
        self.endpoint = endpoint
        self.transport = transport
        self.metadata = metadata
        self.node = node
        self.source = source
        self.drops = drops
        self.on_change = on_change
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.queue: deque[Queued] = deque()
        self.queued_bytes = 0
        self.on_room: Callable[[], None] | None = None  # told when the queue falls below low water
        self.up = False
        self.ready = False  # the dissector answered this stream: it is ready to dissect and publish
        self.sent_batches = 0
        self.sent_packets = 0
        self.acked_packets = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ingest {self.endpoint}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop_queue(UNAVAILABLE)

    def offer(self, cols: PacketColumns) -> bool:
        """Queue a batch; False (and counted) when the endpoint is down or the queue is full."""
        if not self.up:
            self.drops.add(UNAVAILABLE, len(cols))
            return False
        size = len(cols.data) + PACKET_OVERHEAD * len(cols)
        if len(self.queue) >= self.max_batches or self.queued_bytes + size > self.max_bytes:
            self.drops.add(QUEUE_FULL, len(cols))
            return False
        self._enqueue(cols, size)
        return True

    def _enqueue(self, cols: PacketColumns, charge: int) -> None:
        request = dissector_pb2.IngestRequest(batch=cols.to_proto(self.node, self.source, 0))
        request.batch.end_of_input = cols is END_OF_INPUT
        self.queue.append(Queued(request, len(cols), len(cols.data), charge))
        self.queued_bytes += charge
        metrics.QUEUED.labels(self.endpoint).set(len(self.queue))
        self._wake.set()

    @property
    def has_room(self) -> bool:
        """Below the high-water mark (or down: then nothing is queued and offers are counted lost)."""
        return not self.up or self._below(HIGH_WATER, strict=True)

    def _below(self, share: float, *, strict: bool = False) -> bool:
        batches, nbytes = self.max_batches * share, self.max_bytes * share
        if strict:
            return len(self.queue) < batches and self.queued_bytes < nbytes
        return len(self.queue) <= batches and self.queued_bytes <= nbytes

    def end_input(self) -> bool:
        """Mark the end of an input behind everything queued (outside the bound: it carries no
        packets); False when the endpoint is down (its input was lost and counted already)."""
        if not self.up:
            return False
        self._enqueue(END_OF_INPUT, 0)
        return True

    # -- eBPF plaintext (sources/ebpf): chunks ride in batches of their own, bounded like packets --

    def offer_plaintext(
        self, chunks: list[packets_pb2.PlaintextChunk], sockets: list[packets_pb2.SocketOwner] | None = None
    ) -> bool:
        """Queue a batch of plaintext chunks and socket owners (both eBPF); False (counted in items)
        when down or full. Queued with packets, so that owners reach the dissector before the packets
        sent after them."""
        owners = sockets or []
        items = len(chunks) + len(owners)
        if not self.up:
            self.drops.add(PLAINTEXT_UNAVAILABLE, items)
            return False
        size = sum(len(c.data) for c in chunks) + SOCKET_OWNER_BYTES * len(owners)
        if len(self.queue) >= self.max_batches or self.queued_bytes + size > self.max_bytes:
            self.drops.add(PLAINTEXT_QUEUE_FULL, items)
            return False
        batch = packets_pb2.PacketBatch(
            node=self.node, source=packets_pb2.CAPTURE_SOURCE_EBPF_TLS, plaintext=chunks, sockets=owners
        )
        self.queue.append(Queued(dissector_pb2.IngestRequest(batch=batch), 0, size, size))
        self.queued_bytes += size
        metrics.QUEUED.labels(self.endpoint).set(len(self.queue))
        self._wake.set()
        return True

    def _drop_queue(self, reason: str) -> None:
        lost = sum(q.packets for q in self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        self.drops.add(reason, lost)
        metrics.QUEUED.labels(self.endpoint).set(0)
        if self.on_room is not None:
            self.on_room()

    def _set_up(self, up: bool) -> None:
        if not up:
            self.ready = False
        if up != self.up:
            self.up = up
            metrics.ENDPOINT_UP.labels(self.endpoint).set(1 if up else 0)
            log.info("dissector stream", extra={"endpoint": self.endpoint, "up": up})
            self.on_change()

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stopping:
            opened = False
            in_flight: deque[tuple[int, int]] = deque()  # (seq, packets) not yet acknowledged
            try:
                async with channel(self.endpoint, self.transport, peer="dissector") as ch:
                    await asyncio.wait_for(ch.channel_ready(), CONNECT_TIMEOUT_S)
                    stub = dissector_pb2_grpc.DissectorServiceStub(ch)
                    call = stub.Ingest(metadata=self.metadata)
                    opened = True
                    backoff = BACKOFF_MIN_S
                    self._set_up(True)
                    await self._pump(call, in_flight)
            except asyncio.CancelledError:
                self._set_up(False)
                self.drops.add(UNACKED, sum(n for _s, n in in_flight))
                raise
            except (
                grpc.aio.AioRpcError,
                asyncio.InvalidStateError,
                TimeoutError,
                OSError,
                _StreamEnded,
            ) as exc:
                if opened:
                    log.warning(
                        "dissector stream broke", extra={"endpoint": self.endpoint, "error": str(exc)}
                    )
            self.drops.add(UNACKED, sum(n for _s, n in in_flight))
            self._drop_queue(UNAVAILABLE)
            self._set_up(False)
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _pump(self, call: grpc.aio.StreamStreamCall, in_flight: deque[tuple[int, int]]) -> None:
        credits = INITIAL_CREDITS
        seq = 0
        acked = 0
        changed = asyncio.Event()
        ended: list[BaseException] = []

        async def read_acks() -> None:
            nonlocal credits, acked
            try:
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        ended.append(_StreamEnded("server closed the stream"))
                        break
                    credits = resp.credits
                    self.ready = True
                    acked = max(acked, resp.acked_seq)
                    while in_flight and in_flight[0][0] <= acked:
                        self.acked_packets += in_flight.popleft()[1]
                    changed.set()
            except grpc.aio.AioRpcError as exc:
                ended.append(exc)
            finally:
                changed.set()
                self._wake.set()

        reader = asyncio.create_task(read_acks())
        try:
            while not ended and not self._stopping:
                if self.queue and len(in_flight) < credits:
                    queued = self.queue.popleft()
                    self.queued_bytes -= queued.charge
                    metrics.QUEUED.labels(self.endpoint).set(len(self.queue))
                    if self.on_room is not None and self._below(LOW_WATER):
                        self.on_room()
                    seq += 1
                    batch = queued.request.batch
                    batch.seq = seq
                    for reason, count in self.drops.counts.items():
                        batch.dropped[reason] = count
                    in_flight.append((seq, queued.packets))
                    await call.write(queued.request)
                    self.sent_batches += 1
                    self.sent_packets += queued.packets
                    metrics.SENT_BATCHES.labels(self.endpoint).inc()
                    metrics.SENT_PACKETS.labels(self.endpoint).inc(queued.packets)
                    metrics.SENT_BYTES.labels(self.endpoint).inc(queued.nbytes)
                    continue
                self._wake.clear()
                changed.clear()
                waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(changed.wait())}
                _done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for fut in pending:
                    fut.cancel()
            if ended:
                raise ended[0]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
            call.cancel()

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued has been acknowledged (or `timeout`); True when it was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.queue and self.acked_packets >= self.sent_packets:
                return True
            if not self.up and not self.queue:
                return False
            await asyncio.sleep(0.02)
        return False


class _StreamEnded(Exception):
    """The server ended an Ingest stream."""


class SenderPool:
    """The senders for the current endpoint set; reports the reachable set on every change."""

    def __init__(
        self,
        node: str,
        source: int = packets_pb2.CAPTURE_SOURCE_AF_PACKET,
        on_change: Callable[[list[str]], None] | None = None,
        *,
        max_batches: int = DEFAULT_QUEUE_BATCHES,
        max_bytes: int = DEFAULT_QUEUE_BYTES,
        transport: Transport = PLAINTEXT,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.node = node
        self._transport = transport
        self._metadata = metadata
        self.source = source
        self.drops = Drops({})
        self.senders: dict[str, EndpointSender] = {}
        self._listener = on_change
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self.on_room: Callable[[], None] | None = None  # told when a sender's queue has room again

    def healthy(self) -> list[str]:
        return sorted(ep for ep, s in self.senders.items() if s.up)

    def ready(self) -> list[str]:
        """Endpoints whose dissector has answered: what is sent to them now is dissected and published."""
        return sorted(ep for ep, s in self.senders.items() if s.ready)

    def _changed(self) -> None:
        if self._listener is not None:
            self._listener(self.healthy())

    async def set_endpoints(self, endpoints: Iterable[str]) -> None:
        wanted = set(endpoints)
        for ep in sorted(set(self.senders) - wanted):
            sender = self.senders.pop(ep)
            await sender.stop()
        for ep in sorted(wanted - set(self.senders)):
            sender = EndpointSender(
                ep,
                self.node,
                self.source,
                self.drops,
                self._changed,
                max_batches=self._max_batches,
                max_bytes=self._max_bytes,
                transport=self._transport,
                metadata=self._metadata,
            )
            sender.on_room = self._room
            self.senders[ep] = sender
            sender.start()
        self._changed()

    @property
    def has_room(self) -> bool:
        """Every reachable endpoint's queue is below its high-water mark: keep reading the ring."""
        return all(s.has_room for s in self.senders.values())

    def _room(self) -> None:
        if self.on_room is not None and self.has_room:
            self.on_room()

    def offer(self, endpoint: str, cols: PacketColumns) -> bool:
        sender = self.senders.get(endpoint)
        if sender is None:
            self.drops.add(UNAVAILABLE, len(cols))
            return False
        return sender.offer(cols)

    def offer_plaintext(
        self,
        endpoint: str,
        chunks: list[packets_pb2.PlaintextChunk],
        sockets: list[packets_pb2.SocketOwner] | None = None,
    ) -> bool:
        sender = self.senders.get(endpoint)
        if sender is None:
            self.drops.add(PLAINTEXT_UNAVAILABLE, len(chunks) + len(sockets or ()))
            return False
        return sender.offer_plaintext(chunks, sockets)

    def end_input(self) -> None:
        """Every endpoint: the input (a replayed file) ends behind what is queued for it."""
        for sender in self.senders.values():
            sender.end_input()

    async def drain(self, timeout: float) -> bool:
        results = await asyncio.gather(*(s.drain(timeout) for s in self.senders.values()))
        return all(results)

    async def close(self) -> None:
        for sender in list(self.senders.values()):
            await sender.stop()
        self.senders.clear()

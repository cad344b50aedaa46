"""A slow dissector makes the capture stop reading instead of dropping: the sender pool says it has
no room once a queue passes its high-water mark, and says so again (room) once acknowledged batches
bring the queue below its low-water mark; the batches wait encoded, and go out with their sequence
numbers and the sender's drop counts as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from tests.helpers.wait import wait_for_async
from wiretide.capture.sender import SenderPool
from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder, PacketColumns
from wiretide.proto.v1 import dissector_pb2, dissector_pb2_grpc

BATCH_PACKETS = 10
FRAME = b"\x00" * 100


class Gate(dissector_pb2_grpc.DissectorServiceServicer):
    """A dissector that acknowledges a batch only when the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.seqs: list[int] = []
        self.dropped: list[dict[str, int]] = []

    async def Ingest(
        self,
        request_iterator: AsyncIterator[dissector_pb2.IngestRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[dissector_pb2.IngestResponse]:
        yield dissector_pb2.IngestResponse(acked_seq=0, credits=1)
        async for req in request_iterator:
            await self.open.wait()
            self.seqs.append(req.batch.seq)
            self.dropped.append(dict(req.batch.dropped))
            yield dissector_pb2.IngestResponse(acked_seq=req.batch.seq, credits=1)

    async def GetStats(
        self, request: dissector_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> dissector_pb2.GetStatsResponse:
        return dissector_pb2.GetStatsResponse()


def batch(k: int) -> PacketColumns:
    b = ColumnBuilder()
    i = b.interface("x", LINKTYPE_ETHERNET)
    for _ in range(BATCH_PACKETS):
        b.append(FRAME, len(FRAME), k, i)
    return b.take()


async def test_a_full_queue_stops_the_reading_and_acknowledgements_let_it_resume() -> None:
    server = grpc.aio.server()
    gate = Gate()
    dissector_pb2_grpc.add_DissectorServiceServicer_to_server(gate, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rooms: list[bool] = []
    pool = SenderPool("n", max_batches=8, max_bytes=1 << 30)
    pool.on_room = lambda: rooms.append(pool.has_room)
    endpoint = f"127.0.0.1:{port}"
    try:
        await pool.set_endpoints([endpoint])
        sender = pool.senders[endpoint]
        await wait_for_async("the stream is open", lambda: sender.ready)
        offered = 0
        while pool.has_room:  # one batch in flight (held at the gate), the rest queued
            assert pool.offer(endpoint, batch(offered))
            offered += 1
            await asyncio.sleep(0)
        assert len(sender.queue) == 6  # 0.75 of 8: the high-water mark, with room left below the bound
        # (A batch leaving a short queue says "room" too; a reader that is not paused ignores it.)
        rooms.clear()
        assert pool.offer(endpoint, batch(offered))  # a batch already read still fits; nothing dropped
        offered += 1
        gate.open.set()
        await wait_for_async("room again", lambda: rooms)
        assert rooms[0] is True and len(sender.queue) <= 4  # at or below the low-water mark
        await wait_for_async("every batch acknowledged", lambda: len(gate.seqs) == offered)
        assert gate.seqs == list(range(1, offered + 1))
        assert pool.drops.counts == {} and all(d == {} for d in gate.dropped)
    finally:
        await pool.close()
        await server.stop(0)

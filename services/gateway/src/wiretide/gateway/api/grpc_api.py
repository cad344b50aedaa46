"""The gateway's gRPC API: the same use-cases as REST, through the same QueryService.

Rule: the server's interceptor (common/auth) has authenticated the caller and checked its role before
a method runs; each method answers within the caller's namespace scope (`current_principal()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import orjson

from wiretide.common.auth import current_principal
from wiretide.common.entry import to_proto
from wiretide.common.kfl import KflError, compile_predicate
from wiretide.gateway.query import QueryError
from wiretide.gateway.store import StoreError
from wiretide.proto.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from wiretide.gateway.service import GatewayService


class GatewayApi(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, gw: GatewayService) -> None:
        self.gw = gw

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, QueryError | KflError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"store unavailable: {exc}")

    async def Query(
        self, request: gateway_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.QueryResponse:
        try:
            result = await self.gw.queries.query(
                request.query,
                request.limit or None,
                request.before or None,
                request.after or None,
                current_principal().scope,
            )
        except (QueryError, StoreError) as exc:
            await self._fail(context, exc)
            raise
        c = result.completeness
        drops = {f"upstream.{k}": v for k, v in c["upstream_drops"].items()}
        drops.update({f"retention.{k}": v for k, v in c["retention_deleted"].items()})
        return gateway_pb2.QueryResponse(
            entries=[to_proto(d) for d in result.entries],
            next=result.next or "",
            completeness=gateway_pb2.Completeness(scanned=c["scanned"], matched=c["matched"], drops=drops),
        )

    async def Get(
        self, request: gateway_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetResponse:
        try:
            doc = await self.gw.queries.get(request.id, current_principal().scope)
        except StoreError as exc:
            await self._fail(context, exc)
            raise
        if doc is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such entry")
        assert doc is not None
        return gateway_pb2.GetResponse(entry=to_proto(doc))

    async def Stream(
        self, request: gateway_pb2.StreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.StreamResponse]:
        try:
            self.gw.queries.check(request.query)
            predicate = compile_predicate(request.query) if request.query.strip() else (lambda _e: True)
        except (QueryError, KflError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        try:
            await self.gw.live.ready()
        except Exception as exc:  # NATS away: say so rather than hang a stream that gets nothing
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"live feed unavailable: {exc}")
            return
        sub = self.gw.live.subscribe(predicate, current_principal().scope)  # no await since `ready`
        try:
            while True:
                doc = await sub.queue.get()
                if doc is None:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, sub.closed_reason or "closed")
                    return
                yield gateway_pb2.StreamResponse(entry=to_proto(doc))
        except asyncio.CancelledError:
            raise
        finally:
            self.gw.live.close(sub, "client gone")

    async def Stats(
        self, request: gateway_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.StatsResponse:
        try:
            doc = await self.gw.queries.stats(
                request.query, request.by or "protocol", current_principal().scope
            )
        except (QueryError, StoreError) as exc:
            await self._fail(context, exc)
            raise
        return gateway_pb2.StatsResponse(json=orjson.dumps(doc))

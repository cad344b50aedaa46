"""The resolver service process: identity sources → the identity table → gRPC lookups and NATS deltas."""

from __future__ import annotations

import grpc
from wiretide.common.bus import Bus
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings
from wiretide.proto.v1 import resolver_pb2, resolver_pb2_grpc


class ResolverSettings(CommonSettings):
    pass


class ResolverApi(resolver_pb2_grpc.ResolverServiceServicer):
    async def Snapshot(
        self, request: resolver_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> resolver_pb2.SnapshotResponse:
        return resolver_pb2.SnapshotResponse(version=0)

    async def Lookup(
        self, request: resolver_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> resolver_pb2.LookupResponse:
        return resolver_pb2.LookupResponse(found=False, resolution="none")


class ResolverService(Service):
    name = "resolver"
    settings_cls = ResolverSettings

    def register(self, server: grpc.aio.Server) -> None:
        resolver_pb2_grpc.add_ResolverServiceServicer_to_server(ResolverApi(), server)

    async def start(self, bus: Bus) -> None:
        pass

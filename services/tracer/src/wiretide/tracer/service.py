"""The tracer service process: entries → spans → traces, service map, RED metrics, OTLP export."""

from __future__ import annotations

import grpc
from wiretide.common.bus import Bus
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings
from wiretide.proto.v1 import tracer_pb2_grpc


class TracerSettings(CommonSettings):
    pass


class TracerService(Service):
    name = "tracer"
    settings_cls = TracerSettings

    def register(self, server: grpc.aio.Server) -> None:
        # Methods answer UNIMPLEMENTED until trace assembly lands.
        tracer_pb2_grpc.add_TracerServiceServicer_to_server(tracer_pb2_grpc.TracerServiceServicer(), server)

    async def start(self, bus: Bus) -> None:
        pass

"""The agents service process: runs user JavaScript agents on entries and events."""

from __future__ import annotations

import grpc

from wiretide.common.bus import Bus
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings
from wiretide.proto.v1 import agents_pb2, agents_pb2_grpc


class AgentsSettings(CommonSettings):
    pass


class AgentsApi(agents_pb2_grpc.AgentsServiceServicer):
    async def ListAgents(
        self, request: agents_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.ListAgentsResponse:
        return agents_pb2.ListAgentsResponse()


class AgentsService(Service):
    name = "agents"
    settings_cls = AgentsSettings

    def register(self, server: grpc.aio.Server) -> None:
        agents_pb2_grpc.add_AgentsServiceServicer_to_server(AgentsApi(), server)

    async def start(self, bus: Bus) -> None:
        pass

"""The agents service process. Running user JavaScript agents on entries and events is planned; until
it is built the service answers health and lists no agents, and it refuses to store an agent instead
of pretending to (UNIMPLEMENTED, naming what is missing)."""

from __future__ import annotations

import grpc

from wiretide.common.bus import Bus
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings
from wiretide.proto.v1 import agents_pb2, agents_pb2_grpc

NOT_BUILT = "agents are planned, not built yet: this service cannot store or run an agent"


class AgentsSettings(CommonSettings):
    pass


class AgentsApi(agents_pb2_grpc.AgentsServiceServicer):
    async def ListAgents(
        self, request: agents_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.ListAgentsResponse:
        return agents_pb2.ListAgentsResponse()

    async def PutAgent(
        self, request: agents_pb2.PutAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.PutAgentResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, NOT_BUILT)
        raise AssertionError("abort() raises")  # for the type checker: abort never returns

    async def DeleteAgent(
        self, request: agents_pb2.DeleteAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.DeleteAgentResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, NOT_BUILT)
        raise AssertionError("abort() raises")


class AgentsService(Service):
    name = "agents"
    settings_cls = AgentsSettings

    def register(self, server: grpc.aio.Server) -> None:
        agents_pb2_grpc.add_AgentsServiceServicer_to_server(AgentsApi(), server)

    async def start(self, bus: Bus) -> None:
        pass

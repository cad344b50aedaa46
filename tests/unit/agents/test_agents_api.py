"""The agents service does not pretend: until agents are built, storing or deleting one is refused with
UNIMPLEMENTED and a message saying so, over real gRPC, and the list is empty."""

from __future__ import annotations

import grpc
import pytest

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from wiretide.agents.service import AgentsService, AgentsSettings
from wiretide.proto.v1 import agents_pb2, agents_pb2_grpc


async def test_put_and_delete_are_refused_as_not_built_and_the_list_is_empty(nats_server: NatsServer) -> None:
    settings = AgentsSettings(nats_url=nats_server.url, agents_grpc="127.0.0.1:0")
    async with (
        running(AgentsService(settings)) as svc,
        grpc.aio.insecure_channel(f"127.0.0.1:{svc.grpc_port}") as ch,
    ):
        stub = agents_pb2_grpc.AgentsServiceStub(ch)
        assert list((await stub.ListAgents(agents_pb2.ListAgentsRequest())).agents) == []
        for call in (
            stub.PutAgent(agents_pb2.PutAgentRequest()),
            stub.DeleteAgent(agents_pb2.DeleteAgentRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "agents are planned" in (info.value.details() or "")

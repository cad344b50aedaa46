"""/api/health with several tracer replicas (or dissectors): each instance is asked, the service is
SERVING only when every instance is, and the answer says which one is not."""

from __future__ import annotations

from tests.helpers.nats import free_port
from wiretide.common.rpc import Health, create_health_server
from wiretide.common.settings import CommonSettings
from wiretide.common.types import GRPC_SERVICE
from wiretide.gateway.api.health import service_health


async def test_a_service_of_several_instances_is_as_healthy_as_its_worst_instance() -> None:
    servers = []
    addresses = []
    for serving in (True, False):
        health = Health([GRPC_SERVICE["tracer"]])
        await health.set(serving)
        server, port = create_health_server("127.0.0.1:0", health)
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    gone = f"127.0.0.1:{free_port()}"
    try:
        both_up = CommonSettings(tracer_grpc=f"{addresses[0]},{addresses[0]}")
        got = (await service_health(both_up, "gateway", True))["tracer"]
        assert got["status"] == "SERVING" and len(got["instances"]) == 2

        settings = CommonSettings(tracer_grpc=",".join([addresses[0], addresses[1], gone]))
        got = (await service_health(settings, "gateway", True))["tracer"]
        assert got["status"] == "NOT_SERVING"
        assert [i["status"] for i in got["instances"]] == ["SERVING", "NOT_SERVING", "UNREACHABLE"]
        assert [i["address"] for i in got["instances"]] == [addresses[0], addresses[1], gone]

        one = (await service_health(CommonSettings(tracer_grpc=addresses[0]), "gateway", True))["tracer"]
        assert one == {"status": "SERVING", "address": addresses[0]}  # one instance: as before
    finally:
        for server in servers:
            await server.stop(None)

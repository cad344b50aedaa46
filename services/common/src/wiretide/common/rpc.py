"""gRPC plumbing: servers that always carry grpc.health.v1 and reflection, and channels to peers.

Rule: every server and channel goes through `Transport` (common/tls.py): mutual TLS when configured,
plaintext only on loopback unless explicitly allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from wiretide.common.tls import PLAINTEXT, Transport

# Large enough for a PacketBatch of a few thousand full-size frames.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """The health a service reports: NOT_SERVING until it says its dependencies are up."""

    def __init__(self, service_names: list[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._names = ["", *service_names]
        self.serving = False

    async def set(self, serving: bool) -> None:
        self.serving = serving
        status = SERVING if serving else NOT_SERVING
        for name in self._names:
            await self.servicer.set(name, status)


def create_server(
    address: str,
    grpc_service_names: list[str],
    *,
    transport: Transport = PLAINTEXT,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, Health, int]:
    """An aio server bound to `address` with health + reflection. Returns (server, health, port).

    Raises PlaintextRefused for plaintext beyond loopback that the transport does not allow."""
    server = grpc.aio.server(options=CHANNEL_OPTIONS, interceptors=list(interceptors))  # auth: common/auth
    health_state = Health(grpc_service_names)
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    reflection.enable_server_reflection(
        [*grpc_service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = transport.bind(server, address)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    return server, health_state, port


def create_health_server(address: str, health_state: Health) -> tuple[grpc.aio.Server, int]:
    """A plaintext server carrying grpc.health.v1 only, for probes that cannot speak TLS (the
    kubelet's gRPC probe): it answers SERVING/NOT_SERVING and nothing else, so it may listen beyond
    loopback while the service's own port is mutual TLS."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the health server to {address}")
    return server, port


def channel(address: str, transport: Transport = PLAINTEXT, *, peer: str = "") -> grpc.aio.Channel:
    """A channel to the Wiretide service `peer` (its certificate must name it) at `address`."""
    if transport.tls is not None and not peer:
        raise ValueError("a TLS channel needs the peer service's name")
    return transport.channel(address, peer, CHANNEL_OPTIONS)


async def check_health(
    address: str,
    service: str = "",
    timeout: float = 1.0,
    *,
    transport: Transport = PLAINTEXT,
    peer: str = "",
) -> str:
    """SERVING | NOT_SERVING | UNKNOWN | UNREACHABLE for the service at `address`."""
    async with channel(address, transport, peer=peer) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "UNKNOWN"
            return "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

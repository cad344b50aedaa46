"""The internal services' gRPC doors, over real gRPC on loopback: the dissector (Ingest, stats), the
resolver (identity snapshots and lookups) and the agents API refuse a caller without a token, hold
each method to its role (common/auth/policy.py), refuse a caller scoped to some namespaces whatever
its role (their answers span every namespace), and let Wiretide's own clients in — capture's sender
and the dissector's identity copy send the service token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import orjson
import pytest

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from wiretide.capture.sender import Drops, EndpointSender
from wiretide.common.bus import connect_with_retry
from wiretide.common.identity import IdentitySync
from wiretide.common.service import Service
from wiretide.common.settings import load_settings
from wiretide.proto.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    dissector_pb2,
    dissector_pb2_grpc,
    packets_pb2,
    resolver_pb2,
    resolver_pb2_grpc,
)

SERVICE = "service-token-for-the-internal-doors"
VIEWER_ALL = "viewer-of-every-namespace-01"
VIEWER_SHOP = "viewer-of-shop-only-000001"
EDITOR_ALL = "editor-of-every-namespace-1"
EDITOR_SHOP = "editor-of-shop-only-000001"
NO_TOKEN: tuple[tuple[str, str], ...] = ()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def credentials(where: Path) -> dict[str, str]:
    where.mkdir(parents=True, exist_ok=True)
    tokens = [
        {"token": VIEWER_ALL, "subject": "val", "role": "viewer", "namespaces": ["*"]},
        {"token": VIEWER_SHOP, "subject": "sam", "role": "viewer", "namespaces": ["shop"]},
        {"token": EDITOR_ALL, "subject": "eda", "role": "editor", "namespaces": ["*"]},
        {"token": EDITOR_SHOP, "subject": "eds", "role": "editor", "namespaces": ["shop"]},
    ]
    (where / "tokens.json").write_bytes(orjson.dumps({"tokens": tokens}))
    (where / "service-token").write_text(SERVICE + "\n")
    return {
        "WIRETIDE_AUTH_TOKENS_FILE": str(where / "tokens.json"),
        "WIRETIDE_AUTH_SERVICE_TOKEN_FILE": str(where / "service-token"),
    }


def make(name: str, nats_url: str, tmp_path: Path) -> Service:
    env = {
        "WIRETIDE_NATS_URL": nats_url,
        "WIRETIDE_DATA_DIR": str(tmp_path / "data"),
        "WIRETIDE_NODE_NAME": "n1",
        f"WIRETIDE_{name.upper()}_GRPC": "127.0.0.1:0",
        **credentials(tmp_path / "secrets"),
    }
    if name == "dissector":
        from wiretide.dissector.service import DissectorService, DissectorSettings

        return DissectorService(load_settings(DissectorSettings, name, env))
    if name == "resolver":
        from wiretide.resolver.service import ResolverService, ResolverSettings

        env["WIRETIDE_RESOLVER_SOURCE"] = "none"
        return ResolverService(load_settings(ResolverSettings, name, env))
    from wiretide.agents.service import AgentsService, AgentsSettings

    return AgentsService(load_settings(AgentsSettings, name, env))


@pytest.fixture
async def door(
    request: pytest.FixtureRequest, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[tuple[Service, grpc.aio.Channel]]:
    async with (
        running(make(request.param, nats_server.url, tmp_path)) as svc,
        grpc.aio.insecure_channel(f"127.0.0.1:{svc.grpc_port}") as ch,
    ):
        yield svc, ch


async def code_of(call: object) -> grpc.StatusCode:
    """The status a unary call ends with (OK when it answers)."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("door", ["dissector"], indirect=True)
async def test_the_dissector_takes_packets_and_answers_stats_only_for_the_service_token(
    door: tuple[Service, grpc.aio.Channel],
) -> None:
    _svc, ch = door
    stub = dissector_pb2_grpc.DissectorServiceStub(ch)
    stats = dissector_pb2.GetStatsRequest()
    for metadata, code in [
        (NO_TOKEN, grpc.StatusCode.UNAUTHENTICATED),
        (bearer("not-one-of-ours-at-all"), grpc.StatusCode.UNAUTHENTICATED),
        (bearer(VIEWER_ALL), grpc.StatusCode.PERMISSION_DENIED),
        (bearer(EDITOR_ALL), grpc.StatusCode.PERMISSION_DENIED),
        (bearer(SERVICE), grpc.StatusCode.OK),
    ]:
        assert await code_of(stub.GetStats(stats, metadata=metadata, timeout=10)) == code, metadata
    # Ingest without a token: the stream is refused before a single packet is taken.
    call = stub.Ingest(metadata=NO_TOKEN, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("door", ["resolver"], indirect=True)
async def test_the_resolver_answers_viewers_of_every_namespace_and_the_service_token(
    door: tuple[Service, grpc.aio.Channel],
) -> None:
    _svc, ch = door
    stub = resolver_pb2_grpc.ResolverServiceStub(ch)
    for metadata, code in [
        (NO_TOKEN, grpc.StatusCode.UNAUTHENTICATED),
        (bearer("not-one-of-ours-at-all"), grpc.StatusCode.UNAUTHENTICATED),
        (bearer(VIEWER_SHOP), grpc.StatusCode.PERMISSION_DENIED),  # identities of every namespace
        (bearer(VIEWER_ALL), grpc.StatusCode.OK),
        (bearer(SERVICE), grpc.StatusCode.OK),
    ]:
        snapshot = stub.Snapshot(resolver_pb2.SnapshotRequest(), metadata=metadata, timeout=10)
        lookup = stub.Lookup(resolver_pb2.LookupRequest(ip="10.0.0.1"), metadata=metadata, timeout=10)
        assert await code_of(snapshot) == code, metadata
        assert await code_of(lookup) == code, metadata


@pytest.mark.parametrize("door", ["agents"], indirect=True)
async def test_the_agents_api_lets_viewers_read_and_editors_change_across_every_namespace(
    door: tuple[Service, grpc.aio.Channel],
) -> None:
    _svc, ch = door
    stub = agents_pb2_grpc.AgentsServiceStub(ch)
    listing = agents_pb2.ListAgentsRequest()
    agent = agents_pb2.Agent(name="hello", source="onItemCaptured((e) => {});", enabled=True)
    for metadata, read, change in [
        (NO_TOKEN, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED),
        (bearer("not-one-of-ours-at-all"), grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED),
        (bearer(VIEWER_SHOP), grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
        (bearer(EDITOR_SHOP), grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
        (bearer(VIEWER_ALL), grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED),
        (bearer(EDITOR_ALL), grpc.StatusCode.OK, grpc.StatusCode.OK),
    ]:
        assert await code_of(stub.ListAgents(listing, metadata=metadata, timeout=10)) == read, metadata
        put = stub.PutAgent(agents_pb2.PutAgentRequest(agent=agent), metadata=metadata, timeout=10)
        assert await code_of(put) == change, metadata
        delete = stub.DeleteAgent(agents_pb2.DeleteAgentRequest(name="nobody"), metadata=metadata, timeout=10)
        assert await code_of(delete) in (
            {change} if change != grpc.StatusCode.OK else {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}
        ), metadata


@pytest.mark.parametrize("door", ["dissector"], indirect=True)
async def test_capture_s_sender_opens_an_ingest_stream_with_the_service_token(
    door: tuple[Service, grpc.aio.Channel],
) -> None:
    svc, _ch = door
    endpoint = f"127.0.0.1:{svc.grpc_port}"
    sender = EndpointSender(
        endpoint,
        "n1",
        packets_pb2.CAPTURE_SOURCE_AF_PACKET,
        Drops({}),
        lambda: None,
        metadata=svc.auth.call_metadata(),
    )
    sender.start()
    try:
        # `ready`: the dissector answered the stream, which it does only past the interceptor.
        await wait_for_async("the dissector answers the sender", lambda: sender.ready)
    finally:
        await sender.stop()


@pytest.mark.parametrize("door", ["resolver"], indirect=True)
async def test_the_dissector_s_identity_copy_loads_its_snapshot_with_the_service_token(
    door: tuple[Service, grpc.aio.Channel], nats_server: NatsServer
) -> None:
    svc, _ch = door
    bus = await connect_with_retry(nats_server.url, "test-identity")
    sync = IdentitySync(bus, f"127.0.0.1:{svc.grpc_port}", metadata=svc.auth.call_metadata())
    await sync.start()
    try:
        await wait_for_async("the snapshot loads", sync.synced.is_set)
        assert sync.resyncs == 1
    finally:
        await sync.stop()
        await bus.close()

"""Pods found by container id end to end: the Kubernetes emulator's pod statuses → the resolver →
snapshot and deltas → a dissector's copy, and the resolver's Lookup RPC."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from tests.helpers import kubeapi as ka
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from wiretide.common import containers
from wiretide.common.bus import connect_with_retry
from wiretide.common.identity import IdentitySync
from wiretide.common.settings import load_settings
from wiretide.proto.v1 import resolver_pb2, resolver_pb2_grpc
from wiretide.resolver.service import ResolverService, ResolverSettings

NODE_IP = "10.60.0.5"
AGENT, RESTARTED = "a1" * 32, "b2" * 32


async def test_a_host_network_pod_is_found_by_its_containers_on_a_dissector_and_by_lookup(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    kube = ka.KubeApi().start()
    try:
        kube.put(ka.node("node-1", NODE_IP))
        kube.put(ka.pod("agent-x1", "kube-system", NODE_IP, host_network=True, container_ids=[AGENT]))
        env = {
            "WIRETIDE_NATS_URL": nats_server.url,
            "WIRETIDE_DATA_DIR": str(tmp_path),
            "WIRETIDE_RESOLVER_GRPC": "127.0.0.1:0",
            "WIRETIDE_RESOLVER_WATCH_TIMEOUT_S": "3",
            "WIRETIDE_RESOLVER_KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
        }
        svc = ResolverService(load_settings(ResolverSettings, "resolver", env))
        async with running(svc):
            address = f"127.0.0.1:{svc.grpc_port}"
            bus = await connect_with_retry(nats_server.url, "test-dissector")
            sync = IdentitySync(bus, address)
            await sync.start()
            try:
                await wait_for_async(
                    "the pod by its container", lambda: sync.table.container(AGENT, time.time_ns())
                )
                found = sync.table.container(AGENT, time.time_ns()) or {}
                assert found["pod"]["name"] == "agent-x1" and found["node"] == "node-1"
                assert (sync.table.lookup(NODE_IP, 0, time.time_ns())[0] or {})["name"] == "node-1"
                # the container restarts: a delta names the pod under the new id
                kube.put(
                    ka.pod("agent-x1", "kube-system", NODE_IP, host_network=True, container_ids=[RESTARTED])
                )
                await wait_for_async(
                    "the restarted container", lambda: sync.table.container(RESTARTED, time.time_ns())
                )
                async with grpc.aio.insecure_channel(address) as channel:
                    stub = resolver_pb2_grpc.ResolverServiceStub(channel)
                    answer = await stub.Lookup(resolver_pb2.LookupRequest(ip=containers.key(RESTARTED)))
                    assert answer.found and answer.resolution == "container"
                    assert answer.identity.name == "agent-x1" and answer.identity.container_id == RESTARTED
                    unknown = await stub.Lookup(resolver_pb2.LookupRequest(ip=containers.key("c3" * 32)))
                    assert not unknown.found
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.Lookup(resolver_pb2.LookupRequest(ip="container:not-an-id"))
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            finally:
                await sync.stop()
                await bus.close()
    finally:
        await asyncio.to_thread(kube.stop)

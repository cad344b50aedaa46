"""The resolver service end to end: Kubernetes emulator → resolver → gRPC snapshot + NATS deltas → a
dissector-side IdentityTable that names entries by who held the address at their time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import nats
import pytest

from tests.helpers import kubeapi as ka
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from wiretide.common.bus import IDENTITY_UPDATES, connect_with_retry
from wiretide.common.identity import NS, IdentitySync
from wiretide.common.service import serve
from wiretide.common.settings import load_settings
from wiretide.proto.v1 import resolver_pb2, resolver_pb2_grpc
from wiretide.resolver.service import ResolverService, ResolverSettings


async def until(cond: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def settings(nats_url: str, tmp_path: Path, **extra: str) -> ResolverSettings:
    env = {
        "WIRETIDE_NATS_URL": nats_url,
        "WIRETIDE_DATA_DIR": str(tmp_path),
        "WIRETIDE_RESOLVER_GRPC": "127.0.0.1:0",
        "WIRETIDE_RESOLVER_WATCH_TIMEOUT_S": "3",
        **extra,
    }
    return load_settings(ResolverSettings, "resolver", env)


@pytest.fixture
def kube(tmp_path: Path) -> AsyncIterator[ka.KubeApi]:
    api = ka.KubeApi().start()
    api.put(ka.namespace("shop"))
    api.put(ka.replicaset("api-6b7d", "shop", "api"))
    created = datetime.now(UTC) - timedelta(seconds=60)
    labels = {"app": "api"}
    api.put(
        ka.pod(
            "api-6b7d-q2x",
            "shop",
            "10.50.1.4",
            labels=labels,
            owner=("ReplicaSet", "api-6b7d"),
            created=created,
        )
    )
    api.put(ka.service("api", "shop", "10.96.5.5"))
    api.put(ka.endpointslice("api", "shop", [("api-6b7d-q2x", "10.50.1.4")]))
    yield api
    api.stop()


async def test_a_dissector_copy_follows_the_resolver_through_snapshot_and_deltas(
    nats_server: NatsServer, kube: ka.KubeApi, tmp_path: Path
) -> None:
    kc = kube.write_kubeconfig(tmp_path / "kubeconfig")
    svc = ResolverService(settings(nats_server.url, tmp_path, WIRETIDE_RESOLVER_KUBECONFIG=str(kc)))
    async with running(svc):
        address = f"127.0.0.1:{svc.grpc_port}"
        await until(lambda: not svc.store.stale())  # every kind listed once
        bus = await connect_with_retry(nats_server.url, "test-dissector")
        sync = IdentitySync(bus, address)
        await sync.start()
        try:
            await asyncio.wait_for(sync.synced.wait(), 15)
            fields, how = sync.table.lookup("10.50.1.4", 8080, time.time_ns())
            assert how == "ip" and fields is not None
            assert fields["workload"] == {"kind": "Deployment", "name": "api"}
            assert fields["service"] == {"name": "api", "namespace": "shop"}
            # a delta: the IP is reused by a new pod a second after the old one went away
            now = datetime.now(UTC).replace(microsecond=0)
            gone_at = now - timedelta(seconds=10)
            kube.delete("Pod", "shop", "api-6b7d-q2x", deletion_timestamp=gone_at)
            kube.put(ka.pod("worker-0", "jobs", "10.50.1.4", created=gone_at + timedelta(seconds=1)))
            await until(
                lambda: (
                    (sync.table.lookup("10.50.1.4", 80, time.time_ns())[0] or {}).get("name") == "worker-0"
                )
            )
            before = int((gone_at - timedelta(seconds=5)).timestamp() * NS)
            assert (sync.table.lookup("10.50.1.4", 80, before)[0] or {}).get("name") == "api-6b7d-q2x"
            assert sync.table.version == svc.store.version
            # a lost delta: the copy notices the gap and takes a fresh snapshot
            resyncs = sync.resyncs
            gap = resolver_pb2.IdentityUpdate(version=svc.store.version + 50)
            await bus.nc.publish(IDENTITY_UPDATES, gap.SerializeToString())
            await until(lambda: sync.resyncs > resyncs)
            assert sync.gaps >= 1
            assert (sync.table.lookup("10.50.1.4", 80, time.time_ns())[0] or {}).get("name") == "worker-0"
            # garbage on the subject is counted and skipped
            await bus.nc.publish(IDENTITY_UPDATES, b"\xff\xfe not a protobuf")
            kube.put(ka.pod("late", "jobs", "10.50.1.9"))
            await until(lambda: sync.table.lookup("10.50.1.9", 80, time.time_ns())[1] == "ip")
            # the Lookup RPC answers at a time
            async with grpc.aio.insecure_channel(address) as channel:
                stub = resolver_pb2_grpc.ResolverServiceStub(channel)
                answer = await stub.Lookup(resolver_pb2.LookupRequest(ip="10.50.1.4", port=80, at_ns=before))
                assert answer.found and answer.identity.name == "api-6b7d-q2x" and answer.resolution == "ip"
                nobody = await stub.Lookup(resolver_pb2.LookupRequest(ip="10.99.99.99", port=80))
                assert not nobody.found and nobody.resolution == "none"
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Lookup(resolver_pb2.LookupRequest(ip="not-an-ip"))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await sync.stop()
            await bus.close()


async def test_the_copy_keeps_its_last_good_state_while_the_resolver_is_away(
    nats_server: NatsServer, kube: ka.KubeApi, tmp_path: Path
) -> None:
    kc = kube.write_kubeconfig(tmp_path / "kubeconfig")
    svc = ResolverService(settings(nats_server.url, tmp_path, WIRETIDE_RESOLVER_KUBECONFIG=str(kc)))
    bus = await connect_with_retry(nats_server.url, "test-dissector")
    async with running(svc):
        sync = IdentitySync(bus, f"127.0.0.1:{svc.grpc_port}")
        await sync.start()
        await asyncio.wait_for(sync.synced.wait(), 15)
        await until(lambda: sync.table.lookup("10.50.1.4", 80, time.time_ns())[0] is not None)
    try:
        assert (sync.table.lookup("10.50.1.4", 80, time.time_ns())[0] or {}).get("name") == "api-6b7d-q2x"
        await bus.nc.publish(
            IDENTITY_UPDATES, resolver_pb2.IdentityUpdate(version=10_000).SerializeToString()
        )
        await until(lambda: sync.gaps >= 1)
        await asyncio.sleep(0.5)  # the resync fails (resolver gone) and backs off; the table stays
        assert (sync.table.lookup("10.50.1.4", 80, time.time_ns())[0] or {}).get("name") == "api-6b7d-q2x"
    finally:
        await sync.stop()
        await bus.close()


async def test_the_service_publishes_heartbeats_that_carry_staleness(
    nats_server: NatsServer, kube: ka.KubeApi, tmp_path: Path
) -> None:
    kc = kube.write_kubeconfig(tmp_path / "kubeconfig")
    svc = ResolverService(
        settings(
            nats_server.url,
            tmp_path,
            WIRETIDE_RESOLVER_KUBECONFIG=str(kc),
            WIRETIDE_RESOLVER_HEARTBEAT_S="0.2",
            WIRETIDE_RESOLVER_STALE_AFTER_S="1",
        )
    )
    nc = await nats.connect(nats_server.url)
    seen: list[resolver_pb2.IdentityUpdate] = []

    async def collect(msg: object) -> None:
        update = resolver_pb2.IdentityUpdate()
        update.ParseFromString(msg.data)  # type: ignore[attr-defined]
        seen.append(update)

    await nc.subscribe(IDENTITY_UPDATES, cb=collect)
    try:
        async with running(svc):
            await until(lambda: any(not u.stale and u.synced_at_ns for u in seen))
            kube.set_down(True)
            await until(lambda: len(seen) > 0 and seen[-1].stale)
            kube.set_down(False)
            await until(lambda: not seen[-1].stale)
    finally:
        await nc.close()


def test_a_missing_kubeconfig_or_inventory_fails_naming_the_setting(tmp_path: Path) -> None:
    from wiretide.common.settings import SettingsError

    for name in ("WIRETIDE_RESOLVER_KUBECONFIG", "WIRETIDE_RESOLVER_INVENTORY"):
        with pytest.raises(SettingsError, match=name):
            settings("nats://127.0.0.1:4222", tmp_path, **{name: str(tmp_path / "nope.yaml")})


async def test_a_static_inventory_names_addresses_without_any_cluster(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("- {ip: 10.60.0.5, name: billing-db, namespace: prod, labels: {tier: db}}\n")
    svc = ResolverService(
        settings(
            nats_server.url,
            tmp_path,
            WIRETIDE_RESOLVER_SOURCE="none",
            WIRETIDE_RESOLVER_INVENTORY=str(inventory),
        )
    )
    async with running(svc), grpc.aio.insecure_channel(f"127.0.0.1:{svc.grpc_port}") as channel:
        stub = resolver_pb2_grpc.ResolverServiceStub(channel)
        snap = await stub.Snapshot(resolver_pb2.SnapshotRequest())
        assert [(i.ip, i.name, i.namespace, i.labels["tier"]) for i in snap.identities] == [
            ("10.60.0.5", "billing-db", "prod", "db")
        ]
        assert snap.version >= 1


async def test_with_leader_election_only_the_lease_holder_watches_and_a_follower_takes_over(
    nats_server: NatsServer, kube: ka.KubeApi, tmp_path: Path
) -> None:
    kc = kube.write_kubeconfig(tmp_path / "kubeconfig")

    def replica(name: str) -> ResolverService:
        return ResolverService(
            settings(
                nats_server.url,
                tmp_path,
                WIRETIDE_RESOLVER_KUBECONFIG=str(kc),
                WIRETIDE_RESOLVER_LEADER_ELECTION="true",
                WIRETIDE_RESOLVER_IDENTITY=name,
                WIRETIDE_RESOLVER_LEASE_S="3",
                WIRETIDE_RESOLVER_RENEW_S="0.2",
            )
        )

    first, second = replica("replica-a"), replica("replica-b")
    follower: asyncio.Task[None] | None = None
    try:
        async with running(first):
            await until(lambda: first.leading and not first.store.stale())
            follower = asyncio.create_task(serve(second, handle_signals=False))
            await until(lambda: second.grpc_port != 0 and second._elector is not None)
            # Several renew rounds while both run (counted, not timed): the lease stays with the first.
            leases = "/apis/coordination.k8s.io/v1/namespaces/wiretide/leases"
            seen = kube.count(leases)
            await until(lambda: kube.count(leases) >= seen + 3, timeout=60)
            assert not second.leading and second._k8s is not None and not second._k8s.watchers
        await until(lambda: second.leading)  # the leader let go of the lease on its way out
        await until(lambda: second.store.table.lookup("10.50.1.4", 80, time.time_ns())[0] is not None)
        lease = kube.objects[("Lease", "wiretide", "wiretide-resolver")]
        assert lease["spec"]["holderIdentity"] == "replica-b"
    finally:
        if follower is not None:
            assert second.lifecycle is not None
            second.lifecycle.request_stop("test done")
            await asyncio.wait_for(follower, 30)

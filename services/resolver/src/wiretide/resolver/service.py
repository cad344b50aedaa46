"""The resolver service process: identity sources → the identity store → gRPC lookups and NATS deltas.

Rule: the store is changed only on the event loop; every change leaves as a versioned delta on
`wt.identity.updates` in version order, and a snapshot is always consistent with the deltas that
follow it. Sources that fail leave the last good state in place, marked stale after a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import grpc
from prometheus_client import Counter, Gauge
from pydantic import field_validator

from wiretide.common import containers
from wiretide.common.bus import IDENTITY_UPDATES, Bus
from wiretide.common.collector import collect_rarely
from wiretide.common.identity import NS
from wiretide.common.metrics import BUS_DROPPED
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings
from wiretide.proto.v1 import resolver_pb2, resolver_pb2_grpc
from wiretide.resolver.local.inventory import load_inventory
from wiretide.resolver.table import IdentityStore

if TYPE_CHECKING:
    from wiretide.resolver.k8s.leader import LeaseElector
    from wiretide.resolver.k8s.source import KubernetesSource

log = logging.getLogger(__name__)

# How often closed spans past retention are dropped (and their removal published).
EXPIRE_EVERY_S: Final = 60.0
IDENTITY_SPANS = Gauge("wiretide_resolver_identity_spans", "Spans (holder × address × interval) in the store")
IDENTITY_EVICTED = Counter("wiretide_resolver_identity_evicted_total", "Spans evicted by the store's bounds")
IDENTITY_VERSION = Gauge("wiretide_resolver_identity_version", "Version of the last delta")
IDENTITY_STALE = Gauge("wiretide_resolver_stale", "1 while the source has not confirmed its state in time")

# Collector thresholds (gen0 allocations, gen1, gen2 passes) for a process that holds a large table.
GC_THRESHOLDS: Final = (100_000, 50, 1000)
# Outgoing deltas waiting for NATS; beyond this the oldest are dropped and receivers resync.
OUTBOX_MAX: Final = 10_000


class ResolverSettings(CommonSettings):
    # "auto": Kubernetes when running in a cluster or given a kubeconfig, else the local inventory.
    resolver_source: Literal["auto", "kubernetes", "local", "none"] = "auto"
    resolver_kubeconfig: str = ""
    resolver_inventory: str = ""  # optional static YAML (see local/inventory.py)
    resolver_stale_after_s: float = 180.0
    resolver_watch_timeout_s: int = 60
    resolver_page_size: int = 500
    resolver_local_scan_s: float = 5.0
    resolver_publish_interval_s: float = 0.1
    resolver_heartbeat_s: float = 5.0
    resolver_leader_election: bool = False
    resolver_lease_namespace: str = "wiretide"
    resolver_lease_name: str = "wiretide-resolver"
    resolver_identity: str = ""  # this replica's name in the Lease (default node/pid)
    resolver_lease_s: int = 15  # a leader that has not renewed for this long is replaced
    resolver_renew_s: float = 5.0

    @field_validator("resolver_kubeconfig", "resolver_inventory")
    @classmethod
    def _file(cls, value: str) -> str:
        if value and not Path(value).expanduser().is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("resolver_stale_after_s", "resolver_local_scan_s", "resolver_publish_interval_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    def source_mode(self) -> str:
        if self.resolver_source != "auto":
            return self.resolver_source
        if self.resolver_kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"):
            return "kubernetes"
        return "local"


def _ts(at_ns: int) -> int:
    return at_ns if at_ns > 0 else time.time_ns()


class ResolverApi(resolver_pb2_grpc.ResolverServiceServicer):
    def __init__(self, service: ResolverService) -> None:
        self.service = service

    async def Snapshot(
        self, request: resolver_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> resolver_pb2.SnapshotResponse:
        self.service.flush()
        return self.service.store.snapshot()

    async def Lookup(
        self, request: resolver_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> resolver_pb2.LookupResponse:
        cid = request.ip.removeprefix(containers.KEY_PREFIX)
        if cid != request.ip:  # a pod by one of its containers ("container:<id>")
            if containers.from_directory(cid) != cid:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a container id: {cid!r}")
        else:
            try:
                ipaddress.ip_address(request.ip)
            except ValueError:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an IP address: {request.ip!r}")
        if request.port > 65535:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"port out of range: {request.port}")
        store = self.service.store
        ident, mechanism = store.table.find(request.ip, request.port, _ts(request.at_ns))
        if ident is None:
            return resolver_pb2.LookupResponse(found=False, resolution="none", stale=store.stale())
        return resolver_pb2.LookupResponse(
            found=True, identity=ident, resolution=mechanism, stale=store.stale()
        )


class ResolverService(Service):
    name = "resolver"
    settings_cls = ResolverSettings

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, ResolverSettings)
        self.cfg = settings
        self.store = IdentityStore(stale_after_ns=int(settings.resolver_stale_after_s * NS))
        self.mode = settings.source_mode()
        self.leading = not settings.resolver_leader_election
        self.published = 0
        self.dropped = 0
        self._evicted_reported = 0  # the store's eviction count already added to IDENTITY_EVICTED
        self._outbox: asyncio.Queue[resolver_pb2.IdentityUpdate] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._k8s: KubernetesSource | None = None
        self._elector: LeaseElector | None = None
        self._bus: Bus | None = None

    def register(self, server: grpc.aio.Server) -> None:
        resolver_pb2_grpc.add_ResolverServiceServicer_to_server(ResolverApi(self), server)

    def ready(self) -> bool:
        # With leader election only the leader is ready, so a Service's traffic reaches the one that watches.
        return self.leading

    # -- distribution ------------------------------------------------------------------------
    def flush(self) -> None:
        for update in self.store.flush():
            if self._outbox.qsize() >= OUTBOX_MAX:
                self._outbox.get_nowait()
                self.dropped += 1
                BUS_DROPPED.labels(IDENTITY_UPDATES, "buffer_full").inc()
            self._outbox.put_nowait(update)

    async def _publisher(self, bus: Bus) -> None:
        while True:
            update = await self._outbox.get()
            try:
                await bus.nc.publish(IDENTITY_UPDATES, update.SerializeToString())
                self.published += 1
            except Exception as exc:  # NATS away: receivers see the gap and resync from a snapshot
                self.dropped += 1
                BUS_DROPPED.labels(IDENTITY_UPDATES, "publish_failed").inc()
                log.warning("identity update not published", extra={"error": str(exc)})

    async def _ticker(self) -> None:
        interval = self.cfg.resolver_publish_interval_s
        last_beat = last_expire = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            self.flush()
            now = time.monotonic()
            if now - last_expire >= EXPIRE_EVERY_S:
                last_expire = now
                self.store.expire()
            if now - last_beat >= self.cfg.resolver_heartbeat_s:
                self.report_metrics()
            if now - last_beat >= self.cfg.resolver_heartbeat_s and self._outbox.empty():
                last_beat = now
                self._outbox.put_nowait(self.store.heartbeat())

    def report_metrics(self) -> None:
        """The store's state as gauges; its evictions since the last report added to the counter."""
        table = self.store.table
        IDENTITY_SPANS.set(len(table))
        evicted = table.evicted
        IDENTITY_EVICTED.inc(max(evicted - self._evicted_reported, 0))  # a new table starts from 0
        self._evicted_reported = evicted
        IDENTITY_VERSION.set(self.store.version)
        IDENTITY_STALE.set(1 if self.store.stale() else 0)

    # -- sources -----------------------------------------------------------------------------
    def _load_inventory(self) -> frozenset[str]:
        if not self.cfg.resolver_inventory:
            return frozenset()
        claims = load_inventory(Path(self.cfg.resolver_inventory).expanduser())
        for claim in claims:
            owner = ("static", "inventory", claim.identity.namespace, f"{claim.ip}:{claim.port}")
            self.store.set_claims(owner, [claim])
        log.info("static inventory loaded", extra={"records": len(claims)})
        return frozenset(c.ip for c in claims if c.port == 0)

    async def start(self, bus: Bus) -> None:
        # The store holds ~10 objects per pod: with 50k pods the default collector thresholds make
        # every full collection rescan them all, over and over, while a list is applied.
        collect_rarely(GC_THRESHOLDS)
        self._bus = bus
        static_ips = self._load_inventory()
        self._tasks.append(asyncio.create_task(self._publisher(bus), name="identity-publisher"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="identity-ticker"))
        if self.mode == "kubernetes":
            await self._start_kubernetes()
        elif self.mode == "local":
            from wiretide.resolver.local.source import LocalSource

            local = LocalSource(self.store, host_name=self.settings.node_name, skip_ips=static_ips)
            self._tasks.append(asyncio.create_task(local.run(self.cfg.resolver_local_scan_s), name="local"))
        else:
            self.store.mark_synced()
        log.info("resolver sources started", extra={"mode": self.mode})

    async def _start_kubernetes(self) -> None:
        # the client takes seconds to import on a busy node: keep the loop answering meanwhile
        await asyncio.to_thread(importlib.import_module, "wiretide.resolver.k8s.source")
        from kubernetes import client

        from wiretide.resolver.k8s.leader import LeaseElector
        from wiretide.resolver.k8s.source import KubernetesSource, api_client

        in_cluster = not self.cfg.resolver_kubeconfig and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        api = await asyncio.to_thread(api_client, self.cfg.resolver_kubeconfig, in_cluster)
        source = KubernetesSource(self.store)
        self._k8s = source
        kwargs = {
            "page_size": self.cfg.resolver_page_size,
            "watch_timeout_s": self.cfg.resolver_watch_timeout_s,
        }
        if not self.cfg.resolver_leader_election:
            await source.start(api, **kwargs)
            return
        loop = asyncio.get_running_loop()

        async def change(leading: bool) -> None:
            self.leading = leading
            if leading:
                await source.start(api, **kwargs)
            else:
                await source.stop()  # keep the state; it goes stale unless we lead again

        def on_change(leading: bool) -> None:
            asyncio.run_coroutine_threadsafe(change(leading), loop)

        identity = self.cfg.resolver_identity or f"{self.settings.node_name}/{os.getpid()}"
        elector = LeaseElector(
            client.CoordinationV1Api(api),
            self.cfg.resolver_lease_namespace,
            self.cfg.resolver_lease_name,
            identity,
            on_change,
            lease_s=self.cfg.resolver_lease_s,
            renew_s=self.cfg.resolver_renew_s,
        )
        self._elector = elector
        elector.start()

    async def stop(self) -> None:
        if self._elector is not None:
            self._elector.halt()
        if self._k8s is not None:
            await self._k8s.stop()
        self.flush()
        if self._bus is not None and self._bus.connected:
            with contextlib.suppress(Exception):
                while not self._outbox.empty():
                    await self._bus.nc.publish(
                        IDENTITY_UPDATES, self._outbox.get_nowait().SerializeToString()
                    )
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""The Kubernetes source: six watchers feed one consumer that keeps compact facts and the IP history.

Rule: watcher threads only hand events over (through a bounded queue); every fact and every claim
changes on the event loop, a page at a time, so the resolver keeps answering while a 50k-pod list
is applied. A malformed object is counted and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client, config

from wiretide.resolver.k8s import objects as k8s
from wiretide.resolver.k8s.watch import FAILED, PAGE, RELIST_BEGIN, RELIST_END, SYNCED, ResourceWatcher
from wiretide.resolver.table import IdentityStore

log = logging.getLogger(__name__)

# Events waiting for the loop; a full queue makes the watcher threads wait (backpressure).
QUEUE_MAX: Final = 256
SLOT_WAIT_S: Final = 0.5  # how often a waiting watcher thread checks whether the source stopped
SOURCE: Final = k8s.SOURCE
KINDS: Final = ("namespace", "node", "replicaset", "endpointslice", "service", "pod")


def api_client(kubeconfig: str = "", in_cluster: bool = False) -> client.ApiClient:
    """An ApiClient from the in-cluster service account or a kubeconfig file, never the global default."""
    cfg = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig or None, client_configuration=cfg
        )
    return client.ApiClient(cfg)


def list_functions(api: client.ApiClient) -> dict[str, Callable[..., Any]]:
    core, apps, disc = client.CoreV1Api(api), client.AppsV1Api(api), client.DiscoveryV1Api(api)
    return {
        "namespace": core.list_namespace,
        "node": core.list_node,
        "replicaset": apps.list_replica_set_for_all_namespaces,
        "endpointslice": disc.list_endpoint_slice_for_all_namespaces,
        "service": core.list_service_for_all_namespaces,
        "pod": core.list_pod_for_all_namespaces,
    }


@dataclass
class SourceStats:
    applied: int = 0
    invalid: int = 0
    failures: int = 0


class KubernetesSource:
    """Applies watch events to an `IdentityStore`. `apply` is synchronous and needs no threads."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store
        self.stats = SourceStats()
        self.pods: dict[tuple[str, str], k8s.PodFacts] = {}
        self.rs_owner: dict[tuple[str, str], tuple[str, str]] = {}
        self.slices: dict[tuple[str, str], tuple[tuple[str, str], set[tuple[str, str]]]] = {}
        self.pod_services: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.namespaces: set[str] = set()
        self.synced_at: dict[str, int] = {}
        self._seen: dict[str, set[tuple[str, str]]] = {}
        self.watchers: list[ResourceWatcher] = []
        self._stop = threading.Event()
        self._queue: asyncio.Queue[tuple[str, str, Any]] | None = None
        self._slots = threading.BoundedSemaphore(QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None

    # -- applying events -------------------------------------------------------------------
    def apply(self, kind: str, event: str, payload: Any, now_ns: int | None = None) -> None:
        now = now_ns if now_ns is not None else time.time_ns()
        if event == RELIST_BEGIN:
            self._seen[kind] = set()
            self.store.begin_relist(SOURCE, kind)
        elif event == PAGE:
            for obj in payload:
                self._one(kind, "ADDED", obj, now)
        elif event == RELIST_END:
            self._end_relist(kind, now)
            self._synced(kind, now)
        elif event == SYNCED:
            self._synced(kind, now)
        elif event == FAILED:
            self.stats.failures += 1
        else:
            self._one(kind, event, payload, now)

    def _synced(self, kind: str, now: int) -> None:
        self.synced_at[kind] = now
        if all(k in self.synced_at for k in KINDS):
            self.store.mark_synced(min(self.synced_at.values()))

    def _one(self, kind: str, event: str, obj: Any, now: int) -> None:
        if not isinstance(obj, dict):
            self.stats.invalid += 1
            return
        try:
            key = k8s.meta(obj)
            seen = self._seen.get(kind)
            if seen is not None:
                seen.add(key)
            handler = getattr(self, f"_{kind}")
            handler(event, key, obj, now)
            self.stats.applied += 1
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.stats.invalid += 1
            log.debug("object skipped", extra={"kind": kind, "error": str(exc)})

    def _end_relist(self, kind: str, now: int) -> None:
        seen = self._seen.pop(kind, set())
        known: list[tuple[str, str]] = {
            "pod": list(self.pods),
            "replicaset": list(self.rs_owner),
            "endpointslice": list(self.slices),
            "namespace": [("", n) for n in self.namespaces],
        }.get(kind, [])
        for key in known:
            if key not in seen:
                getattr(self, f"_{kind}")("DELETED", key, {"metadata": {}}, now)
        self.store.end_relist(SOURCE, kind, now)

    def _pod_claims(self, facts: k8s.PodFacts) -> list[Any]:
        services = sorted(self.pod_services.get((facts.namespace, facts.name), ()))
        service = services[0] if services else ("", "")
        return k8s.pod_claims(facts, k8s.workload_of(facts, self.rs_owner), service)

    def _emit_pod(self, key: tuple[str, str], now: int) -> None:
        facts = self.pods.get(key)
        if facts is not None:
            self.store.set_claims((SOURCE, "pod", *key), self._pod_claims(facts), now)

    def _pod(self, event: str, key: tuple[str, str], obj: dict[str, Any], now: int) -> None:
        owner = (SOURCE, "pod", *key)
        if event == "DELETED":
            self.pods.pop(key, None)
            self.store.drop_owner(owner, k8s.pod_ended_ns(obj, now))
            return
        facts = k8s.pod_facts(obj)
        if self.pods.get(key) == facts:
            self.store.touch(owner)
            return
        self.pods[key] = facts
        self.store.set_claims(owner, self._pod_claims(facts), now)

    def _service(self, event: str, key: tuple[str, str], obj: dict[str, Any], now: int) -> None:
        owner = (SOURCE, "service", *key)
        if event == "DELETED":
            self.store.drop_owner(owner, now)
        else:
            self.store.set_claims(owner, k8s.service_claims(obj), now)

    def _node(self, event: str, key: tuple[str, str], obj: dict[str, Any], now: int) -> None:
        owner = (SOURCE, "node", *key)
        if event == "DELETED":
            self.store.drop_owner(owner, now)
        else:
            self.store.set_claims(owner, k8s.node_claims(obj), now)

    def _namespace(self, event: str, key: tuple[str, str], obj: dict[str, Any], now: int) -> None:
        if event == "DELETED":
            self.namespaces.discard(key[1])
        else:
            self.namespaces.add(key[1])

    def _replicaset(self, event: str, key: tuple[str, str], obj: dict[str, Any], now: int) -> None:
        before = self.rs_owner.get(key)
        if event == "DELETED":
            self.rs_owner.pop(key, None)
            return  # its pods keep the workload they were named with
        after = k8s.controller_of(obj)
        self.rs_owner[key] = after
        if before != after:
            for pod_key, facts in self.pods.items():
                if facts.owner_kind == "ReplicaSet" and (facts.namespace, facts.owner_name) == key:
                    self._emit_pod(pod_key, now)

    def _endpointslice(self, event: str, key: tuple[str, str], obj: dict[str, Any], now: int) -> None:
        old = self.slices.pop(key, None)
        touched: set[tuple[str, str]] = set()
        if old is not None:
            service, pods = old
            for pod in pods:
                services = self.pod_services.get(pod)
                if services is not None:
                    services.discard(service)
                    if not services:
                        del self.pod_services[pod]
            touched |= pods
        if event != "DELETED":
            service, pods = k8s.endpointslice_pods(obj)
            if service[1]:
                self.slices[key] = (service, pods)
                for pod in pods:
                    self.pod_services.setdefault(pod, set()).add(service)
                touched |= pods
        for pod in touched:
            self._emit_pod(pod, now)

    # -- running against an API server -----------------------------------------------------
    async def start(self, api: client.ApiClient, *, page_size: int = 500, watch_timeout_s: int = 60) -> None:
        loop = asyncio.get_running_loop()
        # Unbounded queue, bounded by `slots`: watcher threads wait for a slot (backpressure) and hand
        # items over with call_soon_threadsafe — no coroutine is ever created off the loop's thread.
        queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        slots = threading.BoundedSemaphore(QUEUE_MAX)
        self._queue = queue
        self._slots = slots
        self._stop = threading.Event()
        stop = self._stop

        def sink(kind: str, event: str, payload: Any) -> None:
            while not slots.acquire(timeout=SLOT_WAIT_S):
                if stop.is_set() or loop.is_closed():
                    raise RuntimeError("source stopped")
            if stop.is_set() or loop.is_closed():
                slots.release()
                raise RuntimeError("source stopped")
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, event, payload))
            except RuntimeError:
                slots.release()
                raise

        fns = list_functions(api)
        self.watchers = [
            ResourceWatcher(
                kind, fns[kind], sink, self._stop, page_size=page_size, watch_timeout_s=watch_timeout_s
            )
            for kind in KINDS
        ]
        self._task = asyncio.create_task(self._consume(queue), name="k8s-source")
        for w in self.watchers:
            w.start()

    async def _consume(self, queue: asyncio.Queue[tuple[str, str, Any]]) -> None:
        while True:
            kind, event, payload = await queue.get()
            self._slots.release()
            self.apply(kind, event, payload)
            if event == PAGE:
                await asyncio.sleep(0)  # let lookups and snapshots in between pages

    async def stop(self) -> None:
        self._stop.set()
        for w in self.watchers:
            w.halt()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

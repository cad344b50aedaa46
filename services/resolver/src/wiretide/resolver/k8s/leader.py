"""Leader election over a coordination.k8s.io Lease, so that one resolver replica watches the API.

Rule: leadership is only claimed through the API's optimistic concurrency (the Lease's
resourceVersion): two replicas never both believe they lead for longer than one renew period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

CONFLICT: Final = 409
NOT_FOUND: Final = 404


class LeaseElector:
    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        name: str,
        identity: str,
        on_change: Callable[[bool], None],
        *,
        lease_s: int = 15,
        renew_s: float = 5.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_change = on_change
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.leading = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="k8s-lease", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            log.info("leadership changed", extra={"leading": leading, "identity": self.identity})
            self.on_change(leading)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._set(self.try_acquire())
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                log.warning("lease update failed", extra={"error": str(exc)})
                self._set(False)  # cannot prove we still lead: stop acting as leader
            except RuntimeError:
                return
            self.stop.wait(self.renew_s)
        if self.leading:
            self._release()

    def try_acquire(self, now: datetime | None = None) -> bool:
        """One round: create, renew or take over an expired Lease. True if we lead afterwards."""
        now = now or datetime.now(UTC)
        spec = client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_s,
            renew_time=now,
        )
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise
            spec.acquire_time = now
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=spec
            )
            try:
                self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == CONFLICT:
                    return False
                raise
            return True
        current = lease.spec or client.V1LeaseSpec()
        holder = current.holder_identity or ""
        renewed = current.renew_time or current.acquire_time
        duration = current.lease_duration_seconds or self.lease_s
        expired = renewed is None or renewed + timedelta(seconds=duration) < now
        if holder and holder != self.identity and not expired:
            return False
        spec.acquire_time = current.acquire_time if holder == self.identity else now
        spec.lease_transitions = (current.lease_transitions or 0) + (0 if holder == self.identity else 1)
        lease.spec = spec
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == CONFLICT:
                return False  # someone else wrote first
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.info("could not release the lease", extra={"error": str(exc)})

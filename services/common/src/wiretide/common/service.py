"""The shell every service runs in: settings → logging → telemetry → metrics → gRPC (health,
reflection) → NATS (with retry) → the service's own start → SERVING; SIGTERM → ordered stop.

Rule: health is NOT_SERVING until NATS is connected and the service says it is ready, and goes
back to NOT_SERVING whenever either stops being true.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import sys
from collections.abc import Coroutine
from typing import Any, ClassVar

import grpc

from wiretide.common.auth import Authenticator, from_settings, server_interceptors
from wiretide.common.bus import Bus, connect_with_retry
from wiretide.common.lifecycle import Lifecycle
from wiretide.common.logging import setup_logging
from wiretide.common.metrics import UP, serve_metrics
from wiretide.common.rpc import Health, create_health_server, create_server
from wiretide.common.settings import CommonSettings, SettingsError, load_settings
from wiretide.common.telemetry import setup_telemetry
from wiretide.common.types import GRPC_SERVICE

log = logging.getLogger(__name__)

HEALTH_POLL_S = 0.25


class Service(abc.ABC):
    """One deployable. Subclasses name themselves, register servicers and start their work."""

    name: ClassVar[str]
    settings_cls: ClassVar[type[CommonSettings]] = CommonSettings

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self.bus: Bus | None = None
        self.lifecycle: Lifecycle | None = None
        self.grpc_port = 0  # the bound port, once serving
        self.auth = self.make_authenticator()

    def make_authenticator(self) -> Authenticator:
        """Who may call this service (common/auth); SettingsError for a bad credential setting."""
        try:
            return from_settings(self.settings)
        except ValueError as exc:
            raise SettingsError(f"authentication: {exc}") from None

    def register(self, server: grpc.aio.Server) -> None:  # noqa: B027 - optional hook
        """Add this service's gRPC servicers (before the server starts)."""

    @abc.abstractmethod
    async def start(self, bus: Bus) -> None:
        """Start the work once NATS is up. Raising here stops the process."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop the work; called once, before NATS is drained."""

    def ready(self) -> bool:
        """Extra readiness beyond NATS (a store opened, a peer reachable)."""
        return True

    def listen_address(self) -> str:
        return self.settings.grpc_address(self.name)

    def vital(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a task the service cannot work without (its consumer, its HTTP server): if it
        raises, the process stops with a non-zero exit and says why (`Lifecycle.fail`), instead of
        answering health as SERVING with the work dead. Its cancellation, and what ends while the
        process is stopping anyway, are not failures."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._vital_ended)
        return task

    def _vital_ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        lifecycle = self.lifecycle
        if lifecycle is None or lifecycle.stop_event.is_set():
            return
        exc = task.exception()
        log.error("a vital task failed", exc_info=exc, extra={"task": task.get_name()})
        lifecycle.fail(f"{task.get_name()} failed: {exc!r}")


async def _watch_health(service: Service, health: Health, stop: asyncio.Event) -> None:
    while not stop.is_set():
        serving = service.bus is not None and service.bus.connected and service.ready()
        if serving != health.serving:
            await health.set(serving)
            UP.labels(service.name).set(1 if serving else 0)
            log.info("health changed", extra={"status": "SERVING" if serving else "NOT_SERVING"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=HEALTH_POLL_S)


async def serve(service: Service, *, handle_signals: bool = True) -> None:
    """Run `service` until SIGTERM/SIGINT (or `service.lifecycle.request_stop()` when embedded)."""
    settings = service.settings
    lifecycle = Lifecycle(grace_s=settings.shutdown_grace_s)
    service.lifecycle = lifecycle
    if handle_signals:
        lifecycle.install_signal_handlers()

    serve_metrics(settings.metrics_address(service.name))
    transport = settings.transport
    server, health, port = create_server(
        service.listen_address(),
        [GRPC_SERVICE[service.name]],
        transport=transport,
        interceptors=server_interceptors(service.name, service.auth, service.listen_address()),
    )
    service.grpc_port = port
    service.register(server)
    await server.start()
    await health.set(False)
    log.info(
        "gRPC listening", extra={"address": service.listen_address(), "port": port, "tls": transport.mode}
    )
    probe = create_health_server(settings.health_grpc, health)[0] if settings.health_grpc else None
    if probe is not None:
        await probe.start()

    async def stop_server() -> None:
        if probe is not None:
            await probe.stop(grace=None)
        await server.stop(grace=1.0)

    lifecycle.on_stop("grpc", stop_server)
    watcher = asyncio.create_task(_watch_health(service, health, lifecycle.stop_event))

    async def stop_watcher() -> None:
        await health.set(False)
        watcher.cancel()

    lifecycle.on_stop("health", stop_watcher)

    connect = asyncio.create_task(
        connect_with_retry(
            settings.nats_url,
            f"wiretide-{service.name}-{settings.node_name}",
            lifecycle.stop_event,
            tls=transport.nats_context(settings.nats_url),
            replicas=settings.nats_replicas,
        )
    )
    stop_wait = asyncio.create_task(lifecycle.wait())
    await asyncio.wait({connect, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if connect.done() and not connect.cancelled() and connect.exception() is None:
        bus = connect.result()
        service.bus = bus
        lifecycle.on_stop("nats", bus.close)
        try:
            await service.start(bus)
        except Exception:
            log.exception("service failed to start")
            await lifecycle.shutdown()
            raise SystemExit(1) from None
        lifecycle.on_stop(service.name, service.stop)
        log.info("started", extra={"node": settings.node_name})
        await lifecycle.wait()
    else:
        connect.cancel()
    stop_wait.cancel()
    await lifecycle.shutdown()
    log.info("stopped")


def main(service_cls: type[Service]) -> None:
    """Entry point of `python -m wiretide.<service>`."""
    try:
        settings = load_settings(service_cls.settings_cls, service_cls.name)
    except SettingsError as exc:
        print(f"wiretide-{service_cls.name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(service_cls.name, settings.log_level, settings.log_format)
    setup_telemetry(service_cls.name, settings.node_name)
    try:
        service = service_cls(settings)
    except SettingsError as exc:
        print(f"wiretide-{service_cls.name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        asyncio.run(serve(service))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        raise SystemExit(1) from None
    if service.lifecycle is not None and service.lifecycle.failed is not None:
        raise SystemExit(1)  # stopped because a vital part ended, not because it was asked to

"""The gateway service process: the store writer, the REST API (and UI) and the gateway gRPC API."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from wiretide.common.bus import ENTRIES_STREAM, STORE_WRITER_DURABLE, Bus
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings, parse_hostport
from wiretide.gateway.api.rest import build_app
from wiretide.gateway.store import SqliteStore, StoreError
from wiretide.gateway.writer import StoreWriter
from wiretide.proto.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)


class GatewaySettings(CommonSettings):
    gateway_http: str = "127.0.0.1:8899"
    # SQLite file; empty = <data_dir>/entries.sqlite3
    gateway_db: str = ""
    gateway_durable: str = STORE_WRITER_DURABLE
    # Seconds before JetStream redelivers an entry batch the writer did not acknowledge.
    gateway_ack_wait_s: float = 10.0


class GatewayService(Service):
    name = "gateway"
    settings_cls = GatewaySettings

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, GatewaySettings)
        self.gs = settings
        self.store: SqliteStore | None = None
        self.writer: StoreWriter | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        # Query/Get/Stream/Stats answer UNIMPLEMENTED until the query layer lands.
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            gateway_pb2_grpc.GatewayServiceServicer(), server
        )

    def db_path(self) -> Path:
        return Path(self.gs.gateway_db) if self.gs.gateway_db else self.settings.data_dir / "entries.sqlite3"

    async def start(self, bus: Bus) -> None:
        host, port = parse_hostport(self.gs.gateway_http, "WIRETIDE_GATEWAY_HTTP")
        config = uvicorn.Config(
            build_app(self), host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._http = uvicorn.Server(config)
        # Bind here so that "port in use" is an OSError at start-up, not uvicorn's sys.exit.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot serve HTTP on {self.gs.gateway_http}: {exc.strerror}") from None
        sock.set_inheritable(True)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]), name="http")
        try:
            self.store = await asyncio.to_thread(SqliteStore, self.db_path())
        except StoreError:
            await self._stop_http()
            raise
        self.writer = StoreWriter(bus, self.store, self.gs.gateway_durable, self.gs.gateway_ack_wait_s)
        await self.writer.start()
        log.info("HTTP listening", extra={"address": self.gs.gateway_http})

    async def _stop_http(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task

    async def stop(self) -> None:
        if self.writer is not None:
            await self.writer.stop()
        await self._stop_http()
        if self.store is not None:
            self.store.close()

    def ready(self) -> bool:
        return self.writer is not None and self.writer.healthy

    def store_status(self) -> dict[str, Any]:
        return {
            "path": str(self.db_path()),
            "writing": bool(self.writer and self.writer.healthy),
            "last_error": self.writer.last_error if self.writer else None,
            "stored": self.writer.stored if self.writer else 0,
        }

    async def nats_status(self) -> dict[str, Any]:
        bus = self.bus
        if bus is None:
            return {"connected": False}
        doc: dict[str, Any] = {
            "connected": bus.connected,
            "url": bus.nc.connected_url.netloc if bus.nc.connected_url else None,
        }
        try:
            info = await bus.js.stream_info(ENTRIES_STREAM.name)
            doc["entries_stream"] = {"messages": info.state.messages, "bytes": info.state.bytes}
            cinfo = await bus.js.consumer_info(ENTRIES_STREAM.name, self.gs.gateway_durable)
            doc["store_consumer"] = {"pending": cinfo.num_pending, "ack_pending": cinfo.num_ack_pending}
        except Exception as exc:  # report, never fail the health page
            doc["error"] = str(exc)
        return doc

"""The gateway service process: the store writer, the live hub, retention, the REST/WebSocket API (and
UI) and the gateway gRPC API — all on one application layer (`QueryService`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from pydantic import field_validator

from wiretide.common import nodes
from wiretide.common.auth import Authenticator, from_settings
from wiretide.common.bus import ENTRIES_STREAM, STORE_WRITER_DURABLE, Bus
from wiretide.common.collector import collect_rarely
from wiretide.common.rpc import channel
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings, SettingsError, parse_hostport
from wiretide.gateway.api.grpc_api import GatewayApi
from wiretide.gateway.api.rest import build_app
from wiretide.gateway.live import LiveHub
from wiretide.gateway.query import Completeness, QueryService
from wiretide.gateway.recording.manager import RecordingManager, RecordingSettings, advertise_url
from wiretide.gateway.retention import Retention
from wiretide.gateway.store import EntryStore, SqliteStore
from wiretide.gateway.store.mongo_url import MongoUrl
from wiretide.gateway.store.mongo_url import check as check_mongo_url
from wiretide.gateway.upstream import UpstreamPoller
from wiretide.gateway.writer import StoreWriter
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc, gateway_pb2_grpc

log = logging.getLogger(__name__)

PCAP_MARGIN_NS = 2_000_000_000  # widen an entry's time window when asking the recorder for its flow
SNAPSHOT_TIMEOUT_S = 30.0
CAPTURE_NODES_CACHE_S = 5.0
HTTP_BACKLOG = 2048  # uvicorn's own default


class GatewaySettings(RecordingSettings):
    gateway_http: str = "127.0.0.1:8899"
    # SQLite file; empty = <data_dir>/entries.sqlite3
    gateway_db: str = ""
    # mongodb://… — when set, entries go to MongoDB instead of SQLite. TLS in the URL's own options
    # (tls=true&tlsCAFile=…); shown only redacted. Checked in GatewayService (store/mongo_url.py), not
    # by a validator: a validation error would quote the value, password included.
    gateway_mongo_url: str = ""
    gateway_mongo_database: str = "wiretide"
    gateway_durable: str = STORE_WRITER_DURABLE
    # Seconds before JetStream redelivers an entry batch the writer did not acknowledge.
    gateway_ack_wait_s: float = 10.0
    # Retention: entries older than this (0 = keep forever) and beyond this many bytes (0 = no bound).
    gateway_retention_age_s: float = 7 * 24 * 3600.0
    gateway_retention_bytes: int = 10 * 1024**3
    gateway_retention_interval_s: float = 10.0
    # Bearer token required on every route when set.
    gateway_token: str = ""
    # Comma-separated origins allowed by CORS (off when empty).
    gateway_cors_origins: str = ""

    @field_validator("gateway_http")
    @classmethod
    def _http(cls, value: str) -> str:
        parse_hostport(value)
        return value


class GatewayService(Service):
    name = "gateway"
    settings_cls = GatewaySettings

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, GatewaySettings)
        self.gs = settings
        self.store: EntryStore | None = None
        self.writer: StoreWriter | None = None
        self.retention: Retention | None = None
        self.completeness = Completeness()
        self.live = LiveHub()
        self.upstream = UpstreamPoller(settings, self.completeness, self.auth.call_metadata())
        self._queries: QueryService | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.recordings: RecordingManager | None = None
        self._capture_nodes: tuple[float, dict[str, str]] | None = None
        if settings.gateway_mongo_url:
            shown = MongoUrl.parse(settings.gateway_mongo_url).redacted()
            try:
                warnings = check_mongo_url(settings.gateway_mongo_url, settings.tls_allow_plaintext)
            except ValueError as exc:
                raise SettingsError(f"WIRETIDE_GATEWAY_MONGO_URL={shown}: {exc}") from None
            for warning in warnings:
                log.warning(warning, extra={"store": shown})

    @property
    def queries(self) -> QueryService:
        if self._queries is None:
            raise RuntimeError("store not open yet")
        return self._queries

    def make_authenticator(self) -> Authenticator:
        """The common credentials, and WIRETIDE_GATEWAY_TOKEN as one more admin token."""
        assert isinstance(self.settings, GatewaySettings)
        try:
            return from_settings(self.settings, {self.settings.gateway_token: "gateway-token"})
        except ValueError as exc:
            raise SettingsError(f"authentication: {exc}") from None

    def register(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayApi(self), server)

    def db_path(self) -> Path:
        return Path(self.gs.gateway_db) if self.gs.gateway_db else self.settings.data_dir / "entries.sqlite3"

    def open_store(self) -> EntryStore:
        if self.gs.gateway_mongo_url:
            from wiretide.gateway.store.mongo import MongoStore

            return MongoStore(self.gs.gateway_mongo_url, self.gs.gateway_mongo_database)
        return SqliteStore(self.db_path())

    async def start(self, bus: Bus) -> None:
        collect_rarely()  # a stored batch's documents are freed by reference counting once written
        host, port = parse_hostport(self.gs.gateway_http, "WIRETIDE_GATEWAY_HTTP")
        # Bind here so that "port in use" is an OSError at start-up, not uvicorn's sys.exit.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(HTTP_BACKLOG)  # listening from here on: a refused connection means a dead gateway
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot serve HTTP on {self.gs.gateway_http}: {exc.strerror}") from None
        self.store = await asyncio.to_thread(self.open_store)
        self.recordings = RecordingManager(
            self.gs,
            self.store,
            self.auth,
            self.live,
            capture_nodes=self.capture_nodes,
            url=advertise_url(self.gs, self.gs.gateway_http),
        )
        self._queries = QueryService(self.store, self.completeness, self.recordings.record_kfl)
        self.writer = StoreWriter(
            bus, self.store, self.gs.gateway_durable, self.gs.gateway_ack_wait_s, self.completeness
        )
        await self.writer.start()
        await self.live.start(bus)
        self.retention = Retention(
            self.store,
            self.gs.gateway_retention_age_s,
            self.gs.gateway_retention_bytes,
            self.gs.gateway_retention_interval_s,
        )
        self.completeness.retention_deleted = self.retention.deleted
        self.retention.start()
        self.upstream.start()
        await self.recordings.start(bus.js)
        config = uvicorn.Config(
            build_app(self),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ws="websockets-sansio",
        )
        config.load()  # a configuration error is a start-up error, not a silently dead server task
        self._http = uvicorn.Server(config)
        # If the HTTP server fails, the process must not go on answering health as SERVING while every
        # browser and API call is refused.
        self._http_task = self.vital(self._http.serve(sockets=[sock]), "http")
        log.info("HTTP listening", extra={"address": self.gs.gateway_http, "store": self.store.kind})

    async def stop(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self.live.stop()
            await asyncio.wait([self._http_task])  # a failure was reported when it happened (_http_ended)
            for server in getattr(self._http, "servers", []):  # a failed server never closed its own
                server.close()
        if self.recordings is not None:
            await self.recordings.stop()
        for part in (self.upstream, self.retention, self.writer):
            if part is not None:
                await part.stop()
        if self.store is not None:
            self.store.close()

    def ready(self) -> bool:
        http_up = self._http_task is not None and not self._http_task.done()
        return http_up and self.writer is not None and self.writer.healthy

    def recording_status(self) -> dict[str, Any] | None:
        return self.recordings.health() if self.recordings is not None else None

    def store_status(self) -> dict[str, Any]:
        return {
            "kind": self.store.kind if self.store else None,
            "location": MongoUrl.parse(self.gs.gateway_mongo_url).redacted()
            if self.gs.gateway_mongo_url
            else str(self.db_path()),
            "writing": bool(self.writer and self.writer.healthy),
            "last_error": self.writer.last_error if self.writer else None,
            "stored": self.writer.stored if self.writer else 0,
            "retention_deleted": dict(self.completeness.retention_deleted),
        }

    async def nats_status(self) -> dict[str, Any]:
        bus = self.bus
        if bus is None:
            return {"connected": False}
        url = bus.nc.connected_url
        doc: dict[str, Any] = {"connected": bus.connected, "url": url.netloc if url else None}
        try:
            info = await bus.js.stream_info(ENTRIES_STREAM.name)
            doc["entries_stream"] = {"messages": info.state.messages, "bytes": info.state.bytes}
            cinfo = await bus.js.consumer_info(ENTRIES_STREAM.name, self.gs.gateway_durable)
            doc["store_consumer"] = {"pending": cinfo.num_pending, "ack_pending": cinfo.num_ack_pending}
        except Exception as exc:  # report, never fail the health page
            doc["error"] = str(exc)
        return doc

    async def capture_nodes(self) -> dict[str, str]:
        """node → the gRPC address of its capture (the per-node registry; cached for a few seconds)."""
        now = time.monotonic()
        cached = self._capture_nodes
        if cached is not None and now - cached[0] < CAPTURE_NODES_CACHE_S:
            return cached[1]
        found: dict[str, str] = {}
        bus = self.bus
        if bus is not None and bus.connected:
            try:
                found = await nodes.addresses(await nodes.open_bucket(bus.js))
            except Exception as exc:  # the registry is a hint: the configured address still answers
                log.warning(
                    "capture node registry unavailable", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
        self._capture_nodes = (now, found)
        return found

    async def _snapshot(
        self, address: str, request: capture_pb2.CaptureServiceSnapshotRequest
    ) -> bytes | None:
        async with channel(address, self.settings.transport, peer="capture") as ch:
            try:
                resp = await capture_pb2_grpc.CaptureServiceStub(ch).Snapshot(
                    request, timeout=SNAPSHOT_TIMEOUT_S, metadata=self.auth.call_metadata()
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("capture snapshot failed", extra={"address": address, "error": exc.details()})
                return None
        return resp.data if resp.packets else None

    async def flow_pcap(self, doc: dict[str, Any]) -> bytes | None:
        """The packets of an entry's flow from the recorder of the node that captured it (None when
        it has none)."""
        flow = doc.get("flow_id")
        if not isinstance(flow, str) or not flow:
            return None
        start = int(doc["timestamp"]) - PCAP_MARGIN_NS
        end = start + 2 * PCAP_MARGIN_NS + int(doc.get("elapsed_us") or 0) * 1000
        request = capture_pb2.CaptureServiceSnapshotRequest(
            start_ns=start, end_ns=end, flow_id=flow, inline=True
        )
        node = doc.get("node")
        address = (await self.capture_nodes()).get(node) if isinstance(node, str) else None
        return await self._snapshot(address or self.settings.capture_grpc, request)

    async def window_pcap(self, start_ns: int, end_ns: int, bpf: str) -> tuple[bytes, list[str]]:
        """A time window from every capture node, merged: one pcapng section per node (tshark and
        Wireshark read a multi-section file as one capture). Returns (data, nodes that answered)."""
        targets = await self.capture_nodes() or {"": self.settings.capture_grpc}
        request = capture_pb2.CaptureServiceSnapshotRequest(
            start_ns=start_ns, end_ns=end_ns, bpf=bpf, inline=True
        )
        answers = await asyncio.gather(*(self._snapshot(a, request) for a in targets.values()))
        parts = [(n, data) for n, data in zip(targets, answers, strict=True) if data]
        return b"".join(d for _n, d in parts), [n for n, _d in parts]

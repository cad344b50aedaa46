"""Shared pieces for the HTTP/2, gRPC and GraphQL tests: a registry with the HTTP/2 specs, a pipeline
runner, and real HTTP/2 byte streams produced by the `h2` library acting as both peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.settings

from wiretide.common.packets import PacketColumns
from wiretide.dissector.api import ProtocolSpec
from wiretide.dissector.pipeline import Limits, Pipeline
from wiretide.dissector.protocols import BUILTINS, http2, http_overlays
from wiretide.dissector.redact import NO_REDACTION
from wiretide.dissector.registry import Registry

H2_SPECS: tuple[ProtocolSpec, ...] = (http2.SPEC, http2.H2C_SPEC)


def registry(overrides: dict[int, str] | None = None) -> Registry:
    """The built-ins plus the HTTP/2 specs (a no-op once `protocols/__init__.py` lists them)."""
    names = {s.name for s in BUILTINS}
    return Registry([*BUILTINS, *(s for s in H2_SPECS if s.name not in names)], overrides)


def classified(doc: dict[str, Any]) -> dict[str, Any]:
    """Apply the `classify` hooks the way the pipeline does once integrated (idempotent)."""
    proto = doc["protocol"]
    if proto in ("http2", "grpc", "graphql"):
        over = http2.classify(doc["request"], doc["response"])
    elif proto == "http" and isinstance(doc.get("request"), dict):
        over = http_overlays.classify_http1(doc["request"], doc["response"])
    else:
        return doc
    if doc["error"] is not None:
        over.pop("error", None)
    doc.update(over)
    return doc


def run(cols: list[PacketColumns] | PacketColumns, body_cap: int = 64 * 1024) -> list[dict[str, Any]]:
    # The parser's output as it is: redaction has its own tests (test_redact.py).
    pipe = Pipeline(registry(), limits=Limits(body_cap=body_cap), redactor=NO_REDACTION)
    out: list[dict[str, Any]] = []
    for c in cols if isinstance(cols, list) else [cols]:
        out.extend(pipe.feed(c))
    out.extend(pipe.finish())
    return [classified(d) for d in out]


def run_file(path: Path, body_cap: int = 64 * 1024) -> list[dict[str, Any]]:
    from tests.unit.dissector.pcaps import read_columns

    return run(read_columns(path), body_cap)


def streams(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-stream entries (no raw TCP)."""
    return [d for d in docs if d["protocol"] in ("http2", "grpc", "graphql") and d["method"] != "GOAWAY"]


class H2Pair:
    """A real HTTP/2 client and server (`h2`), wired back to back; the bytes each side sent are kept."""

    def __init__(self, header_table_size: int | None = None) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, validate_inbound_headers=False)
        )
        self.wire: list[tuple[bool, bytes]] = []  # (from client, bytes) in the order they were sent
        self.client.initiate_connection()
        if header_table_size is not None:
            self.client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: header_table_size})
        self.flush()
        self.server.initiate_connection()
        self.flush()

    def flush(self) -> None:
        for _ in range(4):
            a = self.client.data_to_send()
            if a:
                self.wire.append((True, a))
                self.server.receive_data(a)
            b = self.server.data_to_send()
            if b:
                self.wire.append((False, b))
                self.client.receive_data(b)
            if not a and not b:
                return

    def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        trailers: list[tuple[str, str]] | None = None,
    ) -> int:
        sid = self.client.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "svc.test")]
        self.client.send_headers(sid, hdrs + (headers or []), end_stream=not body and not trailers)
        if body:
            self.client.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.client.send_headers(sid, trailers, end_stream=True)
        self.flush()
        return sid

    def respond(
        self,
        sid: int,
        status: int = 200,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        trailers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.server.send_headers(
            sid, [(":status", str(status)), *(headers or [])], end_stream=not body and not trailers
        )
        if body:
            self.server.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.server.send_headers(sid, trailers, end_stream=True)
        self.flush()


def conversation(
    wire: list[tuple[bool, bytes]], sport: int = 50051, mss: int = 1400, handshake: bool = True, skip: int = 0
) -> PacketColumns:
    """The byte exchange as TCP packets between two 10.x test addresses; `skip` drops the first packets
    (a capture that started late)."""
    from tests.unit.dissector.builders import Conversation

    conv = Conversation(sport=sport)
    if handshake:
        conv.handshake()
    for from_client, data in wire:
        conv.send(from_client, data, mss)
    conv.close()
    if skip:
        conv.frames = conv.frames[skip:]
    return conv.columns()


def session_events(wire: list[tuple[bool, bytes]], upgraded: bool = False) -> list[Any]:
    """Feed a session directly (no TCP), returning every event including close."""
    from wiretide.dissector.api import SessionConfig

    sess = http2.Http2Session(SessionConfig(), upgraded=upgraded)
    out: list[Any] = []
    ts = 1
    for from_client, data in wire:
        out.extend(sess.feed(from_client, data, ts))
        ts += 1
    out.extend(sess.close(ts))
    return out


ECHO_PROTO = Path(__file__).resolve().parents[2] / "data" / "http2" / "echo.proto"


def compile_echo(out: Path) -> Path:
    """protoc (grpcio-tools) on tests/data/http2/echo.proto: Python modules and a descriptor set in `out`."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    desc = out / "echo.protoset"
    args = [
        "protoc",
        f"-I{ECHO_PROTO.parent}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={desc}",
        "--include_imports",
        str(ECHO_PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on echo.proto")
    return desc


def grpc_frame(payload: bytes, compressed: bool = False) -> bytes:
    """A gRPC Length-Prefixed-Message."""
    return bytes([1 if compressed else 0]) + len(payload).to_bytes(4, "big") + payload

"""`wiretide analyze FILE --traces OUT.json` / `--traces-endpoint URL`: the traces of a capture,
assembled by the tracer's own assembler as the entries come out of the dissector, written as OTLP/JSON
lines and/or exported over OTLP — forensics without a running stack.

Rule: traces are made as the tracer service makes them (the same assembler, the same packet-time
window, the same encoder); what cannot be exported is counted and said on stderr, never dropped
silently. Memory stays bounded: spans are written and sent as their window closes, not at the end.

OUT.json holds one `ExportTraceServiceRequest` per line in the OTLP/JSON encoding (the layout of
the OpenTelemetry file exporter, which the Collector's `otlpjsonfile` receiver reads back).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import IO, Any, Final
from urllib.parse import urlsplit

import orjson

from wiretide.tracer.assemble import PARENT_MODES, PARENT_WIRETIDE, Assembler, AssemblyConfig
from wiretide.tracer.export.otlp import Encoder
from wiretide.tracer.export.otlp_json import request_json
from wiretide.tracer.export.transport import OtlpTarget, Transport, make_transport
from wiretide.tracer.spans import Span

# Spans per OTLP request (one JSON line, one export call).
BATCH_SPANS: Final = 2_048
# Attempts per request on a retryable failure (OTLP "Retryable Response Codes"), backoff doubling.
MAX_ATTEMPTS: Final = 5
BACKOFF_START_S: Final = 0.2
# The OTLP/HTTP port and path (OTLP spec, "OTLP/HTTP"): an endpoint naming either is spoken to in
# HTTP/protobuf unless told otherwise; anything else in gRPC.
HTTP_PORT: Final = 4318
PROTOCOLS: Final = ("grpc", "http/protobuf")


def guess_protocol(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return (
        "http/protobuf"
        if parts.port == HTTP_PORT or parts.path.rstrip("/").endswith("/v1/traces")
        else "grpc"
    )


def check_endpoint(endpoint: str) -> str:
    """The endpoint if it is an http(s)://host:port URL; ValueError naming the problem otherwise."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--traces-endpoint must be http(s)://host:port, got {endpoint!r}")
    return endpoint


class TracesOut:
    """Feed entries with `add`; `finish` decides what is left, writes and sends it, and reports."""

    def __init__(
        self, path: str | None, endpoint: str | None, protocol: str | None = None, parent: str = "wiretide"
    ) -> None:
        self.assembler = Assembler(AssemblyConfig(parent=parent))
        self.encoder = Encoder()
        self.path = path
        self.file: IO[bytes] | None = open(path, "wb") if path else None  # noqa: SIM115 - closed by finish
        self.endpoint = endpoint
        self.protocol = protocol or (guess_protocol(endpoint) if endpoint else "grpc")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: Transport | None = None
        self._held: list[Span] = []
        self.spans = 0
        self.traces: set[bytes] = set()
        self.exported = 0
        self.failed = 0
        self.error = ""

    def wrap(self, sink: Callable[[list[dict[str, Any]]], None]) -> Callable[[list[dict[str, Any]]], None]:
        """`sink`, and every entry it is given assembled into traces too."""

        def both(entries: list[dict[str, Any]]) -> None:
            sink(entries)
            self.add(entries)

        return both

    def add(self, entries: list[dict[str, Any]]) -> None:
        self.assembler.add_many(entries)
        self._take(self.assembler.drain())

    def _take(self, spans: list[Span], last: bool = False) -> None:
        self._held.extend(spans)
        while len(self._held) >= BATCH_SPANS or (last and self._held):
            batch, self._held = self._held[:BATCH_SPANS], self._held[BATCH_SPANS:]
            self._write(batch)

    def _write(self, batch: list[Span]) -> None:
        body = self.encoder.request(batch)
        self.spans += len(batch)
        self.traces.update(s.trace_id for s in batch)
        if self.file is not None:
            self.file.write(orjson.dumps(request_json(body), option=orjson.OPT_APPEND_NEWLINE))
        if self.endpoint:
            self._send(body, len(batch))

    def _send(self, body: bytes, n: int) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            assert self.endpoint is not None
            self._transport = self._loop.run_until_complete(self._connect())
        assert self._transport is not None
        delay = BACKOFF_START_S
        for attempt in range(MAX_ATTEMPTS):
            outcome = self._loop.run_until_complete(self._transport.send(body))
            if outcome.ok:
                self.exported += n - outcome.rejected_spans
                self.failed += outcome.rejected_spans
                return
            self.error = outcome.error
            if not outcome.retryable or attempt == MAX_ATTEMPTS - 1:
                break
            time.sleep(delay)
            delay *= 2
        self.failed += n

    async def _connect(self) -> Transport:
        assert self.endpoint is not None
        return make_transport(OtlpTarget(endpoint=self.endpoint, protocol=self.protocol))

    def finish(self, err: IO[str] | None) -> bool:
        """Decide the spans still waiting, write and send them; close; report on `err`. False when
        some spans could not be exported."""
        self.assembler.flush()
        self._take(self.assembler.drain(), last=True)
        if self.file is not None:
            self.file.close()
        if self._loop is not None:
            if self._transport is not None:
                self._loop.run_until_complete(self._transport.close())
            self._loop.close()
        if err is not None:
            where = []
            if self.path:
                where.append(f"written to {self.path} (OTLP/JSON)")
            if self.endpoint:
                where.append(f"{self.exported} exported to {self.endpoint} ({self.protocol})")
            err.write(f"  traces: {len(self.traces)} traces, {self.spans} spans; {', '.join(where)}\n")
            if self.failed:
                err.write(f"  traces: {self.failed} spans not exported: {self.error or 'rejected'}\n")
        return self.failed == 0


def traces_output(args: Any) -> TracesOut | None:
    """The `TracesOut` that `analyze`'s --traces/--traces-endpoint/--traces-protocol ask for, or None;
    ValueError (or OSError for an unwritable file) naming the problem."""
    path: str | None = getattr(args, "traces", None)
    endpoint: str | None = getattr(args, "traces_endpoint", None)
    protocol: str | None = getattr(args, "traces_protocol", None)
    if protocol and not endpoint:
        raise ValueError("--traces-protocol needs --traces-endpoint")
    if not path and not endpoint:
        return None
    if path == "-":
        raise ValueError("--traces needs a file name (standard output carries the entries)")
    if endpoint:
        check_endpoint(endpoint)
    # The same setting as the tracer service's (docs/tracing.md): where Wiretide's spans hang.
    parent = os.environ.get("WIRETIDE_TRACER_PARENT", PARENT_WIRETIDE).strip().lower() or PARENT_WIRETIDE
    if parent not in PARENT_MODES:
        raise ValueError(f"WIRETIDE_TRACER_PARENT must be one of {', '.join(PARENT_MODES)}, got {parent!r}")
    return TracesOut(path, endpoint, protocol, parent)

"""Real OTLP trace receivers for tests: a gRPC `TraceService/Export` server built from
`opentelemetry-proto`, and an OTLP/HTTP server (`POST /v1/traces`, application/x-protobuf).

Both decode what they receive with the official classes and keep every request; both can be told to
fail the next N requests (UNAVAILABLE / HTTP 503) to exercise retries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def plain(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None


@dataclass
class Received:
    """One span as a receiver saw it, with its resource's attributes."""

    resource: dict[str, Any]
    scope: str
    span: Span
    attributes: dict[str, Any]


@dataclass
class Collected:
    requests: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    fail_next: int = 0
    failures_served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def take_failure(self) -> bool:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.failures_served += 1
                return True
            return False

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, metadata: dict[str, str]) -> None:
        with self.arrived:
            self.requests.append(request)
            self.metadata.append(metadata)
            self.arrived.notify_all()

    def spans(self) -> list[Received]:
        with self.lock:
            requests = list(self.requests)
        return list(_walk(requests))

    def wait_for(self, n_spans: int, timeout: float = 10.0) -> list[Received]:
        with self.arrived:
            self.arrived.wait_for(
                lambda: (
                    sum(
                        len(ss.spans)
                        for r in self.requests
                        for rs in r.resource_spans
                        for ss in rs.scope_spans
                    )
                    >= n_spans
                ),
                timeout,
            )
        return self.spans()


def _walk(requests: list[trace_service_pb2.ExportTraceServiceRequest]) -> Iterator[Received]:
    for request in requests:
        for rs in request.resource_spans:
            resource = {kv.key: plain(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {kv.key: plain(kv.value) for kv in span.attributes}
                    yield Received(resource, ss.scope.name, span, attrs)


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collected: Collected) -> None:
        self.collected = collected

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.collected.take_failure():
            context.abort(grpc.StatusCode.UNAVAILABLE, "test receiver told to fail")
        self.collected.add(request, {k: v for k, v in context.invocation_metadata()})
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver:
    """A real OTLP/gRPC receiver on loopback (its own thread pool, independent of the test's loop)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.collected = Collected()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self.collected), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


class HttpReceiver:
    """A real OTLP/HTTP receiver on loopback (`POST /v1/traces`, protobuf bodies)."""

    def __init__(self) -> None:
        self.collected = collected = Collected()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404 if self.path != "/v1/traces" else 415)
                    self.end_headers()
                    return
                if collected.take_failure():
                    self.send_response(503)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                collected.add(request, {k.lower(): v for k, v in self.headers.items()})
                payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""Self-telemetry: with OTEL_EXPORTER_OTLP_ENDPOINT set, a service exports its own spans over OTLP;
services also serve gRPC reflection."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import httpx
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.helpers.nats import NatsServer, free_port
from tests.integration.test_store_writer import make_entries, publish
from wiretide.common.entry import UlidGenerator


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_a_service_exports_its_own_spans_when_an_otlp_endpoint_is_set(
    nats_server: NatsServer, spawn: Any
) -> None:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        gw = spawn(
            "gateway",
            nats_server.url,
            WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{free_port()}",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_INSECURE="true",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        gw.wait_health("SERVING")
        asyncio.run(publish(nats_server.url, [make_entries(3, UlidGenerator())]))
        deadline = time.monotonic() + 30
        spans: list[tuple[str, str, dict[str, Any]]] = []
        while time.monotonic() < deadline and not spans:
            with receiver.lock:
                for req in receiver.requests:
                    for rs in req.resource_spans:
                        service = next(
                            a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
                        )
                        for ss in rs.scope_spans:
                            for sp in ss.spans:
                                attrs = {a.key: a.value.int_value for a in sp.attributes}
                                spans.append((service, sp.name, attrs))
            time.sleep(0.2)
        assert ("wiretide-gateway", "store.write", {"wiretide.entries": 3, "wiretide.messages": 1}) in spans
    finally:
        server.stop(None)


def test_services_answer_grpc_reflection(nats_server: NatsServer, spawn: Any) -> None:
    svc = spawn("resolver", nats_server.url)
    svc.wait_health("SERVING")
    with grpc.insecure_channel(svc.grpc) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(
            stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
    names = {s.name for s in resp.list_services_response.service}
    assert {"wiretide.proto.v1.ResolverService", "grpc.health.v1.Health"} <= names


def test_metrics_endpoint_reports_readiness(nats_server: NatsServer, spawn: Any) -> None:
    port = free_port()
    svc = spawn("agents", nats_server.url, WIRETIDE_AGENTS_METRICS=f"127.0.0.1:{port}")
    svc.wait_health("SERVING")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'wiretide_service_ready{service="agents"} 1.0' in text

"""OTLP export to real receivers (gRPC and HTTP/protobuf): structure, headers, retries, bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from wiretide.tracer.assemble import Assembler
from wiretide.tracer.export.exporter import ExportConfig, Exporter
from wiretide.tracer.export.otlp import encode_request
from wiretide.tracer.export.transport import OtlpTarget, make_transport, parse_headers
from wiretide.tracer.spans import Span

from .receiver import GrpcReceiver, HttpReceiver
from .test_assemble import TRACE, three_hops


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    r = GrpcReceiver()
    yield r
    r.stop()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver()
    yield r
    r.stop()


def chain_spans(headers: bool = True) -> list[Span]:
    a = Assembler()
    a.add_many(three_hops(headers=headers))
    a.flush()
    return a.drain()


def fast(**kw: float | int) -> ExportConfig:
    return ExportConfig(**{"flush_interval_s": 0.05, "backoff_start_s": 0.01, "backoff_max_s": 0.05, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_exported_spans_arrive_with_resources_per_workload_and_their_attributes(
    protocol: str, grpc_receiver: GrpcReceiver, http_receiver: HttpReceiver
) -> None:
    receiver = grpc_receiver if protocol == "grpc" else http_receiver
    target = OtlpTarget(
        receiver.endpoint, protocol, headers=parse_headers("authorization=Bearer%20t0ken,x-tenant=a")
    )
    exporter = Exporter(make_transport(target), fast())
    exporter.start()
    spans = chain_spans()
    exporter.offer(spans)
    assert await exporter.flush(10)
    await exporter.close()
    got = receiver.collected.wait_for(6)
    assert len(got) == 6 and exporter.exported == 6
    services = {g.resource["service.name"] for g in got}
    assert services == {"192.168.1.1", "frontend", "api", "backend"}  # the outside caller: its address
    assert {g.scope for g in got} == {"wiretide.tracer"}
    assert {g.span.trace_id.hex() for g in got} == {TRACE}
    ids = {g.span.span_id for g in got}
    roots = [g for g in got if g.span.parent_span_id not in ids]
    assert len(roots) == 1 and roots[0].resource["service.name"] == "192.168.1.1"
    for g in got:
        assert g.attributes["wiretide.link"] in {"header", "entry"}
        assert g.attributes["wiretide.confidence"] == 1.0
        assert g.attributes["http.request.method"] == "GET"
        assert g.span.end_time_unix_nano > g.span.start_time_unix_nano >= 1_700_000_000 * 10**9
        assert g.resource.get("k8s.namespace.name") == ("shop" if g in roots[1:] or g not in roots else None)
    api_client = next(g for g in got if g.resource["service.name"] == "api" and g.span.kind == 3)
    assert (
        api_client.attributes["server.port"] == 8080
        and api_client.attributes["service.peer.name"] == "backend"
    )
    meta = receiver.collected.metadata[0]
    assert meta["authorization"] == "Bearer t0ken" and meta["x-tenant"] == "a"


def test_the_hand_written_encoding_decodes_with_the_official_classes() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = chain_spans(headers=False)
    spans[0].error, spans[0].status_message = True, "503"
    spans[0].own.update({"neg": -5, "flag": True, "ratio": 0.25, "big": 2**40})
    req = ExportTraceServiceRequest.FromString(encode_request(spans))
    out = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(out) == len(spans)
    first = next(s for s in out if s.span_id == spans[0].span_id)
    attrs = {kv.key: kv.value for kv in first.attributes}
    assert attrs["neg"].int_value == -5 and attrs["flag"].bool_value is True
    assert attrs["ratio"].double_value == 0.25 and attrs["big"].int_value == 2**40
    assert first.status.code == 2 and first.status.message == "503"
    assert first.name == spans[0].name and first.kind == spans[0].kind
    assert first.start_time_unix_nano == spans[0].start_ns


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_a_failing_receiver_is_retried_until_it_accepts(
    protocol: str, grpc_receiver: GrpcReceiver, http_receiver: HttpReceiver
) -> None:
    receiver = grpc_receiver if protocol == "grpc" else http_receiver
    receiver.collected.fail_next = 2
    exporter = Exporter(make_transport(OtlpTarget(receiver.endpoint, protocol)), fast(max_retries=3))
    exporter.start()
    exporter.offer(chain_spans())
    assert await exporter.flush(10)
    await exporter.close()
    assert receiver.collected.failures_served == 2
    assert len(receiver.collected.wait_for(6)) == 6 and exporter.dropped == {}


async def test_a_receiver_that_is_down_means_a_bounded_queue_and_counted_drops() -> None:
    down = GrpcReceiver()
    endpoint = down.endpoint
    down.stop()  # nothing listens there any more
    exporter = Exporter(
        make_transport(OtlpTarget(endpoint, "grpc", timeout_s=0.5)),
        fast(max_queue=10, max_batch=5, max_retries=1),
    )
    spans = chain_spans() * 4  # 24 spans offered to a queue of 10
    exporter.offer(spans)
    assert len(exporter.queue) == 10 and exporter.dropped == {"queue_full": 14}
    exporter.start()
    assert await exporter.flush(15)
    await exporter.close()
    assert exporter.dropped == {"queue_full": 14, "export_failed": 10}
    assert exporter.exported == 0


async def test_an_http_receiver_that_rejects_the_request_is_not_retried(http_receiver: HttpReceiver) -> None:
    target = OtlpTarget(http_receiver.endpoint + "/elsewhere/v1/nothing", "http/protobuf")
    exporter = Exporter(make_transport(target), fast(max_retries=5))
    exporter.start()
    exporter.offer(chain_spans())
    assert await exporter.flush(10)
    await exporter.close()
    assert exporter.dropped == {"export_failed": 6} and http_receiver.collected.failures_served == 0


def test_bad_header_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_headers("novalue")
    assert parse_headers("") == ()


async def test_offering_never_blocks_the_caller() -> None:
    exporter = Exporter(make_transport(OtlpTarget("http://127.0.0.1:9", "grpc")), fast(max_queue=3))
    exporter.offer(chain_spans())
    assert len(exporter.queue) == 3
    await asyncio.sleep(0)
    await exporter.close(timeout=0.1)
    assert exporter.dropped["shutdown"] == 3

"""The tracer as a service: entries on JetStream (real nats-server) → traces in a real OTLP receiver,
answered over gRPC (GetTrace, FindTraces, GetServiceMap), RED metrics on the registry; bad input is
counted, bad queries are INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import nats
import pytest
from prometheus_client import REGISTRY

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.unit.tracer.receiver import GrpcReceiver, HttpReceiver
from tests.unit.tracer.test_assemble import TRACE, three_hops
from wiretide.common.bus import entries_subject
from wiretide.common.bus.connection import ensure_stream
from wiretide.common.bus.subjects import ENTRIES_STREAM
from wiretide.common.entry import encode_batch
from wiretide.proto.v1 import tracer_pb2, tracer_pb2_grpc
from wiretide.tracer.service import TracerService, TracerSettings


async def publish(url: str, docs: list[dict[str, Any]], raw: bytes | None = None) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js, ENTRIES_STREAM)
    if raw is not None:
        await js.publish(entries_subject("node-a"), raw)
    await js.publish(entries_subject("node-a"), encode_batch(docs, "node-a", "test", 1))
    await nc.close()


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_entries_on_the_bus_become_exported_and_queryable_traces(
    nats_server: NatsServer, protocol: str
) -> None:
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    pid = __import__("os").getpid()
    settings = TracerSettings(
        nats_url=nats_server.url,
        tracer_grpc="127.0.0.1:0",
        tracer_durable=f"tracer-test-{pid}",
        tracer_window_s=0.2,
        traces_otlp_endpoint=receiver.endpoint,
        traces_otlp_protocol=protocol,
        traces_otlp_flush_interval_s=0.05,
        tracer_span_rules='[{"match": "path == \\"/backend\\"", "name": "db-call"}]',
    )
    with_headers = three_hops(headers=True)
    plain = [{**e, "id": e["id"] + "-plain", "request": {"headers": {}}} for e in three_hops(headers=False)]
    for e in plain:
        e["timestamp"] += 10**9  # a second later: its own trace
    invalid = {"id": "", "timestamp": -1, "protocol": "http"}
    before_red = sample(
        "wiretide_tracer_edge_requests_total",
        {"source": "shop/frontend", "destination": "shop/api", "protocol": "http", "status_class": "2xx"},
    )
    try:
        async with running(TracerService(settings)) as svc:
            await publish(nats_server.url, [*with_headers, *plain, invalid], raw=b"\xff\x00garbage")
            got = await asyncio.to_thread(receiver.collected.wait_for, 12, 20.0)
            assert len(got) == 12  # 2 traces of 3 calls, 2 spans each (the outside caller by address)
            assert sum(1 for g in got if g.span.trace_id.hex() == TRACE) == 6
            assert {g.attributes["wiretide.link"] for g in got if g.span.trace_id.hex() != TRACE} >= {
                "timing"
            }
            assert any(g.span.name == "db-call" for g in got)
            assert isinstance(svc, TracerService) and svc.invalid_entries == 1

            address = f"127.0.0.1:{svc.grpc_port}"
            async with grpc.aio.insecure_channel(address) as channel:
                stub = tracer_pb2_grpc.TracerServiceStub(channel)
                trace = await stub.GetTrace(tracer_pb2.GetTraceRequest(trace_id=TRACE))
                assert len(trace.spans) == 6 and trace.spans[0].service_name == "frontend"
                root = next(s for s in trace.spans if not s.parent_span_id)
                assert root.service_name == "192.168.1.1" and root.kind == "client"
                assert {s.link for s in trace.spans} == {"header", "entry"}

                found = await stub.FindTraces(tracer_pb2.FindTracesRequest(query='dst.name == "backend"'))
                assert len(found.traces) == 2 and all(t.span_count == 6 for t in found.traces)
                timing = next(t for t in found.traces if t.trace_id != TRACE)
                assert 0 < timing.min_confidence < 1 and timing.root_service == "192.168.1.1"
                none = await stub.FindTraces(tracer_pb2.FindTracesRequest(query="status >= 500"))
                assert list(none.traces) == []

                smap = await stub.GetServiceMap(tracer_pb2.GetServiceMapRequest(window_ns=60 * 10**9))
                edges = {(e.source, e.destination): e for e in smap.edges}
                assert set(edges) >= {("shop/frontend", "shop/api"), ("shop/api", "shop/backend")}
                assert edges[("shop/frontend", "shop/api")].requests == 2
                assert edges[("shop/frontend", "shop/api")].p50_ms == pytest.approx(8.0)
                assert edges[("shop/frontend", "shop/api")].error_rate == 0.0
                assert {n.id for n in smap.nodes} >= {"shop/frontend", "shop/api", "shop/backend"}
                only = await stub.GetServiceMap(
                    tracer_pb2.GetServiceMapRequest(query='dst.name == "backend"', window_ns=60 * 10**9)
                )
                assert [(e.source, e.destination) for e in only.edges] == [("shop/api", "shop/backend")]

                for bad in (
                    stub.FindTraces(tracer_pb2.FindTracesRequest(query="status >=")),
                    stub.GetServiceMap(tracer_pb2.GetServiceMapRequest(query="(((")),
                    stub.GetTrace(tracer_pb2.GetTraceRequest(trace_id="xyz")),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await bad
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetTrace(tracer_pb2.GetTraceRequest(trace_id="1" * 32))
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        receiver.stop()
    after_red = sample(
        "wiretide_tracer_edge_requests_total",
        {"source": "shop/frontend", "destination": "shop/api", "protocol": "http", "status_class": "2xx"},
    )
    assert after_red - before_red == 2
    assert sample("wiretide_tracer_edge_duration_seconds_count",
                  {"source": "shop/api", "destination": "shop/backend", "protocol": "http"}) >= 2  # fmt: skip


def test_bad_tracer_settings_stop_start_up_with_the_setting_named() -> None:
    from wiretide.common.settings import SettingsError, load_settings

    for env, name in (
        ({"WIRETIDE_TRACES_OTLP_PROTOCOL": "thrift"}, "WIRETIDE_TRACES_OTLP_PROTOCOL"),
        ({"WIRETIDE_TRACES_OTLP_ENDPOINT": "jaeger:4317"}, "WIRETIDE_TRACES_OTLP_ENDPOINT"),
        ({"WIRETIDE_TRACER_SPAN_RULES": '[{"match": "(("}]'}, "WIRETIDE_TRACER_SPAN_RULES"),
        ({"WIRETIDE_TRACES_OTLP_MAX_QUEUE": "0"}, "WIRETIDE_TRACES_OTLP_MAX_QUEUE"),
        ({"WIRETIDE_TRACES_OTLP_HEADERS": "novalue"}, "WIRETIDE_TRACES_OTLP_HEADERS"),
    ):
        with pytest.raises(SettingsError, match=name):
            load_settings(TracerSettings, "tracer", env)
    ok = load_settings(
        TracerSettings, "tracer",
        {
            "WIRETIDE_TRACES_OTLP_ENDPOINT": "http://jaeger:4317",
            "WIRETIDE_TRACES_OTLP_PROTOCOL": "http/protobuf",
        },
    )  # fmt: skip
    target = ok.otlp_target()
    assert target is not None and target.protocol == "http/protobuf" and not target.use_tls


async def test_the_gateway_routes_answer_traces_and_the_service_map_over_the_tracer(
    nats_server: NatsServer,
) -> None:
    from types import SimpleNamespace

    import httpx
    from starlette.applications import Starlette

    from tests.helpers.nats import free_port
    from wiretide.common.auth import Authenticator, AuthMiddleware
    from wiretide.common.tls import PLAINTEXT
    from wiretide.gateway.api.traces import routes

    local = Authenticator().for_listener("127.0.0.1:0")  # the local default: the anonymous admin

    settings = TracerSettings(
        nats_url=nats_server.url,
        tracer_grpc="127.0.0.1:0",
        tracer_durable=f"tracer-gw-{__import__('os').getpid()}",
        tracer_window_s=0.1,
    )
    async with running(TracerService(settings)) as svc:
        await publish(nats_server.url, three_hops(headers=True))
        assert isinstance(svc, TracerService)
        await wait_for_async(
            "the trace's 6 spans", lambda: len(svc.engine.store.get(TRACE)), lambda n: n >= 6
        )
        gw = SimpleNamespace(
            settings=SimpleNamespace(tracer_grpc=f"127.0.0.1:{svc.grpc_port}", transport=PLAINTEXT),
            auth=local,
        )
        app = AuthMiddleware(Starlette(routes=routes(gw)), local)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            r = await client.get(f"/api/traces/{TRACE.upper()}")
            assert r.status_code == 200 and len(r.json()["spans"]) == 6
            assert r.json()["spans"][0]["attributes"]["http.request.method"] == "GET"
            r = await client.get("/api/traces", params={"q": 'dst.name == "api"'})
            assert r.status_code == 200 and [t["trace_id"] for t in r.json()["traces"]] == [TRACE]
            # The trace view's search: a service (named, namespaced, or an anonymous workload's
            # address), a duration range, errors only.
            for params, found in (
                ({"service": "shop/api", "min_duration": "5ms"}, [TRACE]),
                ({"service": "backend", "max_duration": "1ms"}, []),
                ({"service": "192.168.1.1"}, [TRACE]),
                ({"service": "10.0.1.1:8080", "error": "false"}, [TRACE]),
                ({"service": "nobody"}, []),
                ({"q": "http", "error": "true"}, []),
            ):
                r = await client.get("/api/traces", params=params)
                assert r.status_code == 200 and [t["trace_id"] for t in r.json()["traces"]] == found, params
            r = await client.get("/api/servicemap", params={"window": "1h"})
            body = r.json()
            assert r.status_code == 200 and {(e["source"], e["destination"]) for e in body["edges"]} == {
                ("shop/frontend", "shop/api"),
                ("shop/api", "shop/backend"),
                ("192.168.1.1", "shop/frontend"),
            }
            for path, params, status in (
                ("/api/traces/nothex", {}, 400),
                (f"/api/traces/{'2' * 32}", {}, 404),
                ("/api/traces", {"q": "status >="}, 400),
                ("/api/traces", {"limit": "-1"}, 400),
                ("/api/servicemap", {"window": "forever"}, 400),
                ("/api/servicemap", {"q": "x" * 9000}, 400),
                ("/api/traces", {"min_duration": "soon"}, 400),
                ("/api/traces", {"error": "maybe"}, 400),
                ("/api/traces", {"service": "x" * 300}, 400),
            ):
                r = await client.get(path, params=params)
                assert r.status_code == status, (path, params, r.text)
                assert "error" in r.json()
    gone = SimpleNamespace(
        settings=SimpleNamespace(tracer_grpc=f"127.0.0.1:{free_port()}", transport=PLAINTEXT), auth=local
    )
    app = AuthMiddleware(Starlette(routes=routes(gone)), local)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        r = await client.get("/api/traces")
        assert r.status_code == 503

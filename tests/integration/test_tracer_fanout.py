"""Asking several tracer replicas (common/tracers.py) over real gRPC: three in-process tracers, each
holding the calls it owns (some traces spread over two or three of them), answer GetTrace, FindTraces
and GetServiceMap merged as one tracer fed every call answers them; a replica that is down leaves a
partial answer that names it; one address is the plain stub; the gateway's trace routes show it all,
in process and in a running gateway given two tracer addresses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import pytest
from starlette.applications import Starlette

from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.unit.tracer.test_assemble import call
from wiretide.common.auth import Authenticator, AuthMiddleware
from wiretide.common.tls import PLAINTEXT
from wiretide.common.tracers import Tracers, TracersUnavailable
from wiretide.gateway.api.traces import routes
from wiretide.proto.v1 import tracer_pb2, tracer_pb2_grpc
from wiretide.tracer.api import TracerApi
from wiretide.tracer.engine import Engine

TRACES = [f"{n:032x}" for n in (0xA1, 0xA2, 0xA3, 0xA4)]
WINDOW_NS = 3600 * 10**9  # every call of the data below is inside it


def chain(n: int, base_ms: float, scale: float, failing: bool = False) -> list[dict[str, Any]]:
    """Trace `TRACES[n-1]`: an outside caller → frontend → api → backend, in response order; ids
    `<n>a` (outermost) to `<n>c`; its times scaled (durations differ from trace to trace)."""
    trace = TRACES[n - 1]

    def h(span: str) -> dict[str, str]:
        return {"traceparent": f"00-{trace}-{n:08x}{span}-01"}

    def at(ms: float) -> float:
        return base_ms + ms * scale

    return [
        call(f"{n}c", "api", "backend", at(3), at(8), headers=h("000000c1"), status=500 if failing else 200),
        call(f"{n}b", "frontend", "api", at(2), at(10), headers=h("000000b1")),
        call(f"{n}a", None, "frontend", at(0), at(12), headers=h("000000a1")),
    ]


# Which replica owns each call: trace 1 over replicas 0 and 1, trace 2 over 1 and 2, trace 3 on 0
# alone, trace 4 over all three.
OWNER = {"1c": 0, "1b": 1, "1a": 1, "2c": 1, "2b": 1, "2a": 2, "3c": 0, "3b": 0, "3a": 0, "4c": 2, "4b": 1}
OWNER["4a"] = 0
ENTRIES = [
    *chain(1, 0, 1.0),
    *chain(2, 1_000, 2.0, failing=True),
    *chain(3, 2_000, 3.0),
    *chain(4, 3_000, 0.5),
]


class CountingApi(TracerApi):
    """The tracer's API, keeping every FindTraces request it was sent."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.finds: list[tracer_pb2.FindTracesRequest] = []

    async def FindTraces(
        self, request: tracer_pb2.FindTracesRequest, context: grpc.aio.ServicerContext
    ) -> tracer_pb2.FindTracesResponse:
        self.finds.append(request)
        return await super().FindTraces(request, context)


def fed(entries: Sequence[dict[str, Any]], max_traces: int = 50_000) -> Engine:
    engine = Engine(max_traces=max_traces)
    engine.ingest(list(entries))
    engine.flush()
    return engine


@asynccontextmanager
async def serving(engines: Sequence[Engine]) -> AsyncIterator[tuple[list[str], list[CountingApi]]]:
    servers, apis, addresses = [], [], []
    try:
        for engine in engines:
            server = grpc.aio.server()
            api = CountingApi(engine)
            tracer_pb2_grpc.add_TracerServiceServicer_to_server(api, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            apis.append(api)
            addresses.append(f"127.0.0.1:{port}")
        yield addresses, apis
    finally:
        for server in servers:
            await server.stop(None)


@asynccontextmanager
async def replicas() -> AsyncIterator[tuple[list[str], list[CountingApi], tracer_pb2_grpc.TracerServiceStub]]:
    """Three replicas holding `ENTRIES` as `OWNER` says, and a stub of one tracer fed them all."""
    parts = [fed([e for e in ENTRIES if OWNER[e["id"]] == i]) for i in range(3)]
    async with (
        serving([*parts, fed(ENTRIES)]) as (addresses, apis),
        grpc.aio.insecure_channel(addresses[3]) as ch,
    ):
        yield addresses[:3], apis[:3], tracer_pb2_grpc.TracerServiceStub(ch)


def span_shape(s: tracer_pb2.Span) -> tuple[Any, ...]:
    """What a span is, whichever replica made it (span ids are drawn per replica)."""
    return (s.trace_id, s.entry_id, s.kind, s.service_name, s.name, s.start_ns, s.end_ns, s.error)


def summary_shape(t: tracer_pb2.TraceSummary) -> tuple[Any, ...]:
    return (t.trace_id, t.root_name, t.root_service, t.start_ns, t.duration_ns, t.span_count, t.error)


async def test_a_trace_spread_over_replicas_is_answered_whole() -> None:
    async with replicas() as (addresses, _apis, single), Tracers(addresses) as tracers:
        for trace_id in TRACES:
            request = tracer_pb2.GetTraceRequest(trace_id=trace_id)
            merged = await tracers.GetTrace(request)
            alone = await single.GetTrace(request)
            assert len(merged.spans) == 6
            assert [span_shape(s) for s in merged.spans] == [span_shape(s) for s in alone.spans], trace_id
            assert len({s.span_id for s in merged.spans}) == 6
        # Only every replica saying NOT_FOUND is NOT_FOUND; bad input is the tracer's own error.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tracers.GetTrace(tracer_pb2.GetTraceRequest(trace_id="f" * 32))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tracers.GetTrace(tracer_pb2.GetTraceRequest(trace_id="xyz"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_trace_search_finds_on_any_replica_and_summarises_every_part() -> None:
    async with replicas() as (addresses, apis, single), Tracers(addresses) as tracers:
        for query in ("", 'dst.name == "backend"', 'src.name == "frontend"', "status >= 500"):
            merged = await tracers.FindTraces(tracer_pb2.FindTracesRequest(query=query))
            alone = await single.FindTraces(tracer_pb2.FindTracesRequest(query=query))
            newest_first = sorted(alone.traces, key=lambda t: -t.start_ns)
            assert [summary_shape(t) for t in merged.traces] == [summary_shape(t) for t in newest_first], (
                query
            )
            assert merged.traces, query
        # The backend calls of traces 1 and 4 are on replicas 0 and 2, the rest of them elsewhere: the
        # summary counts all six spans and names the outside caller as the root.
        for api in apis:
            api.finds.clear()
        found = await tracers.FindTraces(tracer_pb2.FindTracesRequest(query='dst.name == "backend"'))
        by_id = {t.trace_id: t for t in found.traces}
        assert set(by_id) == set(TRACES)
        assert all(t.span_count == 6 and t.root_service == "192.168.1.1" for t in found.traces)
        assert by_id[TRACES[1]].error and not by_id[TRACES[0]].error
        # The second round asks each replica for the found traces it did not report, and nothing more.
        reported = [{"1c", "3c"}, {"2c"}, {"4c"}]
        for i, api in enumerate(apis):
            first, *rest = api.finds
            assert first.query == 'dst.name == "backend"' and not first.trace_ids
            mine = {TRACES[int(e[0]) - 1] for e in reported[i]}
            assert [set(r.trace_ids) for r in rest] == [set(TRACES) - mine], i
        # Newest first, `limit` kept; the summaries of given traces (the query ignored), in that order.
        two = await tracers.FindTraces(tracer_pb2.FindTracesRequest(limit=2))
        assert [t.trace_id for t in two.traces] == [TRACES[3], TRACES[2]]
        given = await tracers.FindTraces(
            tracer_pb2.FindTracesRequest(trace_ids=[TRACES[0], "e" * 32, TRACES[3]], query="status >= 999")
        )
        assert [t.trace_id for t in given.traces] == [TRACES[0], TRACES[3]]
        assert all(t.span_count == 6 for t in given.traces)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tracers.FindTraces(tracer_pb2.FindTracesRequest(query="status >="))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_one_tracer_answers_the_summaries_of_given_traces() -> None:
    async with serving([fed(ENTRIES)]) as (addresses, _apis), grpc.aio.insecure_channel(addresses[0]) as ch:
        stub = tracer_pb2_grpc.TracerServiceStub(ch)
        answer = await stub.FindTraces(
            tracer_pb2.FindTracesRequest(trace_ids=[TRACES[2], "0" * 32, TRACES[0].upper(), TRACES[2]])
        )
        assert [(t.trace_id, t.span_count) for t in answer.traces] == [(TRACES[2], 6), (TRACES[0], 6)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.FindTraces(tracer_pb2.FindTracesRequest(trace_ids=["not-a-trace"]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_evictions_are_summed_over_the_replicas() -> None:
    small = [fed(ENTRIES[:6], max_traces=1), fed(ENTRIES[6:], max_traces=1)]
    async with serving(small) as (addresses, _apis), Tracers(addresses) as tracers:
        answer = await tracers.FindTraces(tracer_pb2.FindTracesRequest())
        assert answer.traces_evicted == 2 and len(answer.traces) == 2


async def test_the_service_map_adds_up_the_calls_each_replica_counted() -> None:
    async with replicas() as (addresses, _apis, single), Tracers(addresses) as tracers:
        for query in ("", 'dst.name == "backend"'):
            request = tracer_pb2.GetServiceMapRequest(query=query, window_ns=WINDOW_NS)
            merged = await tracers.GetServiceMap(request)
            alone = await single.GetServiceMap(request)
            parts = []
            for address in addresses:
                async with grpc.aio.insecure_channel(address) as ch:
                    parts.append(await tracer_pb2_grpc.TracerServiceStub(ch).GetServiceMap(request))
            assert list(merged.nodes) == list(alone.nodes), query
            assert merged.end_ns == alone.end_ns and merged.start_ns <= alone.start_ns
            assert merged.records_evicted == alone.records_evicted == 0
            edges = {(e.source, e.destination, e.protocol): e for e in alone.edges}
            assert [(e.source, e.destination, e.protocol) for e in merged.edges] == list(edges), query
            for e in merged.edges:
                one = edges[(e.source, e.destination, e.protocol)]
                assert (e.requests, e.bytes) == (one.requests, one.bytes)
                assert e.request_rate == pytest.approx(one.request_rate)
                assert e.error_rate == pytest.approx(one.error_rate)
                # A few calls per edge: the largest part's p95/p99 are the whole's.
                assert (e.p95_ms, e.p99_ms) == (one.p95_ms, one.p99_ms)
                pieces = [
                    p
                    for m in parts
                    for p in m.edges
                    if (p.source, p.destination) == (e.source, e.destination)
                ]
                mean = sum(p.p50_ms * p.requests for p in pieces) / sum(p.requests for p in pieces)
                assert e.p50_ms == pytest.approx(mean)
            if not query:
                backend = next(e for e in merged.edges if e.destination == "shop/backend")
                assert backend.requests == 4 and backend.error_rate == pytest.approx(0.25)
                assert len({p.p50_ms for m in parts for p in m.edges if p.destination == "shop/backend"}) > 1


async def test_a_replica_down_gives_the_others_answer_and_names_it() -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with replicas() as (addresses, _apis, single), Tracers([*addresses, dead]) as tracers:
        note = [f"tracer-3 ({dead}): UNAVAILABLE"]
        partial: list[str] = []
        trace = await tracers.GetTrace(tracer_pb2.GetTraceRequest(trace_id=TRACES[3]), partial=partial)
        assert len(trace.spans) == 6 and partial == note
        partial = []
        found = await tracers.FindTraces(tracer_pb2.FindTracesRequest(), partial=partial)
        alone = await single.FindTraces(tracer_pb2.FindTracesRequest())
        assert {summary_shape(t) for t in found.traces} == {summary_shape(t) for t in alone.traces}
        assert partial == note
        partial = []
        smap = await tracers.GetServiceMap(
            tracer_pb2.GetServiceMapRequest(window_ns=WINDOW_NS), partial=partial
        )
        assert sum(e.requests for e in smap.edges) == 12 and partial == note
        # No replica holds it, but one could not be asked: not NOT_FOUND.
        with pytest.raises(TracersUnavailable, match="tracer-3"):
            await tracers.GetTrace(tracer_pb2.GetTraceRequest(trace_id="f" * 32))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tracers.GetServiceMap(tracer_pb2.GetServiceMapRequest(query="((("))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    gone = [f"127.0.0.1:{free_port()}", dead]
    async with Tracers(gone) as tracers:
        for ask in (
            tracers.GetTrace(tracer_pb2.GetTraceRequest(trace_id=TRACES[0])),
            tracers.FindTraces(tracer_pb2.FindTracesRequest()),
            tracers.GetServiceMap(tracer_pb2.GetServiceMapRequest()),
        ):
            with pytest.raises(TracersUnavailable) as unavailable:
                await ask
            assert f"tracer-0 ({gone[0]}): UNAVAILABLE" in str(unavailable.value)
            assert f"tracer-1 ({dead}): UNAVAILABLE" in str(unavailable.value)


async def test_one_address_is_the_plain_stub() -> None:
    async with serving([fed(ENTRIES)]) as (addresses, apis), Tracers(addresses[0]) as tracers:
        async with grpc.aio.insecure_channel(addresses[0]) as ch:
            direct = await tracer_pb2_grpc.TracerServiceStub(ch).FindTraces(
                tracer_pb2.FindTracesRequest(query='dst.name == "api"')
            )
        apis[0].finds.clear()
        partial: list[str] = []
        through = await tracers.FindTraces(
            tracer_pb2.FindTracesRequest(query='dst.name == "api"'), partial=partial
        )
        assert through == direct and len(through.traces) == 4
        assert len(apis[0].finds) == 1 and partial == []  # one call, no second round
    async with Tracers(f"127.0.0.1:{free_port()}") as tracers:
        with pytest.raises(grpc.aio.AioRpcError) as err:  # the tracer's error, as the stub gives it
            await tracers.GetTrace(tracer_pb2.GetTraceRequest(trace_id=TRACES[0]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_gateway_answers_traces_and_the_map_from_every_replica() -> None:
    local = Authenticator().for_listener("127.0.0.1:0")  # the local default: the anonymous admin
    dead = f"127.0.0.1:{free_port()}"

    def gateway(tracer_grpc: str) -> httpx.AsyncClient:
        gw = SimpleNamespace(
            settings=SimpleNamespace(tracer_grpc=tracer_grpc, transport=PLAINTEXT), auth=local
        )
        app = AuthMiddleware(Starlette(routes=routes(gw)), local)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")

    async with replicas() as (addresses, _apis, _single):
        async with gateway(",".join(addresses)) as client:
            r = await client.get(f"/api/traces/{TRACES[3]}")
            assert r.status_code == 200 and len(r.json()["spans"]) == 6 and "partial" not in r.json()
            r = await client.get("/api/traces", params={"service": "backend", "min_duration": "1ms"})
            body = r.json()
            assert r.status_code == 200 and [t["trace_id"] for t in body["traces"]] == TRACES[::-1]
            assert all(t["span_count"] == 6 for t in body["traces"]) and "partial" not in body
            r = await client.get("/api/servicemap", params={"window": "1h"})
            assert r.status_code == 200 and sum(e["requests"] for e in r.json()["edges"]) == 12
            assert (await client.get("/api/traces", params={"q": "status >="})).status_code == 400
            assert (await client.get(f"/api/traces/{'2' * 32}")).status_code == 404
        async with gateway(f"{addresses[0]}, {addresses[1]},{addresses[2]},{dead}") as client:
            note = [f"tracer-3 ({dead}): UNAVAILABLE"]
            for path in (f"/api/traces/{TRACES[0]}", "/api/traces", "/api/servicemap"):
                r = await client.get(path)
                assert r.status_code == 200 and r.json()["partial"] == note, path
            r = await client.get(f"/api/traces/{'2' * 32}")
            assert r.status_code == 503 and "tracer-3" in r.json()["error"]
    async with gateway(f"{dead},127.0.0.1:{free_port()}") as client:
        r = await client.get("/api/traces")
        assert r.status_code == 503 and "no tracer replica answered" in r.json()["error"]


async def test_a_running_gateway_asks_both_tracer_replicas(nats_server: NatsServer, tmp_path: Path) -> None:
    two = [fed([e for e in ENTRIES if OWNER[e["id"]] % 2 == i]) for i in (0, 1)]
    async with serving(two) as (addresses, _apis):
        port = free_port()
        env = service_env(
            nats_server.url,
            tmp_path / "data",
            WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}",
            WIRETIDE_TRACER_GRPC=",".join(addresses),
        )
        gw = ServiceProcess("gateway", env, tmp_path / "gw.log")
        gw.start()
        try:
            await asyncio.to_thread(gw.wait_health, "SERVING")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                r = await client.get(f"/api/traces/{TRACES[3]}")
                assert r.status_code == 200, r.text
                assert {s["entry_id"] for s in r.json()["spans"]} == {"4a", "4b", "4c"}
                r = await client.get("/api/traces", params={"q": 'dst.name == "backend"'})
                assert r.status_code == 200, r.text
                assert [(t["trace_id"], t["span_count"]) for t in r.json()["traces"]] == [
                    (t, 6) for t in TRACES[::-1]
                ]
                r = await client.get("/api/servicemap", params={"window": "1h"})
                assert r.status_code == 200 and sum(e["requests"] for e in r.json()["edges"]) == 12
        finally:
            gw.kill()


def test_the_tracer_address_setting_takes_one_address_per_replica() -> None:
    from wiretide.common.settings import CommonSettings, SettingsError, load_settings

    two = load_settings(
        CommonSettings, None, {"WIRETIDE_TRACER_GRPC": "tracer-0.tracer:50054, tracer-1.tracer:50054"}
    )
    assert two.tracer_endpoints == ["tracer-0.tracer:50054", "tracer-1.tracer:50054"]
    assert two.grpc_address("tracer") == "tracer-0.tracer:50054"
    assert load_settings(CommonSettings, None, {}).tracer_endpoints == ["127.0.0.1:50054"]
    with pytest.raises(SettingsError, match="WIRETIDE_TRACER_GRPC"):
        load_settings(CommonSettings, None, {"WIRETIDE_TRACER_GRPC": "tracer-0.tracer:50054,tracer-1"})

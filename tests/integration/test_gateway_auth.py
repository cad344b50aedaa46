"""Every door of a running gateway, as a viewer scoped to one namespace, an admin, a stranger and a
foreign web page: REST, the WebSocket stream, gRPC, HAR/PCAP, traces and the service map (against a
tracer stand-in that records what it is asked), and the capture service's API.

A viewer scoped to `payments` never receives an entry whose both ends are outside `payments`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
import websockets

from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer, free_port
from tests.integration.test_gateway_api import make_gateway, newest_first, wait_stored
from tests.integration.test_store_writer import publish
from wiretide.common.auth import NamespaceScope
from wiretide.common.entry import from_proto
from wiretide.common.har import is_http
from wiretide.common.settings import load_settings
from wiretide.gateway.service import GatewayService
from wiretide.proto.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    tracer_pb2,
    tracer_pb2_grpc,
)

DOCS = entries(300, seed=17)
SCOPE = NamespaceScope.of(["payments"])
VIEWER, EDITOR, ADMIN = (
    "viewer-token-payments-0001",
    "editor-token-shop-00000001",
    "admin-token-everything-001",
)
SERVICE = "service-token-0123456789abcdef"
IN_SCOPE = [d for d in DOCS if SCOPE.allows(d)]
OUT_OF_SCOPE = [d for d in DOCS if not SCOPE.allows(d)]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def write_credentials(data: Path) -> dict[str, str]:
    data.mkdir(parents=True, exist_ok=True)
    (data / "tokens.json").write_bytes(
        orjson.dumps(
            {
                "tokens": [
                    {"token": VIEWER, "subject": "pat", "role": "viewer", "namespaces": ["payments"]},
                    {"token": EDITOR, "subject": "eve", "role": "editor", "namespaces": ["shop"]},
                    {"token": ADMIN, "subject": "ops", "role": "admin"},
                ]
            }
        )
    )
    (data / "service-token").write_text(SERVICE)
    return {
        "WIRETIDE_AUTH_TOKENS_FILE": str(data / "tokens.json"),
        "WIRETIDE_AUTH_SERVICE_TOKEN_FILE": str(data / "service-token"),
    }


class TracerStandIn(tracer_pb2_grpc.TracerServiceServicer):
    """Answers like the tracer (across every namespace) and records each request and its metadata."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any, dict[str, str]]] = []

    def _note(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.requests.append((name, request, {k: v for k, v in context.invocation_metadata() or ()}))

    async def GetTrace(self, request: Any, context: grpc.aio.ServicerContext) -> tracer_pb2.GetTraceResponse:
        self._note("GetTrace", request, context)
        return tracer_pb2.GetTraceResponse(spans=trace_spans(request.trace_id))

    async def GetServiceMap(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> tracer_pb2.GetServiceMapResponse:
        self._note("GetServiceMap", request, context)
        return tracer_pb2.GetServiceMapResponse()

    async def FindTraces(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> tracer_pb2.FindTracesResponse:
        self._note("FindTraces", request, context)
        return tracer_pb2.FindTracesResponse(traces=[TRACE_SUMMARY])


def trace_spans(trace_id: str) -> list[tracer_pb2.Span]:
    """A trace whose first three spans (the root among them) are entries outside the scope, the last
    three inside it; one span a millisecond, each lasting half of one."""
    return [
        tracer_pb2.Span(
            trace_id=trace_id,
            span_id=f"{i:016x}",
            parent_span_id=f"{i - 1:016x}" if i else "",
            name=d["id"],
            kind="server",
            service_name="inside" if SCOPE.allows(d) else "outside",
            start_ns=i * 1_000_000,
            end_ns=i * 1_000_000 + 500_000,
            entry_id=d["id"],
            confidence=0.5 if SCOPE.allows(d) else 0.25,
            error=not SCOPE.allows(d),
        )
        for i, d in enumerate([*OUT_OF_SCOPE[:3], *IN_SCOPE[:3]])
    ]


# What the tracer says of that trace, across every namespace.
TRACE_SUMMARY = tracer_pb2.TraceSummary(
    trace_id="ab" * 16,
    root_name=OUT_OF_SCOPE[0]["id"],
    root_service="outside",
    start_ns=0,
    duration_ns=5_500_000,
    span_count=6,
    error=True,
    min_confidence=0.25,
)


@pytest.fixture
async def tracer() -> AsyncIterator[tuple[TracerStandIn, str]]:
    server = grpc.aio.server()
    stand_in = TracerStandIn()
    tracer_pb2_grpc.add_TracerServiceServicer_to_server(stand_in, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield stand_in, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
async def gateway(
    nats_server: NatsServer, tmp_path: Path, tracer: tuple[TracerStandIn, str]
) -> AsyncIterator[tuple[GatewayService, str]]:
    gw = make_gateway(
        nats_server.url, tmp_path, WIRETIDE_TRACER_GRPC=tracer[1], **write_credentials(tmp_path / "secrets")
    )
    async with running(gw):
        await publish(nats_server.url, [DOCS[i : i + 100] for i in range(0, 300, 100)])
        await wait_stored(gw, 300)
        yield gw, f"http://{gw.gs.gateway_http}"


async def test_no_or_a_wrong_token_is_401_and_whoami_names_the_caller(
    gateway: tuple[GatewayService, str],
) -> None:
    _gw, base = gateway
    async with httpx.AsyncClient(base_url=base) as c:
        for path in ("/api/entries", "/whoami", "/api/stats", "/api/traces", "/api/entries/x/pcap"):
            r = await c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert (await c.get("/api/entries", headers=bearer("not-a-token"))).status_code == 401
        who = (await c.get("/whoami", headers=bearer(VIEWER))).json()
        assert who == {
            "subject": "pat",
            "role": "viewer",
            "namespaces": ["payments"],
            "method": "token",
            "authenticated": True,
        }
        assert (await c.get("/whoami", headers=bearer(ADMIN))).json()["namespaces"] is None
        assert (await c.get("/", headers={})).status_code == 200  # the UI shell loads, then asks for a token


async def test_a_scoped_viewer_gets_only_its_namespaces_with_limits_and_counts_of_the_scope(
    gateway: tuple[GatewayService, str],
) -> None:
    _gw, base = gateway
    async with httpx.AsyncClient(base_url=base, headers=bearer(VIEWER)) as c:
        body = (await c.get("/api/entries", params={"limit": 1000})).json()
        assert [e["id"] for e in body["entries"]] == newest_first(IN_SCOPE)
        body = (await c.get("/api/entries", params={"limit": 7, "q": "true) || (true"})).json()
        assert body.get("error")  # a query that would break out of the scope is refused
        page = (await c.get("/api/entries", params={"limit": 7})).json()
        assert [e["id"] for e in page["entries"]] == newest_first(IN_SCOPE)[:7]  # the limit is the scope's
        stats = (await c.get("/api/stats", params={"by": "protocol"})).json()
        assert stats["total"] == len(IN_SCOPE) == sum(g["count"] for g in stats["groups"])
        har = (await c.get("/api/export.har")).json()
        assert {e["_id"] for e in har["log"]["entries"]} == {
            d["id"] for d in IN_SCOPE if is_http(d["protocol"])
        }
        outsider = OUT_OF_SCOPE[0]["id"]
        assert (await c.get(f"/api/entries/{outsider}")).status_code == 404
        assert (await c.get(f"/api/entries/{outsider}/pcap")).status_code == 404
        assert (await c.get(f"/api/entries/{IN_SCOPE[0]['id']}")).status_code == 200
    async with httpx.AsyncClient(base_url=base, headers=bearer(ADMIN)) as c:
        assert len((await c.get("/api/entries", params={"limit": 1000})).json()["entries"]) == 300
        assert (await c.get(f"/api/entries/{outsider}")).status_code == 200


async def test_traces_and_the_map_are_narrowed_to_the_scope_and_sent_with_the_service_token(
    gateway: tuple[GatewayService, str], tracer: tuple[TracerStandIn, str]
) -> None:
    _gw, base = gateway
    stand_in, _ = tracer
    async with httpx.AsyncClient(base_url=base, headers=bearer(VIEWER)) as c:
        trace = (await c.get("/api/traces/" + "ab" * 16)).json()
        assert {s["entry_id"] for s in trace["spans"]} == {d["id"] for d in IN_SCOPE[:3]}
        assert (await c.get("/api/servicemap", params={"q": "http"})).status_code == 200
        assert (await c.get("/api/traces", params={"q": ""})).status_code == 200
    async with httpx.AsyncClient(base_url=base, headers=bearer(ADMIN)) as c:
        assert len((await c.get("/api/traces/" + "ab" * 16)).json()["spans"]) == 6
        await c.get("/api/servicemap", params={"q": "http"})
    sent = {name: (req, md) for name, req, md in stand_in.requests[:3]}
    assert "payments" in sent["GetServiceMap"][0].query and "http" in sent["GetServiceMap"][0].query
    assert "payments" in sent["FindTraces"][0].query
    assert stand_in.requests[-1][1].query == "http"  # an admin's query is sent as written
    assert all(md.get("authorization") == f"Bearer {SERVICE}" for _n, _r, md in stand_in.requests)


async def test_a_scoped_viewer_s_trace_list_is_summarised_from_the_spans_it_may_see(
    gateway: tuple[GatewayService, str],
) -> None:
    _gw, base = gateway
    async with httpx.AsyncClient(base_url=base, headers=bearer(VIEWER)) as c:
        (trace,) = (await c.get("/api/traces", params={"q": ""})).json()["traces"]
    assert trace == {
        "trace_id": "ab" * 16,
        "root_name": IN_SCOPE[0]["id"],  # the earliest span it may see, not the trace's own root
        "root_service": "inside",
        "start_ns": 3_000_000,
        "duration_us": 2_500,
        "span_count": 3,
        "error": False,  # the failing spans are all outside its namespaces
        "min_confidence": 0.5,
    }
    async with httpx.AsyncClient(base_url=base, headers=bearer(ADMIN)) as c:
        (whole,) = (await c.get("/api/traces", params={"q": ""})).json()["traces"]
    assert (whole["root_name"], whole["root_service"], whole["span_count"]) == (
        OUT_OF_SCOPE[0]["id"],
        "outside",
        6,
    )


async def test_the_live_stream_sends_a_scoped_viewer_only_its_namespaces(
    gateway: tuple[GatewayService, str], nats_server: NatsServer
) -> None:
    _gw, base = gateway
    fresh = entries(200, seed=71)
    want = [d["id"] for d in fresh if SCOPE.allows(d)]
    url = base.replace("http://", "ws://") + f"/api/stream?token={VIEWER}"
    async with websockets.connect(url) as ws:
        assert orjson.loads(await ws.recv())["type"] == "hello"
        await publish(nats_server.url, [fresh])
        got: list[str] = []
        while len(got) < len(want):
            got.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10))["entry"]["id"])
    assert got == want  # in order: an out-of-scope entry between two in-scope ones would show here
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(base.replace("http://", "ws://") + "/api/stream"):
            pass
    assert info.value.response.status_code == 401


async def test_grpc_needs_a_token_and_answers_in_scope(
    gateway: tuple[GatewayService, str], nats_server: NatsServer
) -> None:
    gw, _base = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as ch:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Query(gateway_pb2.QueryRequest(limit=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Query(gateway_pb2.QueryRequest(limit=10), metadata=(("authorization", "Bearer nope"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        md = (("authorization", f"Bearer {VIEWER}"),)
        resp = await stub.Query(gateway_pb2.QueryRequest(limit=1000), metadata=md)
        assert [e.id for e in resp.entries] == newest_first(IN_SCOPE)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Get(gateway_pb2.GetRequest(id=OUT_OF_SCOPE[0]["id"]), metadata=md)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stats = orjson.loads((await stub.Stats(gateway_pb2.StatsRequest(), metadata=md)).json)
        assert stats["total"] == len(IN_SCOPE)
        fresh = entries(120, seed=72)
        want = [d["id"] for d in fresh if SCOPE.allows(d)]
        call = stub.Stream(gateway_pb2.StreamRequest(query=""), metadata=md)
        await asyncio.sleep(0)  # the subscription is made when the call starts; wait for it below
        await _wait_subscribed(gw)
        await publish(nats_server.url, [fresh])
        got: list[str] = []
        async for msg in call:
            got.append(from_proto(msg.entry)["id"])
            if len(got) == len(want):
                break
        call.cancel()
    assert got == want


async def _wait_subscribed(gw: GatewayService) -> None:
    from tests.helpers.wait import wait_for_async

    async def count() -> int:
        return len(gw.live.subscribers)

    await wait_for_async("the gRPC stream subscribed", count, lambda n: n >= 1)


async def test_a_foreign_page_cannot_open_the_stream_or_rebind_the_host(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    gw = make_gateway(nats_server.url, tmp_path)  # the local default: no credentials, loopback
    async with running(gw):
        base = f"http://{gw.gs.gateway_http}"
        ws = base.replace("http://", "ws://") + "/api/stream"
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(ws, origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        async with websockets.connect(ws, origin=base) as conn:  # type: ignore[arg-type]
            assert orjson.loads(await conn.recv())["type"] == "hello"
        async with httpx.AsyncClient(base_url=base) as c:
            rebound = await c.get(
                "/api/entries", headers={"host": f"evil.example:{gw.gs.gateway_http.rsplit(':')[1]}"}
            )
            assert rebound.status_code == 421
            post = await c.post(
                "/api/kfl/validate", json={"query": "http"}, headers={"origin": "http://evil.example"}
            )
            assert post.status_code == 403
            assert (
                await c.post("/api/kfl/validate", json={"query": "http"}, headers={"origin": base})
            ).status_code == 200
            r = await c.get("/api/entries", headers={"origin": "http://evil.example"})
            assert "access-control-allow-origin" not in r.headers  # CORS closed by default
            who = (await c.get("/whoami")).json()
            assert (
                who["authenticated"] is False
                and who["role"] == "admin"
                and "no authentication" in who["warning"]
            )
            index = await c.get("/")
        csp = index.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        assert index.headers["referrer-policy"] == "no-referrer"
        html = index.text.lower()
        assert html.count("<script") == html.count('<script type="module" src=') == 1  # no inline script
        assert " style=" not in html and "onclick" not in html


async def test_the_capture_api_answers_only_admins(nats_server: NatsServer, tmp_path: Path) -> None:
    from wiretide.capture.service import CaptureService, CaptureSettings

    env = {
        "WIRETIDE_NATS_URL": nats_server.url,
        "WIRETIDE_DATA_DIR": str(tmp_path / "data"),
        "WIRETIDE_CAPTURE_GRPC": f"127.0.0.1:{free_port()}",
        "WIRETIDE_DISSECTOR_GRPC": f"127.0.0.1:{free_port()}",
        "WIRETIDE_CAPTURE_INTERFACES": "lo",
        "WIRETIDE_CAPTURE_RECORD": "false",
        **write_credentials(tmp_path / "secrets"),
    }
    svc = CaptureService(load_settings(CaptureSettings, "capture", env))
    async with running(svc), grpc.aio.insecure_channel(f"127.0.0.1:{svc.grpc_port}") as ch:
        stub = capture_pb2_grpc.CaptureServiceStub(ch)
        every_packet = capture_pb2.CaptureServiceSnapshotRequest(inline=True)  # no flow: all of them
        for metadata, code in [
            ((), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", f"Bearer {VIEWER}"),), grpc.StatusCode.PERMISSION_DENIED),
            ((("authorization", f"Bearer {EDITOR}"),), grpc.StatusCode.PERMISSION_DENIED),
            ((("authorization", f"Bearer {SERVICE}"),), grpc.StatusCode.FAILED_PRECONDITION),  # past auth
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Snapshot(every_packet, metadata=metadata, timeout=10)
            assert info.value.code() == code, metadata
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetStatus(capture_pb2.GetStatusRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        status = await stub.GetStatus(
            capture_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {ADMIN}"),)
        )
        assert status.node

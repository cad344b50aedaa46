"""The hooks and helpers that reach other services, against the real services and a real nats-server:
`onTrace` from the tracer (traces of a replayed, years-old capture included), `kfl.query` through the
gateway, `onPodEvent` from the resolver's deltas on wt.identity.updates (a Kubernetes API emulator
behind it), and `onPacketCaptured` and `pcap.snapshot` from a capture service on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers import kubeapi as ka
from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.helpers.wait import wait_for_async
from tests.integration.test_agents_service import agents, logs, put
from tests.integration.test_gateway_api import make_gateway, wait_stored
from tests.integration.test_resolver_service import settings as resolver_settings
from tests.integration.test_store_writer import publish
from tests.unit.tracer.test_assemble import TRACE, three_hops
from wiretide.proto.v1 import tracer_pb2, tracer_pb2_grpc
from wiretide.resolver.service import ResolverService
from wiretide.tracer.service import TracerService, TracerSettings

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for AF_PACKET on loopback")


def starting(prefix: str, lines: list[str]) -> list[str]:
    return [x for x in lines if x.startswith(prefix)]


def has(prefix: str) -> Any:
    return lambda lines: bool(starting(prefix, lines))


async def test_on_trace_sees_each_completed_trace_once_even_from_an_old_capture(
    nats_server: NatsServer,
) -> None:
    settings = TracerSettings(
        nats_url=nats_server.url,
        tracer_grpc="127.0.0.1:0",
        tracer_durable="tracer-agents",
        tracer_window_s=0.2,
    )
    source = "function onTrace(t) { console.log('trace', t.trace_id, t.span_count, t.root_service); }\n"
    # A second trace a minute later, without headers: it is linked by timing into a trace of its own.
    later = [{**e, "id": e["id"] + "-later", "request": {"headers": {}}} for e in three_hops(headers=False)]
    for e in later:
        e["timestamp"] += 60 * 10**9
    async with running(TracerService(settings)) as tracer:
        address = f"127.0.0.1:{tracer.grpc_port}"
        async with agents(
            nats_server.url, tracer_grpc=address, agents_stats_interval_s=0.1, agents_trace_settle_s=0.5
        ) as (svc, stub):
            assert (await put(stub, "traces", source)).stored
            await wait_for_async("what completed before is learnt", lambda: svc._traces_primed)
            await publish(nats_server.url, [three_hops(headers=True)])  # November 2023: a replayed capture
            await wait_for_async("onTrace called", lambda: logs(stub, "traces"), has("trace "))
            await publish(nats_server.url, [later])
            got = await wait_for_async(
                "a later trace", lambda: logs(stub, "traces"), lambda x: len(starting("trace ", x)) >= 2
            )
            async with grpc.aio.insecure_channel(address) as ch:  # the trace as the tracer completed it
                found = await tracer_pb2_grpc.TracerServiceStub(ch).FindTraces(
                    tracer_pb2.FindTracesRequest(limit=10)
                )
    (done,) = [t for t in found.traces if t.trace_id == TRACE]
    first, second = starting("trace ", got)  # the polls in between did not offer the first one again
    assert first == f"trace {TRACE} {done.span_count} {done.root_service}" and done.span_count >= 5
    assert second.startswith("trace ") and TRACE not in second


async def test_kfl_query_asks_the_gateway_and_hands_the_entries_to_the_agent(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    docs = entries(120, seed=5)
    http5xx = [d for d in docs if d["protocol"] == "http" and (d.get("status") or 0) >= 500]
    gw = make_gateway(nats_server.url, tmp_path)
    source = """
jobs.schedule("ask", "* * * * * *", function () {
  kfl.query("http && status_code >= 500", 1000).then(
    function (found) {
      console.log("found", found.length, found.every(function (e) { return e.status >= 500; }));
    },
    function (err) { console.error("query failed", String(err)); });
});
"""
    async with running(gw):
        await publish(nats_server.url, [docs])
        await wait_stored(gw, len(docs))
        async with agents(nats_server.url, gateway_http=gw.gs.gateway_http) as (_, stub):
            assert (await put(stub, "asker", source)).stored
            got = await wait_for_async("a query answered", lambda: logs(stub, "asker"), has("found"))
    assert starting("found", got)[0] == f"found {len(http5xx)} true"


async def test_on_pod_event_follows_the_resolver_s_deltas(nats_server: NatsServer, tmp_path: Path) -> None:
    kube = ka.KubeApi().start()
    kube.put(ka.namespace("shop"))
    source = (
        "function onPodEvent(e) {\n"
        "  console.log(e.type, e.pod.namespace + '/' + e.pod.name, e.pod.ip, e.pod.labels.app);\n}\n"
    )
    try:
        kc = kube.write_kubeconfig(tmp_path / "kubeconfig")
        resolver = ResolverService(
            resolver_settings(nats_server.url, tmp_path, WIRETIDE_RESOLVER_KUBECONFIG=str(kc))
        )
        async with running(resolver), agents(nats_server.url) as (_, stub):
            await wait_for_async("every kind listed", lambda: not resolver.store.stale(), bool)
            assert (await put(stub, "pods", source)).stored
            kube.put(ka.pod("api-0", "shop", "10.50.1.4", labels={"app": "api"}))
            await wait_for_async("a pod seen", lambda: logs(stub, "pods"), has("upsert shop/api-0"))
            kube.delete("Pod", "shop", "api-0")
            got = await wait_for_async("a pod gone", lambda: logs(stub, "pods"), has("removal"))
    finally:
        kube.stop()
    assert starting("upsert", got) == ["upsert shop/api-0 10.50.1.4 api"]
    assert starting("removal", got) == ["removal shop/api-0 10.50.1.4 api"]


@root_only
async def test_on_packet_captured_counts_loopback_packets_and_pcap_snapshot_writes_them(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    web_port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"hello " * 1000)
    web = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop has work
        [sys.executable, "-m", "http.server", str(web_port), "--bind", "127.0.0.1", "--directory", str(www)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = service_env(
        nats_server.url,
        tmp_path / "capture-data",
        WIRETIDE_CAPTURE_INTERFACES="lo",
        WIRETIDE_CAPTURE_BPF=f"tcp port {web_port}",
        WIRETIDE_CAPTURE_FLUSH_MS="20",
    )
    capture = ServiceProcess("capture", env, tmp_path / "capture.log")
    capture.start()
    source = """
var packets = 0, asked = false;
function onPacketCaptured(stats) {
  if (!stats.packets) return;
  packets += stats.packets;
  console.log("packets", stats.packets, stats.interfaces.map(function (i) { return i.name; }).join(","));
  if (asked) return;
  asked = true;
  pcap.snapshot("tcp port " + env.PORT, "from-agent", 600).then(
    function (r) { console.log("snapshot", r.packets, r.path); },
    function (err) { console.error("snapshot failed", String(err)); });
}
"""
    curl = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--retry",
        "5",
        "--retry-connrefused",
        f"http://127.0.0.1:{web_port}/",
    ]
    try:
        await asyncio.to_thread(capture.wait_health, "SERVING", 30)
        data = tmp_path / "agents-data"
        async with agents(
            nats_server.url, capture_grpc=capture.grpc, data_dir=data, agents_stats_interval_s=0.2
        ) as (_, stub):
            assert (await put(stub, "packets", source, PORT=str(web_port))).stored

            async def traffic_then_logs() -> list[str]:
                await asyncio.to_thread(subprocess.run, curl, check=True)
                return await logs(stub, "packets")

            await wait_for_async("packets counted", traffic_then_logs, has("packets "), interval=0.5)
            got = await wait_for_async("a snapshot", lambda: logs(stub, "packets"), has("snapshot"))
    finally:
        capture.kill()
        web.kill()
        web.wait()
    counted = starting("packets ", got)
    assert counted and all(int(x.split(" ")[1]) > 0 and x.endswith(" lo") for x in counted)
    _, n, path = starting("snapshot", got)[0].split(" ")
    assert int(n) > 0 and Path(path) == data / "snapshots" / "from-agent.pcapng"
    head = await asyncio.to_thread(Path(path).read_bytes)
    assert head[:4] == b"\x0a\x0d\x0d\x0a"  # a pcapng section header

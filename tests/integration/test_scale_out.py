"""Scale-out on one machine: a 3-node NATS JetStream cluster with the entries stream replicated (R3),
two simulated nodes (each a capture process on the host side of its own network namespace's veth),
two dissectors sharing the flows, two gateways on one MongoDB-wire store. Traffic from both nodes is
stored once and both gateways answer with all of it; killing a NATS node, then a gateway, under load
loses nothing and stores nothing twice."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.mongo import WireMongo
from tests.helpers.nats import free_port, nats_binary
from tests.helpers.netns import http_behind_veth, is_root
from tests.helpers.services import ServiceProcess, service_env
from tests.helpers.wait import wait_for

CALLS = 40  # per node and phase


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, routes: list[str]) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store),
                "-n", self.name, "--cluster_name", "wiretide",
                "--cluster", f"nats://127.0.0.1:{self.cluster_port}", "--routes", ",".join(routes),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NatsNode]]:
    nodes = [NatsNode(f"n{i}", free_port(), free_port(), tmp_path / f"nats{i}") for i in range(3)]
    routes = [f"nats://127.0.0.1:{n.cluster_port}" for n in nodes]
    try:
        for n in nodes:
            n.start(routes)
        yield nodes
    finally:
        for n in nodes:
            n.kill()


def _stream_replicas(urls: str) -> int:
    code = (
        "import asyncio, nats\n"
        "async def main():\n"
        f"    nc = await nats.connect(servers={urls.split(',')!r}, connect_timeout=2)\n"
        "    try:\n"
        "        info = await nc.jetstream(timeout=5).stream_info('WT_ENTRIES')\n"
        "        print(info.config.num_replicas, len(info.cluster.replicas or []) + 1)\n"
        "    finally:\n"
        "        await nc.close()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    configured, placed = map(int, out.stdout.split())
    return min(configured, placed)


def _jetstream_ready(urls: str) -> bool:
    code = (
        "import asyncio, nats\n"
        "async def main():\n"
        f"    nc = await nats.connect(servers={urls.split(',')!r}, connect_timeout=2)\n"
        "    try:\n"
        "        await nc.jetstream(timeout=2).account_info()\n"
        "    finally:\n"
        "        await nc.close()\n"
        "asyncio.run(main())\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode == 0


@dataclass
class Node:
    name: str
    host_if: str
    server: str  # the HTTP server's address behind the veth


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    """Two namespaces, each an HTTP server behind a veth whose host side a capture will watch."""
    if not is_root():
        pytest.skip("needs root (network namespaces, AF_PACKET)")
    with contextlib.ExitStack() as servers:
        out: list[Node] = []
        for i in range(2):
            net = f"10.{95 + i}.{os.getpid() % 250}"
            served = servers.enter_context(http_behind_veth(tmp_path, prefix="so", net=net))
            out.append(Node(f"node-{'ab'[i]}", served.host_if, served.ip))
        yield out


def _get(address: str) -> int:
    try:
        return httpx.get(f"http://{address}/ok", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _entries(base: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{base}/api/entries", params={"q": "http", "limit": 5000}, timeout=20).json()
    entries: list[dict[str, Any]] = body["entries"]
    return entries


def _drive(nodes: list[Node], calls: int) -> None:
    for _ in range(calls):
        for node in nodes:
            assert _get(node.server) == 200


def test_two_nodes_two_dissectors_two_gateways_on_a_nats_cluster_store_everything_once(
    cluster: list[NatsNode], nodes: list[Node], tmp_path: Path
) -> None:
    urls = ",".join(n.url for n in cluster)
    wait_for("JetStream has a meta leader", lambda: _jetstream_ready(urls), timeout=60)
    mongo = WireMongo(tmp_path / "mongo")
    mongo.start()
    procs: list[ServiceProcess] = []

    def start(name: str, tag: str, **extra: str) -> ServiceProcess:
        env = service_env(urls, tmp_path / f"data-{tag}", WIRETIDE_NATS_REPLICAS="3", **extra)
        proc = ServiceProcess(name, env, tmp_path / f"{tag}.log")
        proc.start()
        procs.append(proc)
        return proc

    try:
        resolver = start("resolver", "resolver", WIRETIDE_RESOLVER_SOURCE="none")
        dissectors = [
            start(
                "dissector",
                f"dissector-{i}",
                WIRETIDE_DISSECTOR_GRPC=f"127.0.0.1:{free_port()}",
                WIRETIDE_RESOLVER_GRPC=resolver.grpc,
            )
            for i in range(2)
        ]
        ring = ",".join(d.grpc for d in dissectors)
        captures = [
            start(
                "capture",
                f"capture-{node.name}",
                WIRETIDE_NODE_NAME=node.name,
                WIRETIDE_CAPTURE_INTERFACES=node.host_if,
                WIRETIDE_DISSECTOR_GRPC=ring,
                WIRETIDE_RESOLVER_GRPC=resolver.grpc,
                WIRETIDE_CAPTURE_FLUSH_MS="20",
            )
            for node in nodes
        ]
        gateways = []
        for i in range(2):
            port = free_port()
            gateways.append(
                (
                    start(
                        "gateway",
                        f"gateway-{i}",
                        WIRETIDE_GATEWAY_MONGO_URL=mongo.url,
                        WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}",
                        WIRETIDE_DISSECTOR_GRPC=ring,
                        WIRETIDE_RESOLVER_GRPC=resolver.grpc,
                    ),
                    f"http://127.0.0.1:{port}",
                )
            )
        for p in [resolver, *dissectors, *captures, *(g for g, _ in gateways)]:
            p.wait_health("SERVING", timeout=90)
        for c in captures:  # the interface is open once the capture logs it
            wait_for(f"{c.name} captures", lambda c=c: "capturing" in c.log(), timeout=30)

        assert _stream_replicas(urls) == 3  # the entries stream has a copy on every NATS node
        expected = 0
        bases = [b for _g, b in gateways]
        by_base = {b: g for g, b in gateways}

        def count(base: str) -> int:
            try:
                return len(_entries(base))
            except httpx.ConnectError:
                gw = by_base[base]
                state = "running" if gw.proc is not None and gw.proc.poll() is None else "exited"
                raise AssertionError(
                    f"{base} refused a connection; the gateway is {state}:\n{gw.log()}"
                ) from None

        def settled(want: int) -> None:
            for base in bases:
                got = wait_for(
                    f"{want} entries through {base}",
                    lambda base=base: count(base),
                    lambda n: n >= want,
                    timeout=120,
                )
                assert got == want, f"{base}: {got} entries for {want} calls (stored twice?)"
            docs = _entries(bases[0])
            assert len({d["id"] for d in docs}) == want
            assert {d.get("node") for d in docs} == {n.name for n in nodes}

        _drive(nodes, CALLS)
        expected += 2 * CALLS
        settled(expected)

        # a NATS node dies under load: the stream has two more copies; clients move to the others
        cluster[0].kill()
        _drive(nodes, CALLS)
        expected += 2 * CALLS
        settled(expected)

        # a gateway dies under load: the other one takes every batch from the shared durable consumer
        gateways[0][0].kill()
        bases = [gateways[1][1]]
        _drive(nodes, CALLS)
        expected += 2 * CALLS
        settled(expected)
    finally:
        for p in procs:
            p.kill()
        mongo.stop()

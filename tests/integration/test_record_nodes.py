"""A recording gets packets from every capture node: two capture services (nodes `node-a` and
`node-b`, each on its own host-side veth of a namespace where an HTTP server listens), one dissector,
one gateway, all real processes; curl calls the server through both links. A job keeps one pcapng per
node in its bundle, each holding exactly that node's calls (read back with tshark); a job scoped to
one node keeps only that node's entries and packets — both jobs at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.nats import NatsServer, free_port
from tests.helpers.netns import ip, is_root, unique
from tests.helpers.services import ServiceProcess
from tests.helpers.wait import wait_for
from tests.integration.test_record_live import curl, tshark_requests
from wiretide.gateway.recording.bundle import open_bundle

CALLS = 3


@pytest.fixture
def two_links(tmp_path: Path) -> Iterator[dict[str, tuple[str, str]]]:
    """node → (host-side interface, server address): one namespace, two veths, one HTTP server."""
    if not is_root():
        pytest.skip("needs root (network namespaces, AF_PACKET)")
    tag = unique("wn")
    ns = f"{tag}ns"
    base = os.getpid() % 120
    links = {"node-a": (f"{tag}a", f"10.95.{base}"), "node-b": (f"{tag}b", f"10.95.{base + 120}")}
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ok").write_text("ok")
    server: subprocess.Popen[bytes] | None = None
    try:
        ip("netns", "add", ns)
        for i, (host_if, net) in enumerate(links.values()):
            ip("link", "add", host_if, "type", "veth", "peer", "name", f"eth{i}", "netns", ns)
            subprocess.run(
                ["sysctl", "-q", "-w", f"net.ipv6.conf.{host_if}.disable_ipv6=1"], capture_output=True
            )
            ip("addr", "add", f"{net}.1/24", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", f"eth{i}")
            ip("-n", ns, "link", "set", f"eth{i}", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "http.server",
                "80",
                "-d",
                str(tmp_path / "www"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _, net in links.values():
            wait_for("the server answers", lambda: _status(f"{net}.2"), lambda code: code == 200)  # noqa: B023
        yield {node: (host_if, f"{net}.2") for node, (host_if, net) in links.items()}
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for host_if, _ in links.values():
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _status(address: str) -> int:
    try:
        return httpx.get(f"http://{address}/ok", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def job(base: str, name: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/api/recordings/{name}", timeout=10)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def test_a_recording_keeps_one_pcapng_per_capture_node_and_a_node_scope_keeps_one_node(
    two_links: dict[str, tuple[str, str]], nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    absent_resolver = f"127.0.0.1:{free_port()}"
    dissector: ServiceProcess = spawn(
        "dissector",
        nats_server.url,
        WIRETIDE_RESOLVER_GRPC=absent_resolver,
        WIRETIDE_DATA_DIR=str(tmp_path / "d"),
    )
    dissector.wait_health("SERVING")
    for node, (host_if, _) in two_links.items():
        spawn(
            "capture",
            nats_server.url,
            WIRETIDE_NODE_NAME=node,
            WIRETIDE_DATA_DIR=str(tmp_path / node),
            WIRETIDE_CAPTURE_INTERFACES=host_if,
            WIRETIDE_CAPTURE_FLUSH_MS="20",
            WIRETIDE_DISSECTOR_GRPC=dissector.grpc,
        ).wait_health("SERVING")
    http = f"127.0.0.1:{free_port()}"
    spawn(
        "gateway",
        nats_server.url,
        WIRETIDE_DATA_DIR=str(tmp_path / "gw"),
        WIRETIDE_GATEWAY_HTTP=http,
        WIRETIDE_RECORDING_CUT_S="1",
        WIRETIDE_RECORDING_LAG_S="1",
        WIRETIDE_RESOLVER_GRPC=absent_resolver,
    ).wait_health("SERVING")
    base = f"http://{http}"
    tag = unique("n")
    for name, nodes in ((f"all-{tag}", []), (f"b-{tag}", ["node-b"])):
        body = {"name": name, "filter": f'http && url.contains("={tag}-")', "duration_s": 600, "nodes": nodes}
        made = httpx.post(f"{base}/api/recordings", json=body, timeout=30)
        assert made.status_code == 201, made.text
        wait_for("the run starts", lambda: job(base, name)["runs"])  # noqa: B023 - called at once
    calls = {node: [f"/ok?call={tag}-{node}-{i}" for i in range(CALLS)] for node in two_links}
    for node, (_, address) in two_links.items():
        for target in calls[node]:
            curl(address, target)
    for name, n in ((f"all-{tag}", 2 * CALLS), (f"b-{tag}", CALLS)):
        run = wait_for(
            f"{name} collected its calls",
            lambda: job(base, name)["runs"][0],  # noqa: B023 - called at once
            lambda r: bool(r["entries"] >= n and sum(r["packets"].values()) > 0),  # noqa: B023
        )
        assert run["entries"] == n
        assert httpx.post(f"{base}/api/recordings/{name}/stop", timeout=30).status_code == 200

    def bundle_of(name: str) -> dict[str, list[tuple[str, str]]]:
        run = wait_for("a bundle", lambda: job(base, name)["runs"][0], lambda r: r["state"] == "done")
        got = httpx.get(f"{base}/api/recordings/{name}/runs/{run['id']}/bundle", timeout=60)
        assert got.status_code == 200, got.text
        (tmp_path / f"{name}.tar.gz").write_bytes(got.content)
        opened = open_bundle(tmp_path / f"{name}.tar.gz", tmp_path / name)
        assert {e["node"] for e in opened.entries()} == set(run["packets"])
        return {p.stem: tshark_requests(p) for p in opened.pcapng_paths()}

    every = bundle_of(f"all-{tag}")
    assert every == {
        node: sorted((address, t) for t in calls[node]) for node, (_, address) in two_links.items()
    }
    one = bundle_of(f"b-{tag}")
    assert one == {"node-b": sorted((two_links["node-b"][1], t) for t in calls["node-b"])}

"""Targeting restricts capture live: `wiretide up` captures the host side of a veth behind which two
"pods" (two addresses, named by the Kubernetes API emulator) serve HTTP. With `WIRETIDE_TARGET_POD_REGEX`
only the matching pod's calls are stored — the others never leave the kernel — and `PUT /api/targets`
changes that for the running capture, which `GET /api/targets` reports per node."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.kubeapi import KubeApi, namespace, pod
from tests.helpers.netns import http_behind_veth, is_root
from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for

NODE = "node-1"
CALLS = 5


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """An HTTP server in a new namespace on two addresses behind a veth: (host interface, ip 1, ip 2)."""
    if not is_root():
        pytest.skip("needs root (network namespaces, AF_PACKET)")
    net = f"10.93.{os.getpid() % 250}"
    with http_behind_veth(tmp_path, prefix="wt", net=net, addresses=2) as served:
        yield served.host_if, served.ips[0], served.ips[1]


def _get(address: str) -> int:
    try:
        return httpx.get(f"http://{address}/ok", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _headers(stack: Stack) -> dict[str, str]:
    token = stack.data_dir / "service-token"
    return {"authorization": f"Bearer {token.read_text().strip()}"} if token.is_file() else {}


def _targets(stack: Stack) -> dict[str, Any]:
    answer = httpx.get(f"{stack.base}/api/targets", headers=_headers(stack), timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _calls_to(stack: Stack, address: str) -> int:
    return len(_entries_to(stack, address))


def _entries_to(stack: Stack, address: str) -> list[dict[str, Any]]:
    q = f'http && dst.ip == "{address}"'
    body = httpx.get(
        f"{stack.base}/api/entries", params={"q": q, "limit": 1000}, headers=_headers(stack), timeout=10
    ).json()
    entries: list[dict[str, Any]] = body["entries"]
    return entries


def _tshark_hosts(tmp_path: Path, data: bytes) -> set[str]:
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "ip.src", "-e", "ip.dst"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {a for line in out.stdout.split() for a in line.split(",") if a}


def _node(stack: Stack) -> dict[str, Any] | None:
    """This node's targeting state, or None while the answer does not list it (not published yet, or
    its state not read in time on a loaded machine: the answer leaves out what it could not read)."""
    return next((n for n in _targets(stack)["nodes"] if n["node"] == NODE), None)


def _node_pods(stack: Stack) -> list[str]:
    nodes = _targets(stack)["nodes"]
    return sorted(p["name"] for n in nodes if n["node"] == NODE for p in n["pods"])


def test_targeting_captures_only_the_targeted_pods_and_changes_live(
    pods: tuple[str, str, str], tmp_path: Path
) -> None:
    host_if, checkout_ip, web_ip = pods
    kube = KubeApi().start()
    kube.put(namespace("shop"))
    kube.put(pod("checkout-1", "shop", checkout_ip, node_name=NODE))
    kube.put(pod("web-1", "shop", web_ip, node_name=NODE))
    stack = Stack(
        tmp_path / "wt",
        None,
        WIRETIDE_CAPTURE_INTERFACES=host_if,
        WIRETIDE_NODE_NAME=NODE,
        WIRETIDE_RESOLVER_KUBECONFIG=str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
        WIRETIDE_TARGET_POD_REGEX="^checkout-",
    )
    try:
        stack.wait_up()
        wait_for(
            "the node targets checkout-1 alone", lambda: _node_pods(stack), lambda p: p == ["checkout-1"]
        )
        node = next(n for n in _targets(stack)["nodes"] if n["node"] == NODE)
        assert f"host {checkout_ip}" in node["filter"] and web_ip not in node["filter"]

        for _ in range(CALLS):  # the untargeted pod first: had it been captured, it would be stored first
            assert _get(web_ip) == 200
        for _ in range(CALLS):
            assert _get(checkout_ip) == 200
        wait_for("the targeted calls are stored", lambda: _calls_to(stack, checkout_ip), lambda n: n >= CALLS)
        assert _calls_to(stack, web_ip) == 0

        # the node's recorder, reached through the per-node registry: an entry's flow, and a window
        first = _entries_to(stack, checkout_ip)[0]
        flow = httpx.get(f"{stack.base}/api/entries/{first['id']}/pcap", headers=_headers(stack), timeout=30)
        assert flow.status_code == 200, flow.text
        assert _tshark_hosts(tmp_path, flow.content) == {checkout_ip, checkout_ip.rsplit(".", 1)[0] + ".1"}
        window = httpx.get(
            f"{stack.base}/api/pcap",
            params={
                "start_ns": int(first["timestamp"]) - 10**9,
                "end_ns": int(first["timestamp"]) + 30 * 10**9,
            },
            headers=_headers(stack),
            timeout=30,
        )
        assert window.status_code == 200, window.text
        assert window.headers["x-wiretide-nodes"] == NODE
        assert checkout_ip in _tshark_hosts(tmp_path, window.content)
        assert web_ip not in _tshark_hosts(tmp_path, window.content)  # never left the kernel
        bad = httpx.get(
            f"{stack.base}/api/pcap", params={"start_ns": 5, "end_ns": 1}, headers=_headers(stack)
        )
        assert bad.status_code == 400

        # live change: everything
        put = httpx.put(f"{stack.base}/api/targets", json={}, headers=_headers(stack), timeout=10)
        assert put.status_code == 200 and put.json()["everything"] is True, put.text
        wait_for(
            "the node captures everything",
            lambda: _node(stack),
            lambda n: n is not None and n["filter"] == "" and n["revision"] == put.json()["revision"],
        )
        for _ in range(CALLS):
            assert _get(web_ip) == 200
        wait_for(
            "the other pod's calls are stored now", lambda: _calls_to(stack, web_ip), lambda n: n >= CALLS
        )

        # live change: a namespace nobody runs in — nothing is captured, not everything
        put = httpx.put(
            f"{stack.base}/api/targets", json={"namespaces": ["billing"]}, headers=_headers(stack), timeout=10
        )
        assert put.status_code == 200, put.text
        nothing = wait_for(
            "the node captures nothing",
            lambda: _node(stack),
            lambda n: n is not None and n["revision"] == put.json()["revision"] and n["pods"] == [],
        )
        assert nothing is not None and "nothing is captured" in nothing["note"]

        # bad specs are refused, the running one is kept
        for bad in ({"pod_regex": "("}, {"namespaces": "shop"}, {"namespaces": ["Not_A_Name"]}, {"other": 1}):
            answer = httpx.put(f"{stack.base}/api/targets", json=bad, headers=_headers(stack), timeout=10)
            assert answer.status_code == 400, (bad, answer.text)
        assert _targets(stack)["spec"]["namespaces"] == ["billing"]
    finally:
        stack.stop()
        kube.stop()

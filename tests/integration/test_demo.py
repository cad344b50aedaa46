"""The demo mini-cluster end to end: real workloads in namespaces on a bridge, the emulator describing
them, the resolver following it, and packets captured on the bridge named on both ends."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from wiretide.cli.demo.cluster import PODS, DemoCluster, PodPlan
from wiretide.common.bus import connect_with_retry
from wiretide.common.identity import IdentitySync
from wiretide.common.settings import load_settings
from wiretide.resolver.service import ResolverService, ResolverSettings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
CAPTURE_S = 4.0
POD_NET = "10.244."  # the demo pods' addresses


def capture_flows(bridge: str, seconds: float) -> set[tuple[str, int, str, int]]:
    """(src ip, src port, dst ip, dst port) of TCP segments seen on the bridge (promiscuous)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.bind((bridge, 0))
        mreq = struct.pack("iHH8s", socket.if_nametoindex(bridge), PACKET_MR_PROMISC, 0, b"")
        s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        s.settimeout(0.2)
        flows: set[tuple[str, int, str, int]] = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frame = s.recv(2048)
            except TimeoutError:
                continue
            if frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_TCP:
                continue
            ihl = (frame[14] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
            src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
            # frames queued between socket() and bind() may come from any interface: keep the pods'
            if src.startswith(POD_NET) and dst.startswith(POD_NET):
                flows.add((src, sport, dst, dport))
        return flows
    finally:
        s.close()


def complete(sync: IdentitySync, pod: PodPlan) -> bool:
    """The copy names `pod` with its Deployment/StatefulSet and, if it serves, its Service."""
    fields, _ = sync.table.lookup(pod.ip, 0, time.time_ns())
    if fields is None or fields["workload"] is None or fields["workload"]["kind"] == "ReplicaSet":
        return False
    return not pod.port or fields["service"] is not None


def ip_listing() -> str:
    """Every namespace and link name on the host."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return namespaces + subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout


async def test_packets_between_demo_pods_are_named_on_both_ends(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    cluster = DemoCluster(tmp_path / "demo.json", tag=f"wtt{os.getpid() % 100000}")
    cluster.up()
    try:
        assert cluster.kube is not None
        kubeconfig = cluster.kube.write_kubeconfig(tmp_path / "kubeconfig")
        settings = load_settings(
            ResolverSettings,
            "resolver",
            {
                "WIRETIDE_NATS_URL": nats_server.url,
                "WIRETIDE_DATA_DIR": str(tmp_path),
                "WIRETIDE_RESOLVER_GRPC": "127.0.0.1:0",
                "WIRETIDE_RESOLVER_KUBECONFIG": str(kubeconfig),
            },
        )
        resolver = ResolverService(settings)
        async with running(resolver):
            bus = await connect_with_retry(nats_server.url, "test-dissector")
            sync = IdentitySync(bus, f"127.0.0.1:{resolver.grpc_port}")
            await sync.start()
            try:
                flows = await asyncio.to_thread(capture_flows, cluster.bridge, CAPTURE_S)
                deadline = time.monotonic() + 20
                while not all(complete(sync, pod) for pod in PODS):
                    assert time.monotonic() < deadline, "the copy never learned the demo pods"
                    await asyncio.sleep(0.1)
                now = time.time_ns()
                named = set()
                for src_ip, sport, dst_ip, dport in flows:
                    src, src_how = sync.table.lookup(src_ip, sport, now)
                    dst, dst_how = sync.table.lookup(socket.inet_aton(dst_ip), dport, now)
                    assert src is not None and dst is not None, (src_ip, dst_ip)
                    assert src_how == dst_how == "ip"
                    named.add(
                        (
                            f"{src['namespace']}/{src['workload']['name']}",
                            f"{dst['namespace']}/{dst['workload']['name']}",
                            (dst["service"] or {}).get("name"),
                        )
                    )
            finally:
                await sync.stop()
                await bus.close()
        # requests and their answers, both directions
        assert ("load/loadgen", "shop/frontend", "frontend") in named
        assert ("shop/frontend", "shop/api", "api") in named
        assert ("shop/api", "data/db", "db") in named
        assert ("data/db", "shop/api", "api") in named
        if any(p.app == "redis" for p in PODS) and "redis" in cluster.procs:
            assert ("shop/api", "data/redis", "redis") in named
    finally:
        removed = cluster.down()
    assert any(r.startswith("netns") for r in removed)
    assert cluster.tag not in ip_listing()


def test_demo_down_from_another_shell_removes_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    cmd = [sys.executable, "-m", "wiretide.cli.main", "demo", "--cluster-only", "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        # The banner may follow a note on stderr (a broker that is not installed, say).
        lines = [proc.stdout.readline().decode() for _ in range(3)]
        banner = next((ln for ln in lines if ln.startswith("demo cluster up")), "")
        assert banner, lines
        bridge = banner.split("bridge ")[1].split(",")[0]
        tag = bridge.removesuffix("br")
        assert tag in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        down = subprocess.run(
            [*cmd[:4], "--down", "--data-dir", str(data_dir)], capture_output=True, timeout=60
        )
        assert down.returncode == 0, down.stdout
        assert proc.wait(30) == 0
        assert tag not in ip_listing()
        assert not (data_dir / "demo.json").exists()
        again = subprocess.run(
            [*cmd[:4], "--down", "--data-dir", str(data_dir)], capture_output=True, timeout=60
        )
        assert again.returncode == 0 and b"nothing to remove" in again.stdout
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()

"""A process in a container's cgroup is named by its container, and through it by its pod: a real
cgroup v2 directory named as containerd names a container's, a real curl moved into it, eBPF socket
owners read from the kernel, and the resolver's container index naming the end.

Root, BCC (python3-bpfcc) and a writable cgroup v2 hierarchy are needed; elsewhere this skips and
says why.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import NetPair, unique, veth_pair
from tests.helpers.tcpdump import tcpdump_argv, watch
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import EbpfSource, probe
from wiretide.capture.sources.ebpf.cgroups import unified_root
from wiretide.capture.sources.ebpf.source import SocketOwner
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.cli.demo import kubeapi as ka
from wiretide.common import containers
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.processes import ProcessTable
from wiretide.dissector.registry import default_registry
from wiretide.dissector.service import enrich
from wiretide.resolver.k8s.source import KubernetesSource
from wiretide.resolver.table import IdentityStore

WHY_NOT = probe()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"eBPF unavailable: {WHY_NOT}")
PORT = 8091
SERVER = textwrap.dedent(
    """
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            self.send_response(204)
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
    """
)


@pytest.fixture
def scope() -> Iterator[tuple[Path, str]]:
    """A cgroup named as containerd names a container's (…/cri-containerd-<id>.scope); removed after."""
    root = Path(unified_root())
    if not (root / "cgroup.controllers").exists():
        pytest.skip(f"no cgroup v2 hierarchy at {root} (or its unified/)")
    cid = secrets.token_hex(32)
    parent = root / f"wt-test-{unique('')}"
    try:
        parent.mkdir()
    except OSError as exc:
        pytest.skip(f"cgroup v2 at {root} is not writable: {exc}")
    leaf = parent / f"cri-containerd-{cid}.scope"
    try:
        leaf.mkdir()
        yield leaf, cid
    finally:
        for d in (leaf, parent):  # empty once the processes moved in have exited
            with contextlib.suppress(OSError):
                d.rmdir()


@pytest.fixture
def net() -> Iterator[NetPair]:
    with veth_pair("10.94.0") as pair:
        yield pair


def _listening(net: NetPair) -> bool:
    out = net.run(net.ns_b, ["cat", "/proc/net/tcp"], capture_output=True).stdout.decode()
    return f":{PORT:04X} 00000000:0000 0A" in out


def test_a_process_in_a_container_cgroup_is_named_by_its_container_and_that_container_s_pod(
    scope: tuple[Path, str], net: NetPair, tmp_path: Path
) -> None:
    leaf, cid = scope
    source = EbpfSource()
    source.start()
    try:
        if not source.kernel_sockets:
            pytest.skip("this kernel has no sock:sock_send_length/sock_recv_length tracepoints (< 6.3)")
        pcap = tmp_path / "call.pcap"
        dump = watch(
            ["ip", "netns", "exec", net.ns_b, *tcpdump_argv(net.if_b, pcap, "tcp", "port", str(PORT))]
        )
        server = net.popen(net.ns_b, [sys.executable, "-c", SERVER, str(PORT)])
        try:
            dump.wait_for(b"listening on")
            wait_for("the server listening", lambda: _listening(net))
            # The shell moves itself into the container's cgroup (from outside the namespace, whose
            # /sys is its own), then becomes curl in the namespace: one pid all along.
            script = f'echo $$ > {leaf / "cgroup.procs"} && exec ip netns exec "$0" curl -s -o /dev/null "$1"'
            curl = subprocess.Popen(["sh", "-c", script, net.ns_a, f"http://{net.ip_b}:{PORT}/boxed"])
            assert curl.wait(timeout=30) == 0
            owners: list[SocketOwner] = []

            def both_ends() -> bool:
                source.poll(20)
                owners.extend(source.take_sockets())
                pids = {o.pid for o in owners}
                return curl.pid in pids and server.pid in pids

            wait_for("the owners of both ends", both_ends)
            server_cid = containers.from_proc_cgroup(Path(f"/proc/{server.pid}/cgroup").read_text())
        finally:
            server.kill()
            server.wait()
            dump.stop()
    finally:
        source.close()
    assert {o.container_id for o in owners if o.pid == curl.pid} == {cid}
    assert {o.container_id for o in owners if o.pid == server.pid} == {server_cid}  # not curl's

    # The dissector names the processes from the owners, then the resolver's index names curl's pod.
    pipe = Pipeline(default_registry(), node="test")
    entries: list[dict[str, Any]] = []
    for cols in read_batches(str(pcap), 4096):
        entries += pipe.feed(cols)
    entries += pipe.finish()
    processes = ProcessTable()
    processes.learn(o.to_proto() for o in owners)
    processes.name(entries)
    store = IdentityStore()
    pod = ka.pod("boxed-1", "shop", "10.200.0.9", container_ids=[cid], created=0)  # a different address
    KubernetesSource(store).apply("pod", "ADDED", ka.to_json(pod), 0)
    enrich(store.table, entries)
    (call,) = [e for e in entries if e["protocol"] == "http"]
    assert call["src"]["process"]["pid"] == curl.pid
    assert call["src"]["process"]["container_id"] == cid
    assert call["src"]["pod"]["name"] == "boxed-1" and call["src"]["resolution"] == "container"
    assert call["src"]["ip"] == net.ip_a  # the address is still the packet's
    assert call["dst"]["process"]["pid"] == server.pid
    assert call["dst"]["resolution"] != "container"
    assert os.path.isdir(leaf)  # the fixture removes it

"""Capture holds exactly the capabilities it uses: with only what the DaemonSet grants (NET_RAW), the
AF_PACKET source opens its ring, filter, fanout group and promiscuous membership; with nothing it
cannot, so the grant is needed and sufficient."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.netns import ip, is_root

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root

OPEN_RING = """
import re, subprocess, sys
from wiretide.capture.sources.afpacket import RingConfig, RingSocket
ring = RingSocket(sys.argv[1], RingConfig(promisc=True, fanout_group=4242, bpf="tcp port 80"))
out = subprocess.run(["ip", "-d", "link", "show", sys.argv[1]], capture_output=True, text=True).stdout
print("promiscuity", re.search(r"promiscuity (\\d+)", out).group(1))
"""


def granted_capabilities() -> list[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl (kustomize) is needed to build k8s/")
        pytest.skip("kubectl not installed")
    built = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s/base")], capture_output=True, text=True, check=True
    )
    (capture,) = [d for d in yaml.safe_load_all(built.stdout) if d and d["kind"] == "DaemonSet"]
    caps: list[str] = capture["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"][
        "add"
    ]
    return caps


@pytest.fixture
def veth() -> Iterator[str]:
    if not is_root():
        pytest.skip("needs root (a veth pair; setpriv)")
    name = f"wtcap{os.getpid() % 100000}"
    ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    try:
        ip("link", "set", name, "up")
        yield name
    finally:
        ip("link", "del", name)


def open_ring_with(caps: list[str], ifname: str) -> subprocess.CompletedProcess[str]:
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in caps)])
    return subprocess.run(
        ["setpriv", "--inh-caps=-all", f"--bounding-set={bounding}", sys.executable, "-c", OPEN_RING, ifname],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_capabilities_the_daemonset_grants_open_the_capture_ring_and_none_do_not(veth: str) -> None:
    caps = granted_capabilities()
    assert caps == ["NET_RAW"]
    granted = open_ring_with(caps, veth)
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.split() == ["promiscuity", "1"]
    bare = open_ring_with([], veth)
    assert bare.returncode != 0
    assert "PermissionError" in bare.stderr

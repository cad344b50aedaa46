"""A burst of small keep-alive calls loses nothing: `wiretide up` captures the host side of a veth
while `ab` drives nginx in a namespace flat out, and every call is stored with no drop anywhere —
with the capture's queue to the dissector made far smaller than the burst, so the burst has to wait
in the kernel ring while the capture stops reading it (the path a burst beyond the queue takes with
default settings). The defaults give the ring and queue sizes the README's "Speed" section names."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from pydantic import ValidationError

from tests.helpers.netns import is_root, served_behind_veth
from tests.helpers.pcaps import in_ci
from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for
from wiretide.capture.sender import DEFAULT_QUEUE_BYTES, HIGH_WATER, LOW_WATER
from wiretide.capture.service import CaptureSettings
from wiretide.capture.sources.afpacket import RingConfig
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc, dissector_pb2, dissector_pb2_grpc

BURST = 20_000  # calls: ~40k packets, ~9 MB of frames, many times the queue below
SMALL_QUEUE_MB = 2  # so the burst cannot fit the queue and must wait in the kernel ring…
SMALL_BLOCK_KB = 256  # …read in blocks small enough for the room this queue leaves above its high water
NGINX_CONF = """
worker_processes 1;
user root;
daemon off;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000;
    server {{
        listen 80;
        location = /small {{ default_type application/json; return 200 '{{"id":1,"ok":true}}'; }}
    }}
}}
"""


def test_the_defaults_give_a_64_mib_ring_of_1_mib_blocks_and_a_128_mib_queue_per_dissector() -> None:
    config = CaptureSettings().ring_config()
    assert config == RingConfig(ring_bytes=64 << 20, block_size=1 << 20, bpf=config.bpf)
    assert config.ring_bytes // config.block_size == 64
    settings = CaptureSettings()
    assert settings.capture_queue_mb << 20 == DEFAULT_QUEUE_BYTES == 128 << 20
    assert 0 < LOW_WATER < HIGH_WATER < 1
    assert settings.capture_nice < 0  # the one stage that cannot wait runs ahead of those that can


def test_a_queue_without_room_for_two_blocks_above_its_high_water_mark_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="capture_queue_mb") as caught:
        CaptureSettings(capture_queue_mb=4, capture_block_kb=1024)
    assert "at least 8 with WIRETIDE_CAPTURE_BLOCK_KB=1024" in str(caught.value)
    assert CaptureSettings(capture_queue_mb=2, capture_block_kb=256).capture_queue_mb == 2


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (make setup installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """nginx in a new namespace behind a veth whose host side is here: (host interface, server ip)."""
    if not is_root():
        pytest.skip("needs root (network namespaces, AF_PACKET)")
    _need("nginx")
    _need("ab")
    conf_dir = tmp_path / "nginx"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir))
    net = f"10.89.{os.getpid() % 250}"  # host side .1, nginx .2
    nginx = ["nginx", "-e", "stderr", "-c", str(conf)]
    with served_behind_veth(nginx, "/small", prefix="wb", net=net, timeout=20) as server:
        yield server.host_if, server.ip


def _headers(stack: Stack) -> dict[str, str]:
    token = stack.data_dir / "service-token"
    return {"authorization": f"Bearer {token.read_text().strip()}"} if token.is_file() else {}


def _stored_http(stack: Stack) -> int:
    body = httpx.get(
        f"{stack.base}/api/stats",
        params={"q": "http", "by": "protocol"},
        headers=_headers(stack),
        timeout=30,
    ).json()
    return int(body["total"])


def _drops(stack: Stack) -> dict[str, int]:
    """What capture and dissector report lost, asked of them now (as `wiretide status` asks them)."""
    run = orjson.loads((stack.data_dir / "run.json").read_bytes())
    out: dict[str, int] = {}
    with _channel(stack, run, "capture") as ch:
        status = capture_pb2_grpc.CaptureServiceStub(ch).GetStatus(
            capture_pb2.GetStatusRequest(), timeout=10, metadata=list(_headers(stack).items())
        )
        out.update({f"capture.{k}": v for k, v in status.drops.items()})
    with _channel(stack, run, "dissector") as ch:
        stats = dissector_pb2_grpc.DissectorServiceStub(ch).GetStats(
            dissector_pb2.GetStatsRequest(), timeout=10, metadata=list(_headers(stack).items())
        )
        out.update({f"dissector.{k}": v for k, v in stats.drops.items()})
    return {k: v for k, v in out.items() if v and not k.endswith("undecodable_forwarded")}


def _channel(stack: Stack, run: dict[str, Any], service: str) -> grpc.Channel:
    address = run["services"][service]["grpc"]
    tls = stack.data_dir / "tls"
    if not (tls / "cli.crt").is_file():
        return grpc.insecure_channel(address)
    creds = grpc.ssl_channel_credentials(
        (tls / "ca.crt").read_bytes(), (tls / "cli.key").read_bytes(), (tls / "cli.crt").read_bytes()
    )
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", service)])


def _capturing(stack: Stack, host_if: str) -> bool:
    body = httpx.get(f"{stack.base}/api/health", headers=_headers(stack), timeout=10).json()
    return any(i["name"] == host_if and i["up"] for i in body["capture"].get("interfaces", []))


def test_a_burst_far_beyond_the_capture_queue_waits_in_the_kernel_ring_and_every_call_is_stored(
    served: tuple[str, str], tmp_path: Path
) -> None:
    host_if, server = served
    stack = Stack(
        tmp_path / "wt",
        None,
        WIRETIDE_CAPTURE_INTERFACES=host_if,
        WIRETIDE_CAPTURE_QUEUE_MB=str(SMALL_QUEUE_MB),
        WIRETIDE_CAPTURE_BLOCK_KB=str(SMALL_BLOCK_KB),
    )
    try:
        stack.wait_up()
        # The gateway polls the capture's status every few seconds: wait until it shows the interface.
        warmup = 10
        wait_for("the interface is captured", lambda: _capturing(stack, host_if))
        subprocess.run(["ab", "-q", "-k", "-n", str(warmup), "-c", "1", f"http://{server}/small"], check=True)
        before = wait_for("the warm-up calls are stored", lambda: _stored_http(stack), lambda n: n >= warmup)
        # What was counted before the burst (a stray packet on the new veth while the pipeline started
        # up) is not the burst's: the burst must add nothing.
        drops_before = _drops(stack)
        out = subprocess.run(
            ["ab", "-q", "-k", "-n", str(BURST), "-c", "16", f"http://{server}/small"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"Complete requests:      {BURST}" in out.stdout
        assert "Failed requests:        0" in out.stdout
        stored = wait_for(
            "every call of the burst is stored",
            lambda: _stored_http(stack) - before,
            lambda n: n >= BURST,
            timeout=300,
        )
        assert stored == BURST
        # Nothing lost on the way: not in the kernel ring, not in the queue, not in the publisher.
        after = _drops(stack)
        assert {k: v - drops_before.get(k, 0) for k, v in after.items() if v != drops_before.get(k, 0)} == {}
    finally:
        stack.stop()

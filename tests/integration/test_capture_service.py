"""The capture service as a real process next to a real nats-server: SERVING even without capture
privileges or a reachable dissector (it counts and reports instead); live packets from a namespace
reach a real dissector stream; Snapshot writes a pcapng that tshark opens."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from wiretide.common.packets import PacketColumns, decode_headers
from wiretide.common.rpc import channel
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc, dissector_pb2, dissector_pb2_grpc

TSHARK = "/usr/bin/tshark"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and AF_PACKET")


async def status(address: str) -> capture_pb2.GetStatusResponse:
    async with channel(address) as ch:
        return await capture_pb2_grpc.CaptureServiceStub(ch).GetStatus(
            capture_pb2.GetStatusRequest(), timeout=5
        )


async def snapshot(address: str, **kwargs: object) -> capture_pb2.CaptureServiceSnapshotResponse:
    async with channel(address) as ch:
        stub = capture_pb2_grpc.CaptureServiceStub(ch)
        return await stub.Snapshot(capture_pb2.CaptureServiceSnapshotRequest(**kwargs), timeout=30)  # type: ignore[arg-type]


def test_without_privileges_or_dissectors_the_service_is_serving_and_says_why(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    env = service_env(
        nats_server.url,
        data,
        WIRETIDE_DISSECTOR_GRPC=f"127.0.0.1:{free_port()}",
        WIRETIDE_CAPTURE_INTERFACES="lo",
        WIRETIDE_CAPTURE_RECORD="false",
    )
    argv_prefix: list[str] = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        # Run as nobody: no CAP_NET_RAW, so AF_PACKET sockets are refused.
        argv_prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    proc = ServiceProcess("capture", env, tmp_path / "capture.log")
    proc.start_argv = argv_prefix  # type: ignore[attr-defined]
    log = (tmp_path / "capture.log").open("ab")
    proc.proc = subprocess.Popen(
        [*argv_prefix, sys.executable, "-m", "wiretide.capture"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        proc.wait_health("SERVING", timeout=30)
        deadline = time.monotonic() + 10
        st = asyncio.run(status(proc.grpc))
        while time.monotonic() < deadline and "lo" not in st.errors:
            time.sleep(0.2)
            st = asyncio.run(status(proc.grpc))
        assert list(st.dissectors) == [env["WIRETIDE_DISSECTOR_GRPC"]]
        if argv_prefix:
            assert "not permitted" in st.errors["lo"].lower() or "permission" in st.errors["lo"].lower()
            assert "Operation not permitted" in proc.log() or "PermissionError" in proc.log()
        assert proc.health() == "SERVING"
    finally:
        assert proc.terminate() == 0
        proc.kill()


class SyncRecordingDissector(dissector_pb2_grpc.DissectorServiceServicer):
    """A real Ingest servicer on a thread pool that keeps every frame it was sent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def Ingest(self, request_iterator, context):  # type: ignore[no-untyped-def]
        yield dissector_pb2.IngestResponse(acked_seq=0, credits=4)
        for req in request_iterator:
            cols = PacketColumns.from_proto(req.batch)
            for off, caplen, *_ in cols.iter_packets():
                self.frames.append(cols.data[off : off + caplen])
            yield dissector_pb2.IngestResponse(acked_seq=req.batch.seq, credits=4)


@root_only
def test_live_loopback_packets_reach_a_dissector_and_a_snapshot_opens_in_tshark(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    servicer = SyncRecordingDissector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    dissector_pb2_grpc.add_DissectorServiceServicer_to_server(servicer, server)
    dport = server.add_insecure_port("127.0.0.1:0")
    server.start()
    web_port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"hello " * 3000)
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(web_port), "--bind", "127.0.0.1", "--directory", str(www)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = service_env(
        nats_server.url,
        tmp_path / "data",
        WIRETIDE_DISSECTOR_GRPC=f"127.0.0.1:{dport}",
        WIRETIDE_CAPTURE_INTERFACES="lo",
        WIRETIDE_CAPTURE_BPF=f"tcp port {web_port}",
        WIRETIDE_CAPTURE_FLUSH_MS="20",
    )
    capture = ServiceProcess("capture", env, tmp_path / "capture.log")
    capture.start()
    try:
        capture.wait_health("SERVING", timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not asyncio.run(status(capture.grpc)).interfaces:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{web_port}/index.html"
        for _ in range(5):
            done = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--retry",
                    "5",
                    "--retry-connrefused",
                    url,
                ],
                capture_output=True,
            )
            assert done.stdout == b"200"
        # Settled: the count has stopped moving and the dissector has every packet counted.
        deadline = time.monotonic() + 15
        history: list[tuple[int, int]] = []
        while time.monotonic() < deadline:
            st = asyncio.run(status(capture.grpc))
            history.append((st.packets, len(servicer.frames)))
            if len(history) >= 3 and len(set(history[-3:])) == 1 and st.packets == len(servicer.frames):
                break
            time.sleep(0.2)
        assert st.packets >= 5 * 8  # five HTTP exchanges, each direction seen once on lo... or twice
        assert len(servicer.frames) == st.packets
        assert st.interfaces[0].name == "lo" and st.interfaces[0].kernel_drops == 0
        for f in servicer.frames:
            h = decode_headers(memoryview(f), 0, len(f), 1)
            assert h is not None and web_port in (h[4], h[5])
        snap = asyncio.run(snapshot(capture.grpc, inline=True))
        assert snap.packets == st.packets and Path(snap.path).exists()
        assert snap.data == Path(snap.path).read_bytes()
        if Path(TSHARK).exists():
            out = subprocess.run(
                [TSHARK, "-r", snap.path, "-T", "fields", "-e", "frame.number"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            assert len(out) == st.packets
        with pytest.raises(grpc.RpcError) as err:
            asyncio.run(snapshot(capture.grpc, bpf="tcp port"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    finally:
        assert capture.terminate() == 0
        capture.kill()
        web.kill()
        web.wait()
        server.stop(0)

"""`wiretide up --pcap` is `wiretide analyze` through the running stack: every shared capture replayed
through capture → dissector → NATS → gateway stores the calls `analyze` prints for it (calls still
open at the end of a file included); a replay waits for consumers that come up late, saying so, and
loses nothing; and the capture filters (--bpf, --port, --cidr) apply to a replayed file as to an
interface."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest

from tests.helpers.nats import NatsServer, free_port
from tests.helpers.pcaps import PCAPS, pcap, require_pcaps
from tests.helpers.services import ServiceProcess
from tests.helpers.stack import Stack
from wiretide.cli.main import main as wiretide_main
from wiretide.cli.up import report_replay
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc

Call = tuple[Any, ...]
Spawn = Callable[..., ServiceProcess]

DNS = pcap("dns/suricata_dns-udp-google.com-a-aaaa-mx.pcap")
PIPELINED = pcap("http1.1/zeek_pipelined-requests.pcap")
# DNS, LLMNR (IPv4 and IPv6), mDNS, NetBIOS and HTTP connections in one file.
MIXED = pcap("udp/zeek_wikipedia-filtered-plus-udp.pcap")
FILTER_PORTS = (53, 80, 5355)
FILTER = "(not tcp) and (port 53 or port 80 or port 5355) and (net 141.142.0.0/16)"


def all_captures() -> list[Path]:
    return sorted(p for p in PCAPS.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap"))


def analyze(path: Path) -> list[dict[str, Any]]:
    """What `wiretide analyze FILE` prints, run in this process (113 interpreters would cost a minute)."""
    out = io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        wiretide_main(["analyze", str(path), "--format", "jsonl", "--quiet"])
    out.flush()
    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


def call(e: dict[str, Any]) -> Call:
    """One API call as both sides must agree on it (ids, names and node differ by design)."""
    error = e.get("error") or {}
    return (
        e["protocol"],
        e.get("method"),
        e.get("path"),
        e.get("status"),
        f"{e['src']['ip']}:{e['src']['port']}",
        f"{e['dst']['ip']}:{e['dst']['port']}",
        e["timestamp"],
        error.get("type"),
    )


def stored(base: str) -> list[dict[str, Any]]:
    """Every entry the gateway holds, page by page."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        body = httpx.get(f"{base}/api/entries", params=params, timeout=10).json()
        out += body["entries"]
        if not body.get("next") or not body["entries"]:
            return out
        params["before"] = body["next"]


def wait_stored(base: str, want: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            got = stored(base)
            if len(got) >= want:
                return got
        time.sleep(0.3)
    return got


def test_up_pcap_stores_what_analyze_finds_on_every_shared_capture(tmp_path: Path) -> None:
    require_pcaps()
    files = all_captures()
    assert len(files) > 50
    expected: Counter[Call] = Counter()
    origin: dict[Call, str] = {}
    for f in files:
        for e in analyze(f):
            expected[call(e)] += 1
            origin[call(e)] = str(f.relative_to(PCAPS))
    stack = Stack(tmp_path / "wt", files)
    try:
        stack.wait_up()
        got = Counter(map(call, wait_stored(stack.base, sum(expected.values()))))
    finally:
        stack.stop()
    missing, extra = expected - got, got - expected
    assert not missing and not extra, (
        f"missing {sorted((origin[c], c) for c in missing)[:20]}\nextra {sorted(map(str, extra))[:20]}"
    )
    assert Counter(c[0] for c in got.elements()) == Counter(c[0] for c in expected.elements())


def replay_status(capture: ServiceProcess) -> capture_pb2.ReplayStatus:
    with grpc.insecure_channel(capture.grpc) as ch:
        resp: capture_pb2.GetStatusResponse = capture_pb2_grpc.CaptureServiceStub(ch).GetStatus(
            capture_pb2.GetStatusRequest(), timeout=5
        )
    return resp.replay


def wait_for(what: str, predicate: Callable[[], bool], proc: ServiceProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s:\n{proc.log()}")


def test_a_replay_waits_for_a_late_dissector_and_store_then_loses_nothing(
    nats_server: NatsServer, spawn: Spawn
) -> None:
    require_pcaps(DNS, PIPELINED)
    expected = Counter(call(e) for f in (PIPELINED, DNS) for e in analyze(f))
    dissector_at = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    capture = spawn(
        "capture",
        nats_server.url,
        WIRETIDE_DISSECTOR_GRPC=dissector_at,
        WIRETIDE_CAPTURE_PCAP=f"{PIPELINED}:{DNS}",
        WIRETIDE_CAPTURE_REPLAY_CONSUMERS="gateway-store",
    )
    capture.wait_health()
    # Nothing to send to yet: the replay says what it waits for, in its status and on stderr.
    wait_for(
        "waiting for the dissector and the store",
        lambda: list(replay_status(capture).waiting_for) == ["1 dissector", "consumer gateway-store"],
        capture,
    )
    wait_for("the note on stderr", lambda: "replay waiting for 1 dissector" in capture.log(), capture)
    spawn("dissector", nats_server.url, WIRETIDE_DISSECTOR_GRPC=dissector_at).wait_health()
    wait_for(
        "waiting for the store alone",
        lambda: list(replay_status(capture).waiting_for) == ["consumer gateway-store"],
        capture,
    )
    assert not replay_status(capture).done
    gateway = spawn(
        "gateway",
        nats_server.url,
        WIRETIDE_DISSECTOR_GRPC=dissector_at,
        WIRETIDE_GATEWAY_HTTP=http,
        WIRETIDE_GATEWAY_RETENTION_AGE_S="0",
    )
    gateway.wait_health()
    wait_for("the replay's end", lambda: replay_status(capture).done, capture)
    status = replay_status(capture)
    assert (status.files_done, status.error) == (2, "")
    got = Counter(map(call, wait_stored(f"http://{http}", sum(expected.values()))))
    assert got == expected
    with grpc.insecure_channel(capture.grpc) as ch:
        drops = capture_pb2_grpc.CaptureServiceStub(ch).GetStatus(capture_pb2.GetStatusRequest()).drops
    assert drops.get("dissector_unavailable", 0) == 0


def tcpdump_count(path: Path, expression: str = "") -> int:
    """Packets of `path` that tcpdump (libpcap) selects with `expression`: the reference."""
    argv = ["tcpdump", "-nqr", str(path), *([expression] if expression else [])]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


@pytest.mark.parametrize(
    ("flags", "expression"),
    [
        (["--bpf", "not tcp"], "not tcp"),
        (["--port", "5355"], "port 5355"),
        (["--cidr", "208.80.152.0/24"], "net 208.80.152.0/24"),
    ],
)
def test_wiretide_capture_applies_each_filter_to_a_replayed_file(
    tmp_path: Path, flags: list[str], expression: str
) -> None:
    require_pcaps(MIXED)
    total, want = tcpdump_count(MIXED), tcpdump_count(MIXED, expression)
    assert 0 < want < total
    out = tmp_path / "kept.pcapng"
    proc = subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "capture", "--pcap", str(MIXED), *flags, "-w", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert tcpdump_count(out) == want
    assert tcpdump_count(out, f"not ({expression})") == 0


def test_up_pcap_applies_bpf_port_and_cidr_to_the_replay(tmp_path: Path) -> None:
    """Each flag alone leaves out calls the other two keep: --bpf the HTTP connections, --port NetBIOS
    and mDNS, --cidr LLMNR over IPv6. What is stored is what analyze finds in the file as tcpdump
    filters it with the same expression."""
    require_pcaps(MIXED)
    reference = tmp_path / "reference.pcap"
    subprocess.run(
        ["tcpdump", "-r", str(MIXED), "-w", str(reference), FILTER], capture_output=True, check=True
    )
    expected = Counter(map(call, analyze(reference)))
    everything = Counter(map(call, analyze(MIXED)))
    assert expected and {c[0] for c in everything - expected} == {"dns", "tcp", "udp"}
    stack = Stack(
        tmp_path / "wt",
        [MIXED],
        "--bpf",
        "not tcp",
        *(f"--port={p}" for p in FILTER_PORTS),
        "--cidr",
        "141.142.0.0/16",
    )
    try:
        stack.wait_up()
        log = stack.data_dir.parent / f"up-{stack.port}.log"
        deadline = time.monotonic() + 60
        while "replayed 1 file" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        got = Counter(map(call, wait_stored(stack.base, sum(expected.values()))))
        text = log.read_text()
    finally:
        stack.stop()
    assert got == expected
    assert f"{tcpdump_count(MIXED) - tcpdump_count(reference)} left out by the filter" in text


class Replaying(capture_pb2_grpc.CaptureServiceServicer):
    """A capture service whose replay waits for a dissector for `waits` answers, then is done."""

    def __init__(self, waits: int) -> None:
        self.waits = waits

    async def GetStatus(
        self, request: capture_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> capture_pb2.GetStatusResponse:
        resp = capture_pb2.GetStatusResponse(packets=49)
        resp.replay.files.append("a.pcap")
        if self.waits:
            self.waits -= 1
            resp.replay.waiting_for.append("1 dissector")
        else:
            resp.replay.done = True
            resp.replay.files_done = 1
            resp.replay.filtered = 7
        return resp

    async def Snapshot(
        self, request: capture_pb2.CaptureServiceSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> capture_pb2.CaptureServiceSnapshotResponse:
        raise NotImplementedError


async def test_up_says_on_stderr_what_its_replay_waits_for_and_how_it_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:

    server = grpc.aio.server()
    capture_pb2_grpc.add_CaptureServiceServicer_to_server(Replaying(waits=2), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with caplog.at_level("INFO", logger="wiretide.up"):
            await asyncio.wait_for(report_replay(f"127.0.0.1:{port}", "http://ui", asyncio.Event()), 30)
    finally:
        await server.stop(None)
    lines = [r.getMessage() for r in caplog.records if r.name == "wiretide.up"]
    assert lines == [
        "replay waiting for 1 dissector…",
        "replayed 1 file: 49 packets, 7 left out by the filter; the entries are at http://ui",
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--bpf", "port port"], "bad filter 'port port'"), (["--port", "70000"], "port 70000 is out of range")],
)
def test_a_bad_filter_stops_up_before_anything_starts(tmp_path: Path, flags: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "up", "--data-dir", str(tmp_path / "d"), *flags],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "d").exists()

"""The dissector service with real parts: a real nats-server, a real gRPC Ingest stream, JetStream out;
and a live exchange between real peers (python http.server, curl, a DNS-less UDP echo) in namespaces."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import orjson
import pytest

from tests.helpers.nats import NatsServer, free_port
from tests.helpers.netns import is_root, veth_pair
from tests.helpers.pcaps import require_pcaps
from tests.unit.dissector.pcaps import PCAPS, read_columns
from wiretide.common.bus import connect_with_retry, entries_subject
from wiretide.common.bus.entries import CONTRACT_VERSION, PACKING, UNPACKED_VERSION, open_batch
from wiretide.common.bus.subjects import ENTRIES_STREAM
from wiretide.common.rpc import create_server
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry
from wiretide.dissector.service import DissectorService, DissectorSettings
from wiretide.proto.v1 import dissector_pb2, dissector_pb2_grpc, entries_pb2, packets_pb2

PIPELINED = PCAPS / "http1.1" / "zeek_pipelined-requests.pcap"


async def read_entries(
    url: str, node: str, want: int, timeout: float = 10.0, packings: list[tuple[int, str]] | None = None
) -> list[dict[str, object]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(entries_subject(node), durable="test-reader", stream=ENTRIES_STREAM.name)
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(10, timeout=0.5)
        except TimeoutError:  # nats.errors.TimeoutError, or a bare one when fetch runs out of time
            continue
        for m in msgs:
            if packings is not None:
                head = entries_pb2.EntryBatch.FromString(m.data)
                packings.append((head.version, head.packing))
            batch = open_batch(m.data, m.subject)  # entries travel packed
            assert batch is not None
            out.extend(orjson.loads(e.json) for e in batch.entries)
            await m.ack()
    await nc.close()
    return out


@pytest.mark.parametrize("pack", [True, False])
async def test_batches_sent_over_ingest_come_out_as_entries_on_jetstream(
    nats_server: NatsServer, tmp_path: Path, pack: bool
) -> None:
    require_pcaps(PIPELINED)
    port = free_port()
    settings = DissectorSettings(
        node_name="n1", nats_url=nats_server.url, dissector_grpc=f"127.0.0.1:{port}", dissector_pack=pack
    )
    service = DissectorService(settings)
    bus = await connect_with_retry(nats_server.url, "dissector-test")
    server, _, _ = create_server(f"127.0.0.1:{port}", ["wiretide.proto.v1.DissectorService"])
    service.register(server)
    await server.start()
    await service.start(bus)
    try:
        cols = read_columns(PIPELINED)
        half = len(cols) // 2
        offset = sum(cols.caplens[:half])
        from wiretide.common.packets import PacketColumns

        parts = [
            PacketColumns(
                cols.data[:offset],
                cols.caplens[:half],
                cols.origlens[:half],
                cols.timestamps_ns[:half],
                cols.interface_ids[:half],
                cols.interfaces,
            ),
            PacketColumns(
                cols.data[offset:],
                cols.caplens[half:],
                cols.origlens[half:],
                cols.timestamps_ns[half:],
                cols.interface_ids[half:],
                cols.interfaces,
            ),
        ]
        batches = [
            p.to_proto(
                "edge-1", packets_pb2.CAPTURE_SOURCE_PCAP, seq=i + 1, dropped={"ring_full": 3} if i else None
            )
            for i, p in enumerate(parts)
        ]

        async def requests() -> AsyncIterator[dissector_pb2.IngestRequest]:
            for b in batches:
                yield dissector_pb2.IngestRequest(batch=b)

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = dissector_pb2_grpc.DissectorServiceStub(ch)
            acks = [r async for r in stub.Ingest(requests())]
            assert acks[0].credits == settings.dissector_credits
            assert [a.acked_seq for a in acks[1:]] == [1, 2]
            stats = await stub.GetStats(dissector_pb2.GetStatsRequest())
            assert stats.packets == len(cols) and stats.entries == 5
        packings: list[tuple[int, str]] = []
        entries = await read_entries(nats_server.url, "edge-1", want=5, packings=packings)
        # Packed (contract version 3), or as version 2 for consumers from before packing.
        assert packings and set(packings) == (
            {(CONTRACT_VERSION, PACKING)} if pack else {(UNPACKED_VERSION, "")}
        )
    finally:
        await service.stop()
        await server.stop(None)
        await bus.close()
    assert sorted(e["path"] for e in entries) == sorted(
        [
            "/style/enhanced.css",
            "/script/urchin.js",
            "/images/template/screen/bullet_utility.png",
            "/images/template/screen/key-point-top.png",
            "/projects/calendar/images/header-sunbird.png",
        ]
    )
    assert all(e["node"] == "edge-1" and e["capture"]["source"] == "pcap" for e in entries)


@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")
@pytest.mark.skipif(
    shutil.which("tcpdump") is None or shutil.which("curl") is None, reason="needs tcpdump and curl"
)
def test_a_live_exchange_between_real_peers_is_dissected(tmp_path: Path) -> None:
    """curl → python http.server on port 18080 inside namespaces, captured by tcpdump on the server side."""
    pcap = tmp_path / "live.pcap"
    with veth_pair(subnet="10.79.0") as net:
        server = net.popen(
            net.ns_b,
            [sys.executable, "-m", "http.server", "18080", "--bind", net.ip_b, "--directory", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (tmp_path / "hello.txt").write_text("hello from the server\n")
        dump = net.popen(
            net.ns_b,
            [
                "tcpdump",
                "--immediate-mode",
                "-Z",
                "root",
                "-i",
                net.if_b,
                "-U",
                "-w",
                str(pcap),
                "tcp port 18080",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert dump.stderr is not None
            assert b"listening on" in dump.stderr.readline()
            time.sleep(0.5)  # the filter is attached just after tcpdump says it is listening
            for _ in range(100):
                r = net.run(
                    net.ns_a,
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        f"http://{net.ip_b}:18080/hello.txt?x=1",
                    ],
                    capture_output=True,
                )
                if r.stdout == b"200":
                    break
                time.sleep(0.05)
            assert r.stdout == b"200"
            net.run(
                net.ns_a, ["curl", "-s", "-o", "/dev/null", f"http://{net.ip_b}:18080/missing"], check=True
            )
            time.sleep(0.3)
        finally:
            dump.terminate()
            dump.communicate(timeout=5)
            server.terminate()
            server.wait(5)
    p = Pipeline(default_registry())
    entries = [e for e in p.feed(read_columns(pcap)) + p.finish() if e["protocol"] == "http"]
    hits = [(e["method"], e["path"], e["status"]) for e in entries]
    assert ("GET", "/hello.txt", 200) in hits and ("GET", "/missing", 404) in hits
    ok = next(e for e in entries if e["status"] == 200)
    assert ok["request"]["query"] == {"x": ["1"]}
    assert ok["response"]["body"]["content"] == "hello from the server\n"
    assert ok["dst"]["port"] == 18080


def test_settings_name_the_bad_variable() -> None:
    from wiretide.common.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="WIRETIDE_DISSECTOR_PORTS"):
        load_settings(DissectorSettings, "dissector", {"WIRETIDE_DISSECTOR_PORTS": "http"})
    with pytest.raises(SettingsError, match="WIRETIDE_DISSECTOR_MAX_FLOWS"):
        load_settings(DissectorSettings, "dissector", {"WIRETIDE_DISSECTOR_MAX_FLOWS": "0"})

"""Flow sharding end to end: the capture service replays a capture into three real gRPC dissector
endpoints; every packet of a flow (both directions, all fragments) reaches one of them; killing one
re-balances its flows onto the others and the loss is counted, not silent."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import dpkt
import grpc
import pytest

from wiretide.capture.pcapng import PcapngWriter
from wiretide.capture.service import CaptureService, CaptureSettings
from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder, PacketColumns
from wiretide.common.settings import load_settings
from wiretide.proto.v1 import capture_pb2, dissector_pb2, dissector_pb2_grpc

MAC = b"\x02\x00\x00\x00\x00\x01"
CREDITS = 4


class RecordingDissector(dissector_pb2_grpc.DissectorServiceServicer):
    """A real Ingest servicer that remembers every frame it was sent, acking each batch."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.frames: list[bytes] = []
        self.batches = 0
        self.delay_s = delay_s

    async def Ingest(
        self, request_iterator: AsyncIterator[dissector_pb2.IngestRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dissector_pb2.IngestResponse]:
        yield dissector_pb2.IngestResponse(acked_seq=0, credits=CREDITS)
        async for req in request_iterator:
            cols = PacketColumns.from_proto(req.batch)
            assert cols.consistent()
            for off, caplen, *_ in cols.iter_packets():
                self.frames.append(cols.data[off : off + caplen])
            self.batches += 1
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield dissector_pb2.IngestResponse(acked_seq=req.batch.seq, credits=CREDITS)


async def start_dissector(delay_s: float = 0.0) -> tuple[grpc.aio.Server, RecordingDissector, str]:
    server = grpc.aio.server()
    servicer = RecordingDissector(delay_s)
    dissector_pb2_grpc.add_DissectorServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, f"127.0.0.1:{port}"


def ip4(i: int) -> bytes:
    return socket.inet_aton(f"10.{20 + (i >> 16) % 200}.{(i >> 8) & 255}.{i & 255}")


def eth(ip: dpkt.Packet) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=MAC, dst=MAC, data=ip))


def build_capture(path: Path, flows: int, rounds: int, seed: int = 5) -> dict[bytes, int]:
    """A pcapng of `flows` UDP/TCP conversations (both directions) plus fragmented datagrams, some with
    the first fragment last. Returns frame -> flow number (every frame is unique)."""
    rng = random.Random(seed)
    label: dict[bytes, int] = {}
    b = ColumnBuilder()
    iface = b.interface("veth-test", LINKTYPE_ETHERNET)
    ts = 1_700_000_000 * 10**9
    for r in range(rounds):
        order = list(range(flows))
        rng.shuffle(order)
        for f in order:
            a, z = ip4(2 * f + 1), ip4(2 * f + 2)
            sport, dport = 1024 + f, 53 if f % 2 else 80
            if f % 2:
                out = []
                for src, dst, sp, dp in ((a, z, sport, dport), (z, a, dport, sport)):
                    udp = dpkt.udp.UDP(sport=sp, dport=dp, data=b"r%d-%d" % (r, f))
                    udp.ulen = 8 + len(udp.data)
                    out.append(eth(dpkt.ip.IP(src=src, dst=dst, p=17, id=r, data=udp)))
            else:
                out = []
                for src, dst, sp, dp in ((a, z, sport, dport), (z, a, dport, sport)):
                    tcp = dpkt.tcp.TCP(sport=sp, dport=dp, seq=r, flags=0x18, data=b"t%d-%d" % (r, f))
                    out.append(eth(dpkt.ip.IP(src=src, dst=dst, p=6, data=tcp)))
            if f % 7 == 3:
                # A big datagram of this flow, split into fragments.
                udp = dpkt.udp.UDP(sport=sport, dport=dport, data=b"F%d-%d" % (r, f) * 700)
                udp.ulen = 8 + len(udp.data)
                body = bytes(udp)
                frags = []
                for off in range(0, len(body), 1480):
                    ip = dpkt.ip.IP(src=a, dst=z, p=17, id=(1000 + r) & 0xFFFF, data=body[off : off + 1480])
                    ip.offset = off // 8
                    ip.mf = 1 if off + 1480 < len(body) else 0
                    frags.append(eth(ip))
                if r % 2:
                    frags = frags[1:] + frags[:1]
                # For a UDP flow the fragments belong to it; next to a TCP flow they are a flow of their own.
                for frame in frags:
                    label[frame] = f if f % 2 else 10_000 + f
                out += frags
            for frame in out:
                label.setdefault(frame, f)
                b.append(frame, len(frame), ts, iface)
                ts += 1000
    with open(path, "wb") as fh:
        PcapngWriter(fh, "test-node").write(b.take())
    return label


def settings_for(tmp: Path, pcap: Path, endpoints: list[str], **extra: str) -> CaptureSettings:
    env = {
        "WIRETIDE_DISSECTOR_GRPC": ",".join(endpoints),
        "WIRETIDE_CAPTURE_PCAP": str(pcap),
        "WIRETIDE_DATA_DIR": str(tmp / "data"),
        "WIRETIDE_NODE_NAME": "test-node",
        "WIRETIDE_CAPTURE_FLUSH_MS": "20",
        "WIRETIDE_CAPTURE_BATCH_PACKETS": "256",
        **extra,
    }
    return load_settings(CaptureSettings, "capture", env)


async def wait_until(predicate: object, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_every_packet_of_a_flow_reaches_the_same_one_of_three_dissectors(tmp_path: Path) -> None:
    servers = [await start_dissector() for _ in range(3)]
    label = build_capture(tmp_path / "mix.pcapng", flows=300, rounds=4)
    service = CaptureService(settings_for(tmp_path, tmp_path / "mix.pcapng", [ep for *_, ep in servers]))
    try:
        await service.start(None)  # type: ignore[arg-type]
        await wait_until(lambda: sum(len(s.frames) for _srv, s, _ep in servers) >= len(label))
        owner: dict[int, set[str]] = {}
        for _srv, servicer, ep in servers:
            assert servicer.frames, f"{ep} got nothing"
            for frame in servicer.frames:
                owner.setdefault(label[frame], set()).add(ep)
        assert sum(len(s.frames) for _srv, s, _ep in servers) == len(label)
        assert all(len(eps) == 1 for eps in owner.values()), {f: e for f, e in owner.items() if len(e) > 1}
        assert len(owner) == 300 + len([f for f in range(300) if f % 7 == 3 and f % 2 == 0])
        status = service.status()
        assert status.packets == len(label)
        assert status.drops["fragments_orphaned"] == 0
        assert sorted(status.dissectors) == sorted(ep for *_, ep in servers)
    finally:
        await service.stop()
        for srv, _s, _ep in servers:
            await srv.stop(0)


async def test_killing_an_endpoint_rebalances_its_flows_and_counts_the_loss(tmp_path: Path) -> None:
    servers = [await start_dissector(delay_s=0.01) for _ in range(3)]
    label = build_capture(tmp_path / "long.pcapng", flows=200, rounds=60)
    total = len(label)
    service = CaptureService(settings_for(tmp_path, tmp_path / "long.pcapng", [ep for *_, ep in servers]))
    victim_server, victim, victim_ep = servers[0]
    try:
        await service.start(None)  # type: ignore[arg-type]
        await wait_until(lambda: victim.batches >= 5)
        await victim_server.stop(0)
        frames_before_kill = set(victim.frames)
        survivors = servers[1:]
        assert len({label[f] for f in frames_before_kill}) > 20
        await wait_until(lambda: service.replay_done)
        assert service.pool is not None
        await service.pool.drain(10.0)
        received = sum(len(s.frames) for _srv, s, _ep in servers)
        status = service.status()
        lost_counted = sum(
            status.drops[r]
            for r in ("dissector_unavailable", "unacknowledged", "queue_full")
            if r in status.drops
        )
        assert received < total  # the victim's share in flight at the kill is gone...
        assert total - received <= lost_counted  # ...and every lost packet is counted
        assert lost_counted - (total - received) <= CREDITS * 256  # counted-but-received: at most in flight
        # The victim's flows moved to the survivors; no survivor's flow moved.
        victim_flows = {label[f] for f in frames_before_kill}
        moved = {label[f] for _srv, s, _ep in survivors for f in s.frames if label[f] in victim_flows}
        assert moved and moved <= victim_flows
        (_a, first, _e1), (_b, second, _e2) = survivors
        assert not ({label[f] for f in first.frames} - victim_flows) & {label[f] for f in second.frames}
        assert service.status().drops["fragments_orphaned"] == 0
        assert victim_ep not in service.pool.healthy()
    finally:
        await service.stop()
        for srv, _s, _ep in servers:
            await srv.stop(0)


async def test_the_service_reports_unreachable_dissectors_and_keeps_counting(tmp_path: Path) -> None:
    label = build_capture(tmp_path / "small.pcapng", flows=20, rounds=2)
    service = CaptureService(
        settings_for(
            tmp_path, tmp_path / "small.pcapng", ["127.0.0.1:1"], WIRETIDE_CAPTURE_REPLAY_WAIT_S="0.2"
        )
    )
    try:
        await service.start(None)  # type: ignore[arg-type]
        await wait_until(lambda: service.replay_done)
        service._flush()
        status = service.status()
        assert status.packets == len(label)
        assert status.drops["dissector_unavailable"] == len(label)
        assert list(status.dissectors) == ["127.0.0.1:1"]
        # Everything is still recorded and can be cut into a snapshot.
        control_snapshot = await asyncio.to_thread(
            service.recorder.snapshot,
            tmp_path / "snap.pcapng",  # type: ignore[union-attr]
        )
        assert control_snapshot.packets == len(label)
        assert isinstance(status, capture_pb2.GetStatusResponse)
    finally:
        await service.stop()


@pytest.mark.parametrize("bad", ["127.0.0.1", "host:99999", ""])
def test_bad_endpoint_settings_fail_at_start_up_naming_the_setting(tmp_path: Path, bad: str) -> None:
    from wiretide.common.settings import SettingsError

    if not bad:
        with pytest.raises(SettingsError, match="WIRETIDE_CAPTURE_BPF"):
            load_settings(CaptureSettings, "capture", {"WIRETIDE_CAPTURE_BPF": "port port"})
        return
    with pytest.raises(SettingsError, match="WIRETIDE_DISSECTOR_GRPC"):
        load_settings(CaptureSettings, "capture", {"WIRETIDE_DISSECTOR_GRPC": bad})


async def test_a_dissector_that_stops_acknowledging_fills_a_bounded_queue_then_drops_are_counted() -> None:
    from wiretide.capture.sender import Drops, EndpointSender

    class Silent(dissector_pb2_grpc.DissectorServiceServicer):
        """Grants two credits, then reads batches without ever acknowledging them."""

        def __init__(self) -> None:
            self.received = 0

        async def Ingest(
            self,
            request_iterator: AsyncIterator[dissector_pb2.IngestRequest],
            context: grpc.aio.ServicerContext,
        ) -> AsyncIterator[dissector_pb2.IngestResponse]:
            yield dissector_pb2.IngestResponse(acked_seq=0, credits=2)
            async for _req in request_iterator:
                self.received += 1

    server = grpc.aio.server()
    servicer = Silent()
    dissector_pb2_grpc.add_DissectorServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    drops = Drops({})
    sender = EndpointSender(
        f"127.0.0.1:{port}", "n", 1, drops, lambda: None, max_batches=5, max_bytes=1 << 30
    )
    sender.start()
    try:
        await wait_until(lambda: sender.up)
        b = ColumnBuilder()
        i = b.interface("x", LINKTYPE_ETHERNET)
        offered = accepted = 0
        for k in range(40):
            for _ in range(10):
                b.append(b"\x00" * 60, 60, k, i)
            cols = b.take()
            offered += len(cols)
            accepted += len(cols) if sender.offer(cols) else 0
            await asyncio.sleep(0.01)
        await wait_until(lambda: servicer.received == 2)
        await asyncio.sleep(0.1)
        assert servicer.received == 2  # never more in flight than the credits
        assert len(sender.queue) == 5  # the queue stays at its bound
        assert drops.counts["queue_full"] == offered - accepted == offered - 7 * 10
    finally:
        await sender.stop()
        await server.stop(0)
    assert drops.counts["dissector_unavailable"] == 5 * 10  # the queue, counted when the sender stops
    assert drops.counts["unacknowledged"] == 2 * 10

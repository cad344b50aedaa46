"""SCTP socket owners through the dissector service: owners read from a procfs tree in the kernel's
format (no live SCTP stack: the kernels here have none) go in as the capture sends them, an eBPF batch
before the packets of a captured SCTP capture, and the entries stored on JetStream name the processes.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.nats import NatsServer
from tests.helpers.pcaps import PCAPS, require_pcaps
from tests.integration.test_ebpf_sockets import stored_entries
from tests.unit.capture.test_ebpf_sctp import HOST_NS, POD_NS, FakeProc, assoc_line, eps_line
from wiretide.capture.sources.ebpf.sctp import SctpOwners
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.common.bus import connect_with_retry
from wiretide.dissector.service import DissectorService, DissectorSettings
from wiretide.proto.v1 import packets_pb2


async def test_the_dissector_service_names_sctp_ends_from_owners_sent_before_the_packets(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    path = PCAPS / "diameter" / "arkime_diameter_synthetic.pcap"
    require_pcaps(path)
    (tmp_path / "proc").mkdir()
    proc = FakeProc(tmp_path / "proc")
    proc.process(100, "hss-client", [5000])
    proc.process(200, "diameterd", [6000, 6001], ns=POD_NS)
    proc.table(HOST_NS, [assoc_line(5000, 47000, 3868, ["*172.16.0.1"], ["*172.16.0.2", "10.9.9.2"])])
    proc.table(
        POD_NS,
        [assoc_line(6001, 3868, 48000, ["*192.168.50.2"], ["*192.168.50.1"])],
        [eps_line(6000, 3868, ["192.168.50.2"])],
    )
    owners = SctpOwners(proc.root, str(tmp_path / "no-cgroup")).scan()
    assert {o.protocol for o in owners} == {132} and len(owners) == 3

    settings = DissectorSettings(node_name="n1", nats_url=nats_server.url, dissector_grpc="127.0.0.1:0")
    service = DissectorService(settings)
    bus = await connect_with_retry(nats_server.url, "dissector-test")
    await service.start(bus)
    try:
        service.ingest(
            packets_pb2.PacketBatch(
                node="edge-1",
                source=packets_pb2.CAPTURE_SOURCE_EBPF_TLS,
                sockets=[o.to_proto() for o in owners],
            )
        )
        batches = list(read_batches(str(path), 4096))
        for seq, cols in enumerate(batches, start=1):
            batch = cols.to_proto("edge-1", packets_pb2.CAPTURE_SOURCE_AF_PACKET, seq=seq)
            batch.end_of_input = seq == len(batches)
            service.ingest(batch)
        entries = await stored_entries(nats_server.url, "edge-1", want=6)
    finally:
        await service.stop()
        await bus.close()
    named = {
        (e["protocol"], e["transport"], e["src"]["port"], (e["src"].get("process") or {}).get("name"),
         (e["dst"].get("process") or {}).get("name"))
        for e in entries
    }  # fmt: skip
    assert named == {
        ("diameter", "tcp", 45000, None, None),
        ("diameter", "tcp", 46000, None, None),
        ("diameter", "sctp", 47000, "hss-client", None),
        ("sctp", "sctp", 47000, "hss-client", None),
        ("diameter", "sctp", 48000, None, "diameterd"),
        ("sctp", "sctp", 48000, None, "diameterd"),
    }

"""The dissector service process: Ingest streams of PacketBatches → pipeline → EntryBatches on NATS.

Rule: the asyncio shell stays thin — it decodes batches, runs the sans-I/O pipeline, hands entries to
one JetStream `BatchPublisher` per capture node, and counts everything it drops; credits shrink while
the publisher is backed up, so a slow NATS slows capture instead of growing memory. A stream gets its
first credits only once the service has started (NATS connected, identities syncing), so nothing it
is sent meanwhile is dissected into entries that have nowhere to go. A batch marked `end_of_input`
closes the node's flows as `wiretide analyze` does at the end of a file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

import grpc
from prometheus_client import Counter, Gauge
from pydantic import field_validator

from wiretide.common.bus import BatchPublisher, Bus, entries_subject
from wiretide.common.bus.entries import encode_entries, unpacked_bytes
from wiretide.common.bus.spool import Spool, SpoolBudget, leftover
from wiretide.common.collector import collect_rarely
from wiretide.common.identity import IdentitySync, IdentityTable
from wiretide.common.packets import PacketColumns
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings
from wiretide.dissector import redact
from wiretide.dissector.pipeline import Limits, Pipeline
from wiretide.dissector.plaintext import PlaintextFlows
from wiretide.dissector.processes import ProcessTable
from wiretide.dissector.protocols import grpc as grpc_protocol
from wiretide.dissector.registry import Registry, default_registry, parse_overrides
from wiretide.proto.v1 import dissector_pb2, dissector_pb2_grpc, packets_pb2

log = logging.getLogger(__name__)

PACKETS = Counter("wiretide_dissector_packets_total", "Packets received over Ingest")
BYTES = Counter("wiretide_dissector_bytes_total", "Captured bytes received over Ingest")
BATCHES = Counter("wiretide_dissector_batches_total", "PacketBatches received over Ingest")
ENTRIES = Counter("wiretide_dissector_entries_total", "Entries produced", ["protocol"])
DROPS = Counter("wiretide_dissector_drops_total", "Packets, flows or entries dropped, by reason", ["reason"])
CAPTURE_DROPS = Counter(
    "wiretide_dissector_capture_dropped_total",
    "Packets the capture side reports it dropped",
    ["node", "reason"],
)
UNDISSECTED = Counter(
    "wiretide_dissector_undissected_packets_total",
    "Packets no entry stands for, by protocol (sctp, arp, icmpv6 neighbour discovery…; a bounded set)",
    ["protocol"],
)
FLOWS = Gauge("wiretide_dissector_flows_active", "Flows in the tables")

# Batches a sender may have in flight per stream (credit-based backpressure).
DEFAULT_CREDITS: Final = 8
MAX_PUBLISH_LINGER_S: Final = 5.0  # an entry waits for company at most this long: beyond it, a stale UI
# How often a held Ingest answer looks again whether the publishers caught up (a JetStream ack takes
# about this long; the wait is per batch, never per packet).
PUBLISH_WAIT_S: Final = 0.002
# Capture nodes one dissector keeps separate flow tables for (the same 5-tuple on two nodes differs).
MAX_NODES: Final = 256
# How often the idle/absolute timeouts run against the wall clock (live capture has no end of file).
SWEEP_EVERY_S: Final = 1.0
SOURCES: Final = {
    packets_pb2.CAPTURE_SOURCE_AF_PACKET: "af_packet",
    packets_pb2.CAPTURE_SOURCE_EBPF_TLS: "ebpf_tls",
    packets_pb2.CAPTURE_SOURCE_PCAP: "pcap",
}


def _ip_and_port_only(end: dict[str, Any]) -> bool:
    """Whether an entry end holds `ip` and `port` alone, in that order (as the pipeline writes it)."""
    return len(end) == 2 and "port" in end and next(iter(end)) == "ip"


def enrich(table: IdentityTable, entries: Sequence[dict[str, Any]]) -> None:
    """Name both ends by who held the address at the entry's time — or, for an end whose process's
    container is known (eBPF on its node), by that container's pod; learn names from DNS answers."""
    for e in entries:
        ts = e["timestamp"]
        for side in ("src", "dst"):
            end = e.get(side)
            if isinstance(end, dict) and end.get("ip"):
                ip, port = end["ip"], end.get("port") or 0
                named = table.endpoint(
                    ip if type(ip) is str else str(ip), port if type(port) is int else int(port), ts
                )
                process = end.get("process")
                if process is not None:  # seen by eBPF on this node
                    # Its container names the pod, whoever else shares the address (host network).
                    cid = process.get("container_id") if isinstance(process, dict) else None
                    pod = table.container(cid, ts) if isinstance(cid, str) and cid else None
                    if pod is not None:
                        named = {**named, **pod, "process": process, "resolution": "container"}
                    elif named.get("process") is None:
                        named = {**named, "process": process}
                # `named` is a fresh dict that begins with ip and port: when the end holds only them,
                # it is the merge itself, and the copy is saved.
                e[side] = named if _ip_and_port_only(end) else {**end, **named}
        if e["protocol"] == "dns":
            response = e.get("response")
            for answer in response.get("answers", ()) if isinstance(response, dict) else ():
                if isinstance(answer, dict) and answer.get("type") in ("A", "AAAA"):
                    table.learn_dns(
                        str(answer.get("name", "")),
                        str(answer.get("data", "")),
                        ts,
                        int(answer.get("ttl") or 0),
                    )


class DissectorSettings(CommonSettings):
    dissector_credits: int = DEFAULT_CREDITS
    dissector_max_flows: int = 100_000  # per transport and capture node
    dissector_body_cap: int = 64 * 1024  # body bytes kept per message and direction
    dissector_ports: str = ""  # explicit overrides, e.g. "8443=http,5300=dns"
    dissector_tcp_idle_s: float = 300.0
    dissector_udp_idle_s: float = 30.0
    dissector_grpc_descriptors: str = ""  # directory of *.pb/*.desc/*.protoset descriptor sets

    @field_validator("dissector_grpc_descriptors")
    @classmethod
    def _descriptors(cls, value: str) -> str:
        if value and not os.path.isdir(value):
            raise ValueError(f"not a directory: {value!r}")
        return value

    # Entries per NATS message at most: fewer when that many would not fit in one (the publisher fills a
    # message to 80% of the server's max_payload: ~600 HTTP calls of 1.2 KB)...
    dissector_publish_items: int = 2_000
    # ...sent as soon as a message's worth is waiting, else once this long has passed: what publishing
    # adds to an entry's way to the live view and the store (at most twice this: an entry left over
    # after full messages went out at the end of a burst waits one more linger).
    dissector_publish_linger_s: float = 0.1
    # Entries travel packed (one Zstandard frame per message; EntryBatch version 3). false: unpacked, as
    # version 2, which consumers from before packing read too (during a rolling upgrade).
    dissector_pack: bool = True
    # Entries held in memory while NATS is away or slow (~3 KB each as documents: ~60 MB), then spooled.
    dissector_max_buffered: int = 20_000
    # Bytes of encoded entries spooled on disk (under the data dir) beyond that, for every capture node
    # together; past it entries are dropped and counted. 0: no spool (drop past memory).
    dissector_spool_bytes: int = 1024**3
    # Redaction at the source (redact.py; docs/security.md, "Redaction"): names are comma-separated,
    # `*` matches any run of characters; the rules file (YAML or JSON) is read once, at start-up.
    dissector_redact: bool = True  # false: entries keep every value as captured
    dissector_redact_defaults: bool = True  # the built-in rules (credentials, cookies, passwords, keys)
    dissector_redact_rules: str = ""  # a rules file added to the above
    dissector_redact_headers: str = ""  # header and gRPC metadata names
    dissector_redact_cookies: str = ""
    dissector_redact_query: str = ""  # query parameter names
    dissector_redact_keys: str = ""  # JSON keys (any depth), form fields, GraphQL variables, gRPC fields

    @field_validator("dissector_redact_rules")
    @classmethod
    def _redact_rules(cls, value: str) -> str:
        if value:
            try:
                text = Path(value).read_text()
            except OSError as exc:
                raise ValueError(f"cannot read the rules file: {exc}") from None
            try:
                redact.parse_rules_text(text, redact.is_yaml(value))
            except redact.RulesError as exc:
                raise ValueError(f"{value}: {exc}") from None
        return value

    def redaction_rules(self) -> redact.Rules:
        """The redaction rules these settings describe (the rules file read here, once)."""
        path = self.dissector_redact_rules
        return redact.rules_from_settings(
            enabled=self.dissector_redact,
            defaults=self.dissector_redact_defaults,
            rules_file=(Path(path).read_text(), redact.is_yaml(path)) if path else None,
            headers=self.dissector_redact_headers,
            cookies=self.dissector_redact_cookies,
            query=self.dissector_redact_query,
            keys=self.dissector_redact_keys,
        )

    @field_validator("dissector_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        parse_overrides(value)
        return value

    @field_validator("dissector_publish_linger_s")
    @classmethod
    def _linger(cls, value: float) -> float:
        if not 0 < value <= MAX_PUBLISH_LINGER_S:
            raise ValueError(f"must be more than 0 and at most {MAX_PUBLISH_LINGER_S} s")
        return value

    @field_validator(
        "dissector_credits", "dissector_max_flows", "dissector_publish_items", "dissector_max_buffered"
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("dissector_body_cap", "dissector_spool_bytes")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0")
        return value


class DissectorApi(dissector_pb2_grpc.DissectorServiceServicer):
    def __init__(self, service: DissectorService) -> None:
        self.service = service

    async def Ingest(
        self,
        request_iterator: AsyncIterator[dissector_pb2.IngestRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[dissector_pb2.IngestResponse]:
        service = self.service
        # A sender waits for this first answer before it counts the stream as ready: hold it (and the
        # batches the sender may already have written) until the service can publish what it finds.
        await service.started.wait()
        yield dissector_pb2.IngestResponse(acked_seq=0, credits=service.credits())
        async for req in request_iterator:
            service.ingest(req.batch)
            await service.publish_room()
            yield dissector_pb2.IngestResponse(acked_seq=req.batch.seq, credits=service.credits())
            await asyncio.sleep(0)  # let the publishers run between batches

    async def GetStats(
        self, request: dissector_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> dissector_pb2.GetStatsResponse:
        s = self.service
        return dissector_pb2.GetStatsResponse(
            packets=s.packets,
            bytes=s.bytes,
            flows_active=s.flows_active(),
            entries=s.entries,
            drops=s.all_drops(),
            undissected=s.undissected,
        )


class DissectorService(Service):
    name = "dissector"
    settings_cls = DissectorSettings

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, DissectorSettings)
        self.cfg = settings
        self.registry: Registry = default_registry(parse_overrides(settings.dissector_ports))
        self.limits = Limits(
            max_flows=settings.dissector_max_flows,
            tcp_idle_ns=int(settings.dissector_tcp_idle_s * 1e9),
            udp_idle_ns=int(settings.dissector_udp_idle_s * 1e9),
            body_cap=settings.dissector_body_cap,
        )
        self.pipelines: dict[str, Pipeline] = {}
        self.plaintext: dict[str, PlaintextFlows] = {}  # eBPF TLS plaintext, per node, beside its pipeline
        self.processes: dict[str, ProcessTable] = {}  # eBPF socket owners, per node (processes.py)
        # gRPC message schemas from descriptor sets dropped into a directory (read once).
        self.schemas = (
            grpc_protocol.SchemaStore.from_directory(settings.dissector_grpc_descriptors)
            if settings.dissector_grpc_descriptors
            else None
        )
        # Compiled once; every node's pipeline shares it (its name caches are per rule, not per flow).
        self.redactor = redact.Redactor(settings.redaction_rules())
        self.publishers: dict[str, BatchPublisher[dict[str, Any]]] = {}  # by subject
        self.producer = f"dissector-{socket.gethostname()}-{os.getpid()}"
        self.packets = 0
        self.bytes = 0
        self.entries = 0
        self.drops: dict[str, int] = {}
        # Packets no entry stands for, by protocol, over every node's pipeline since start-up (a
        # pipeline's own counter goes with it at the end of a replayed file).
        self.undissected: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.identity: IdentitySync | None = None
        self._fed_at: dict[str, int] = {}
        self.started = asyncio.Event()
        # One spool directory per dissector endpoint on this data dir; one budget for all its nodes.
        endpoint = settings.dissector_endpoints[0].rsplit(":", 1)[-1] if settings.dissector_endpoints else "0"
        self.spool_dir = settings.data_dir / "spool" / f"dissector-{endpoint}"
        self.spool_budget = SpoolBudget(settings.dissector_spool_bytes)

    def register(self, server: grpc.aio.Server) -> None:
        dissector_pb2_grpc.add_DissectorServiceServicer_to_server(DissectorApi(self), server)

    async def start(self, bus: Bus) -> None:
        self.bus = bus
        collect_rarely()
        # The local copy of the resolver's identity table: lookups during enrichment never leave
        # the process; it syncs in the background (snapshot, then deltas) and survives the resolver.
        self.identity = IdentitySync(
            bus,
            self.settings.resolver_grpc,
            transport=self.settings.transport,
            metadata=self.auth.call_metadata(),
        )
        await self.identity.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="dissector-sweep")
        if self.cfg.dissector_spool_bytes:
            for subject in leftover(self.spool_dir):  # what an earlier process spooled: delivered first
                self._publisher(subject.rpartition(".")[2])  # the subject's node token names it again
        self.started.set()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for node, pipeline in self.pipelines.items():
            flows = self.plaintext.get(node)
            self._publish(node, [*(flows.finish() if flows is not None else ()), *pipeline.finish()])
        for pub in self.publishers.values():
            await pub.close()
        if self.identity is not None:
            await self.identity.stop()

    def enrich(self, entries: Sequence[dict[str, Any]]) -> None:
        if self.identity is not None:
            enrich(self.identity.table, entries)

    # ---- the work ---------------------------------------------------------------------------

    def backed_up(self) -> bool:
        return any(p.backed_up for p in self.publishers.values())

    def credits(self) -> int:
        return 1 if self.backed_up() else self.cfg.dissector_credits

    async def publish_room(self) -> None:
        """Hold a stream's answer (and with it the sender's credits) while a publisher is backed up: a
        burst then waits upstream as packets (the capture's queue, then the kernel ring), never here as
        entries beyond the publisher's bound, so nothing is dropped for a full publish buffer."""
        while self.backed_up():  # noqa: ASYNC110 - the publishers' buffers drain in their own tasks
            await asyncio.sleep(PUBLISH_WAIT_S)

    def _count_drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n
        DROPS.labels(reason).inc(n)

    def _pipeline(self, node: str) -> Pipeline | None:
        pipeline = self.pipelines.get(node)
        if pipeline is None:
            if len(self.pipelines) >= MAX_NODES:
                return None
            pipeline = self.pipelines[node] = Pipeline(
                self.registry, node=node, limits=self.limits, schemas=self.schemas, redactor=self.redactor
            )
        return pipeline

    def ingest(self, batch: packets_pb2.PacketBatch) -> None:
        """One batch through the pipeline; its entries go to the node's publisher. At the end of an
        input (a replayed file) every flow of the node is closed and its tables start afresh, so each
        file gives exactly the entries `wiretide analyze` gives for it."""
        n = len(batch.caplens)
        self.packets += n
        self.bytes += len(batch.data)
        PACKETS.inc(n)
        BYTES.inc(len(batch.data))
        BATCHES.inc()
        node = batch.node or self.settings.node_name
        for reason, count in batch.dropped.items():
            CAPTURE_DROPS.labels(node, reason).inc(count)
        cols = PacketColumns.from_proto(batch)
        if not cols.consistent():
            self._count_drop("bad_batch", n)
            return
        pipeline = self._pipeline(node)
        if pipeline is None:
            self._count_drop("too_many_nodes", n)
            return
        if n or not (batch.plaintext or batch.sockets):  # an eBPF-only batch: plaintext.py names its own
            pipeline.source = SOURCES.get(batch.source, "af_packet")
        if batch.sockets:  # before the packets: an owner comes before its connection's later packets
            table = self.processes.get(node)
            if table is None:
                table = self.processes[node] = ProcessTable()
            evicted = table.evicted
            table.learn(batch.sockets)
            if table.evicted != evicted:
                self._count_drop("process_table_evicted", table.evicted - evicted)
        before = dict(pipeline.drops)
        counted = dict(pipeline.undissected)
        entries = pipeline.feed(cols) if n else []
        for proto, count in pipeline.undissected.items():
            if count != counted.get(proto, 0):
                delta = count - counted.get(proto, 0)
                UNDISSECTED.labels(proto).inc(delta)
                self.undissected[proto] = self.undissected.get(proto, 0) + delta
        if batch.plaintext:
            flows = self.plaintext.get(node)
            if flows is None:
                flows = self.plaintext[node] = PlaintextFlows(pipeline)
            entries = [*entries, *flows.feed(batch.plaintext)]
        flows = self.plaintext.get(node)
        if flows is not None and entries:  # eBPF on: a decrypted connection's `tls` entry is folded
            entries = flows.fold(entries, time.time_ns())
        self._fed_at[node] = time.monotonic_ns()
        if batch.end_of_input:
            flows = self.plaintext.pop(node, None)
            entries = [*entries, *(flows.finish() if flows is not None else ()), *pipeline.finish()]
            del self.pipelines[node]
            del self._fed_at[node]
        for reason, count in pipeline.drops.items():
            delta = count - before.get(reason, 0)
            if delta:
                self._count_drop(reason, delta)
        self._publish(node, entries)
        FLOWS.set(self.flows_active())

    def _publish(self, node: str, entries: Sequence[dict[str, Any]]) -> None:
        if not entries:
            return
        table = self.processes.get(node)
        if table is not None:
            table.name(entries)
        self.enrich(entries)
        self.entries += len(entries)
        # Counted per protocol, then added once each: a labelled counter's increment takes a lock and
        # a lookup (about 1 µs), which per entry was a twentieth of the entry's own dissection.
        counts: dict[str, int] = {}
        for e in entries:
            proto = e["protocol"]
            counts[proto] = counts.get(proto, 0) + 1
        for proto, n in counts.items():
            ENTRIES.labels(proto).inc(n)
        if self.bus is None:
            self._count_drop("no_bus", len(entries))
            return
        self._publisher(node).extend(entries)

    def _publisher(self, node: str) -> BatchPublisher[dict[str, Any]]:
        """The publisher of a node's subject (keyed by subject: one spool file, one writer)."""
        subject = entries_subject(node)
        pub = self.publishers.get(subject)
        if pub is not None:
            return pub
        assert self.bus is not None
        producer = self.producer
        pack = self.cfg.dissector_pack

        def encode(items: Sequence[dict[str, Any]], seq: int, node: str = node) -> tuple[bytes, str, int]:
            # A message is filled by what its entries hold unpacked: what each consumer holds of it.
            data = encode_entries(items, node, producer, seq, pack)
            return data, f"{producer}-{node}-{seq}", unpacked_bytes(data)

        subject = entries_subject(node)
        spool = Spool(self.spool_dir, subject, self.spool_budget) if self.cfg.dissector_spool_bytes else None
        pub = self.publishers[subject] = BatchPublisher(
            self.bus,
            subject,
            encode,
            max_items=self.cfg.dissector_publish_items,
            max_delay_s=self.cfg.dissector_publish_linger_s,
            max_buffered=self.cfg.dissector_max_buffered,
            spool=spool,
        )
        pub.start()
        return pub

    async def _sweep_loop(self) -> None:
        failure = ""
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                self._sweep()
            except Exception as exc:  # a defect met by some flow: the next sweep tries again
                self._count_drop("sweep_failed")
                if f"{type(exc).__name__}: {exc}" != failure:  # said once per reason, counted always
                    log.exception("idle flows not swept")
                failure = f"{type(exc).__name__}: {exc}"

    def _sweep(self) -> None:
        mono = time.monotonic_ns()
        for node, pipeline in list(self.pipelines.items()):
            # Capture time moves on with the wall clock since the last batch (replays keep their own).
            now = pipeline.now + (mono - self._fed_at.get(node, mono))
            self._publish(node, pipeline.flush_idle(now))
            flows = self.plaintext.get(node)
            if flows is not None:  # chunks carry the wall clock (the kernel's, moved to the epoch)
                self._publish(node, flows.flush_idle(time.time_ns()))
        FLOWS.set(self.flows_active())

    def flows_active(self) -> int:
        return sum(p.active_flows for p in self.pipelines.values())

    def all_drops(self) -> dict[str, int]:
        out = dict(self.drops)
        for pub in self.publishers.values():
            if pub.dropped:  # past memory and the spool (or too large for a NATS message)
                out["publish_buffer_full"] = out.get("publish_buffer_full", 0) + pub.dropped
        return out

"""The capture service process: sources → flow sharding → dissector streams, a pcapng recorder of
everything captured, and control (status, snapshots) over gRPC.

Rule: the service stays up and SERVING whatever its surroundings lack — capture privileges,
interfaces, reachable dissectors — and counts and reports what it therefore cannot do. A burst is
buffered where it costs least: the capture reads its rings a block at a time while the queues to the
dissectors have room, and stops reading while they do not, so the kernel ring holds the rest; only
what overflows the ring is lost, counted by the kernel. A replay is the
exception that may wait: a file is not a NIC, so it sends nothing until its consumers are there (every
dissector answering, every named durable consumer of the entries in place), saying what it waits for,
and it ends each file with an end-of-input mark so the dissectors close that file's flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc
from nats.errors import Error as NatsError
from pydantic import ValidationInfo, field_validator

from wiretide.capture import metrics
from wiretide.capture.bpf import FilterError, OfflineFilter, combine, compile_bpf, structured_expression
from wiretide.capture.edges import EdgePublisher
from wiretide.capture.interfaces import Selection
from wiretide.capture.live import LiveCapture
from wiretide.capture.recorder import SNAPSHOT_INLINE_MAX, Recorder, RecorderLimits
from wiretide.capture.sender import (
    DEFAULT_QUEUE_BATCHES,
    DEFAULT_QUEUE_BYTES,
    HIGH_WATER,
    UNAVAILABLE,
    SenderPool,
)
from wiretide.capture.shard import HashRing, Sharder
from wiretide.capture.sources.afpacket import DEFAULT_SNAPLEN, FANOUT_MODES, RingConfig
from wiretide.capture.sources.ebpf.feed import EbpfFeed
from wiretide.capture.sources.ebpf.report import Scanner
from wiretide.capture.sources.ebpf.source import Chunk, SocketOwner
from wiretide.capture.sources.pcapfile import PcapError, read_batches
from wiretide.capture.targeting import Targeting
from wiretide.common import nodes
from wiretide.common.auth import Role, current_principal
from wiretide.common.bus import ENTRIES_STREAM, Bus
from wiretide.common.identity import IdentitySync
from wiretide.common.packets import IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, PacketColumns, flow_hash
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings, parse_hostport
from wiretide.common.targets import TargetSpec
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc, packets_pb2

log = logging.getLogger(__name__)

STATS_INTERVAL_S: Final = 1.0
MIB: Final = 1 << 20
# Ring blocks read per wake-up, each then sent on as its own batch: a batch never holds more frame
# bytes than a block, and the queues' room is checked again before the next block (sender.HIGH_WATER),
# so a queue past its high-water mark grows by at most one block before the capture stops reading.
DRAIN_BLOCKS: Final = 1
# The queue above the high-water mark must hold what one more wake-up adds, with a block to spare.
HEADROOM_BLOCKS: Final = 2
# The defaults of the ring (per captured interface) and of the queue to each dissector: what a burst
# of 200k small keep-alive calls (~2 s at ~90k calls/s, ~100 MB of frames) needs while the dissector
# catches up, within a capture budget of 300 MB RSS. See README "Speed".
DEFAULT_RING_MB: Final = 64
DEFAULT_BLOCK_KB: Final = 1024
DEFAULT_QUEUE_MB: Final = DEFAULT_QUEUE_BYTES // MIB
# Live capture runs at this niceness: it is the one stage that cannot wait (what the ring cannot hold
# is lost), while everything after it can (queues, JetStream); its CPU is bounded by the traffic.
DEFAULT_NICE: Final = -5
# A waiting replay says what it waits for this often: often enough that nobody thinks it hangs.
REPLAY_NOTE_EVERY_S: Final = 3.0
# How often a waiting replay looks at its consumers again (a JetStream API call per named consumer).
REPLAY_POLL_S: Final = 0.1


class CaptureSettings(CommonSettings):
    """`WIRETIDE_CAPTURE_*`: what to capture, how, where to send it and what to keep."""

    capture_interfaces: str = "auto"  # auto | any | comma-separated names/globs
    capture_include_loopback: bool = False
    capture_bpf: str = ""
    capture_ports: str = ""  # comma-separated; compiled into the BPF filter
    capture_cidrs: str = ""  # comma-separated; compiled into the BPF filter
    capture_snaplen: int = DEFAULT_SNAPLEN
    capture_ring_mb: int = DEFAULT_RING_MB
    capture_block_kb: int = DEFAULT_BLOCK_KB
    capture_promisc: bool = False
    capture_fanout_group: int = 0
    capture_fanout_mode: str = "hash"
    capture_nice: int = DEFAULT_NICE  # live capture only; needs CAP_SYS_NICE to go below 0
    # Replay these files (separated like PATH, by os.pathsep), one after the other, instead of capturing.
    capture_pcap: str = ""
    capture_pace: bool = False
    # A replay waits at most this long for its consumers before it starts (0: as long as it takes).
    capture_replay_wait_s: float = 0.0
    # Comma-separated durable consumers of the entries stream a replay waits for (`up` names the store's).
    capture_replay_consumers: str = ""
    capture_flush_ms: int = 100  # batches leave at least this often
    capture_batch_packets: int = 2048  # or when this many packets wait for one endpoint
    capture_queue_batches: int = DEFAULT_QUEUE_BATCHES
    capture_queue_mb: int = DEFAULT_QUEUE_MB
    capture_dns_refresh_s: float = 0.0  # > 0: resolve endpoint host names (headless Service) this often
    capture_rescan_s: float = 2.0
    # The address other services reach this node's capture at (its recorder holds this node's packets);
    # empty: WIRETIDE_CAPTURE_GRPC. In a cluster the pod's own address (the DaemonSet sets it).
    capture_advertise_grpc: str = ""
    capture_record: bool = True
    capture_recorder_dir: Path | None = None  # default: <data_dir>/capture/recordings
    capture_recorder_file_mb: int = 64
    capture_recorder_max_mb: int = 1024
    capture_recorder_file_age_s: float = 300.0
    capture_recorder_max_age_s: float = 3600.0
    # TLS plaintext read from the processes' OpenSSL calls (docs/ebpf.md); live capture only, root.
    capture_ebpf: bool = False
    # With eBPF on: which inbound request each thread was serving when it made an outbound call, for
    # the tracer's `syscall` links (docs/ebpf.md, "Causality").
    capture_ebpf_causality: bool = True

    @field_validator("capture_bpf")
    @classmethod
    def _bpf(cls, value: str) -> str:
        if value:
            compile_bpf(value)
        return value

    @field_validator("capture_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        structured_expression(_ints(value))
        return value

    @field_validator("capture_cidrs")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for part in _items(value):
            ipaddress.ip_network(part, strict=False)
        return value

    @field_validator("capture_pcap")
    @classmethod
    def _pcap(cls, value: str) -> str:
        for path in _paths(value):
            if not path.is_file():
                raise ValueError(f"{path}: no such file")
        return value

    @field_validator("capture_interfaces")
    @classmethod
    def _interfaces(cls, value: str) -> str:
        Selection.parse(value)
        return value

    @field_validator("capture_queue_mb")
    @classmethod
    def _queue(cls, value: int, info: ValidationInfo) -> int:
        block = int(info.data.get("capture_block_kb", DEFAULT_BLOCK_KB)) * 1024
        if value * MIB * (1 - HIGH_WATER) < HEADROOM_BLOCKS * block:
            need = -(-HEADROOM_BLOCKS * block // int(MIB * (1 - HIGH_WATER)))
            raise ValueError(
                f"must be at least {need} with WIRETIDE_CAPTURE_BLOCK_KB={block // 1024}: capture stops "
                f"reading at {HIGH_WATER:.0%} of the queue and needs {HEADROOM_BLOCKS} blocks above it"
            )
        return value

    @field_validator("capture_nice")
    @classmethod
    def _nice(cls, value: int) -> int:
        if not -20 <= value <= 19:
            raise ValueError("must be -20..19 (a niceness)")
        return value

    @field_validator("capture_fanout_mode")
    @classmethod
    def _fanout(cls, value: str) -> str:
        if value not in FANOUT_MODES:
            raise ValueError(f"must be one of {sorted(FANOUT_MODES)}")
        return value

    def filter_expression(self) -> str:
        return combine(
            self.capture_bpf, structured_expression(_ints(self.capture_ports), _items(self.capture_cidrs))
        )

    def pcap_files(self) -> list[Path]:
        return _paths(self.capture_pcap)

    def replay_consumers(self) -> list[str]:
        return _items(self.capture_replay_consumers)

    def ring_config(self) -> RingConfig:
        config = RingConfig(
            ring_bytes=self.capture_ring_mb * MIB,
            block_size=self.capture_block_kb * 1024,
            snaplen=self.capture_snaplen,
            promisc=self.capture_promisc,
            fanout_group=self.capture_fanout_group,
            fanout_mode=self.capture_fanout_mode,
            bpf=self.filter_expression(),
        )
        config.check()
        return config

    def recorder_limits(self) -> RecorderLimits:
        limits = RecorderLimits(
            file_bytes=self.capture_recorder_file_mb * MIB,
            file_age_s=self.capture_recorder_file_age_s,
            max_bytes=self.capture_recorder_max_mb * MIB,
            max_age_s=self.capture_recorder_max_age_s,
        )
        limits.check()
        return limits

    def recorder_path(self) -> Path:
        return self.capture_recorder_dir or self.data_dir / "capture" / "recordings"

    def snapshot_dir(self) -> Path:
        return self.data_dir / "capture" / "snapshots"


def _set_nice(nice: int) -> None:
    """Every thread's niceness (Linux keeps one per thread: the event loop reads the rings, gRPC's own
    threads send); threads started later inherit it. Without the privilege, said once."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    try:
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.warning("cannot set the capture's priority", extra={"nice": nice, "error": str(exc)})


def _items(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _ints(text: str) -> list[int]:
    return [int(p) for p in _items(text)]


def _paths(text: str) -> list[Path]:
    return [Path(p) for p in text.split(os.pathsep) if p.strip()]


@dataclass(slots=True)
class ReplayProgress:
    """Where a replay stands (GetStatus.replay): what it waits for, files sent, what the filter left out."""

    files: list[Path]
    files_done: int = 0
    waiting_for: list[str] = field(default_factory=list)
    done: bool = False
    errors: list[str] = field(default_factory=list)
    filtered: int = 0


async def resolve_endpoints(endpoints: list[str], dns: bool) -> list[str]:
    """host:port endpoints; with `dns`, names become one endpoint per address they resolve to."""
    if not dns:
        return list(endpoints)
    loop = asyncio.get_running_loop()
    out: set[str] = set()
    for ep in endpoints:
        host, port = parse_hostport(ep)
        try:
            ipaddress.ip_address(host)
            out.add(ep)
            continue
        except ValueError:
            pass
        try:
            infos = await loop.getaddrinfo(host, port, type=0, proto=6)
        except OSError as exc:
            log.warning("cannot resolve dissector endpoint", extra={"endpoint": ep, "error": str(exc)})
            continue
        for info in infos:
            addr = str(info[4][0])
            out.add(f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}")
    return sorted(out)


class CaptureControl(capture_pb2_grpc.CaptureServiceServicer):
    def __init__(self, service: CaptureService) -> None:
        self.service = service

    async def GetStatus(
        self, request: capture_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> capture_pb2.GetStatusResponse:
        return self.service.status()

    async def Snapshot(
        self, request: capture_pb2.CaptureServiceSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> capture_pb2.CaptureServiceSnapshotResponse:
        if not request.flow_id and current_principal().role < Role.ADMIN:  # every packet recorded
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a snapshot of every flow needs admin")
        recorder = self.service.recorder
        if recorder is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the recorder is off (WIRETIDE_CAPTURE_RECORD)"
            )
        assert recorder is not None
        if request.bpf:
            try:
                compile_bpf(request.bpf)
            except FilterError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        out = self.service.settings_c.snapshot_dir() / f"snapshot-{time.time_ns()}.pcapng"
        snap = await asyncio.to_thread(
            recorder.snapshot, out, request.start_ns, request.end_ns, request.bpf, request.flow_id
        )
        data = b""
        if request.inline:
            size = snap.path.stat().st_size
            if size > SNAPSHOT_INLINE_MAX:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"snapshot is {size} bytes, more than {SNAPSHOT_INLINE_MAX} inline; fetch {snap.path}",
                )
            data = snap.path.read_bytes()
        return capture_pb2.CaptureServiceSnapshotResponse(
            path=str(snap.path), packets=snap.packets, data=data
        )

    async def TlsReport(
        self, request: capture_pb2.TlsReportRequest, context: grpc.aio.ServicerContext
    ) -> capture_pb2.TlsReportResponse:
        return await self.service.tls_report()


class CaptureService(Service):
    name = "capture"
    settings_cls = CaptureSettings

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, CaptureSettings)
        self.settings_c = settings
        self.interfaces: list[tuple[str, int]] = []
        self.sharder = Sharder(HashRing.of([]), self.interfaces)
        self.pool: SenderPool | None = None
        self.live: LiveCapture | None = None
        self.recorder: Recorder | None = None
        self.drops: dict[str, int] = {}
        self.captured_packets = 0
        self.captured_bytes = 0
        self.replay: ReplayProgress | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: set[int] = set()
        self.paused = False  # the queues to the dissectors are full: the rings hold what comes
        self.ebpf: EbpfFeed | None = None
        self.targeting: Targeting | None = None
        self.tls_scanner: Scanner | None = None
        self.edges: EdgePublisher | None = None

    def register(self, server: grpc.aio.Server) -> None:
        capture_pb2_grpc.add_CaptureServiceServicer_to_server(CaptureControl(self), server)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, bus: Bus) -> None:
        s = self.settings_c
        source = packets_pb2.CAPTURE_SOURCE_PCAP if s.capture_pcap else packets_pb2.CAPTURE_SOURCE_AF_PACKET
        self.pool = SenderPool(
            s.node_name,
            source,
            self._on_endpoints,
            max_batches=s.capture_queue_batches,
            max_bytes=s.capture_queue_mb * MIB,
            transport=s.transport,
            metadata=self.auth.call_metadata(),
        )
        self.pool.on_room = self._resume
        if s.capture_record:
            self.recorder = Recorder(s.recorder_path(), s.node_name, s.recorder_limits())
        await self.pool.set_endpoints(
            await resolve_endpoints(s.dissector_endpoints, s.capture_dns_refresh_s > 0)
        )
        if s.capture_dns_refresh_s > 0:
            self._spawn(self._refresh_dns(), "dns refresh")
        if s.capture_pcap:
            self.replay = ReplayProgress(s.pcap_files())
            self._spawn(self._replay(self.replay), "replay")
        else:
            _set_nice(s.capture_nice)
            self.live = LiveCapture(
                Selection.parse(s.capture_interfaces, s.capture_include_loopback),
                s.ring_config(),
                self.interfaces,
            )
            self._rescan()
            live = self.live
            self.targeting = Targeting(
                s.node_name,
                s.filter_expression(),
                live.set_filter,
                lambda: IdentitySync(
                    bus, s.resolver_grpc, transport=s.transport, metadata=self.auth.call_metadata()
                ),
                TargetSpec.from_settings(s),
            )
            await self.targeting.start(bus.js)
            self._spawn(self._rescan_loop(), "rescan")
            self._spawn(self._stats_loop(), "stats")
            if s.capture_ebpf:
                self.ebpf = EbpfFeed(
                    self._on_plaintext, asyncio.get_running_loop(), on_sockets=self._on_sockets
                )
                self.ebpf.start()
                if s.capture_ebpf_causality:
                    tls = self.ebpf  # BCC compiles one program at a time: after the TLS source's
                    loaded = lambda: tls.running or bool(tls.error)  # noqa: E731
                    self.edges = EdgePublisher(s.node_name, bus, asyncio.get_running_loop(), after=loaded)
                    self.edges.start()
        self._spawn(self._flush_loop(), "flush")
        self._spawn(self._advertise_loop(bus), "advertise")

    def ebpf_state(self) -> str:
        """Why the eBPF source reads nothing ("" while it runs)."""
        if not self.settings_c.capture_ebpf:
            return "the eBPF source is off (WIRETIDE_CAPTURE_EBPF=true, `wiretide up --ebpf`)"
        if self.ebpf is None:
            return "the eBPF source runs only with live capture, not on a replay"
        if self.ebpf.error:
            return f"the eBPF source is unavailable: {self.ebpf.error}"
        return "" if self.ebpf.running else "the eBPF source is starting"

    def _hooked_files(self) -> dict[str, bool]:
        return {h.path: bool(h.functions) for h in self.ebpf.hooks} if self.ebpf is not None else {}

    async def tls_report(self) -> capture_pb2.TlsReportResponse:
        if self.tls_scanner is None:
            self.tls_scanner = Scanner(hooks=self._hooked_files, source_state=self.ebpf_state)
        processes, truncated = await asyncio.to_thread(self.tls_scanner.scan)
        state = self.ebpf_state()
        resp = capture_pb2.TlsReportResponse(
            node=self.settings_c.node_name, ebpf_running=not state, ebpf_state=state, truncated=truncated
        )
        for p in processes:
            resp.processes.append(
                capture_pb2.TlsProcess(
                    pid=p.pid,
                    comm=p.comm,
                    exe=p.exe,
                    container_id=p.container_id,
                    libraries=[
                        capture_pb2.TlsLibrary(
                            kind=lib.kind,
                            path=lib.path,
                            version=lib.version,
                            hooked=lib.hooked,
                            reason=lib.reason,
                        )
                        for lib in p.libraries
                    ],
                )
            )
        return resp

    async def _advertise_loop(self, bus: Bus) -> None:
        """Keep this node in the per-node registry (common/nodes.py) while it runs."""
        s = self.settings_c
        address = s.capture_advertise_grpc or s.capture_grpc
        kv = None
        while True:
            try:
                kv = kv or await nodes.open_bucket(bus.js)
                await nodes.advertise(kv, s.node_name, address)
            except Exception as exc:  # NATS away: the next round tries again
                kv = None
                log.debug(
                    "cannot advertise the capture node", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
            await asyncio.sleep(nodes.REFRESH_S)

    def _spawn(self, coro: object, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))  # type: ignore[arg-type]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._remove_readers()
        if self.targeting is not None:
            await self.targeting.stop()
        if self.live is not None:
            self.live.close()
        if self.ebpf is not None:
            await asyncio.to_thread(self.ebpf.close)
        if self.edges is not None:
            await asyncio.to_thread(self.edges.close)
        self._flush()
        if self.pool is not None:
            await self.pool.drain(1.0)
            await self.pool.close()
        if self.recorder is not None:
            self.recorder.close()

    # -- routing -----------------------------------------------------------------------------

    def _on_endpoints(self, healthy: list[str]) -> None:
        if list(self.sharder.ring.endpoints) != sorted(healthy):
            log.info("rebalancing", extra={"endpoints": healthy})
            self.sharder.set_ring(HashRing.of(healthy))

    async def _refresh_dns(self) -> None:
        s = self.settings_c
        while True:
            await asyncio.sleep(s.capture_dns_refresh_s)
            endpoints = await resolve_endpoints(s.dissector_endpoints, True)
            if endpoints and self.pool is not None and set(endpoints) != set(self.pool.senders):
                await self.pool.set_endpoints(endpoints)

    def _count_drop(self, reason: str, packets: int) -> None:
        if packets:
            self.drops[reason] = self.drops.get(reason, 0) + packets
            metrics.DROPPED.labels(reason).inc(packets)

    def _flush(self) -> None:
        """Hand every built batch to its endpoint and to the recorder."""
        for cols in self.sharder.orphaned():
            self._record(cols)
            self._count_drop(UNAVAILABLE, len(cols))
        for endpoint, cols in self.sharder.take():
            self._record(cols)
            if not endpoint or self.pool is None:
                self._count_drop(UNAVAILABLE, len(cols))
            else:
                self.pool.offer(endpoint, cols)
        if self.live is not None and self.pool is not None and not self.paused and not self.pool.has_room:
            self._pause()

    def _record(self, cols: PacketColumns) -> None:
        if self.recorder is not None:
            try:
                self.recorder.write(cols)
            except OSError as exc:
                self._count_drop("recorder_error", len(cols))
                log.warning("recorder write failed", extra={"error": str(exc)})

    async def _flush_loop(self) -> None:
        interval = self.settings_c.capture_flush_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self._flush()

    def _on_plaintext(self, chunks: list[Chunk]) -> None:
        """eBPF chunks to the dissector that owns their connection's packets (same flow hash)."""
        ring = self.sharder.ring
        if not ring.endpoints or self.pool is None:
            self._count_drop("ebpf_dissector_unavailable", len(chunks))
            return
        by_endpoint: dict[str, list[packets_pb2.PlaintextChunk]] = {}
        for c in chunks:
            owner = ring.owner(flow_hash(c.src_ip, c.src_port, c.dst_ip, c.dst_port, IPPROTO_TCP))
            by_endpoint.setdefault(owner, []).append(c.to_proto())
        for endpoint, protos in by_endpoint.items():
            self.pool.offer_plaintext(endpoint, protos)

    def _on_sockets(self, sockets: list[SocketOwner]) -> None:
        """eBPF socket owners to the dissector that owns their connection's packets, queued before
        the packets that follow (the dissector names packet entries' processes by them)."""
        ring = self.sharder.ring
        if not ring.endpoints or self.pool is None:
            self._count_drop("ebpf_dissector_unavailable", len(sockets))
            return
        by_endpoint: dict[str, list[packets_pb2.SocketOwner]] = {}
        for s in sockets:
            proto = s.to_proto()
            if s.protocol == IPPROTO_UDP and not any(s.local_ip):
                # Bound to any address: its packets carry the real local address, so their flows
                # hash elsewhere than this owner would; every dissector learns it.
                for endpoint in ring.endpoints:
                    by_endpoint.setdefault(endpoint, []).append(proto)
                continue
            # Hashed as the sharder hashes the flow's packets: an SCTP owner (one per address pair of
            # its association) goes where that pair's packets go.
            transport = s.protocol if s.protocol in (IPPROTO_UDP, IPPROTO_SCTP) else IPPROTO_TCP
            owner = ring.owner(flow_hash(s.local_ip, s.local_port, s.remote_ip, s.remote_port, transport))
            by_endpoint.setdefault(owner, []).append(proto)
        for endpoint, protos in by_endpoint.items():
            self.pool.offer_plaintext(endpoint, [], protos)

    # -- live --------------------------------------------------------------------------------

    def _remove_readers(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers.clear()

    def _rescan(self) -> None:
        assert self.live is not None
        self._remove_readers()
        self.live.rescan()
        if not self.paused:
            self._add_readers()

    def _add_readers(self) -> None:
        assert self.live is not None
        loop = asyncio.get_running_loop()
        for fd in self.live.fds():
            if fd not in self._readers:
                loop.add_reader(fd, self._on_readable, fd)
                self._readers.add(fd)

    def _pause(self) -> None:
        """The queues are at their high-water mark: stop reading the rings (the kernel holds what comes)."""
        self.paused = True
        self._remove_readers()
        metrics.PAUSED.set(1)

    def _resume(self) -> None:
        if self.paused and self.live is not None:
            self.paused = False
            self._add_readers()
            metrics.PAUSED.set(0)

    def _on_readable(self, fd: int) -> None:
        live = self.live
        if live is None:
            return
        before = len(self.sharder.ring.endpoints)
        n = live.drain_fd(fd, self.sharder, DRAIN_BLOCKS)
        if n == 0:
            # Readable with nothing to read: an error is pending (POLLERR); a device that went down or
            # away is released, and its reader with it.
            if live.check_error(fd):
                asyncio.get_running_loop().remove_reader(fd)
                self._readers.discard(fd)
            return
        self.captured_packets += n
        if before:
            self._flush()

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings_c.capture_rescan_s)
            self._rescan()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            if self.live is not None:
                self.live.refresh_stats()

    # -- replay ------------------------------------------------------------------------------

    @property
    def replay_done(self) -> bool:
        return self.replay is not None and self.replay.done

    async def _replay(self, progress: ReplayProgress) -> None:
        s = self.settings_c
        await self._wait_for_consumers(progress, s.capture_replay_wait_s)
        expression = s.filter_expression()
        keep = OfflineFilter(expression) if expression else None
        for path in progress.files:
            try:
                await self._replay_file(path, keep, progress)
            except PcapError as exc:  # what was read before the damage is replayed; the next file goes on
                progress.errors.append(str(exc))
                log.error("replay of a file stopped", extra={"file": str(path), "error": str(exc)})
            self.sharder.release_held()
            self._flush()
            if self.pool is not None:
                self.pool.end_input()
            progress.files_done += 1
        progress.done = True
        log.info(
            "replay finished",
            extra={
                "files": len(progress.files),
                "packets": self.captured_packets,
                "filtered": progress.filtered,
            },
        )

    async def _replay_file(self, path: Path, keep: OfflineFilter | None, progress: ReplayProgress) -> None:
        s = self.settings_c
        it = iter(read_batches(path, s.capture_batch_packets, pace=s.capture_pace))
        while True:
            cols = await asyncio.to_thread(next, it, None)
            if cols is None:
                return
            await self._wait_for_room()
            for name, link in cols.interfaces:
                if (name, link) not in self.interfaces:
                    self.interfaces.append((name, link))
            remap = [self.interfaces.index(key) for key in cols.interfaces]
            buf = memoryview(cols.data)
            add = self.sharder.add
            packets, nbytes = len(cols), len(cols.data)
            for off, caplen, origlen, ts, ifid in cols.iter_packets():
                if keep is not None and not keep.matches(
                    cols.data[off : off + caplen], origlen, cols.link_type(ifid)
                ):
                    progress.filtered += 1
                    packets -= 1
                    nbytes -= caplen
                    continue
                add(buf, off, off + caplen, origlen, ts, remap[ifid] if ifid < len(remap) else -1)
            buf.release()
            self.captured_packets += packets
            self.captured_bytes += nbytes
            self._flush()

    async def _waiting_for(self, consumers: set[str]) -> list[str]:
        """What the replay still waits for: dissectors not answering, durable consumers not in place
        (`consumers` loses each one found: a durable consumer, once there, stays)."""
        waiting: list[str] = []
        pool = self.pool
        if pool is not None:
            missing = len(pool.senders) - len(pool.ready())
            if missing:
                waiting.append(f"{missing} dissector{'' if missing == 1 else 's'}")
        for durable in sorted(consumers):
            if self.bus is not None:
                try:
                    await self.bus.js.consumer_info(ENTRIES_STREAM.name, durable, timeout=1.0)
                except (NatsError, TimeoutError):
                    pass
                else:
                    consumers.discard(durable)
                    continue
            waiting.append(f"consumer {durable}")
        return waiting

    async def _wait_for_consumers(self, progress: ReplayProgress, timeout: float) -> None:
        """A file can wait (unlike a NIC): send nothing until every dissector answers and every named
        durable consumer of the entries is in place, so nothing is dissected or published into the
        void. Says what it waits for every few seconds; with `timeout` > 0, starts anyway after it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        noted = started - REPLAY_NOTE_EVERY_S  # the first note goes out at once
        consumers = set(self.settings_c.replay_consumers())
        while waiting := await self._waiting_for(consumers):
            progress.waiting_for = waiting
            now = loop.time()
            if timeout > 0 and now - started >= timeout:
                log.warning(
                    "replay starts without its consumers", extra={"waiting_for": waiting, "waited_s": timeout}
                )
                break
            if now - noted >= REPLAY_NOTE_EVERY_S:
                noted = now
                log.info(
                    f"replay waiting for {', '.join(waiting)}…", extra={"waited_s": round(now - started)}
                )
            await asyncio.sleep(REPLAY_POLL_S)
        progress.waiting_for = []

    async def _wait_for_room(self) -> None:
        """A file can wait for the dissectors (unlike a NIC): hold back while a queue is past its
        high-water mark, as a live capture stops reading its rings."""
        pool = self.pool
        while pool is not None and not pool.has_room:  # noqa: ASYNC110 - queues drain in other tasks
            await asyncio.sleep(0.01)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> capture_pb2.GetStatusResponse:
        resp = capture_pb2.GetStatusResponse(node=self.settings.node_name)
        drops: dict[str, int] = dict(self.drops)
        packets = self.captured_packets
        nbytes = self.captured_bytes
        if self.live is not None:
            packets = 0
            nbytes = 0
            kernel = 0
            for t in self.live.totals.values():
                resp.interfaces.add(
                    name=t.name, packets=t.packets, bytes=t.bytes, kernel_drops=t.kernel_drops, up=t.up
                )
                packets += t.packets
                nbytes += t.bytes
                kernel += t.kernel_drops
            drops["kernel"] = kernel
            for name, error in self.live.errors.items():
                resp.errors[name] = str(error)
        if self.pool is not None:
            for reason, count in self.pool.drops.counts.items():
                drops[reason] = drops.get(reason, 0) + count
            resp.dissectors.extend(sorted(self.pool.senders))
        counters = self.sharder.counters
        drops["undecodable_forwarded"] = counters.undecodable
        drops["fragments_orphaned"] = counters.fragments_orphaned
        if self.replay is not None:
            r = self.replay
            resp.replay.files.extend(str(f) for f in r.files)
            resp.replay.files_done = r.files_done
            resp.replay.waiting_for.extend(r.waiting_for)
            resp.replay.done = r.done
            resp.replay.error = "; ".join(r.errors)
            resp.replay.filtered = r.filtered
        if self.ebpf is not None:
            feed = self.ebpf
            stats = feed.stats
            resp.ebpf.running = feed.running
            resp.ebpf.error = feed.error
            resp.ebpf.chunks = stats.chunks
            resp.ebpf.bytes = stats.bytes
            for hook in feed.hooks:
                if hook.functions:
                    resp.ebpf.hooked.append(f"{hook.path} ({hook.library})")
                else:
                    resp.ebpf.not_hooked[hook.path] = hook.error or ""
            for reason, count in dict(stats.drops).items():
                drops[f"ebpf_{reason}"] = drops.get(f"ebpf_{reason}", 0) + count
            if feed.error:
                resp.errors["ebpf"] = feed.error
        resp.packets = packets
        resp.bytes = nbytes
        for reason, count in drops.items():
            resp.drops[reason] = count
        return resp

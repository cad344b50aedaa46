"""The tracer service process: entries from JetStream → spans → traces, service map, RED metrics, OTLP.

Rule: the tracer reads entries through its own durable consumer (`tracer_durable`), so it resumes
where it stopped and never competes with the gateway's store writer; the traces it reconstructs go
only to `WIRETIDE_TRACES_OTLP_*`, never to the self-telemetry endpoint (`OTEL_*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final, Literal

import grpc
from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import field_validator

from wiretide.common.bus import ENTRIES_ALL, ENTRIES_STREAM, Bus, durable_pull
from wiretide.common.bus.entries import Skipped, fetch_entries, unpacked_bytes
from wiretide.common.bus.fetch import FetchSize
from wiretide.common.bus.subjects import CAUSALITY_ALL, tracer_facts_subject
from wiretide.common.collector import collect_rarely
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings, SettingsError
from wiretide.proto.v1 import tracer_pb2_grpc
from wiretide.tracer.api import TracerApi
from wiretide.tracer.assemble import AssemblyConfig
from wiretide.tracer.causality import KernelCausality
from wiretide.tracer.engine import Engine
from wiretide.tracer.export.exporter import ExportConfig, Exporter
from wiretide.tracer.export.transport import OtlpTarget, make_transport, parse_headers
from wiretide.tracer.intake import end_ordered, slices
from wiretide.tracer.partition import FactError, Partition, decode_facts, encode_facts, replica_index
from wiretide.tracer.rules import RuleError, parse_rules

log = logging.getLogger(__name__)

# Collector thresholds (gen0 net allocations, gen1, gen2 passes). The spans of a call are not left as
# cyclic garbage (the store cuts the pair's cycle when it lets a trace go; a few dozen objects were
# collected in a run of 140,000 calls), so passes are spaced further than in other services: each one
# walks every object allocated since the last that still lives — the calls waiting for their window
# and the traces of the store — and fewer passes walk fewer of them (`bench/tracer.py --gc-gen0`).
GC_THRESHOLDS: Final = (500_000, 20, 100)
FETCH_BATCH = 64  # EntryBatch messages per pull at most (each carries up to hundreds of entries)
# EntryBatch bytes unpacked at once: a fetch is sized from the messages seen so far to carry about this
# much JSON. Decoded, an entry takes several times its JSON, so the documents are decoded a slice at a
# time (intake.py): a burst's fetch decoded whole was thousands held at once, ~50 MB of the tracer's
# peak RSS in a 200k keep-alive burst (bench/e2e.py).
FETCH_BYTES = 4 << 20
FETCH_TIMEOUT_S = 0.25
IDLE_TICK_S = 0.25  # how often packet time is moved on while no entries arrive
FACTS_PER_MESSAGE = 5_000  # ~100 bytes each: well under NATS's 1 MB message limit
FACTS = Counter(
    "wiretide_tracer_facts_total",
    "Trace ids told between tracer replicas (partition.py), by direction: sent, received, invalid",
    ["direction"],
)
CAUSALITY = Counter(
    "wiretide_tracer_causality",
    "Kernel-observed causality: edges and calls by outcome (causality.STAT_NAMES)",
    ["outcome"],
)


class TracerSettings(CommonSettings):
    """`WIRETIDE_TRACER_*` (assembly, storage) and `WIRETIDE_TRACES_*` (where reconstructed traces go)."""

    tracer_durable: str = "tracer"
    tracer_window_s: float = 2.0
    tracer_clock_skew_ms: float = 5.0
    tracer_max_spans_per_trace: int = 10_000
    tracer_max_pending_spans: int = 200_000
    tracer_max_traces: int = 50_000
    tracer_map_records: int = 100_000
    tracer_span_rules: str = ""
    # Where Wiretide's spans hang when the application propagates context (assemble.PARENT_MODES).
    tracer_parent: Literal["wiretide", "app"] = "wiretide"
    # Parent links from the capture nodes' eBPF causality edges (`wt.causality.<node>`), when any come.
    tracer_causality: bool = True
    # Several replicas (partition.py): how many, and which one this is (a number, or `auto`: the
    # ordinal at the end of the hostname, as a StatefulSet names its pods).
    tracer_partitions: int = 1
    tracer_partition: str = "0"

    traces_otlp_endpoint: str = ""  # empty: no export (traces stay queryable over gRPC)
    traces_otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    traces_otlp_headers: str = ""
    traces_otlp_insecure: bool | None = None
    traces_otlp_ca_file: str = ""
    traces_otlp_cert_file: str = ""
    traces_otlp_key_file: str = ""
    traces_otlp_timeout_s: float = 10.0
    traces_otlp_max_queue: int = 65_536
    traces_otlp_max_batch: int = 2_048
    traces_otlp_flush_interval_s: float = 0.5
    traces_otlp_max_retries: int = 5

    @field_validator("tracer_span_rules")
    @classmethod
    def _rules(cls, value: str) -> str:
        try:
            parse_rules(value)
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("traces_otlp_headers")
    @classmethod
    def _headers(cls, value: str) -> str:
        parse_headers(value)
        return value

    @field_validator("traces_otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be http(s)://host:port, got {value!r}")
        return value

    @field_validator(
        "tracer_window_s", "traces_otlp_timeout_s", "traces_otlp_flush_interval_s", "tracer_clock_skew_ms"
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator(
        "tracer_max_spans_per_trace",
        "tracer_partitions",
        "tracer_max_pending_spans",
        "tracer_max_traces",
        "tracer_map_records",
        "traces_otlp_max_queue",
        "traces_otlp_max_batch",
    )
    @classmethod
    def _bound(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    def assembly(self) -> AssemblyConfig:
        return AssemblyConfig(
            window_ns=int(self.tracer_window_s * 1e9),
            clock_skew_ns=int(self.tracer_clock_skew_ms * 1e6),
            max_spans_per_trace=self.tracer_max_spans_per_trace,
            max_pending=self.tracer_max_pending_spans,
            parent=self.tracer_parent,
        )

    def replica(self) -> Partition | None:
        """This replica's share when there are several; SettingsError for a partition that names none."""
        if self.tracer_partitions == 1:
            return None
        try:
            index = replica_index(self.tracer_partition, self.tracer_partitions)
        except ValueError as exc:
            raise SettingsError(f"WIRETIDE_TRACER_PARTITION: {exc}") from None
        return Partition(index, self.tracer_partitions)

    def otlp_target(self) -> OtlpTarget | None:
        if not self.traces_otlp_endpoint:
            return None
        return OtlpTarget(
            endpoint=self.traces_otlp_endpoint,
            protocol=self.traces_otlp_protocol,
            headers=parse_headers(self.traces_otlp_headers),
            insecure=self.traces_otlp_insecure,
            ca_file=self.traces_otlp_ca_file,
            cert_file=self.traces_otlp_cert_file,
            key_file=self.traces_otlp_key_file,
            timeout_s=self.traces_otlp_timeout_s,
        )

    def export_config(self) -> ExportConfig:
        return ExportConfig(
            max_queue=self.traces_otlp_max_queue,
            max_batch=self.traces_otlp_max_batch,
            flush_interval_s=self.traces_otlp_flush_interval_s,
            max_retries=self.traces_otlp_max_retries,
        )


class TracerService(Service):
    name = "tracer"
    settings_cls = TracerSettings

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, TracerSettings)
        self.tsettings = settings
        self.exporter: Exporter | None = None
        self.partition = settings.replica()
        self.engine = Engine(
            settings.assembly(),
            rules=parse_rules(settings.tracer_span_rules),
            max_traces=settings.tracer_max_traces,
            max_map_records=settings.tracer_map_records,
            partition=self.partition,
        )
        self.invalid_facts = 0
        self.failed_entries = 0  # entries whose batch the engine failed on (skipped, acknowledged)
        self.failure = ""  # why, the latest
        self.facts_error = ""  # why the latest facts message was dropped
        self.entries_in = 0
        self.invalid_entries = 0
        self.refused = ""  # why messages of a newer contract version were skipped (the latest reason)
        self.refused_messages = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._consuming = False
        self.causality: KernelCausality | None = None  # made when the first edges arrive
        self._causality_published: dict[str, int] = {}
        self._fetch = FetchSize(FETCH_BATCH, FETCH_BYTES)

    def register(self, server: grpc.aio.Server) -> None:
        tracer_pb2_grpc.add_TracerServiceServicer_to_server(TracerApi(self.engine), server)

    def ready(self) -> bool:
        return self._consuming

    async def start(self, bus: Bus) -> None:
        collect_rarely(GC_THRESHOLDS)
        target = self.tsettings.otlp_target()
        if target is not None:
            self.exporter = Exporter(make_transport(target), self.tsettings.export_config())
            self.exporter.start()
            self.engine.export = self.exporter.offer
            log.info("exporting traces", extra={"endpoint": target.endpoint, "protocol": target.protocol})
        durable = self.tsettings.tracer_durable
        if self.partition is not None:  # every replica reads every entry, through its own consumer
            durable = f"{durable}-{self.partition.index}"
            self._facts_sub = await bus.nc.subscribe(
                tracer_facts_subject(self.partition.index), cb=self._on_facts
            )
            log.info(
                "tracer replica",
                extra={"replica": self.partition.index, "replicas": self.partition.count, "durable": durable},
            )
        self._sub = await durable_pull(bus.js, ENTRIES_STREAM.name, ENTRIES_ALL, durable)
        if self.tsettings.tracer_causality:
            self._causality_sub = await bus.nc.subscribe(CAUSALITY_ALL, cb=self._on_causality)
        self._consuming = True
        self._tasks = [self.vital(self._consume(), "tracer-consume"), self.vital(self._idle(), "tracer-idle")]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.engine.flush()
        await self._tell()
        if self.exporter is not None:
            await self.exporter.close(timeout=self.settings.shutdown_grace_s)

    async def _consume(self) -> None:
        while not self._stop.is_set():
            got = await fetch_entries(self._sub, self._fetch.messages, FETCH_TIMEOUT_S, decode=False)
            self._fetch.seen([unpacked_bytes(msg.data) for msg in got.messages])  # what they hold unpacked
            # In the order their calls ended (dissectors emit in response order), read off the lifted
            # fields: one sort per fetch, each document decoded when its slice is ingested (intake.py).
            skipped = Skipped()
            refused: list[str] = []
            fetched = end_ordered(got.messages, skipped, refused)
            if refused:
                # A newer contract than this tracer reads: skipped (traces are best effort), said once.
                if refused[-1] != self.refused:
                    log.error("entries skipped", extra={"error": refused[-1]})
                self.refused = refused[-1]
                self.refused_messages += len(refused)
            if fetched:
                for entries, texts in slices(fetched, skipped):
                    try:
                        self.engine.ingest(entries, time.time_ns(), texts)
                    except Exception as exc:  # a defect met by some input: those entries, not the tracer
                        self.failed_entries += len(entries)
                        why = f"{type(exc).__name__}: {exc}"
                        if why != self.failure:  # said once per reason, counted always
                            log.exception("entries not traced", extra={"entries": len(entries)})
                        self.failure = why
                    self.entries_in += len(entries)
                await self._tell()
            self.invalid_entries += skipped.entries
            await got.ack()

    async def _tell(self) -> None:
        """Send the trace ids other replicas wait for (none when this is the only replica)."""
        if self.partition is None or self.bus is None:
            return
        sender = self.partition.index
        for replica, facts in self.engine.take_facts().items():
            subject = tracer_facts_subject(replica)
            for i in range(0, len(facts), FACTS_PER_MESSAGE):
                await self.bus.nc.publish(subject, encode_facts(sender, facts[i : i + FACTS_PER_MESSAGE]))
            FACTS.labels("sent").inc(len(facts))

    async def _on_facts(self, msg: Msg) -> None:
        try:
            facts = decode_facts(msg.data)
        except FactError as exc:
            self.invalid_facts += 1
            FACTS.labels("invalid").inc()
            if str(exc) != self.facts_error:  # said once per reason, counted always
                log.warning("facts message dropped", extra={"error": str(exc), "subject": msg.subject})
            self.facts_error = str(exc)
            return
        FACTS.labels("received").inc(len(facts))
        self.engine.told(facts)
        await self._tell()  # what those let go may be waited for elsewhere

    async def _on_causality(self, msg: Msg) -> None:
        """Edges of one capture node; the first turns kernel causality on (`Engine.use_kernel_causality`)."""
        if self.causality is None:
            window = int(self.tsettings.tracer_window_s * 1e9)
            self.causality = KernelCausality(horizon_ns=max(4 * window, 30_000_000_000))
            self.engine.use_kernel_causality(self.causality)
            log.info("kernel causality on: parent links from eBPF edges", extra={"subject": msg.subject})
        self.causality.add_batch(msg.data, msg.subject)

    async def _idle(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=IDLE_TICK_S)
            self.engine.idle(time.time_ns())
            await self._tell()
            if self.causality is not None:
                done = self._causality_published
                for outcome, n in self.causality.stats.items():
                    if n > done.get(outcome, 0):
                        CAUSALITY.labels(outcome).inc(n - done.get(outcome, 0))
                        done[outcome] = n

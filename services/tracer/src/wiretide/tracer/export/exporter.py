"""The OTLP exporter: a bounded queue of finished spans, sent in batches, retried with backoff.

Rule: the queue never grows past its bound and nothing is lost silently — spans refused because the
queue is full, or given up after the last retry, are counted by reason
(`wiretide_tracer_export_dropped_spans_total`). Export never blocks assembly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from wiretide.tracer.export.otlp import Encoder
from wiretide.tracer.export.transport import Transport
from wiretide.tracer.spans import Span

log = logging.getLogger(__name__)

EXPORTED = Counter("wiretide_tracer_export_spans_total", "Spans accepted by the OTLP receiver")
DROPPED = Counter(
    "wiretide_tracer_export_dropped_spans_total", "Spans that were not exported, by reason", ["reason"]
)
REQUESTS = Counter("wiretide_tracer_export_requests_total", "OTLP export requests, by outcome", ["outcome"])
QUEUED = Gauge("wiretide_tracer_export_queue_spans", "Spans waiting in the export queue")


@dataclass(frozen=True, slots=True)
class ExportConfig:
    max_queue: int = 65_536
    max_batch: int = 2_048
    flush_interval_s: float = 0.5
    max_retries: int = 5
    backoff_start_s: float = 0.2
    backoff_max_s: float = 5.0


class Exporter:
    def __init__(self, transport: Transport, config: ExportConfig | None = None) -> None:
        self.transport = transport
        self.config = config or ExportConfig()
        self.queue: deque[Span] = deque()
        self.encoder = Encoder()
        self.exported = 0
        self.dropped: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def offer(self, spans: Sequence[Span]) -> None:
        room = self.config.max_queue - len(self.queue)
        if room < len(spans):
            self._drop("queue_full", len(spans) - max(room, 0))
            spans = spans[: max(room, 0)]
        if spans:
            self.queue.extend(spans)
            self._idle.clear()
        QUEUED.set(len(self.queue))
        if len(self.queue) >= self.config.max_batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="otlp-exporter")

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued has been sent or given up; False on timeout."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        await self.flush(timeout)
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.queue:
            self._drop("shutdown", len(self.queue))
            self.queue.clear()
        await self.transport.close()

    def _drop(self, reason: str, n: int) -> None:
        if n <= 0:
            return
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        DROPPED.labels(reason).inc(n)

    async def _run(self) -> None:
        cfg = self.config
        while not self._closing:
            if len(self.queue) < cfg.max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=cfg.flush_interval_s)
                self._wake.clear()
            while self.queue:
                n = min(cfg.max_batch, len(self.queue))
                batch = [self.queue.popleft() for _ in range(n)]
                QUEUED.set(len(self.queue))
                await self._send(batch)
            self._idle.set()

    async def _send(self, batch: list[Span]) -> None:
        body = self.encoder.request(batch)
        delay = self.config.backoff_start_s
        for attempt in range(self.config.max_retries + 1):
            outcome = await self.transport.send(body)
            if outcome.ok:
                REQUESTS.labels("ok").inc()
                accepted = len(batch) - outcome.rejected_spans
                self.exported += accepted
                EXPORTED.inc(accepted)
                self._drop("rejected", outcome.rejected_spans)
                return
            REQUESTS.labels("retryable" if outcome.retryable else "failed").inc()
            if not outcome.retryable or attempt == self.config.max_retries:
                log.warning(
                    "OTLP export failed, spans dropped",
                    extra={"error": outcome.error, "spans": len(batch), "attempts": attempt + 1},
                )
                self._drop("export_failed", len(batch))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.backoff_max_s)

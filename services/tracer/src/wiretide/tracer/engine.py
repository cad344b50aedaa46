"""The tracer's core, free of I/O: entries in → spans assembled → trace store and export queue; every
entry also feeds the service map and RED metrics.

Rule: packet time drives everything. The wall clock is used in exactly one place, `idle`: when no
entry has arrived for a while, packet time is moved on by the wall time that passed, so the last
spans of a burst (or of a pcap) are decided instead of waiting forever.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wiretide.tracer.assemble import Assembler, AssemblyConfig
from wiretide.tracer.causality import CausalitySource, KernelCausality
from wiretide.tracer.rules import SpanRule
from wiretide.tracer.servicemap import Edge, Node, ServiceMap, calls_of
from wiretide.tracer.spans import KIND_SERVER, Span
from wiretide.tracer.store import TraceStore


class Engine:
    def __init__(
        self,
        config: AssemblyConfig | None = None,
        *,
        rules: tuple[SpanRule, ...] = (),
        causality: CausalitySource | None = None,
        max_traces: int = 50_000,
        max_map_records: int = 100_000,
        export: Callable[[list[Span]], None] | None = None,
    ) -> None:
        self.assembler = Assembler(config, rules=rules, causality=causality)
        self.kernel: KernelCausality | None = causality if isinstance(causality, KernelCausality) else None
        self.store = TraceStore(max_traces)
        self.map = ServiceMap(max_map_records)
        self.export = export
        self._last_arrival_wall_ns = 0
        self._idle_base_ns = 0

    def ingest(
        self, entries: list[dict[str, Any]], wall_ns: int = 0, texts: list[bytes] | None = None
    ) -> list[Span]:
        """Spans of `entries` (in the order their calls ended), decided ones collected; `texts`, their
        JSON as received (same order) when the caller has it, spares encoding each again."""
        add, record = self.assembler.add, self.map.add_span
        if self.kernel is not None:  # every entry is some server's inbound request an edge may name
            self.kernel.observe(entries)
        if texts is None or len(texts) != len(entries):
            texts = [b""] * len(entries)
        for entry, text in zip(entries, texts, strict=True):
            spans = add(entry, text or None)
            if not spans:
                self.map.add(entry)  # dropped by a span rule: still traffic on the map
            else:
                client, server = spans[0], spans[-1]
                if client.workload.known:
                    record(server, client.workload, server.workload)
                # An anonymous caller is on the map when its call is decided: by then it may be known
                # as the anonymous server whose request made the call (`_collect`).
        self._last_arrival_wall_ns = wall_ns
        self._idle_base_ns = self.assembler.watermark
        return self._collect()

    def use_kernel_causality(self, source: KernelCausality) -> None:
        """Answer parent links from kernel-observed edges from now on (the first edge batch turns it
        on: without eBPF capture the tracer does none of this per-entry work)."""
        self.kernel = source
        self.assembler.causality = source
        self.assembler._kernel = True  # its switch for indexing server spans by entry id

    def service_map(
        self, window_ns: int, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[list[Node], list[Edge], int]:
        """The service map over `window_ns` of packet time, and how many calls it no longer sees. The
        map's records hold no entries: a KFL-filtered map is drawn from the calls whose spans the
        trace store still holds (its evicted calls are the ones missing)."""
        if predicate is None:
            nodes, edges = self.map.compute(window_ns)
            return nodes, edges, self.map.evicted
        nodes, edges = self.map.compute(window_ns, calls_of(self.store.spans(), predicate))
        return nodes, edges, self.store.evicted_calls

    def idle(self, wall_ns: int) -> list[Span]:
        """Move packet time on by the wall time since the last entry arrived, and collect what ripened."""
        if self._last_arrival_wall_ns and self.assembler.pending:
            self.assembler.advance(self._idle_base_ns + (wall_ns - self._last_arrival_wall_ns))
        return self._collect()

    def flush(self) -> list[Span]:
        self.assembler.flush()
        return self._collect()

    def _collect(self) -> list[Span]:
        spans = self.assembler.drain()
        record = self.map.add_span
        for span in spans:
            server = span.partner
            if span.kind != KIND_SERVER and server is not None and not server.peer.known:
                record(server, span.workload, server.workload)
        if spans:
            self.store.add(spans)
            if self.export is not None:
                self.export(spans)
        return spans

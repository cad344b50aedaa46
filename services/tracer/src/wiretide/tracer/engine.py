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
from wiretide.tracer.partition import ROLE_BOTH, ROLE_NONE, ROLE_OWNER, Partition
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
        partition: Partition | None = None,
    ) -> None:
        self.assembler = Assembler(config, rules=rules, causality=causality, partition=partition)
        self.partition = partition
        self.other_replicas = 0  # entries with neither end among this replica's instances
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
        self.assembler.wall_ns = wall_ns
        role_of = self.assembler.role_of if self.partition is not None else None
        role, callee_at = ROLE_BOTH, -1
        for entry, text in zip(entries, texts, strict=True):
            if role_of is not None:
                role, callee_at = role_of(entry)
                if role == ROLE_NONE:
                    self.other_replicas += 1
                    self.assembler.passing(entry)
                    continue
            spans = add(entry, text or None, role, callee_at)
            if not role & ROLE_OWNER:
                continue  # a copy: the call is on the map of the replica that owns it
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

    def told(self, facts: list[tuple[str, bytes]]) -> list[Span]:
        """Trace ids other replicas decided for calls this one holds copies of; what that lets go."""
        self.assembler.told(facts)
        return self._collect()

    def take_facts(self) -> dict[int, list[tuple[str, bytes]]]:
        """The trace ids other replicas wait for, by replica."""
        out: dict[int, list[tuple[str, bytes]]] = {}
        for replica, entry_id, trace_id in self.assembler.take_facts():
            found = out.get(replica)
            if found is None:
                found = out[replica] = []
            found.append((entry_id, trace_id))
        return out

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
        self.assembler.wall_ns = wall_ns
        if self._last_arrival_wall_ns and (self.assembler.pending or self.assembler.awaiting):
            self.assembler.advance(self._idle_base_ns + (wall_ns - self._last_arrival_wall_ns))
        return self._collect()

    def flush(self, awaiting: bool = True) -> list[Span]:
        self.assembler.flush(awaiting)
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

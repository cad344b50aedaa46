"""Asking the tracer when it runs as several replicas (`WIRETIDE_TRACER_GRPC`, comma-separated): each
replica holds the spans of the calls it owns, so one trace may be spread over several of them, and each
counts only its own calls on the service map. `Tracers` offers `TracerService`'s three calls, taking and
returning the same messages, asks every replica at once and merges what they answer:

- GetTrace: the union of the spans (each span id once), in the order the tracer gives them; NOT_FOUND
  only when every replica says NOT_FOUND.
- FindTraces: the traces any replica found, then the whole of each: the replicas that did not report a
  trace are asked for its summary by id (`FindTracesRequest.trace_ids`), and the parts are merged (first
  start, last end, spans summed, an error anywhere, the lowest confidence, the root of the part that
  starts first). Newest first by start, `limit` kept; evictions summed.
- GetServiceMap: nodes by id, edges by (source, destination, protocol): requests, bytes and rates summed,
  the error rate weighted by requests; p50 is the request-weighted mean of the replicas' p50s and p95/p99
  their maximum — percentiles of parts cannot be merged exactly, so these are estimates (p95/p99 err
  high). The window spans the replicas' windows; evictions summed.

Rule: with one address it is the plain stub (no extra call, errors as the tracer sends them). With
several, bad input (INVALID_ARGUMENT from any replica) is raised as the tracer's own error; a replica
that fails is left out of the answer and named in `partial` (the caller's list, when it passes one), as
`tracer-<i> (<address>): <status>`; when no replica answers, `TracersUnavailable` names them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Final, Generic, TypeVar

import grpc

from wiretide.common.rpc import channel
from wiretide.common.tls import PLAINTEXT, Transport
from wiretide.proto.v1 import tracer_pb2, tracer_pb2_grpc

log = logging.getLogger(__name__)

# The tracer's own bounds on a FindTraces answer (tracer/api.py): a merged answer keeps to them too.
DEFAULT_FIND_LIMIT: Final = 100
MAX_FIND_LIMIT: Final = 1_000
MAX_TRACE_IDS: Final = 32 * MAX_FIND_LIMIT

Metadata = Sequence[tuple[str, str]]
R = TypeVar("R")


class TracersUnavailable(ConnectionError):
    """No tracer replica answered; the message names each one and what it said."""


def addresses_of(tracer_grpc: str | Sequence[str]) -> list[str]:
    """The replicas' addresses from `WIRETIDE_TRACER_GRPC` (comma-separated) or a list."""
    parts = tracer_grpc.split(",") if isinstance(tracer_grpc, str) else tracer_grpc
    found = [p.strip() for p in parts if p.strip()]
    if not found:
        raise ValueError("no tracer address given")
    return found


class _Round(Generic[R]):
    """What the replicas asked answered to one call: answers and failures by replica index."""

    def __init__(self) -> None:
        self.answers: dict[int, R] = {}
        self.errors: dict[int, grpc.aio.AioRpcError] = {}


class Tracers:
    """`TracerService`'s calls over every replica in `addresses` (see the module's rule)."""

    def __init__(
        self, addresses: str | Sequence[str], transport: Transport = PLAINTEXT, *, peer: str = "tracer"
    ) -> None:
        self.addresses = addresses_of(addresses)
        self.transport = transport
        self.peer = peer
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[tracer_pb2_grpc.TracerServiceStub] = []

    def replica(self, index: int) -> str:
        """How a replica is named in partial answers and errors."""
        return f"tracer-{index} ({self.addresses[index]})"

    def stubs(self) -> list[tracer_pb2_grpc.TracerServiceStub]:
        if not self._stubs:
            self._channels = [channel(a, self.transport, peer=self.peer) for a in self.addresses]
            self._stubs = [tracer_pb2_grpc.TracerServiceStub(ch) for ch in self._channels]
        return self._stubs

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], []
        for ch in channels:
            await ch.close()

    async def __aenter__(self) -> Tracers:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- asking every replica ------------------------------------------------------------------------

    async def _ask(
        self,
        indices: Sequence[int],
        call: Callable[[tracer_pb2_grpc.TracerServiceStub, int], Awaitable[R]],
    ) -> _Round[R]:
        stubs = self.stubs()

        async def one(i: int) -> R:
            return await call(stubs[i], i)

        results = await asyncio.gather(*(one(i) for i in indices), return_exceptions=True)
        got: _Round[R] = _Round()
        for i, result in zip(indices, results, strict=True):
            if isinstance(result, grpc.aio.AioRpcError):
                if result.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise result
                got.errors[i] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                got.answers[i] = result
        return got

    def _note(self, errors: dict[int, grpc.aio.AioRpcError], partial: list[str] | None) -> list[str]:
        notes = [f"{self.replica(i)}: {e.code().name}" for i, e in sorted(errors.items())]
        if notes:
            log.debug("tracer replicas did not answer: %s", "; ".join(notes))
            if partial is not None:
                partial.extend(n for n in notes if n not in partial)
        return notes

    def _unavailable(
        self, errors: dict[int, grpc.aio.AioRpcError], what: str = "no tracer replica answered"
    ) -> TracersUnavailable:
        notes = [f"{self.replica(i)}: {e.code().name}" for i, e in sorted(errors.items())]
        return TracersUnavailable(f"{what}: " + "; ".join(notes))

    # -- the calls -----------------------------------------------------------------------------------

    async def GetTrace(
        self,
        request: tracer_pb2.GetTraceRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
        partial: list[str] | None = None,
    ) -> tracer_pb2.GetTraceResponse:
        stubs = self.stubs()
        if len(stubs) == 1:
            alone: tracer_pb2.GetTraceResponse = await stubs[0].GetTrace(
                request, timeout=timeout, metadata=tuple(metadata)
            )
            return alone
        got = await self._ask(
            range(len(stubs)),
            lambda s, _i: s.GetTrace(request, timeout=timeout, metadata=tuple(metadata)),
        )
        missing = {i: e for i, e in got.errors.items() if e.code() == grpc.StatusCode.NOT_FOUND}
        failed = {i: e for i, e in got.errors.items() if i not in missing}
        if not got.answers:
            if failed and missing:  # the ones that did not answer may hold it
                raise self._unavailable(
                    failed, f"trace {request.trace_id} not held by the replicas that answered"
                )
            if failed:
                raise self._unavailable(failed)
            raise missing[min(missing)]
        self._note(failed, partial)
        return merge_traces([a for _, a in sorted(got.answers.items())])

    async def FindTraces(
        self,
        request: tracer_pb2.FindTracesRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
        partial: list[str] | None = None,
    ) -> tracer_pb2.FindTracesResponse:
        stubs = self.stubs()
        md = tuple(metadata)
        if len(stubs) == 1:
            alone: tracer_pb2.FindTracesResponse = await stubs[0].FindTraces(
                request, timeout=timeout, metadata=md
            )
            return alone
        first = await self._ask(
            range(len(stubs)), lambda s, _i: s.FindTraces(request, timeout=timeout, metadata=md)
        )
        if not first.answers:
            raise self._unavailable(first.errors)
        answers = first.answers
        found = list(dict.fromkeys(t.trace_id for _, a in sorted(answers.items()) for t in a.traces))
        parts = list(answers.values())
        errors = dict(first.errors)
        if not request.trace_ids:
            # The parts a replica holds of traces it did not report (none of its spans matched).
            reported = {i: {t.trace_id for t in a.traces} for i, a in answers.items()}
            asks = {i: [t for t in found if t not in reported[i]][:MAX_TRACE_IDS] for i in answers}
            asks = {i: ids for i, ids in asks.items() if ids}
            second = await self._ask(
                sorted(asks),
                lambda s, i: s.FindTraces(
                    tracer_pb2.FindTracesRequest(trace_ids=asks[i]), timeout=timeout, metadata=md
                ),
            )
            errors.update(second.errors)
            for i, answer in second.answers.items():
                asked = set(asks[i])  # a summary of anything else is not an answer to this
                parts.append(
                    tracer_pb2.FindTracesResponse(traces=[t for t in answer.traces if t.trace_id in asked])
                )
        self._note(errors, partial)
        limit = None if request.trace_ids else min(request.limit or DEFAULT_FIND_LIMIT, MAX_FIND_LIMIT)
        merged = merge_summaries(parts, found if request.trace_ids else None, limit)
        merged.traces_evicted = sum(a.traces_evicted for a in answers.values())
        return merged

    async def GetServiceMap(
        self,
        request: tracer_pb2.GetServiceMapRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
        partial: list[str] | None = None,
    ) -> tracer_pb2.GetServiceMapResponse:
        stubs = self.stubs()
        if len(stubs) == 1:
            alone: tracer_pb2.GetServiceMapResponse = await stubs[0].GetServiceMap(
                request, timeout=timeout, metadata=tuple(metadata)
            )
            return alone
        got = await self._ask(
            range(len(stubs)),
            lambda s, _i: s.GetServiceMap(request, timeout=timeout, metadata=tuple(metadata)),
        )
        if not got.answers:
            raise self._unavailable(got.errors)
        self._note(got.errors, partial)
        return merge_maps([a for _, a in sorted(got.answers.items())])


# -- merging ---------------------------------------------------------------------------------------


def merge_traces(answers: Sequence[tracer_pb2.GetTraceResponse]) -> tracer_pb2.GetTraceResponse:
    """One trace from its parts: each span id once, by start (a server span first at a tie), as the
    tracer orders a trace's spans."""
    spans: dict[str, tracer_pb2.Span] = {}
    for answer in answers:
        for span in answer.spans:
            spans.setdefault(span.span_id, span)
    ordered = sorted(spans.values(), key=lambda s: (s.start_ns, s.kind != "server"))
    return tracer_pb2.GetTraceResponse(spans=ordered)


def merge_summary(parts: Sequence[tracer_pb2.TraceSummary]) -> tracer_pb2.TraceSummary:
    """One trace's summary from the summaries of its parts (non-empty): the root is that of the part
    that starts first, as the root is the trace's earliest span."""
    first = min(parts, key=lambda t: t.start_ns)
    end = max(t.start_ns + t.duration_ns for t in parts)
    return tracer_pb2.TraceSummary(
        trace_id=first.trace_id,
        root_name=first.root_name,
        root_service=first.root_service,
        start_ns=first.start_ns,
        duration_ns=end - first.start_ns,
        span_count=sum(t.span_count for t in parts),
        error=any(t.error for t in parts),
        min_confidence=min(t.min_confidence for t in parts),
    )


def merge_summaries(
    answers: Sequence[tracer_pb2.FindTracesResponse], order: Sequence[str] | None, limit: int | None
) -> tracer_pb2.FindTracesResponse:
    """Each trace's summary merged from every replica's part of it (a replica reports a trace once):
    in `order` when given, else newest first by start; at most `limit`."""
    parts: dict[str, list[tracer_pb2.TraceSummary]] = {}
    for answer in answers:
        for t in answer.traces:
            parts.setdefault(t.trace_id, []).append(t)
    merged = [merge_summary(p) for p in parts.values()]
    if order is not None:
        rank = {trace_id: n for n, trace_id in enumerate(order)}
        merged.sort(key=lambda t: rank.get(t.trace_id, len(rank)))
    else:
        merged.sort(key=lambda t: (-t.start_ns, t.trace_id))
    return tracer_pb2.FindTracesResponse(traces=merged if limit is None else merged[:limit])


def merge_edge(parts: Sequence[tracer_pb2.ServiceEdge]) -> tracer_pb2.ServiceEdge:
    """One edge from the replicas' counts of it (non-empty). Counts and rates add up; the error rate
    and p50 are weighted by requests; p95/p99 are the largest of the parts' (an upper estimate:
    percentiles of parts cannot be merged exactly)."""
    requests = sum(e.requests for e in parts)

    def weighted(value: Callable[[tracer_pb2.ServiceEdge], float]) -> float:
        if requests == 0:
            return max(value(e) for e in parts)
        return sum(value(e) * e.requests for e in parts) / requests

    first = parts[0]
    return tracer_pb2.ServiceEdge(
        source=first.source,
        destination=first.destination,
        protocol=first.protocol,
        request_rate=sum(e.request_rate for e in parts),
        error_rate=weighted(lambda e: e.error_rate),
        p50_ms=weighted(lambda e: e.p50_ms),
        p95_ms=max(e.p95_ms for e in parts),
        p99_ms=max(e.p99_ms for e in parts),
        bytes=sum(e.bytes for e in parts),
        requests=requests,
    )


def merge_maps(answers: Sequence[tracer_pb2.GetServiceMapResponse]) -> tracer_pb2.GetServiceMapResponse:
    """One service map from the replicas' (non-empty): nodes by id, edges by (source, destination,
    protocol) as `merge_edge`, both sorted as the tracer sorts them; the window from the earliest start
    to the latest end of the replicas that have seen traffic; evictions summed."""
    nodes: dict[str, tracer_pb2.ServiceNode] = {}
    edges: dict[tuple[str, str, str], list[tracer_pb2.ServiceEdge]] = {}
    for answer in answers:
        for n in answer.nodes:
            nodes.setdefault(n.id, n)
        for e in answer.edges:
            edges.setdefault((e.source, e.destination, e.protocol), []).append(e)
    seen = [a for a in answers if a.end_ns] or list(answers[:1])
    return tracer_pb2.GetServiceMapResponse(
        nodes=[nodes[k] for k in sorted(nodes)],
        edges=[merge_edge(edges[k]) for k in sorted(edges)],
        start_ns=min(a.start_ns for a in seen),
        end_ns=max(a.end_ns for a in seen),
        records_evicted=sum(a.records_evicted for a in answers),
    )

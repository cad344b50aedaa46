"""The service map and RED metrics: who calls whom, how often, how often it fails, how fast, how much.

Rule: one record per entry, kept in a bounded window (oldest forgotten first, counted); a record
holds only what the map aggregates — time, both ends (shared `Workload`s), protocol, duration, error,
bytes — never the entry or its spans (~0.2 KB a call, not the entry's KBs). The map is
computed from those records at query time over packet time, so it reads the same for a pcap replay as
for live traffic — and names each end as it is known at query time: an end recorded by its address
alone (its identity arrived after its first calls) is drawn as the workload that held that address
then (`Holders`), not as a second node. Prometheus label sets are bounded: past `MAX_EDGES` distinct
edges, new ones are reported under "other".
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, cast

from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from wiretide.common.protocols import server_error, status_class
from wiretide.tracer.names import TABLE_EVICTIONS
from wiretide.tracer.spans import Span, Workload, entry_of, workload_of

RECORDS_EVICTED = Counter(
    "wiretide_tracer_servicemap_evicted_total", "Service-map records forgotten (window full)"
)
# Upper bounds (seconds) of the call-duration histogram's buckets; +Inf is implied.
# (Not `Final`: a compiled module would inline it, and `_BOUNDS` reads it as a value.)
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_GO_FLOAT: Final = cast(Callable[[float], str], floatToGoString)  # untyped in prometheus_client
_BOUNDS: Final = (*map(_GO_FLOAT, DURATION_BUCKETS), "+Inf")  # the `le` labels, as it spells them
_EDGE_LABELS: Final = ("source", "destination", "protocol")


class Series:
    """The RED counts of one (source, destination, protocol) label set, kept as plain numbers: a call
    costs a few additions, not one locked prometheus_client update per metric; `RedMetrics` reads them
    when Prometheus scrapes."""

    __slots__ = ("buckets", "bytes", "created", "labels", "requests", "sum")

    def __init__(self, labels: tuple[str, str, str], created: float) -> None:
        self.labels = labels
        self.created = created
        self.requests: dict[str, tuple[int, float]] = {}  # status class -> (calls, first seen)
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # calls per bucket (not cumulative), +Inf last
        self.sum = 0.0  # seconds
        self.bytes = 0

    def add(self, klass: str, seconds: float, nbytes: int) -> None:
        found = self.requests.get(klass)
        self.requests[klass] = (found[0] + 1, found[1]) if found is not None else (1, time.time())
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1  # le: the first bound >= it
        self.sum += seconds
        self.bytes += nbytes


class RedMetrics:
    """The RED metrics of every service map in the process, as Prometheus reads them (the series a
    Counter/Histogram with these names and labels would export, `_created` included). A collector by
    its methods, not by inheritance: a compiled class cannot subclass prometheus_client's."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], Series] = {}

    def get(self, labels: tuple[str, str, str]) -> Series:
        found = self.series.get(labels)
        if found is None:
            found = self.series[labels] = Series(labels, time.time())
        return found

    def describe(self) -> list[Metric]:
        return self._families([])

    def collect(self) -> list[Metric]:
        # Copied in one C-level step each: the tracer adds series and calls while a scrape reads them.
        return self._families(list(self.series.values()))

    @staticmethod
    def _families(series: list[Series]) -> list[Metric]:
        requests = CounterMetricFamily(
            "wiretide_tracer_edge_requests",
            "Calls observed between two workloads",
            labels=(*_EDGE_LABELS, "status_class"),
        )
        duration = HistogramMetricFamily(
            "wiretide_tracer_edge_duration_seconds",
            "Call duration between two workloads, from packet timestamps",
            labels=_EDGE_LABELS,
        )
        nbytes = CounterMetricFamily(
            "wiretide_tracer_edge_bytes", "Bytes on the wire between two workloads", labels=_EDGE_LABELS
        )
        for one in series:
            labels = list(one.labels)
            for klass, (calls, first) in list(one.requests.items()):
                requests.add_metric([*labels, klass], calls, created=first)
            counts, total, upto = list(one.buckets), one.sum, 0
            cumulative = []
            for bound, n in zip(_BOUNDS, counts, strict=True):
                upto += n
                cumulative.append((bound, float(upto)))
            duration.add_metric(labels, cumulative, total)
            created = dict(zip(_EDGE_LABELS, labels, strict=True))
            duration.samples.append(Sample(f"{duration.name}_created", created, one.created))
            nbytes.add_metric(labels, one.bytes, created=one.created)
        return [requests, duration, nbytes]


RED: Final = RedMetrics()
REGISTRY.register(cast(Collector, RED))

# Distinct (source, destination, protocol) label sets exported to Prometheus before folding into "other".
MAX_EDGES: Final = 5_000
OTHER: Final = "other"
# The Prometheus label of an end known only by its address (a client outside the cluster, an address
# nobody resolved): one series for all of them, not one per address — the service map, computed on
# demand, still shows each address as its own node.
EXTERNAL: Final = "external"


# Addresses whose holders are remembered, and holders per address (all forgotten at once beyond).
MAX_HOLDER_ADDRESSES: Final = 50_000
MAX_HOLDERS_PER_ADDRESS: Final = 16


class Holders:
    """Which named workload held an address, from when (packet time): learned from the calls whose
    ends came named, read to name the ends of calls recorded by their address alone."""

    __slots__ = ("_by_ip",)

    def __init__(self) -> None:
        self._by_ip: dict[str, list[tuple[int, Workload]]] = {}

    def saw(self, ip: str, ts: int, workload: Workload) -> None:
        held = self._by_ip.get(ip)
        if held is None:
            if len(self._by_ip) >= MAX_HOLDER_ADDRESSES:
                TABLE_EVICTIONS.labels("map_address_holders").inc(len(self._by_ip))
                self._by_ip.clear()
            self._by_ip[ip] = [(ts, workload)]
        elif held[-1][1] != workload:
            if len(held) >= MAX_HOLDERS_PER_ADDRESS:
                del held[0]
            held.append((ts, workload))
        elif ts < held[-1][0] and len(held) == 1:
            held[0] = (ts, workload)

    def at(self, ip: str, ts: int) -> Workload | None:
        """The workload that held `ip` at `ts`: the last one seen with it by then, else (a name that
        arrived after the first calls) the first one seen with it afterwards."""
        held = self._by_ip.get(ip)
        if not held:
            return None
        found = held[0][1]
        for since, workload in held:
            if since > ts:
                break
            found = workload
        return found


class CallRecord(NamedTuple):
    """One call on the map (a tuple: one is made per entry, and a frozen dataclass costs twice as much).
    No entry: a KFL-filtered map is drawn from the calls the trace store holds (`calls_of`)."""

    ts_ns: int
    source: Workload
    destination: Workload
    protocol: str
    duration_ns: int
    error: bool
    bytes: int


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    namespace: str
    kind: str


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    destination: str
    protocol: str
    requests: int
    request_rate: float  # per second over the window
    error_rate: float  # fraction of requests
    p50_ms: float
    p95_ms: float
    p99_ms: float
    bytes: int


def _span_bytes_on_wire(shared: dict[str, Any]) -> int:
    req, resp = shared.get("wiretide.request.size", 0), shared.get("wiretide.response.size", 0)
    return (req if isinstance(req, int) and req > 0 else 0) + (
        resp if isinstance(resp, int) and resp > 0 else 0
    )


def calls_of(spans: Iterable[Span], predicate: Callable[[dict[str, Any]], bool] | None) -> list[CallRecord]:
    """The map's records of the calls whose spans these are (one per call, from its server side, its
    caller as the client side was finally named), those whose entry matches `predicate`."""
    out = []
    for span in spans:
        client = span.partner
        if client is None or "service.peer.name" in span.own:
            continue  # a client side (only it names its peer service; the server side stands for the call)
        if predicate is not None and not predicate(entry_of(span)):
            continue
        shared = span.shared
        out.append(
            CallRecord(
                span.start_ns, client.workload, span.workload, str(shared.get("wiretide.protocol", "tcp")),
                span.end_ns - span.start_ns, span.error, _span_bytes_on_wire(shared),
            )
        )  # fmt: skip
    return out


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def node_id(w: Workload) -> str:
    return f"{w.namespace}/{w.service_name}" if w.namespace else w.service_name


def node_of(w: Workload) -> Node:
    kind = w.workload_kind or ("workload" if w.known else "external")
    return Node(node_id(w), w.service_name, w.namespace, kind)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


class ServiceMap:
    def __init__(self, max_records: int = 100_000) -> None:
        self.records: deque[CallRecord] = deque(maxlen=max_records)
        self.latest_ns = 0
        self.evicted = 0
        self._labelled: set[tuple[str, str, str]] = set()
        # The RED series of each (source, destination, protocol) met (bounded), found without labels.
        self._children: dict[tuple[Workload, Workload, str], Series] = {}
        self.holders = Holders()

    def add(self, entry: dict[str, Any]) -> None:
        """Record one call, working out both ends and the error from the entry itself."""
        node = _str(entry.get("node"))
        source = workload_of(_dict(entry.get("src")), node)
        destination = workload_of(_dict(entry.get("dst")), node, True)
        self.add_call(entry, source, destination, server_error(entry) != "")

    def add_call(self, entry: dict[str, Any], source: Workload, destination: Workload, error: bool) -> None:
        """Record one call whose ends and error are already known (from its spans)."""
        ts = _int(entry.get("timestamp"))
        duration = max(_int(entry.get("elapsed_us")), 0) * 1000
        size = _dict(entry.get("size"))
        nbytes = max(_int(size.get("request")), 0) + max(_int(size.get("response")), 0)
        protocol = _str(entry.get("protocol")) or "tcp"
        self._record(entry, source, destination, error, ts, duration, protocol, nbytes)

    def add_span(self, span: Span, source: Workload, destination: Workload) -> None:
        """`add_call` for an entry already turned into spans: its times, protocol, sizes and error are
        read from the span (the same values `add_call` would work out from the entry)."""
        shared = span.shared
        self._record(
            span.entry, source, destination, span.error, span.start_ns, span.end_ns - span.start_ns,
            str(shared["wiretide.protocol"]), _span_bytes_on_wire(shared), span.status_class,
        )  # fmt: skip

    def _record(
        self, entry: dict[str, Any], source: Workload, destination: Workload, error: bool, ts: int,
        duration: int, protocol: str, nbytes: int, outcome: str = "",
    ) -> None:  # fmt: skip
        records = self.records
        if len(records) == records.maxlen:
            self.evicted += 1
            RECORDS_EVICTED.inc()
        records.append(CallRecord(ts, source, destination, protocol, duration, error, nbytes))
        if source.known and not source.learned:
            self._saw(entry.get("src"), ts, source)
        if destination.known and not destination.learned:
            self._saw(entry.get("dst"), ts, destination)
        self.latest_ns = max(self.latest_ns, ts + duration)
        self._red(source, destination, protocol, entry, error, duration, nbytes, outcome)

    def _red(
        self, source: Workload, destination: Workload, protocol: str, entry: dict[str, Any], error: bool,
        duration_ns: int, nbytes: int, outcome: str = "",
    ) -> None:  # fmt: skip
        key = (source, destination, protocol)
        series = self._children.get(key)
        if series is None:
            labels = (
                node_id(source) if source.known and not source.learned else EXTERNAL,
                node_id(destination) if destination.known and not destination.learned else EXTERNAL,
                protocol,
            )
            if labels not in self._labelled:
                if len(self._labelled) >= MAX_EDGES:
                    labels = (OTHER, OTHER, protocol)
                else:
                    self._labelled.add(labels)
            series = RED.get(labels)
            if len(self._children) < MAX_EDGES * 4:
                self._children[key] = series
        series.add(outcome or status_class(entry, error), duration_ns / 1e9, nbytes)

    def _saw(self, end: Any, ts: int, workload: Workload) -> None:
        ip = end.get("ip") if type(end) is dict else None
        if type(ip) is str and ip:
            self.holders.saw(ip, ts, workload)

    def resolved(self, workload: Workload, ts: int) -> Workload:
        """`workload`, or for an end recorded by its address alone the workload that held it."""
        if workload.known or not workload.address:
            return workload
        return self.holders.at(workload.address, ts) or workload

    def compute(
        self, window_ns: int, calls: Iterable[CallRecord] | None = None
    ) -> tuple[list[Node], list[Edge]]:
        """Nodes and edges over the last `window_ns` of packet time (0: everything held), from the
        map's records, or from `calls` (e.g. `calls_of` the trace store's spans, for a filtered map)."""
        since = self.latest_ns - window_ns if window_ns > 0 else 0
        nodes: dict[str, Node] = {}
        groups: dict[tuple[str, str, str], list[CallRecord]] = {}
        for rec in reversed(self.records) if calls is None else calls:
            if rec.ts_ns < since:
                continue
            src = node_of(self.resolved(rec.source, rec.ts_ns))
            dst = node_of(self.resolved(rec.destination, rec.ts_ns))
            nodes.setdefault(src.id, src)
            nodes.setdefault(dst.id, dst)
            groups.setdefault((src.id, dst.id, rec.protocol), []).append(rec)
        seconds = window_ns / 1e9 if window_ns > 0 else 0.0
        edges = []
        for (src_id, dst_id, protocol), recs in sorted(groups.items()):
            durations = sorted(r.duration_ns / 1e6 for r in recs)
            if seconds <= 0:
                first = min(r.ts_ns for r in recs)
                span = max(self.latest_ns - first, 1)
                rate = len(recs) / (span / 1e9)
            else:
                rate = len(recs) / seconds
            edges.append(
                Edge(
                    source=src_id,
                    destination=dst_id,
                    protocol=protocol,
                    requests=len(recs),
                    request_rate=rate,
                    error_rate=sum(r.error for r in recs) / len(recs),
                    p50_ms=percentile(durations, 0.50),
                    p95_ms=percentile(durations, 0.95),
                    p99_ms=percentile(durations, 0.99),
                    bytes=sum(r.bytes for r in recs),
                )
            )
        return sorted(nodes.values(), key=lambda n: n.id), edges

"""Span names of bounded cardinality, per server: what a Jaeger user picks an operation from.

An HTTP span is named `METHOD route` (`spans.py`), where the route is the path with identifier-like
segments folded to `{id}` (`route_of`). A server whose paths carry other unbounded segments — a
search term, a file name, a key (`/c/p1`, `/c/p2`, … each its own name) — would otherwise give every
call its own operation, fill Jaeger's operation list and every table keyed by a name (the delay
model's endpoints, the OTLP encoder's name cache).

Rule: per server (the callee's workload), the routes seen form a tree of path segments; one position
of it — one segment after one prefix — that has taken `MAX_SEGMENT_VALUES` distinct values reads
`{param}` from then on, for every call (`/c/{param}`), the way route templates read. A server's tree
holds at most `MAX_NODES_PER_SERVER` segments: beyond that a new route is named by its known prefix
and `/{param}` for the rest. Names that are not routes (gRPC methods, DNS questions, topics, tables)
are kept as they are up to `MAX_NAMES_PER_SERVER` per server; beyond that a new one reads
`<protocol> other`. All of it together holds at most `MAX_TOTAL` segments and names (~150 bytes each);
beyond that everything is forgotten at once and learned again. Each of these is counted (`stats`).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

from wiretide.common.protocols import info

# Every bounded table of the tracer that forgets entries says how many (rare events: counted where
# they happen); the span names' collapses are counted per call in `SpanNames.stats` and published
# by the assembler with its other per-batch counts.
TABLE_EVICTIONS = Counter(
    "wiretide_tracer_table_evictions_total", "Entries forgotten by the tracer's bounded tables", ["table"]
)
NAMES_COLLAPSED = Counter(
    "wiretide_tracer_span_names_collapsed_total",
    "Span names held to their bounds: positions folded to {param}, routes cut, names read as other, resets",
    ["how"],
)

# Distinct values one route position takes before it is a parameter: a real API spells fewer
# literal segments after one prefix; more are data (keys, names, terms) that no identifier rule caught.
MAX_SEGMENT_VALUES: Final = 100
# Route segments remembered per server, and non-route names per server.
MAX_NODES_PER_SERVER: Final = 2_000
MAX_NAMES_PER_SERVER: Final = 1_000
# Segments and names remembered in all (~150 bytes each: the segment or name, its slot, its node).
MAX_TOTAL: Final = 100_000
PARAM: Final = "{param}"
OTHER: Final = "other"
MAX_PROTOCOLS: Final = 256
# What `stats` counts.
STAT_NAMES: Final = ("routes_folded", "routes_cut", "names_other", "names_reset")


class Segment:
    """One position of a route tree: the segments seen after it, or (folded) the one that stands for all."""

    __slots__ = ("children", "param")

    def __init__(self) -> None:
        self.children: dict[str, Segment] | None = None
        self.param: Segment | None = None

    def size(self) -> int:
        """Segments below this one (itself excluded)."""
        total = 0
        stack: list[Segment] = [self]
        while stack:
            node = stack.pop()
            for child in (node.children or {}).values():
                total += 1
                stack.append(child)
            if node.param is not None:
                total += 1
                stack.append(node.param)
        return total


class Server:
    __slots__ = ("names", "nodes", "root")

    def __init__(self) -> None:
        self.root = Segment()
        self.nodes = 0
        self.names: set[str] = set()


class SpanNames:
    """`name(server, name, protocol)`: the name to give a call's spans. Bounded as the module says."""

    __slots__ = ("_http", "_servers", "stats", "total")

    def __init__(self) -> None:
        self._servers: dict[tuple[str, str], Server] = {}
        self._http: dict[str, bool] = {}  # protocol -> its spans are named `METHOD route`
        self.total = 0
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    def name(self, namespace: str, server: str, name: str, protocol: str) -> str:
        http = self._http.get(protocol)
        if http is None:
            http = info(protocol).span_naming == "http"
            if len(self._http) < MAX_PROTOCOLS:
                self._http[protocol] = http
        key = (namespace, server)
        found = self._servers.get(key)
        if found is None:
            if self.total >= MAX_TOTAL:
                self._reset()
            found = self._servers[key] = Server()
            self.total += 1
        if http:
            method, _, route = name.partition(" ")
            if route.startswith("/"):
                return f"{method} {self._route(found, route)}"
        names = found.names
        if name in names:
            return name
        if len(names) >= MAX_NAMES_PER_SERVER:
            self.stats["names_other"] += 1
            return f"{protocol} {OTHER}"
        if self.total >= MAX_TOTAL:
            self._reset()
            return self.name(namespace, server, name, protocol)
        names.add(name)
        self.total += 1
        return name

    def _route(self, server: Server, route: str) -> str:
        node = server.root
        parts = route.split("/")
        out = [""]
        for i in range(1, len(parts)):
            segment = parts[i]
            if node.param is not None:
                out.append(PARAM)
                node = node.param
                continue
            children = node.children
            child = children.get(segment) if children is not None else None
            if child is not None:
                out.append(segment)
                node = child
                continue
            if children is not None and len(children) >= MAX_SEGMENT_VALUES:
                # This position is data, not a route: one `{param}` stands for all its values.
                dropped = node.size()
                node.children = None
                node.param = child = Segment()
                server.nodes += 1 - dropped
                self.total += 1 - dropped
                self.stats["routes_folded"] += 1
                out.append(PARAM)
                node = child
                continue
            if server.nodes >= MAX_NODES_PER_SERVER or self.total >= MAX_TOTAL:
                self.stats["routes_cut"] += 1
                out.append(PARAM)  # the known prefix, and one parameter for the rest
                break
            if children is None:
                children = node.children = {}
            child = children[segment] = Segment()
            server.nodes += 1
            self.total += 1
            out.append(segment)
            node = child
        return "/".join(out)

    def _reset(self) -> None:
        TABLE_EVICTIONS.labels("span_names").inc(self.total)
        self._servers.clear()
        self.total = 0
        self.stats["names_reset"] += 1

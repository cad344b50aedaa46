"""Who held an address when: the identity table that names an entry's `src`/`dst`, and its sync client.

The resolver owns the truth and publishes it (gRPC `Snapshot`, then versioned deltas on
`wt.identity.updates`); every dissector keeps an `IdentityTable` copy through `IdentitySync` and
calls `IdentityTable.lookup(ip, port, ts_ns)` per entry endpoint, without I/O. A pod is also held
under each of its container ids (`IdentityTable.container`): an end whose process's container is
known is named by that pod even where its address is shared (host-network pods).

Rule: a lookup is answered from memory alone, by who held ip[:port] *at the entry's timestamp* —
never by who holds it now — and the table stays within its bounds (spans per address, total spans,
learned DNS names), counting what it evicts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import grpc

from wiretide.common import containers
from wiretide.common.bus import IDENTITY_UPDATES, Bus, decode_or_count
from wiretide.common.rpc import channel
from wiretide.common.tls import PLAINTEXT, Transport
from wiretide.proto.v1 import resolver_pb2, resolver_pb2_grpc

log = logging.getLogger(__name__)

NS: Final = 1_000_000_000
# After a holder lets an address go, late packets of its connections (FIN, TIME_WAIT, retransmits)
# still belong to it until a new holder appears.
LINGER_NS: Final = 30 * NS
# Kubernetes timestamps have one-second resolution and node clocks drift: an entry this much
# earlier than the first known holder's start is still given to it.
EARLY_SLACK_NS: Final = 2 * NS
# Holders kept per address: enough to name entries across several IP reuses, bounded under churn.
MAX_SPANS_PER_KEY: Final = 8
# Total spans in one table: ~1 KiB each with their fields, so about 500 MiB at the very worst.
MAX_SPANS: Final = 500_000
# Addresses learned from DNS answers: a fallback name only, so a small LRU suffices.
MAX_DNS_NAMES: Final = 100_000
# DNS answers with absurd TTLs are capped so that a learned name does not outlive reality.
MAX_DNS_TTL_S: Final = 3600
# The snapshot RPC may carry a large cluster; give it time, but never block forever.
SNAPSHOT_TIMEOUT_S: Final = 30.0
RESYNC_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0, 5.0)

MECHANISMS: Final = ("ip", "ip-and-port", "dns", "process", "container", "none")
# The endpoint fields of an address nobody is known to hold: every key present, all empty.
UNRESOLVED: Final[dict[str, Any]] = dict.fromkeys(
    ("name", "namespace", "pod", "service", "workload", "node", "process")
)
NONE_RESULT: Final[tuple[dict[str, Any] | None, str]] = (None, "none")


# Shared parts of endpoint fields (labels, workload, service) are interned up to this many distinct
# values: pods of one workload share them, which roughly halves a large table's memory.
MAX_INTERNED: Final = 200_000


def endpoint_fields(ident: resolver_pb2.Identity, shared: dict[Any, Any] | None = None) -> dict[str, Any]:
    """The entry endpoint fields (DESIGN.md section 3) that `ident` stands for.

    With `shared`, equal nested values (labels, workload, service) are the same objects across spans.
    """

    def interned(key: Any, make: Any) -> Any:
        if shared is None:
            return make()
        value = shared.get(key)
        if value is None:
            if len(shared) >= MAX_INTERNED:
                shared.clear()
            value = shared[key] = make()
        return value

    name, namespace, node = ident.name or None, ident.namespace or None, ident.node or None
    fields: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "pod": None,
        "service": None,
        "workload": None,
        "node": node,
        "process": None,
    }
    if ident.kind in ("pod", "container"):  # a container identity names its pod
        labels = {k: ident.labels[k] for k in ident.labels}
        labels = interned(("labels", *sorted(labels.items())), lambda: labels)
        fields["pod"] = {"name": name, "namespace": namespace or "", "labels": labels}
    elif ident.kind == "node":
        fields["node"] = node or name
    if ident.service_name:
        svc = (ident.service_name, ident.service_namespace)
        fields["service"] = interned(("service", *svc), lambda: {"name": svc[0], "namespace": svc[1]})
    if ident.HasField("workload") and ident.workload.name:
        wl = (ident.workload.kind, ident.workload.name)
        fields["workload"] = interned(("workload", *wl), lambda: {"kind": wl[0], "name": wl[1]})
    if ident.pid or ident.process_name or ident.container_id:
        fields["process"] = {
            "pid": ident.pid or None,
            "name": ident.process_name or None,
            "container_id": ident.container_id or None,
        }
    return fields


def mechanism_of(ident: resolver_pb2.Identity) -> str:
    if ident.kind == "process":
        return "process"
    if ident.kind == "container":
        return "container"
    if ident.kind == "dns":
        return "dns"
    return "ip-and-port" if ident.port else "ip"


def span_key(ident: resolver_pb2.Identity) -> tuple[str, int, str, str, str, int]:
    """What makes a span the same span across upserts: the address, the holder and when it started."""
    return (ident.ip, ident.port, ident.kind, ident.namespace, ident.name, ident.valid_from_ns)


def packed(ip: str) -> bytes | None:
    """The address as the bytes a packet carries (4 or 16), or None if `ip` is not an address."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except (OSError, ValueError):
        return None


class Span:
    """One holder of one address over [start, end) (end 0 = still held). `result` is what a lookup returns."""

    __slots__ = ("end", "ident", "key", "result", "start")

    def __init__(self, ident: resolver_pb2.Identity, shared: dict[Any, Any] | None = None) -> None:
        self.ident = ident
        self.key = span_key(ident)
        self.start = ident.valid_from_ns
        self.end = ident.valid_until_ns
        self.result: tuple[dict[str, Any] | None, str] = (endpoint_fields(ident, shared), mechanism_of(ident))


def _pick(spans: list[Span], ts: int) -> tuple[dict[str, Any] | None, str] | None:
    last = spans[-1]
    if last.start <= ts:
        if last.end == 0 or ts < last.end + LINGER_NS:
            return last.result
        return None
    for i in range(len(spans) - 2, -1, -1):
        span = spans[i]
        if span.start <= ts:
            if span.end == 0 or ts < span.end + LINGER_NS:
                return span.result
            return None
    if spans[0].start - ts <= EARLY_SLACK_NS:
        return spans[0].result
    return None


@dataclass(frozen=True, slots=True)
class TableStats:
    spans: int
    addresses: int
    dns_names: int
    evicted: int
    version: int
    stale: bool


class IdentityTable:
    """The IP history: for each ip (and ip:port), its holders over time, looked up at a timestamp.

    Spans are kept per address sorted by start and never overlap: a newer holder cuts the older one
    short (an address has one holder at a time), and starts no earlier than an older holder let go.
    """

    def __init__(self, max_spans: int = MAX_SPANS, max_spans_per_key: int = MAX_SPANS_PER_KEY) -> None:
        self.max_spans = max_spans
        self.max_spans_per_key = max_spans_per_key
        # ip (text and packed bytes both as keys) -> spans; and ip -> port -> spans
        self._by_ip: dict[str | bytes, list[Span]] = {}
        self._by_port: dict[str | bytes, dict[int, list[Span]]] = {}
        # span key -> span, in insertion order (the oldest is evicted first)
        self._index: dict[tuple[str, int, str, str, str, int], Span] = {}
        # ip -> (earliest ts, result) for addresses whose answer does not depend on port or time
        # (one open holder, no port-specific spans): one dict probe answers most lookups
        self._fast: dict[str | bytes, tuple[int, tuple[dict[str, Any] | None, str]]] = {}
        self._dns: OrderedDict[str | bytes, tuple[int, int, tuple[dict[str, Any] | None, str]]] = (
            OrderedDict()
        )
        self._shared: dict[Any, Any] = {}
        self.version = 0
        self.synced_at_ns = 0
        self.stale = False
        self.evicted = 0

    # -- the hot path ---------------------------------------------------------------------
    def lookup(self, ip: str | bytes, port: int, ts_ns: int) -> tuple[dict[str, Any] | None, str]:
        """Who held ip[:port] at `ts_ns`: (endpoint fields, mechanism). `ip` is text or packed bytes.

        The returned dict is shared by every entry with the same holder: copy it before changing it.
        """
        hit = self._fast.get(ip)
        if hit is not None and hit[0] <= ts_ns:
            return hit[1]
        ports = self._by_port.get(ip)
        if ports is not None:
            spans = ports.get(port)
            if spans is not None:
                found = _pick(spans, ts_ns)
                if found is not None:
                    return found
        spans = self._by_ip.get(ip)
        if spans is not None:
            found = _pick(spans, ts_ns)
            if found is not None:
                return found
        if self._dns:
            learned = self._dns.get(ip)
            if learned is not None and learned[0] <= ts_ns < learned[1]:
                return learned[2]
        return NONE_RESULT

    def container(self, container_id: str, ts_ns: int) -> dict[str, Any] | None:
        """The endpoint fields of the pod that ran container `container_id` at `ts_ns`, or None.

        Shared like `lookup`'s answer: copy it before changing it.
        """
        return self.lookup(containers.key(container_id), 0, ts_ns)[0]

    def endpoint(self, ip: str, port: int, ts_ns: int, raw: bytes | None = None) -> dict[str, Any]:
        """A complete entry endpoint (`src`/`dst`): {ip, port, name, …, resolution}, a fresh dict.

        Pass the packet's address bytes as `raw` when at hand: they are looked up without conversion.
        """
        fields, resolution = self.lookup(raw if raw is not None else ip, port, ts_ns)
        out: dict[str, Any] = {"ip": ip, "port": port}
        out.update(fields if fields is not None else UNRESOLVED)
        out["resolution"] = resolution
        return out

    def find(self, ip: str | bytes, port: int, ts_ns: int) -> tuple[resolver_pb2.Identity | None, str]:
        """Like `lookup`, but the held Identity itself (for the resolver's Lookup RPC); not the hot path."""
        candidates: list[list[Span]] = []
        ports = self._by_port.get(ip)
        if ports is not None and port in ports:
            candidates.append(ports[port])
        if ip in self._by_ip:
            candidates.append(self._by_ip[ip])
        for spans in candidates:
            found = _pick(spans, ts_ns)
            if found is not None:
                span = next(s for s in spans if s.result is found)
                return span.ident, found[1]
        learned = self._dns.get(ip)
        if learned is not None and learned[0] <= ts_ns < learned[1]:
            fields = learned[2][0] or {}
            return resolver_pb2.Identity(ip=str(ip), name=fields.get("name") or "", kind="dns"), "dns"
        return None, "none"

    # -- changes --------------------------------------------------------------------------
    def _spans_for(self, ident: resolver_pb2.Identity, create: bool) -> list[list[Span]]:
        keys: list[str | bytes] = [ident.ip]
        raw = packed(ident.ip)
        if raw is not None:
            keys.append(raw)
        out: list[list[Span]] = []
        for key in keys:
            if ident.port:
                ports = self._by_port.get(key)
                if ports is None:
                    if not create:
                        continue
                    ports = self._by_port[key] = {}
                spans = ports.get(ident.port)
                if spans is None:
                    if not create:
                        continue
                    spans = ports[ident.port] = []
            else:
                spans = self._by_ip.get(key)
                if spans is None:
                    if not create:
                        continue
                    spans = self._by_ip[key] = []
            out.append(spans)
        return out

    def upsert(
        self, ident: resolver_pb2.Identity
    ) -> tuple[resolver_pb2.Identity, list[resolver_pb2.Identity]]:
        """Add or replace one span. Returns the span as stored (its start may move past an older
        holder's end) and the other spans changed as a consequence (older holders cut short)."""
        key = span_key(ident)
        old = self._index.get(key)
        if old is not None:
            old.ident = ident
            old.end = ident.valid_until_ns
            old.result = (endpoint_fields(ident, self._shared), mechanism_of(ident))
            self._refresh(ident.ip)
            return ident, []
        lists = self._spans_for(ident, create=True)
        spans = lists[0]
        starts = [s.start for s in spans]
        pos = bisect.bisect_right(starts, ident.valid_from_ns)
        changed: list[resolver_pb2.Identity] = []
        if pos > 0:
            prev = spans[pos - 1]
            if prev.end == 0 or prev.end > ident.valid_from_ns:
                if prev.end == 0:
                    prev.end = ident.valid_from_ns  # a newer claim ends the older one
                else:
                    ident.valid_from_ns = prev.end  # cannot have used it before the old one let go
                prev.ident = _with_until(prev.ident, prev.end)
                changed.append(prev.ident)
        span = Span(ident, self._shared)
        if pos < len(spans) and (span.end == 0 or span.end > spans[pos].start):
            span.end = spans[pos].start
            span.ident = _with_until(ident, span.end)
        for target in lists:
            target.insert(pos, span)
        self._index[span.key] = span
        while len(spans) > self.max_spans_per_key:
            self._drop(spans[0])
        while len(self._index) > self.max_spans:
            oldest = next(iter(self._index.values()))
            self._drop(oldest)
        self._refresh(ident.ip)
        return span.ident, changed

    def remove(self, ident: resolver_pb2.Identity) -> bool:
        span = self._index.get(span_key(ident))
        if span is None:
            return False
        self._drop(span, evicted=False)
        return True

    def _drop(self, span: Span, evicted: bool = True) -> None:
        for spans in self._spans_for(span.ident, create=False):
            with contextlib.suppress(ValueError):
                spans.remove(span)
        if not span.ident.port:
            for key in (span.ident.ip, packed(span.ident.ip)):
                if key is not None and not self._by_ip.get(key, True):
                    del self._by_ip[key]
        else:
            for key in (span.ident.ip, packed(span.ident.ip)):
                ports = self._by_port.get(key) if key is not None else None
                if ports is not None and not ports.get(span.ident.port, True):
                    del ports[span.ident.port]
                    if not ports:
                        del self._by_port[key]  # type: ignore[arg-type]
        self._index.pop(span.key, None)
        self._refresh(span.ident.ip)
        if evicted:
            self.evicted += 1

    def _refresh(self, ip: str) -> None:
        """Recompute the fast answer for `ip` after its spans changed."""
        raw = packed(ip)
        spans = self._by_ip.get(ip)
        fast = None
        if spans and ip not in self._by_port and spans[-1].end == 0:
            last = spans[-1]
            fast = (last.start if len(spans) > 1 else last.start - EARLY_SLACK_NS, last.result)
        for key in (ip, raw):
            if key is None:
                continue
            if fast is None:
                self._fast.pop(key, None)
            else:
                self._fast[key] = fast

    def expire(self, before_ns: int) -> list[resolver_pb2.Identity]:
        """Drop spans that ended before `before_ns` (retention); returns what was dropped."""
        gone = [s for s in self._index.values() if s.end and s.end + LINGER_NS < before_ns]
        for span in gone:
            self._drop(span, evicted=False)
        return [s.ident for s in gone]

    def clear(self) -> None:
        self._by_ip.clear()
        self._by_port.clear()
        self._index.clear()
        self._fast.clear()

    def identities(self) -> Iterable[resolver_pb2.Identity]:
        return (s.ident for s in self._index.values())

    def get(self, ident: resolver_pb2.Identity) -> resolver_pb2.Identity | None:
        span = self._index.get(span_key(ident))
        return None if span is None else span.ident

    def __len__(self) -> int:
        return len(self._index)

    def held(self, kind: str) -> list[resolver_pb2.Identity]:
        """The identities of `kind` ("pod", "node"…) that hold their address now (no end)."""
        return [s.ident for s in self._index.values() if s.end == 0 and s.ident.kind == kind]

    def stats(self) -> TableStats:
        addresses = sum(
            1 for k in self._by_ip if isinstance(k, str) and not k.startswith(containers.KEY_PREFIX)
        ) + sum(1 for k in self._by_port if isinstance(k, str))
        return TableStats(len(self._index), addresses, len(self._dns), self.evicted, self.version, self.stale)

    # -- names learned from traffic -------------------------------------------------------
    def learn_dns(self, name: str, ip: str, ts_ns: int, ttl_s: int) -> None:
        """Remember that DNS answered `name` → `ip` at `ts_ns` for `ttl_s` seconds.

        A learned name is a fallback: any pod, service, node or process identity for the address wins.
        The dissector's DNS protocol calls this for each A/AAAA answer it sees.
        """
        name = name.rstrip(".")
        if not name:
            return
        raw = packed(ip)
        if raw is None:
            return
        ttl = max(1, min(int(ttl_s), MAX_DNS_TTL_S))
        until = ts_ns + (ttl * NS) + LINGER_NS
        result: tuple[dict[str, Any] | None, str] = (
            {
                "name": name,
                "namespace": None,
                "pod": None,
                "service": None,
                "workload": None,
                "node": None,
                "process": None,
            },
            "dns",
        )
        for key in (ip, raw):
            self._dns.pop(key, None)
            self._dns[key] = (ts_ns - EARLY_SLACK_NS, until, result)
        while len(self._dns) > 2 * MAX_DNS_NAMES:
            self._dns.popitem(last=False)


def _with_until(ident: resolver_pb2.Identity, until: int) -> resolver_pb2.Identity:
    copy = resolver_pb2.Identity()
    copy.CopyFrom(ident)
    copy.valid_until_ns = until
    return copy


def apply_update(table: IdentityTable, update: resolver_pb2.IdentityUpdate) -> None:
    """Apply one delta (already checked to be the next version) to `table`."""
    for ident in update.removals:
        table.remove(ident)
    for ident in update.upserts:
        table.upsert(ident)
    table.version = update.version
    table.synced_at_ns = update.synced_at_ns
    table.stale = update.stale


def load_snapshot(table: IdentityTable, snap: resolver_pb2.SnapshotResponse) -> None:
    table.clear()
    for ident in snap.identities:
        table.upsert(ident)
    table.version = snap.version
    table.synced_at_ns = snap.synced_at_ns
    table.stale = snap.stale


class IdentitySync:
    """Keeps an `IdentityTable` equal to the resolver's: snapshot over gRPC, then deltas from NATS.

    Deltas arriving while a snapshot is fetched are buffered and replayed above its version; a delta
    that skips a version (a lost message, a resolver restart) triggers a new snapshot. While the
    resolver is unreachable the table keeps answering from its last good state.
    """

    def __init__(
        self,
        bus: Bus,
        resolver_address: str,
        table: IdentityTable | None = None,
        *,
        transport: Transport = PLAINTEXT,
        metadata: tuple[tuple[str, str], ...] = (),  # the service token (the resolver checks callers)
    ) -> None:
        self.bus = bus
        self.address = resolver_address
        self.transport = transport
        self.metadata = metadata
        self.table = table if table is not None else IdentityTable()
        self.resyncs = 0
        self.gaps = 0
        self.synced = asyncio.Event()
        self._pending: list[resolver_pb2.IdentityUpdate] = []
        self._need_snapshot = asyncio.Event()
        self._loading = False
        self._task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        self._channel = channel(self.address, self.transport, peer="resolver")
        self._sub = await self.bus.nc.subscribe(IDENTITY_UPDATES, cb=self._on_message)
        self._need_snapshot.set()
        self._task = asyncio.create_task(self._run(), name="identity-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._channel is not None:
            await self._channel.close()

    async def _on_message(self, msg: Any) -> None:
        update = decode_or_count(resolver_pb2.IdentityUpdate, msg.data, IDENTITY_UPDATES)
        if update is None:
            return
        if self._loading or self._need_snapshot.is_set():
            self._pending.append(update)
            return
        self._apply(update)

    def _apply(self, update: resolver_pb2.IdentityUpdate) -> None:
        table = self.table
        heartbeat = not update.upserts and not update.removals
        if heartbeat and update.version == table.version:
            table.synced_at_ns = update.synced_at_ns
            table.stale = update.stale
            return
        if update.version <= table.version:
            return  # already in the snapshot
        if update.version != table.version + 1 or heartbeat:  # a heartbeat ahead of us: deltas were lost
            self.gaps += 1
            log.warning(
                "identity update gap, resynchronising",
                extra={"have": table.version, "got": update.version},
            )
            self._pending.append(update)
            self._need_snapshot.set()
            return
        apply_update(table, update)

    async def _run(self) -> None:
        attempt = 0
        while True:
            await self._need_snapshot.wait()
            self._loading = True
            try:
                assert self._channel is not None
                stub = resolver_pb2_grpc.ResolverServiceStub(self._channel)
                snap = await stub.Snapshot(
                    resolver_pb2.SnapshotRequest(), timeout=SNAPSHOT_TIMEOUT_S, metadata=self.metadata
                )
            except grpc.aio.AioRpcError as exc:
                self._loading = False
                delay = RESYNC_BACKOFF_S[min(attempt, len(RESYNC_BACKOFF_S) - 1)]
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("resolver snapshot failed", extra={"error": exc.code().name})
                await asyncio.sleep(delay)
                continue
            attempt = 0
            load_snapshot(self.table, snap)
            self.resyncs += 1
            self._need_snapshot.clear()
            pending, self._pending = self._pending, []
            self._loading = False
            for update in sorted(pending, key=lambda u: u.version):
                self._apply(update)
            if not self._need_snapshot.is_set():
                self.synced.set()


def ip_text(raw: bytes) -> str:
    """Packed address bytes (4 or 16) → text, for callers that need the text form."""
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)

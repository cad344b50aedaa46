"""Flow sharding: every packet of a flow, both directions and every IP fragment, to the same dissector.

Rule: the owner of a flow is a pure function of its direction-independent hash and the set of
endpoints (a consistent-hash ring), so adding or losing one endpoint moves only that endpoint's share.
Fragments without ports follow the first fragment of their datagram (keyed by addresses, protocol and
IP id); fragments whose first piece never shows up are routed by address pair and counted.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from wiretide.common.packets import (
    ETH_P_IP,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    LINKTYPE_ETHERNET,
    Headers,
    PacketColumns,
    decode_headers,
    flow_hash,
)

VNODES: Final = 160  # points per endpoint: keeps shares within a few percent of even
TABLE_BITS: Final = 16  # the ring is flattened into 2**16 slots so a lookup is one list index
TABLE_SHIFT: Final = 32 - TABLE_BITS
# Datagrams whose first fragment we remember; beyond this the oldest is forgotten (a reassembly
# window on a busy node is far smaller).
MAX_FRAG_KEYS: Final = 8192
# Later fragments held while their first fragment is still to come, by count and by frame bytes (a
# hostile sender's fragments can each be near 64 KiB: the count alone would allow 128 MiB).
MAX_PENDING_FRAGMENTS: Final = 2048
MAX_PENDING_FRAGMENT_BYTES: Final = 4 << 20
# Seconds a held fragment may wait for its first fragment before it is routed by address pair
# (hosts reassemble within 30-60 s, but a first fragment arrives within microseconds when it arrives).
HOLD_S: Final = 1.0


# Ethernet type, IPv4 version/IHL, flags/fragment offset, protocol, addresses, ports — read from the
# EtherType on, assuming a 20-byte IPv4 header (checked: vihl == 0x45).
FAST_HEADER = struct.Struct("!HBxxxxxHxB2x4s4sHH")
FAST_MIN: Final = 14 + 20 + 4
IPV4_NO_OPTIONS: Final = 0x45
FRAG_MASK: Final = 0x3FFF  # more-fragments flag and offset (RFC 791 §3.1)
FAST_PROTOS: Final = frozenset({IPPROTO_TCP, IPPROTO_UDP})
PROTO_BYTE: Final = tuple(bytes([i]) for i in range(256))
# flow_hash's key (lower address, higher address, their ports, protocol) packed in one call from the
# addresses as bytes and the ports as read by a native-order unpack: written back in native order they
# are the wire bytes again, whatever the host's byte order.
FLOW_KEY = struct.Struct("=4s4sHHB")
ROW: Final = 5  # entries per packet in EndpointBatch.rows
_crc = zlib.crc32


class EndpointBatch:
    """The packets being batched for one endpoint, kept as rows until take() turns them into columns:
    five entries per packet in `rows` (frame bytes, caplen, origlen, timestamp_ns, interface id). A ring
    walk (see afpacket.RingSocket.drain) adds a packet with one `extend`; take() joins the frames once,
    so the batch never regrows (and recopies) one long buffer frame by frame."""

    __slots__ = ("interfaces", "rows")

    def __init__(self, interfaces: list[tuple[str, int]]) -> None:
        self.rows: list[bytes | int] = []
        self.interfaces = interfaces

    def __len__(self) -> int:
        return len(self.rows) // ROW

    def append(self, frame: bytes | memoryview, origlen: int, ts_ns: int, interface_id: int) -> None:
        self.rows += (bytes(frame), len(frame), origlen, ts_ns, interface_id)

    def take(self) -> PacketColumns:
        rows = self.rows
        self.rows = []
        return PacketColumns(
            b"".join(cast("list[bytes]", rows[0::ROW])),
            cast("list[int]", rows[1::ROW]),
            cast("list[int]", rows[2::ROW]),
            cast("list[int]", rows[3::ROW]),
            cast("list[int]", rows[4::ROW]),
            list(self.interfaces),
        )


def _point(endpoint: str, replica: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{endpoint}#{replica}".encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True, slots=True)
class HashRing:
    """A consistent-hash ring of endpoints, flattened into a slot table."""

    endpoints: tuple[str, ...]
    table: tuple[int, ...] = field(repr=False, default=())

    @classmethod
    def of(cls, endpoints: Sequence[str]) -> HashRing:
        eps = tuple(sorted(set(endpoints)))
        if not eps:
            return cls((), ())
        points = sorted((_point(ep, r), i) for i, ep in enumerate(eps) for r in range(VNODES))
        table: list[int] = []
        j = 0
        n = len(points)
        for slot in range(1 << TABLE_BITS):
            position = (slot << TABLE_SHIFT) | (1 << (TABLE_SHIFT - 1))
            while j < n and points[j][0] < position:
                j += 1
            table.append(points[j % n][1])
        return cls(eps, tuple(table))

    def owner(self, flow: int) -> str:
        """Endpoint owning a 32-bit flow hash (the ring must not be empty)."""
        return self.endpoints[self.table[flow >> TABLE_SHIFT]]


@dataclass(slots=True)
class ShardCounters:
    """Packets that could not be placed normally, by reason."""

    undecodable: int = 0  # not IPv4/IPv6 or bogus headers: sent to the ring's first slot owner
    fragments_held: int = 0
    fragments_orphaned: int = 0  # first fragment never seen: routed by address pair


class Sharder:
    """A packet sink that splits packets into one batch per endpoint of the ring."""

    def __init__(
        self,
        ring: HashRing,
        interfaces: list[tuple[str, int]],
        hold_s: float = HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hold_s = hold_s
        self._clock = clock
        self._link_cache: list[int] = []
        self.interfaces = interfaces  # shared with every builder: index -> (name, link type)
        self.counters = ShardCounters()
        self._frag_owner: OrderedDict[tuple[bytes, bytes, int, int], int] = OrderedDict()
        self._pending: OrderedDict[
            tuple[bytes, bytes, int, int], list[tuple[bytes, int, int, int, float]]
        ] = OrderedDict()
        self._n_pending = 0
        self._pending_bytes = 0
        self._orphans: list[EndpointBatch] = []
        self._nowhere = EndpointBatch(interfaces)
        self.set_ring(ring)

    def set_ring(self, ring: HashRing) -> None:
        """Route from now on with `ring`; what is already batched stays with its endpoint."""
        self.ring = ring
        self._table = ring.table
        old = getattr(self, "builders", {})
        self.builders: dict[str, EndpointBatch] = {}
        for ep in ring.endpoints:
            self.builders[ep] = old.get(ep) or EndpointBatch(self.interfaces)
        if not ring.endpoints:
            self._nowhere = old.get("") or EndpointBatch(self.interfaces)
            self.builders[""] = self._nowhere
        self._by_index = [self.builders[ep] for ep in ring.endpoints]
        self._orphans += [b for ep, b in old.items() if ep not in self.builders and len(b)]

    def fast_route(self) -> tuple[tuple[int, ...], list[EndpointBatch]] | None:
        """(slot table, batch per endpoint index) for a ring walk that places the hot-path frames
        itself (see afpacket.RingSocket.drain); None while no endpoint is reachable."""
        return (self._table, self._by_index) if self._table else None

    def _refresh_links(self) -> list[int]:
        # Rebuilt only when the shared interface list grew (interfaces are only ever appended).
        self._link_cache = [lt for _name, lt in self.interfaces]
        return self._link_cache

    def add(self, buf: memoryview, start: int, end: int, origlen: int, ts_ns: int, interface_id: int) -> None:
        table = self._table
        if not table:
            # No dissector reachable: keep the packet for the recorder under the "" key; the caller
            # counts what it cannot deliver.
            self._nowhere.append(buf[start:end], origlen, ts_ns, interface_id)
            return
        links = self._link_cache
        if not 0 <= interface_id < len(links):
            links = self._refresh_links()
        link = links[interface_id] if 0 <= interface_id < len(links) else -1
        if link == LINKTYPE_ETHERNET and end - start >= FAST_MIN:
            # Hot path: untagged Ethernet, IPv4 without options, unfragmented TCP/UDP. The flow key is
            # hashed in place from the header bytes (same value as flow_hash).
            etype, vihl, frag, proto, src, dst, sport, dport = FAST_HEADER.unpack_from(buf, start + 12)
            if (
                etype == ETH_P_IP
                and vihl == IPV4_NO_OPTIONS
                and not frag & FRAG_MASK
                and proto in FAST_PROTOS
            ):
                if src < dst or (src == dst and sport <= dport):
                    fh = _crc(PROTO_BYTE[proto], _crc(buf[start + 26 : start + 38]))
                else:
                    # Reversed key: dst, src, dport, sport, proto.
                    fh = _crc(
                        PROTO_BYTE[proto],
                        _crc(
                            buf[start + 34 : start + 36],
                            _crc(buf[start + 36 : start + 38], _crc(src, _crc(dst))),
                        ),
                    )
                self._by_index[table[fh >> TABLE_SHIFT]].append(buf[start:end], origlen, ts_ns, interface_id)
                return
        h = decode_headers(buf, start, end, link)
        if h is None:
            self.counters.undecodable += 1
            fh = 0
        elif h[7] or h[8]:
            fh = self._fragment(h, buf, start, end, origlen, ts_ns, interface_id)
            if fh < 0:
                return
        elif h[3] == IPPROTO_ICMP or h[3] == IPPROTO_ICMPV6:
            # Type/code differ between request and reply; the address pair keeps them together.
            fh = flow_hash(h[1], 0, h[2], 0, h[3])
        else:
            fh = flow_hash(h[1], h[4], h[2], h[5], h[3])
        self._by_index[table[fh >> TABLE_SHIFT]].append(buf[start:end], origlen, ts_ns, interface_id)

    def _fragment(
        self, h: Headers, buf: memoryview, start: int, end: int, origlen: int, ts: int, ifid: int
    ) -> int:
        key = (h[1], h[2], h[3], h[6])
        if h[7] == 0:
            fh = flow_hash(h[1], h[4], h[2], h[5], h[3])
            owners = self._frag_owner
            owners[key] = fh
            if len(owners) > MAX_FRAG_KEYS:
                owners.popitem(last=False)
            held = self._pending.pop(key, None)
            if held:
                builder = self._by_index[self._table[fh >> TABLE_SHIFT]]
                # The first fragment goes first so a reassembler sees the header before the rest.
                builder.append(buf[start:end], origlen, ts, ifid)
                for frame, olen, t, i, _held_at in held:
                    builder.append(frame, olen, t, i)
                    self._pending_bytes -= len(frame)
                self._n_pending -= len(held)
                return -1
            return fh
        known = self._frag_owner.get(key)
        if known is not None:
            return known
        self.counters.fragments_held += 1
        self._pending.setdefault(key, []).append((bytes(buf[start:end]), origlen, ts, ifid, self._clock()))
        self._n_pending += 1
        self._pending_bytes += end - start
        while self._n_pending > MAX_PENDING_FRAGMENTS or self._pending_bytes > MAX_PENDING_FRAGMENT_BYTES:
            self._release_oldest()
        return -1

    def _release_oldest(self) -> None:
        key, held = self._pending.popitem(last=False)
        self._n_pending -= len(held)
        self._pending_bytes -= sum(len(h[0]) for h in held)
        self.counters.fragments_orphaned += len(held)
        if not self._table:
            builder = self._nowhere
            for frame, olen, t, i, _held_at in held:
                builder.append(frame, olen, t, i)
            return
        builder = self._by_index[self._table[flow_hash(key[0], 0, key[1], 0, key[2]) >> TABLE_SHIFT]]
        for frame, olen, t, i, _held_at in held:
            builder.append(frame, olen, t, i)

    def take(self) -> list[tuple[str, PacketColumns]]:
        """The batches built so far, one per endpoint that has packets ("" when no endpoint was
        reachable: the caller records and counts those); fragments held too long are released first."""
        now = self._clock()
        while self._pending:
            first = next(iter(self._pending.values()))
            if now - first[0][4] < self.hold_s:
                break
            self._release_oldest()
        return [(ep, b.take()) for ep, b in self.builders.items() if len(b)]

    def release_held(self) -> None:
        """End of an input (a replayed file): fragments still waiting for their first one go out now,
        counted as orphaned, so none of them trails into the next input."""
        while self._pending:
            self._release_oldest()

    def orphaned(self) -> list[PacketColumns]:
        """Batches left for endpoints that left the ring (the caller counts them as lost)."""
        out = [b.take() for b in self._orphans]
        self._orphans = []
        return out

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self.builders.values()) + self._n_pending

"""The pipeline: PacketColumns in → Entry documents (DESIGN.md §3) out.

Rule: the per-packet path touches only slices of the batch's bytes (a payload is copied once), the
decode tuple and the flow's slots — no per-packet objects beyond a tuple, no logging, no clocks;
every timeout runs on capture time, and every table is bounded with what it evicts counted by
reason in `stats`.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from wiretide.common.entry import UlidGenerator
from wiretide.common.packets import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PacketColumns,
    decode_headers,
    flow_id,
    frame_protocol,
    ip_protocol_name,
)
from wiretide.dissector.api import (
    FlowMark,
    Message,
    Presented,
    ProtocolSpec,
    SessionConfig,
    Upgrade,
    Verdict,
    Violation,
)
from wiretide.dissector.flows.defrag import Defragmenter
from wiretide.dissector.flows.sctp import COMMON_HEADER as SCTP_COMMON_HEADER
from wiretide.dissector.flows.sctp import INIT as SCTP_INIT
from wiretide.dissector.flows.sctp import PPIDS as SCTP_PPIDS
from wiretide.dissector.flows.sctp import SctpAssociation
from wiretide.dissector.flows.table import DETECT, PINNED, RAW, Flow
from wiretide.dissector.flows.tcp import SEQ_HALF, SEQ_MASK, TcpStream
from wiretide.dissector.icmp import IcmpTracker
from wiretide.dissector.matching import Matcher
from wiretide.dissector.redact import DEFAULT_REDACTOR, Redactor
from wiretide.dissector.registry import Registry

# TCP flag bits (RFC 9293 §3.1).
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
ACK: Final = 0x10
_SYN_RST_FIN: Final = SYN | RST | FIN

# Bytes of each direction the probes may look at before a flow is given up as unknown.
PROBE_BYTES: Final = 4096
# Bytes held per flow while detection is still undecided (replayed to the parser once it is).
MAX_EARLY_BYTES: Final = 64 * 1024
# Early bytes held by all undecided flows together: 100k flows of MAX_EARLY_BYTES each would be 6.4 GB.
# A flow whose bytes would go beyond it is given up as unknown (counted as `early_budget`).
MAX_EARLY_TOTAL: Final = 64 * 1024 * 1024
# An undecided TCP flow re-runs the probes only once a side's first bytes have grown by this factor
# since the last run (and a last time when it ends): the probes' work per flow is then a geometric
# series over PROBE_BYTES, however small the segments are.
PROBE_GROWTH: Final = 2
# Protocol switches per flow (HTTP/1.1 → WebSocket or h2c is one; a proxy chain two or three): beyond
# it the flow is a violation, so that 101 answers stacked in one segment cost bounded work.
MAX_UPGRADES: Final = 8
# ICMP error notes kept per flow (`icmp_errors` on its entries); more are counted, not kept.
MAX_ICMP_NOTES: Final = 8
# How often (capture time) idle flows are swept.
SWEEP_INTERVAL_NS: Final = 1_000_000_000
# Flows whose ports were claimed by another --jobs worker, remembered to skip their packets cheaply.
MAX_FOREIGN: Final = 1 << 18
_U32_SEQ: Final = SEQ_MASK
# Ethernet type through the IPv4 ports of an option-less header: enough to shard without decoding.
_ETH_IP4_PORTS = struct.Struct("!HBBHHHBBH4s4sHH")
_ETH_IP4_MIN: Final = 12 + _ETH_IP4_PORTS.size
_LINKTYPE_ETHERNET: Final = 1
# The common frame — Ethernet, option-less IPv4, TCP — in one unpack: EtherType, version/IHL, total
# length, flags/fragment offset, protocol, addresses, ports, seq, ack, data offset/flags. Anything
# else (VLAN, IPv6, options, fragments, truncation, UDP) takes `decode_headers`.
_ETH_IP4_TCP = struct.Struct("!12xHBxH2xH1xB2x4s4sHHIIH")
_ETH_IP4_TCP_MIN: Final = 14 + 20 + 20
_ETH_LEN: Final = 14
_IP4_LEN: Final = 20
_TCP_MIN: Final = 20
# SCTP user messages whose PPID names a protocol with a dissector go straight to it (no probing);
# those whose PPID names a protocol without one (M3UA, S1AP, NGAP, Diameter over DTLS …) are counted
# in the association's entry, never probed; PPID 0 ("unspecified") and unknown ones are probed by content.
SCTP_DISSECTORS: Final[dict[int, str]] = {46: "diameter", 63: "http"}
SCTP_COUNTED: Final = frozenset(p for p in SCTP_PPIDS if p and p not in SCTP_DISSECTORS)
_IP_NUMBER: Final = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "sctp": IPPROTO_SCTP}


def shard_of(src: bytes, sport: int, dst: bytes, dport: int, count: int) -> int:
    """Which of `count` workers owns a flow: symmetric in the two ends, cheap, spread by a multiply."""
    x = int.from_bytes(src, "big") ^ int.from_bytes(dst, "big") ^ sport ^ dport
    return ((x * 0x9E3779B1) >> 11) % count


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds and timeouts of the flow layer (all from settings)."""

    max_flows: int = 100_000  # per transport; beyond it the least recently active flow is evicted
    tcp_idle_ns: int = 300_000_000_000  # a TCP flow silent this long is closed
    udp_idle_ns: int = 30_000_000_000  # a UDP flow silent this long is closed (DNS timeouts surface here)
    max_age_ns: int = 3_600_000_000_000  # absolute lifetime: long connections are cut into pieces
    closed_linger_ns: int = 5_000_000_000  # a closed TCP flow absorbs stragglers (late ACKs) this long
    body_cap: int = 64 * 1024


# Every entry's keys in their canonical order (DESIGN.md §3), each with its usual value: `_base` and
# `_emit` start an entry as a copy of it. Never handed out itself, never changed; the values that are
# containers (src, dst, size, capture) are set afresh on every copy, since consumers change them.
_ENTRY: Final[dict[str, Any]] = {
    "id": "",
    "node": "",
    "timestamp": 0,
    "elapsed_us": 0,
    "protocol": "",
    "version": None,
    "transport": "",
    "src": None,
    "dst": None,
    "method": None,
    "path": None,
    "status": None,
    "summary": "",
    "request": None,
    "response": None,
    "error": None,
    "size": None,
    "tls": None,
    "capture": None,
    "flow_id": "",
    "stream": None,
    "trace": None,
}

# Addresses rendered as text, remembered: a node's flows come from few addresses, and each new flow
# (a connection per call) would otherwise format both ends again. Bounded: cleared when full.
_IP_TEXT: Final[dict[bytes, str]] = {}
_IP_TEXT_MAX: Final = 4096


def _ip(raw: bytes) -> str:
    text = _IP_TEXT.get(raw)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        if len(_IP_TEXT) >= _IP_TEXT_MAX:
            _IP_TEXT.clear()
        _IP_TEXT[raw] = text
    return text


def _endpoint(ip: str, port: int) -> str:
    """`ip:port`, with an IPv6 address in brackets (RFC 3986 §3.2.2) so the port reads apart from it."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _first_bytes(early: list[tuple[int, bytes | int, int]]) -> tuple[bytes, bytes]:
    """The first PROBE_BYTES of each direction among an undecided flow's chunks (gaps skipped)."""
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    sizes = [0, 0]
    for d, chunk, _ in early:
        if type(chunk) is bytes and sizes[d] < PROBE_BYTES:
            parts[d].append(chunk)
            sizes[d] += len(chunk)
    return b"".join(parts[0])[:PROBE_BYTES], b"".join(parts[1])[:PROBE_BYTES]


def _ahead(stream: TcpStream, seq: int) -> bool:
    """Whether a segment starting at `seq` lies beyond a hole of its direction."""
    nxt = stream.next_seq
    return nxt is not None and 0 < ((seq - nxt) & _U32_SEQ) < SEQ_HALF


def _probe_again(seen: list[int]) -> bool:
    """Whether an undecided flow's probes should run again: a side's first bytes (as far as the probes
    look) are new, or have at least doubled, since they last ran."""
    for d in (0, 1):
        now = min(seen[d], PROBE_BYTES)
        last = seen[2 + d]
        if now > last and (not last or now >= last * PROBE_GROWTH or now == PROBE_BYTES):
            return True
    return False


class Pipeline:
    """One dissector's flow tables and protocol sessions. Not thread-safe; one per CPU."""

    def __init__(
        self,
        registry: Registry,
        node: str = "",
        source: str = "pcap",
        limits: Limits | None = None,
        shard: tuple[int, int] | None = None,
        schemas: Any = None,
        redactor: Redactor = DEFAULT_REDACTOR,
    ) -> None:
        self.registry = registry
        self.redactor = redactor  # redact.py: secrets replaced before an entry leaves the pipeline
        self.node = node
        self.source = source
        self.limits = limits or Limits()
        self.config = SessionConfig(body_cap=self.limits.body_cap, schemas=schemas)
        self.shard = shard  # (index, count): keep only flows whose hash lands on this index
        self.tcp: OrderedDict[tuple[bytes, int, bytes, int], Flow] = OrderedDict()
        self.udp: OrderedDict[tuple[bytes, int, bytes, int], Flow] = OrderedDict()
        self.sctp: OrderedDict[tuple[bytes, int, bytes, int], Flow] = OrderedDict()  # associations
        self._foreign: set[tuple[bytes, int, bytes, int, int]] = set()
        self.defrag = Defragmenter()
        self.ulid = UlidGenerator()
        self.stats: Counter[str] = Counter()
        self.entries_by_protocol: Counter[str] = Counter()
        # The entries made since `entries_by_protocol` was last brought up to date (`_fold`), by
        # protocol in the order first seen: a plain dict, where a Counter's `+=` costs two
        # Python-level slot calls per entry.
        self._emitted: dict[str, int] = {}
        self.drops: Counter[str] = Counter()
        self._out: list[dict[str, Any]] = []
        self._next_sweep = 0
        self._now = 0
        # While an ACK gives the other direction's hole up: the acking segment's own payload lies beyond
        # a hole of its direction (held once the ACK is dealt with), which pairing must know of.
        self._acker_ahead = False
        self._early_total = 0  # early bytes held by undecided flows (bounded by MAX_EARLY_TOTAL)
        # Packets no dissector turns into entries, by protocol name (`sctp`, `arp`, `icmpv6`…; a bounded
        # set of names, see packets.IP_PROTOCOL_NAMES). With --jobs only the first worker counts them
        # and handles ICMP, so that every such packet is seen once.
        self.undissected: Counter[str] = Counter()
        self._owns_other = shard is None or shard[0] == 0
        self.icmp = IcmpTracker(
            self._adopt, self.ulid, self.stats, self.undissected, node, source, self._icmp_mark
        )

    # ---- packets in -------------------------------------------------------------------------

    def feed(self, cols: PacketColumns) -> list[dict[str, Any]]:
        """Dissect one batch; return the entries it completed."""
        out: list[dict[str, Any]] = []
        self._out = out
        buf = memoryview(cols.data)
        # The same bytes, sliced directly on the fast path below: one copy per payload, where a
        # memoryview slice and `bytes()` of it cost an object and a call more.
        data = cols.data
        raw = data if type(data) is bytes else bytes(data)
        links = [lt for _, lt in cols.interfaces]
        names = [name for name, _ in cols.interfaces]
        nlinks = len(links)
        decode = decode_headers
        # Methods are called as self._x(...), never through a local alias: compiled, that is a direct C
        # call with unboxed arguments; an alias is a Python-level call that boxes and parses them.
        off = 0
        npk = 0
        nbytes = 0
        undecodable = 0
        ts = self._now
        shard_index, shard_count = self.shard if self.shard is not None else (0, 0)
        self.icmp.source = self.source  # the service names each batch's source
        quick = _ETH_IP4_PORTS.unpack_from
        fast = _ETH_IP4_TCP.unpack_from
        tcp_get = self.tcp.get
        tcp_touch = self.tcp.move_to_end
        max_age = self.limits.max_age_ns
        packets = zip(cols.caplens, cols.timestamps_ns, cols.interface_ids, strict=False)
        end = 0
        # The unpacked header fields, declared so that compiled code tests and computes them as C
        # integers (an unpacked tuple's items are otherwise objects, each test a generic call).
        et: int
        vihl: int
        total: int
        frag: int
        l4: int
        s4: bytes
        d4: bytes
        sp: int
        dp: int
        seq: int
        ack: int
        word: int
        while True:
            # A bug below this line must not lose the batch: the packet is counted and skipped, and
            # the loop goes on with the next one (`packets` is an iterator, so nothing repeats).
            try:
                for caplen, ts, ifid in packets:
                    end = off + caplen
                    npk += 1
                    nbytes += caplen
                    if caplen >= _ETH_IP4_TCP_MIN and ifid < nlinks and links[ifid] == _LINKTYPE_ETHERNET:
                        et, vihl, total, frag, l4, s4, d4, sp, dp, seq, ack, word = fast(buf, off)
                        if et == 0x0800 and vihl == 0x45 and not frag & 0x3FFF:
                            if (
                                shard_count
                                and l4 in {6, 17}
                                and shard_of(s4, sp, d4, dp, shard_count) != shard_index
                            ):
                                # --jobs: another worker's flow, skipped before any further decoding.
                                off = end
                                continue
                            doff = (word >> 12) * 4
                            if (
                                l4 == IPPROTO_TCP
                                and doff >= _TCP_MIN
                                and _IP4_LEN + doff <= total <= caplen - _ETH_LEN
                            ):
                                flags = word & 0x01FF
                                key = (
                                    (s4, sp, d4, dp)
                                    if sp > dp or (sp == dp and s4 >= d4)
                                    else (d4, dp, s4, sp)
                                )
                                flow = tcp_get(key)
                                if (
                                    flow is not None
                                    and not flags & _SYN_RST_FIN
                                    and not flow.closed
                                    and ts - flow.first_ts <= max_age
                                ):
                                    # An established flow's ordinary segment: `_tcp` without the handshake
                                    # and teardown cases, inlined (half of these segments are bare ACKs).
                                    tcp_touch(key)
                                    po = off + _ETH_LEN + _IP4_LEN + doff
                                    plen = total - _IP4_LEN - doff
                                    if sp == flow.a_port and s4 == flow.a_ip:
                                        d = 0
                                        flow.pkts_a += 1
                                        flow.bytes_a += plen
                                    else:
                                        d = 1
                                        flow.pkts_b += 1
                                        flow.bytes_b += plen
                                    flow.last_ts = ts
                                    streams = flow.streams
                                    assert streams is not None
                                    if flags & ACK:
                                        other = streams[1 - d]
                                        if other.pending:
                                            chunks = other.acked(ack, ts)
                                            if chunks:
                                                self._acker_ahead = plen > 0 and _ahead(streams[d], seq)
                                                self._deliver_held(flow, 1 - d, chunks, other.stamps, ts)
                                                self._acker_ahead = False
                                    if plen:
                                        stream = streams[d]
                                        if seq == stream.next_seq and not stream.pending:
                                            stream.next_seq = (seq + plen) & _U32_SEQ
                                            self._deliver(flow, d, raw[po : po + plen], ts)
                                        else:
                                            chunks = stream.segment(seq, raw[po : po + plen], ts)
                                            if chunks:
                                                self._deliver_held(flow, d, chunks, stream.stamps, ts)
                                    off = end
                                    if ts >= self._next_sweep:
                                        self._sweep(ts)
                                    continue
                                self._tcp(
                                    s4,
                                    sp,
                                    d4,
                                    dp,
                                    seq,
                                    ack,
                                    flags,
                                    4,
                                    buf,
                                    off + _ETH_LEN + _IP4_LEN + doff,
                                    off + _ETH_LEN + total,
                                    ts,
                                    names[ifid],
                                )
                                off = end
                                if ts >= self._next_sweep:
                                    self._sweep(ts)
                                continue
                    elif (
                        shard_count
                        and caplen >= _ETH_IP4_MIN
                        and ifid < nlinks
                        and links[ifid] == _LINKTYPE_ETHERNET
                    ):
                        # --jobs: skip another worker's packets before paying for a full decode.
                        et, vihl, _, _, _, frag, _, l4, _, s4, d4, sp, dp = quick(buf, off + 12)
                        if (
                            et == 0x0800
                            and vihl == 0x45
                            and (l4 in {6, 17})
                            and not frag & 0x3FFF
                            and shard_of(s4, sp, d4, dp, shard_count) != shard_index
                        ):
                            off = end
                            continue
                    h = decode(buf, off, end, links[ifid]) if ifid < nlinks else None
                    off = end
                    if h is None:
                        undecodable += 1
                        if self._owns_other and ifid < nlinks:
                            self.undissected[frame_protocol(buf, end - caplen, end, links[ifid])] += 1
                        continue
                    proto = h[3]
                    if h[7] or h[8]:  # a fragment: reassemble first
                        h2 = self._fragment(h, buf, ts)
                        if h2 is None:
                            continue
                        if proto == IPPROTO_TCP:
                            self._tcp(
                                h2[0],
                                h2[1],
                                h2[2],
                                h2[3],
                                h2[4],
                                h2[5],
                                h2[6],
                                h2[7],
                                memoryview(h2[8]),
                                0,
                                len(h2[8]),
                                ts,
                                names[ifid],
                            )
                        elif proto == IPPROTO_UDP:
                            self._udp(
                                h2[0], h2[1], h2[2], h2[3], memoryview(h2[8]), 0, len(h2[8]), ts, names[ifid]
                            )
                        elif proto == IPPROTO_SCTP:  # `_fragment` hands the whole SCTP packet
                            self._sctp(h[1], h[2], memoryview(h2[8]), 0, len(h2[8]), ts, names[ifid])
                        elif self._owns_other:
                            self._other(proto, h[1], h[2], h2[8], 0, len(h2[8]), h[15], ts, names[ifid])
                    elif proto == IPPROTO_TCP:
                        self._tcp(
                            h[1],
                            h[4],
                            h[2],
                            h[5],
                            h[12],
                            h[13],
                            h[14],
                            h[0],
                            buf,
                            h[10],
                            h[11],
                            ts,
                            names[ifid],
                        )
                    elif proto == IPPROTO_UDP:
                        self._udp(h[1], h[4], h[2], h[5], buf, h[10], h[11], ts, names[ifid])
                    elif proto == IPPROTO_SCTP:
                        self._sctp(h[1], h[2], buf, h[9], h[11], ts, names[ifid])
                    elif self._owns_other:
                        self._other(proto, h[1], h[2], buf, h[9], h[11], h[15], ts, names[ifid])
                    if ts >= self._next_sweep:
                        self._sweep(ts)
                break
            except Exception:
                self.stats["packet_errors"] += 1
                off = end
        self._now = ts
        st = self.stats
        st["packets"] += npk
        st["bytes"] += nbytes
        if undecodable:
            st["packets_not_ip"] += undecodable
        self._fold()
        self._out = []
        return out

    def finish(self) -> list[dict[str, Any]]:
        """End of input: close every flow (pending requests become entries with errors)."""
        out: list[dict[str, Any]] = []
        self._out = out
        for table, reason in ((self.tcp, "end"), (self.udp, "end"), (self.sctp, "end")):
            while table:
                _, flow = table.popitem(last=False)
                self._close(flow, flow.last_ts, reason)
        self.icmp.finish()
        self._fold()
        self._out = []
        return out

    def flush_idle(self, now_ns: int) -> list[dict[str, Any]]:
        """Live capture: run the timeouts against wall-clock-derived capture time."""
        out: list[dict[str, Any]] = []
        self._out = out
        self._sweep(now_ns)
        self._fold()
        self._out = []
        return out

    def _fold(self) -> None:
        """Add the entries counted since the last fold to `entries_by_protocol`, before `feed`,
        `finish` and `flush_idle` hand their entries back (the counts are read between those calls,
        never during them; a protocol new to the Counter lands in the order it was first seen)."""
        emitted = self._emitted
        if emitted:
            self.entries_by_protocol.update(emitted)
            emitted.clear()

    @property
    def now(self) -> int:
        """Capture time of the last packet seen (ns)."""
        return self._now

    @property
    def active_flows(self) -> int:
        return len(self.tcp) + len(self.udp) + len(self.sctp)

    # ---- L4 ---------------------------------------------------------------------------------

    def _other(
        self,
        proto: int,
        src: bytes,
        dst: bytes,
        buf: memoryview | bytes,
        l4: int,
        end: int,
        ttl: int,
        ts: int,
        iface: str,
    ) -> None:
        """An IP packet that is neither TCP nor UDP: ICMP goes to its tracker (icmp.py), anything else
        is counted by protocol name."""
        self.stats["packets_other_l4"] += 1
        if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            self.icmp.packet(proto, src, dst, buf, l4, end, ttl, ts, iface)
        else:
            self.undissected[ip_protocol_name(proto)] += 1

    def _icmp_mark(self, quoted: tuple[int, bytes, int, bytes, int], note: dict[str, Any]) -> str | None:
        """An ICMP error quotes a TCP/UDP flow or an SCTP association: its later entries carry the note
        (`icmp_errors`; an association's own entry too); answer the id of the flow's last entry, if it
        is in the tables and had one."""
        proto, src, sport, dst, dport = quoted
        table = (
            self.tcp
            if proto == IPPROTO_TCP
            else self.udp
            if proto == IPPROTO_UDP
            else self.sctp
            if proto == IPPROTO_SCTP
            else None
        )
        if table is None:
            return None
        forward = sport > dport or (sport == dport and src >= dst)  # the tables' key order (`_lookup`)
        flow = table.get((src, sport, dst, dport) if forward else (dst, dport, src, sport))
        if flow is None:
            self.stats["icmp_errors_flow_unknown"] += 1
            return None
        notes = flow.icmp_errors
        if notes is None:
            notes = flow.icmp_errors = []
        if len(notes) < MAX_ICMP_NOTES:
            notes.append(note)
        else:
            self.stats["icmp_errors_notes_dropped"] += 1
        self.stats["icmp_errors_flow_marked"] += 1
        return flow.last_entry_id

    def _adopt(self, doc: dict[str, Any]) -> None:
        """An entry built outside the flow tables (icmp.py)."""
        emitted = self._emitted
        emitted[doc["protocol"]] = emitted.get(doc["protocol"], 0) + 1
        self._out.append(doc)

    def _fragment(self, h: tuple[Any, ...], buf: memoryview, ts: int) -> tuple[Any, ...] | None:
        self.stats["fragments"] += 1
        whole = self.defrag.add(h[1], h[2], h[3], h[6], h[7], h[8], bytes(buf[h[9] : h[11]]), ts)
        if whole is None:
            return None
        proto = h[3]
        if proto not in (IPPROTO_UDP, IPPROTO_TCP):
            return (h[1], 0, h[2], 0, 0, 0, 0, h[0], whole)  # `_other`: ICMP whole, the rest counted
        if proto == IPPROTO_UDP and len(whole) >= 8:
            sport = (whole[0] << 8) | whole[1]
            dport = (whole[2] << 8) | whole[3]
            return (h[1], sport, h[2], dport, 0, 0, 0, h[0], whole[8:])
        if proto == IPPROTO_TCP and len(whole) >= 20:
            sport = (whole[0] << 8) | whole[1]
            dport = (whole[2] << 8) | whole[3]
            seq = int.from_bytes(whole[4:8], "big")
            ack = int.from_bytes(whole[8:12], "big")
            doff = (whole[12] >> 4) * 4
            flags = ((whole[12] & 1) << 8) | whole[13]
            if doff < 20 or doff > len(whole):
                self.drops["fragment_bad_l4"] += 1
                return None
            return (h[1], sport, h[2], dport, seq, ack, flags, h[0], whole[doff:])
        self.drops["fragment_bad_l4"] += 1
        return None

    def _lookup(
        self,
        table: OrderedDict[tuple[bytes, int, bytes, int], Flow],
        transport: str,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        ts: int,
        iface: str,
    ) -> Flow | None:
        if sport > dport or (sport == dport and src >= dst):
            key = (src, sport, dst, dport)
        else:
            key = (dst, dport, src, sport)
        flow = table.get(key)
        if flow is not None:
            table.move_to_end(key)
            return flow
        if self.shard is not None:
            fkey = (*key, _IP_NUMBER[transport])
            if fkey in self._foreign:
                return None
            index, count = self.shard
            if shard_of(src, sport, dst, dport, count) != index:
                if len(self._foreign) >= MAX_FOREIGN:
                    self._foreign.clear()
                self._foreign.add(fkey)
                return None
        if len(table) >= self.limits.max_flows:
            _, old = table.popitem(last=False)
            self.drops["flow_table_full"] += 1
            self._close(old, ts, "evicted")
        flow = table[key] = Flow(key, transport, src, sport, dst, dport, ts)
        flow.interface = iface
        self.stats[f"flows_{transport}"] += 1
        return flow

    def _tcp(
        self,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        version: int,
        buf: memoryview,
        po: int,
        pe: int,
        ts: int,
        iface: str,
    ) -> None:
        table = self.tcp
        key = (
            (src, sport, dst, dport)
            if sport > dport or (sport == dport and src >= dst)
            else (dst, dport, src, sport)
        )
        flow = table.get(key)
        if flow is not None:
            table.move_to_end(key)
        else:
            flow = self._lookup(table, "tcp", src, sport, dst, dport, ts, iface)
            if flow is None:
                return
        d = 0 if (sport == flow.a_port and src == flow.a_ip) else 1
        plen = pe - po
        if d == 0:
            flow.pkts_a += 1
            flow.bytes_a += plen
        else:
            flow.pkts_b += 1
            flow.bytes_b += plen
        flow.last_ts = ts
        if ts - flow.first_ts > self.limits.max_age_ns and not flow.closed:
            self._close(flow, ts, "max_age")
        if flags & _SYN_RST_FIN:
            if flags & SYN and flow.closed:  # port reuse after a close: a new connection
                self.tcp.pop(flow.key, None)
                flow = self._lookup(self.tcp, "tcp", src, sport, dst, dport, ts, iface)
                if flow is None:
                    return
                d = 0
                flow.pkts_a = 1
                flow.bytes_a = plen
            if flags & SYN:
                self._syn(flow, d, flags, seq, ts)
            if flags & RST:
                flow.resets += 1
                if not flow.closed:
                    self._close(flow, ts, "rst")
                return
        if flow.closed:
            return
        streams = flow.streams
        assert streams is not None
        if flags & ACK:
            other = streams[1 - d]
            if other.pending:
                chunks = other.acked(ack, ts)
                if chunks:
                    self._acker_ahead = plen > 0 and _ahead(streams[d], seq)
                    self._deliver_held(flow, 1 - d, chunks, other.stamps, ts)
                    self._acker_ahead = False
        stream = streams[d]
        if plen:
            if flags & SYN:
                seq = (seq + 1) & _U32_SEQ
            if seq == stream.next_seq and not stream.pending:
                # In order with nothing held: the segment is the next bytes (TcpStream.segment's
                # first case, without building its result tuple).
                stream.next_seq = (seq + plen) & _U32_SEQ
                self._deliver(flow, d, bytes(buf[po:pe]), ts)
            else:
                chunks = stream.segment(seq, bytes(buf[po:pe]), ts)
                if chunks:
                    self._deliver_held(flow, d, chunks, stream.stamps, ts)
        if flags & FIN:
            stream.fin((seq + 1) & _U32_SEQ if flags & SYN else seq, plen)
            if streams[0].fin_seq is not None and streams[1].fin_seq is not None:
                if not flow.closed:
                    self._close(flow, ts, "fin")
            elif stream.finished and flow.state == PINNED:
                self._half_close(flow, d, ts)

    def _syn(self, flow: Flow, d: int, flags: int, seq: int, ts: int) -> None:
        streams = flow.streams
        assert streams is not None
        if flags & ACK:
            if flow.client is None:
                flow.client = 1 - d
            if flow.syn_ts and flow.rtt_ns is None:
                flow.rtt_ns = ts - flow.syn_ts
        else:
            if flow.client is None:
                flow.client = d
            if not flow.syn_ts:
                flow.syn_ts = ts
            else:
                self.stats["syn_retransmissions"] += 1
        streams[d].syn(seq)

    def _half_close(self, flow: Flow, d: int, ts: int) -> None:
        """One side sent FIN: a body delimited by close is complete now."""
        session = flow.session
        if session is None or flow.client is None:
            return
        close_dir = getattr(session, "end_of_direction", None)
        if close_dir is not None:
            try:
                events = close_dir(d == flow.client, ts)
                if events:
                    self._events(flow, events, ts)
            except Exception as exc:
                self._give_up(flow, exc, ts)

    def _udp(
        self,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        buf: memoryview,
        po: int,
        pe: int,
        ts: int,
        iface: str,
    ) -> None:
        flow = self._lookup(self.udp, "udp", src, sport, dst, dport, ts, iface)
        if flow is None:
            return
        d = 0 if (sport == flow.a_port and src == flow.a_ip) else 1
        plen = pe - po
        if d == 0:
            flow.pkts_a += 1
            flow.bytes_a += plen
        else:
            flow.pkts_b += 1
            flow.bytes_b += plen
        flow.last_ts = ts
        if plen and flow.state != RAW:
            self._deliver(flow, d, bytes(buf[po:pe]), ts)

    def _sctp(self, src: bytes, dst: bytes, buf: memoryview, l4: int, end: int, ts: int, iface: str) -> None:
        """One SCTP packet (RFC 9260): the association's chunk state (flows/sctp.py) turns it into
        user messages, which go to the association's parser as a TCP flow's bytes go to its parser."""
        if end - l4 < SCTP_COMMON_HEADER:
            self.drops["sctp_short"] += 1
            return
        sport = (buf[l4] << 8) | buf[l4 + 1]
        dport = (buf[l4 + 2] << 8) | buf[l4 + 3]
        init = end - l4 > SCTP_COMMON_HEADER and buf[l4 + SCTP_COMMON_HEADER] == SCTP_INIT
        for _ in range(2):  # the second time round: the packet restarted the association
            flow = self._lookup(self.sctp, "sctp", src, sport, dst, dport, ts, iface)
            if flow is None:
                return
            if flow.closed and init:  # a new association on the same addresses and ports
                self.sctp.pop(flow.key, None)
                continue
            assoc = flow.sctp
            assert assoc is not None
            d = 0 if (sport == flow.a_port and src == flow.a_ip) else 1
            plen = end - l4 - SCTP_COMMON_HEADER
            if d == 0:
                flow.pkts_a += 1
                flow.bytes_a += plen
            else:
                flow.pkts_b += 1
                flow.bytes_b += plen
            flow.last_ts = ts
            if flow.closed:
                return  # a straggler after SHUTDOWN COMPLETE or ABORT
            delivered = assoc.packet(d, buf, l4, end, ts)
            if assoc.restart:
                if d == 0:  # the packet belongs to the association that begins now
                    flow.pkts_a -= 1
                    flow.bytes_a -= plen
                else:
                    flow.pkts_b -= 1
                    flow.bytes_b -= plen
                self.stats["sctp_restarts"] += 1
                self._close(flow, ts, "restart")
                self.sctp.pop(flow.key, None)
                continue
            if flow.client is None and assoc.client is not None:
                flow.client = assoc.client
            for md, _, ppid, chunk, mts in delivered:
                self._sctp_message(flow, md, ppid, chunk, mts)
            if assoc.ended is not None and not flow.closed:
                self._close(flow, ts, assoc.ended)
            return

    def _sctp_message(self, flow: Flow, d: int, ppid: int, chunk: bytes | int, ts: int) -> None:
        """One user message (or a gap) of an association: to the parser its PPID names, else to the
        content probes; a message of a protocol without a dissector is only counted (flows/sctp.py)."""
        if type(chunk) is bytes:
            if ppid in SCTP_COUNTED:
                return
            if flow.state == DETECT and not flow.early:
                name = SCTP_DISSECTORS.get(ppid)
                spec = self.registry.by_name.get(name) if name is not None else None
                if spec is not None:
                    self._pin(flow, spec, d, chunk)
        self._deliver(flow, d, chunk, ts)

    def _pin(self, flow: Flow, spec: ProtocolSpec, d: int, first: bytes) -> None:
        """Give an undecided flow to `spec` without probing (an SCTP PPID named it). Which end is the
        client, when no handshake said so: the probe's view of the first message, else the port."""
        if flow.client is None:
            try:
                if spec.probe(first, b"") == Verdict.YES:
                    flow.client = d
                elif spec.probe(b"", first) == Verdict.YES:
                    flow.client = 1 - d
            except Exception:
                self.stats["probe_errors"] += 1
            if flow.client is None:
                on_port = flow.a_port in spec.ports and flow.b_port not in spec.ports
                flow.client = 1 if on_port else 0 if flow.a_port >= flow.b_port else 1
        self.stats[f"sctp_ppid_{spec.name}"] += 1
        flow.state = PINNED
        flow.spec = spec
        flow.session = spec.session(self.config)
        flow.matcher = Matcher(spec.matcher)
        self._release(flow)

    # ---- protocol sessions -------------------------------------------------------------------

    def _deliver(self, flow: Flow, d: int, chunk: bytes | int, ts: int) -> None:
        """Hand one chunk to the flow's parser (or its probes). Never raises: whatever a parser or a
        switch of parsers raises gives the flow up as a counted violation."""
        state = flow.state
        if state == PINNED:
            session = flow.session
            assert session is not None
            from_client = d == flow.client
            try:
                if isinstance(chunk, int):
                    self.stats["gaps"] += 1
                    if from_client:  # a request the gap cuts short is not one the client sent more after
                        self._gap_in_pairing(flow, d, True)
                    events = session.gap(from_client, chunk, ts)
                    if events:
                        self._events(flow, events, ts)
                    if not from_client:  # after a response the gap cuts short, which answers its request
                        self._gap_in_pairing(flow, d, False)
                    return
                events = session.feed(from_client, chunk, ts)
                if events:
                    self._events(flow, events, ts)
            except Exception as exc:  # a parser bug must not take the flow table down
                self._give_up(flow, exc, ts)
        elif state == DETECT:
            try:
                self._detect(flow, d, chunk, ts)
            except Exception as exc:
                self._give_up(flow, exc, ts)
        elif type(chunk) is int:
            self.stats["gaps"] += 1

    def _gap_in_pairing(self, flow: Flow, d: int, requests: bool) -> None:
        """Tell the flow's pairing that direction `d` gave up a gap; requests whose responses went in
        the hole become entries without one (matching.py)."""
        matcher = flow.matcher
        if matcher is None or flow.state != PINNED:
            return
        streams = flow.streams
        behind = streams is not None and (bool(streams[1 - d].pending) or self._acker_ahead)
        for req, resp in matcher.gap(requests, behind):
            self._emit(flow, req, resp, None)

    def _deliver_held(
        self, flow: Flow, d: int, chunks: tuple[bytes | int, ...], stamps: Sequence[int], ts: int
    ) -> None:
        """Chunks from reassembly, each with the capture time of its bytes (`stamps`, one per chunk)
        when some were held behind a hole, so that a message released late keeps the time it was sent
        — what pairing after a gap checks a response against."""
        if len(stamps) == len(chunks):
            for chunk, t in zip(chunks, stamps, strict=True):
                self._deliver(flow, d, chunk, t if 0 < t <= ts else ts)
        else:
            for chunk in chunks:
                self._deliver(flow, d, chunk, ts)

    def _give_up(self, flow: Flow, exc: Exception, ts: int) -> None:
        """A parser raised: the flow becomes a violation (counted) and is only counted from now on."""
        if flow.state == PINNED:
            self._violation(flow, f"parser error: {type(exc).__name__}", ts)
        else:
            self._release(flow)
            self.stats["violations"] += 1
            self.drops["violation_unknown"] += 1
            flow.state = RAW
            flow.error = f"parser error: {type(exc).__name__}"

    def _release(self, flow: Flow) -> None:
        """Let go of an undecided flow's held chunks."""
        early = flow.early
        if early is not None:
            for _, chunk, _ in early:
                if type(chunk) is bytes:
                    self._early_total -= len(chunk)
            flow.early = None
        flow.seen = None

    def _detect(self, flow: Flow, d: int, chunk: bytes | int, ts: int, final: bool = False) -> None:
        """Hold a chunk of an undecided flow and, when enough is new (or the flow ends), ask the probes."""
        early = flow.early
        seen = flow.seen
        if early is None or seen is None:
            early = flow.early = []
            seen = flow.seen = [0, 0, 0, 0]
        udp = flow.transport == "udp"
        if not final:
            early.append((d, chunk, ts))
            if type(chunk) is int:
                self.stats["gaps"] += 1
                return
            n = len(chunk)  # type: ignore[arg-type]
            flow.early_bytes += n
            seen[d] += n
            self._early_total += n
            if self._early_total > MAX_EARLY_TOTAL:
                self.drops["early_budget"] += 1
                self._unclaimed(flow)
                return
            if not udp and not _probe_again(seen):
                if flow.early_bytes > MAX_EARLY_BYTES:
                    self._unclaimed(flow)
                return
        elif udp or not _probe_again(seen):
            return
        client = flow.client
        if udp:
            data: bytes = chunk  # type: ignore[assignment]
            first, second = (data, b"") if d == (client or 0) else (b"", data)
            oriented = client is not None
        else:
            seen[2] = min(seen[0], PROBE_BYTES)
            seen[3] = min(seen[1], PROBE_BYTES)
            ends = _first_bytes(early)
            if client is None:
                first, second, oriented = ends[0], ends[1], False
            else:
                first, second, oriented = ends[client], ends[1 - client], True
        forced = self.registry.forced(flow.a_port, flow.b_port)
        spec: ProtocolSpec | None
        if forced is not None:
            spec, first_is_client, undecided = forced, True, False
            if client is None:
                first_is_client = flow.a_port > flow.b_port if flow.a_port != flow.b_port else True
        else:
            spec, first_is_client, undecided = self.registry.detect(
                flow.transport, flow.a_port, flow.b_port, first, second, oriented
            )
            if spec is None and flow.transport == "sctp":
                # Ordered SCTP user messages carry any stream protocol (HTTP over SCTP): TCP's next.
                spec, first_is_client, more = self.registry.detect(
                    "tcp", flow.a_port, flow.b_port, first, second, oriented
                )
                undecided = undecided or more
        if spec is None:
            if udp and flow.early_bytes <= MAX_EARLY_BYTES:
                if not undecided:
                    self._release(flow)  # a datagram nobody claims; the next one may still be claimed
                return
            if not undecided or final or flow.early_bytes > MAX_EARLY_BYTES:
                self._unclaimed(flow)
            elif seen[2] == seen[3] == PROBE_BYTES:
                self._unclaimed(flow)  # the probes have seen all they ever look at
            return
        if client is None:
            if udp:
                flow.client = (
                    (d if first_is_client else 1 - d) if first else (1 - d if first_is_client else d)
                )
            else:
                flow.client = 0 if first_is_client else 1
        flow.state = PINNED
        flow.spec = spec
        flow.session = spec.session(self.config)
        flow.matcher = Matcher(spec.matcher)
        self._release(flow)
        for dd, c, t in early:
            if flow.state != PINNED:
                break
            self._deliver(flow, dd, c, t)

    def _unclaimed(self, flow: Flow) -> None:
        """Nobody claims the flow: from now on it is only counted (a raw TCP/UDP entry at its end)."""
        flow.state = RAW
        self._release(flow)

    def _events(self, flow: Flow, events: list[Any], ts: int) -> None:
        """Act on a parser's events. An upgrade hands the leftover bytes to the new parser in a loop,
        never by recursion, and at most MAX_UPGRADES times per flow."""
        queue: list[tuple[bool, bytes]] = []
        while True:
            upgrade: Upgrade | None = None
            for ev in events:
                if type(ev) is Message:
                    matcher = flow.matcher
                    assert matcher is not None
                    if ev.standalone and flow.link_id is not None:
                        ev.fields["upgrade_id"] = flow.link_id
                    for req, resp in matcher.add(ev):
                        self._emit(flow, req, resp, None)
                elif type(ev) is Violation:
                    self._violation(flow, ev.reason, ts)
                    return
                elif type(ev) is Upgrade:
                    upgrade = ev
                    break
                elif type(ev) is FlowMark and ev.key == "tls":
                    flow.tls = ev.value
            if upgrade is not None:
                spec = self.registry.by_name.get(upgrade.protocol)
                if spec is None:
                    self._violation(flow, f"upgrade to unsupported protocol {upgrade.protocol}", ts)
                    return
                if flow.upgrades >= MAX_UPGRADES:
                    self._violation(flow, f"more than {MAX_UPGRADES} protocol upgrades", ts)
                    return
                flow.upgrades += 1
                self.stats[f"upgrades_{upgrade.protocol}"] += 1
                if flow.matcher is not None:
                    for req, resp in flow.matcher.drain():
                        self._emit(flow, req, resp, None)
                flow.link_id = flow.last_entry_id
                flow.spec = spec
                flow.session = spec.session(self.config)
                flow.matcher = Matcher(spec.matcher)
                # The old parser's leftovers come before whatever it had not been handed yet.
                rest = [(True, upgrade.client_rest), (False, upgrade.server_rest)]
                queue = [item for item in rest if item[1]] + queue
            if not queue or flow.state != PINNED:
                return
            from_client, data = queue.pop(0)
            session = flow.session
            assert session is not None
            events = session.feed(from_client, data, ts)

    def _violation(self, flow: Flow, reason: str, ts: int) -> None:
        spec = flow.spec
        self.stats["violations"] += 1
        self.drops[f"violation_{spec.name if spec else 'unknown'}"] += 1
        if flow.matcher is not None:
            for req, resp in flow.matcher.drain():
                self._emit(flow, req, resp, {"type": "dissection", "message": reason})
        flow.state = RAW
        flow.error = reason
        flow.session = None
        flow.matcher = None

    # ---- closing -----------------------------------------------------------------------------

    def _close(self, flow: Flow, ts: int, reason: str) -> None:
        if flow.closed:
            return
        flow.closed = True
        self.stats[f"closed_{reason}"] += 1
        if flow.streams is not None:
            for d in (0, 1):
                stream = flow.streams[d]
                chunks = stream.flush()
                if chunks:
                    self._deliver_held(flow, d, chunks, stream.stamps, ts)
        assoc = flow.sctp
        if assoc is not None:
            for d, _, ppid, chunk, t in assoc.flush(ts):
                self._sctp_message(flow, d, ppid, chunk, t)
        if flow.state == DETECT and flow.early:
            if flow.transport != "udp":
                try:  # the probes may not have seen the last bytes yet
                    self._detect(flow, 0, 0, ts, final=True)
                except Exception as exc:
                    self._give_up(flow, exc, ts)
            if flow.state == DETECT:
                self.stats["flows_undecided"] += 1
        if flow.state == PINNED:
            session = flow.session
            assert session is not None and flow.spec is not None and flow.matcher is not None
            try:
                events = session.close(ts)
                if events:
                    self._events(flow, events, ts)
            except Exception as exc:
                self._give_up(flow, exc, ts)
            counters = getattr(session, "counters", None)
            if counters:
                for key, n in counters.items():
                    self.stats[f"{flow.spec.name}_{key}"] += n
            if flow.state == PINNED and flow.matcher is not None and flow.spec is not None:
                unanswered = flow.spec.unanswered_error
                for req, resp in flow.matcher.drain():
                    err = (
                        {"type": unanswered, "message": "no response seen"}
                        if resp is None
                        else {"type": "unmatched", "message": "response without a captured request"}
                    )
                    self._emit(flow, req, resp, err)
        if assoc is not None:
            self._association_entry(flow, assoc, reason)
        elif flow.state != PINNED:
            self._connection_entry(flow, reason)
        elif flow.last_entry_id is None:
            # Claimed but never completed a message (cut by gaps, oversized): still visible, as a flow.
            flow.error = f"{flow.spec.name if flow.spec else 'protocol'}: no complete message"
            self._connection_entry(flow, reason)
        self._release(flow)
        # A closed flow lingers in its table only to absorb stragglers, which are counted and dropped
        # before its parser, pairing or reassembly would be reached: those are let go now, so that
        # many lingering flows (a connection per call) hold little and give the cyclic collector
        # little to walk.
        flow.session = None
        flow.matcher = None
        flow.streams = None

    def _sweep(self, ts: int) -> None:
        self._next_sweep = ts + SWEEP_INTERVAL_NS
        lim = self.limits
        tables = ((self.tcp, lim.tcp_idle_ns), (self.udp, lim.udp_idle_ns), (self.sctp, lim.tcp_idle_ns))
        for table, idle in tables:
            while table:
                key = next(iter(table))
                flow = table[key]
                limit = lim.closed_linger_ns if flow.closed else idle
                if ts - flow.last_ts < limit:
                    break
                del table[key]
                self._close(flow, flow.last_ts, "idle")
        self.icmp.expire(ts)
        self.defrag.expire(ts)

    # ---- entries out -------------------------------------------------------------------------

    def _endpoints(self, flow: Flow) -> tuple[str, int, str, int, str]:
        ends: tuple[str, int, str, int, str] | None = flow.endpoints
        if ends is None or (
            flow.client is not None and ends[1] != (flow.a_port if flow.client == 0 else flow.b_port)
        ):
            client = flow.client
            if client is None:  # nobody told us: the higher (ephemeral) port is the client's
                client = 0 if flow.a_port >= flow.b_port else 1
            a_ip, b_ip = _ip(flow.a_ip), _ip(flow.b_ip)
            fid = flow_id(flow.a_ip, flow.a_port, flow.b_ip, flow.b_port, _IP_NUMBER[flow.transport])
            if client == 0:
                ends = (a_ip, flow.a_port, b_ip, flow.b_port, fid)
            else:
                ends = (b_ip, flow.b_port, a_ip, flow.a_port, fid)
            flow.endpoints = ends
        return ends

    def _base(self, flow: Flow, ts: int) -> dict[str, Any]:
        src_ip, src_port, dst_ip, dst_port, fid = self._endpoints(flow)
        doc = _ENTRY.copy()
        doc["id"] = self.ulid.new(ts)
        doc["node"] = self.node
        doc["timestamp"] = ts
        doc["protocol"] = doc["transport"] = flow.transport
        doc["src"] = {"ip": src_ip, "port": src_port}
        doc["dst"] = {"ip": dst_ip, "port": dst_port}
        doc["size"] = {"request": 0, "response": 0}
        doc["tls"] = flow.tls
        doc["capture"] = {"source": self.source, "interface": flow.interface}
        doc["flow_id"] = fid
        return doc

    def _emit(
        self, flow: Flow, req: Message | None, resp: Message | None, error: dict[str, str] | None
    ) -> None:
        spec = flow.spec
        assert spec is not None
        first = req if req is not None else resp
        assert first is not None
        ts = first.ts_first
        end = resp.ts_last if resp is not None else first.ts_last
        try:
            shown: Presented | None = spec.present(req, resp)
        except Exception as exc:
            self.stats["present_errors"] += 1
            error = {"type": "dissection", "message": f"cannot present: {type(exc).__name__}"}
            shown = None
        name = spec.protocol
        if error is None:
            if req is not None and resp is None and not req.standalone:
                error = {"type": spec.unanswered_error, "message": "no response seen"}
            elif req is None and resp is not None and not resp.standalone:
                error = {"type": "unmatched", "message": "response without a captured request"}
            elif (req is not None and req.truncated) or (resp is not None and resp.truncated):
                error = {"type": "dissection", "message": "message cut by a capture gap"}
        ends = flow.endpoints
        if (
            ends is None
            or flow.client is None
            or ends[1] != (flow.a_port if flow.client == 0 else flow.b_port)
        ):
            ends = self._endpoints(flow)
        entry_id = self.ulid.new(ts)
        # (Each Message attribute read once: a Message is an interpreted class, so every read is a
        # generic attribute lookup.)
        req_fields = req.fields if req is not None else None
        resp_fields = resp.fields if resp is not None else None
        # A copy of `_ENTRY` (its key table copied whole, not 22 insertions), then only the values
        # that differ from its usual ones.
        doc = _ENTRY.copy()
        doc["id"] = entry_id
        doc["node"] = self.node
        doc["timestamp"] = ts
        doc["elapsed_us"] = max(0, end - ts) // 1000
        doc["protocol"] = name
        doc["transport"] = flow.transport
        doc["src"] = {"ip": ends[0], "port": ends[1]}
        doc["dst"] = {"ip": ends[2], "port": ends[3]}
        if shown is not None:
            doc["version"] = shown.version
            doc["method"] = shown.method
            doc["path"] = shown.path
            doc["status"] = shown.status
            doc["summary"] = shown.summary
            doc["stream"] = shown.stream
        if req_fields is not None:
            doc["request"] = req_fields
        if resp_fields is not None:
            doc["response"] = resp_fields
        if error is not None:
            doc["error"] = error
        doc["size"] = {
            "request": req.size if req is not None else 0,
            "response": resp.size if resp is not None else 0,
        }
        tls = flow.tls
        if tls is not None:
            doc["tls"] = tls
        doc["capture"] = {"source": self.source, "interface": flow.interface}
        doc["flow_id"] = ends[4]
        if flow.icmp_errors is not None:
            doc["icmp_errors"] = list(flow.icmp_errors)
        classify = spec.classify
        if classify is not None:
            # A spec may refine what the exchange was (gRPC-Web, GraphQL) and add its error.
            over: dict[str, Any] | None
            try:
                over = classify(req_fields, resp_fields)
            except Exception:
                self.stats["classify_errors"] += 1
                over = None
            if over:  # plain HTTP (the usual answer) costs nothing more
                over = dict(over)
                found = over.pop("error", None)
                if doc["error"] is None and found is not None:
                    doc["error"] = found
                name = doc["protocol"] = over.pop("protocol", name)
                doc.update(over)
        if self.redactor.enabled:  # redaction at the source (redact.py), once `protocol` is final
            self.redactor.redact(doc)
        flow.last_entry_id = entry_id
        emitted = self._emitted
        emitted[name] = emitted.get(name, 0) + 1
        self._out.append(doc)

    def _connection_entry(self, flow: Flow, reason: str) -> None:
        doc = self._base(flow, flow.first_ts)
        client = flow.client if flow.client is not None else (0 if flow.a_port >= flow.b_port else 1)
        sides: list[dict[str, Any]] = [
            {"packets": flow.pkts_a, "bytes": flow.bytes_a},
            {"packets": flow.pkts_b, "bytes": flow.bytes_b},
        ]
        if flow.streams is not None:
            for i, st in enumerate(flow.streams):
                sides[i].update(
                    retransmissions=st.retransmissions,
                    out_of_order=st.out_of_order,
                    gaps=st.gaps,
                    gap_bytes=st.gap_bytes,
                    fin=st.fin_seq is not None,
                )
        req, resp = sides[client], sides[1 - client]
        duration_us = (flow.last_ts - flow.first_ts) // 1000
        req["duration_us"] = duration_us
        req["close"] = reason
        if flow.transport == "tcp":
            req["handshake_rtt_us"] = flow.rtt_ns // 1000 if flow.rtt_ns is not None else None
            req["resets"] = flow.resets
            req["syn_seen"] = bool(flow.syn_ts)
        doc["elapsed_us"] = duration_us
        doc["request"] = req
        doc["response"] = resp
        doc["size"] = {"request": req["bytes"], "response": resp["bytes"]}
        src, dst = doc["src"], doc["dst"]
        doc["summary"] = (
            f"{flow.transport} {_endpoint(src['ip'], src['port'])} → {_endpoint(dst['ip'], dst['port'])} "
            f"{req['packets'] + resp['packets']} pkts {req['bytes'] + resp['bytes']} B"
        )
        if flow.error is not None:
            doc["error"] = {"type": "dissection", "message": flow.error}
        elif flow.resets:
            doc["error"] = {"type": "connection", "message": "reset"}
        if flow.icmp_errors is not None:
            doc["icmp_errors"] = list(flow.icmp_errors)
        self.stats["flows_unparsed"] += 1
        emitted = self._emitted
        emitted[flow.transport] = emitted.get(flow.transport, 0) + 1
        self._out.append(doc)

    def _association_entry(self, flow: Flow, assoc: SctpAssociation, reason: str) -> None:
        """Every SCTP association is an entry when it ends (whatever its messages became): its
        handshake, both ends' tags, streams and counts, its events (INIT, ABORT, SHUTDOWN …)."""
        doc = self._base(flow, flow.first_ts)
        client = flow.client if flow.client is not None else (0 if flow.a_port >= flow.b_port else 1)
        req, resp = assoc.describe(client, flow.first_ts)
        sides = (
            {"packets": flow.pkts_a, "bytes": flow.bytes_a},
            {"packets": flow.pkts_b, "bytes": flow.bytes_b},
        )
        req = {**sides[client], **req}
        resp = {**sides[1 - client], **resp}
        duration_us = (flow.last_ts - flow.first_ts) // 1000
        req["duration_us"] = duration_us
        req["close"] = reason
        if flow.spec is not None:
            req["protocol"] = flow.spec.protocol  # what its user messages were dissected as
        doc["elapsed_us"] = duration_us
        doc["request"] = req
        doc["response"] = resp
        doc["size"] = {"request": req["bytes"], "response": resp["bytes"]}
        messages = req["messages"] + resp["messages"]
        src, dst = doc["src"], doc["dst"]
        summary = (
            f"sctp {_endpoint(src['ip'], src['port'])} → {_endpoint(dst['ip'], dst['port'])} "
            f"{req['packets'] + resp['packets']} pkts {req['bytes'] + resp['bytes']} B, "
            f"{messages} message{'' if messages == 1 else 's'}"
        )
        if flow.spec is not None:
            summary += f" ({flow.spec.protocol})"
        abort = req.get("abort")
        if abort is not None:
            causes = ", ".join(abort["causes"]) or "no cause given"
            summary += " ABORT"
            doc["error"] = {"type": "connection", "message": f"ABORT from the {abort['from']}: {causes}"}
        elif assoc.init_ts and not assoc.init_ack_ts:
            doc["error"] = {"type": "connection", "message": "INIT not answered"}
        if flow.error is not None:
            doc["error"] = {"type": "dissection", "message": flow.error}
        if flow.icmp_errors is not None:
            doc["icmp_errors"] = list(flow.icmp_errors)
        doc["summary"] = summary
        self.stats["sctp_associations"] += 1
        for key, n in assoc.counters.items():
            if n:
                self.stats[f"sctp_{key}"] += n
        emitted = self._emitted
        emitted["sctp"] = emitted.get("sctp", 0) + 1
        self._out.append(doc)

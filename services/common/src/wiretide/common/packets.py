"""The shared L2–L4 vocabulary: link types, columnar packet batches, header decoding and flow hashing.

Rule: nothing here raises on packet bytes. `decode_headers` answers `None` for anything it cannot
place (not IP, too short, bogus lengths) and the caller counts it; it allocates no per-packet object
beyond its result tuple and the two address slices.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from wiretide.proto.v1 import packets_pb2

# pcap LINKTYPE_* values (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276

LINK_TYPES: Final[frozenset[int]] = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

# EtherTypes (IEEE 802 numbers).
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_8021Q: Final = 0x8100
ETH_P_8021AD: Final = 0x88A8
ETH_P_QINQ_OLD: Final = 0x9100  # pre-802.1ad double tagging, still seen on some switches

# IP protocol numbers (IANA).
IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58
IPPROTO_SCTP: Final = 132

# IPv6 extension headers walked to reach the upper layer (RFC 8200 §4).
IPV6_HOPOPTS: Final = 0
IPV6_ROUTING: Final = 43
IPV6_FRAGMENT: Final = 44
IPV6_AH: Final = 51
IPV6_DSTOPTS: Final = 60
IPV6_MOBILITY: Final = 135
IPV6_NONE: Final = 59

# A chain longer than this is hostile or broken; real stacks emit two or three at most.
MAX_IPV6_EXT_HEADERS: Final = 8
# VLAN tags stacked deeper than this are not something a NIC hands us; stop rather than loop.
MAX_VLAN_TAGS: Final = 4

# Address families seen in DLT_NULL / DLT_LOOP headers (BSD: 24/28/30 are AF_INET6 on the BSDs).
AF_INET: Final = 2
AF_INET6_VALUES: Final[frozenset[int]] = frozenset({10, 24, 28, 30})

_U16 = struct.Struct("!H")
_U32_BE = struct.Struct("!I")
_U32_LE = struct.Struct("<I")
# IPv4 header up to the addresses: ver/ihl, tos, total length, id, flags/frag, ttl, proto (RFC 791 §3.1).
_IPV4 = struct.Struct("!BxHHHBB")
# IPv6 fixed header fields before the addresses: payload length, next header, hop limit (RFC 8200 §3).
_IPV6 = struct.Struct("!4xHBB")
# IPv6 fragment header: next header, reserved, offset/flags, identification (RFC 8200 §4.5).
_IPV6_FRAG = struct.Struct("!BxHI")
# TCP: ports, seq, ack, data offset/flags word (RFC 9293 §3.1).
_TCP = struct.Struct("!HHIIH")
_PORTS = struct.Struct("!HH")
_ICMP = struct.Struct("!BB")
_PORT_PAIR = struct.Struct("!HH")
_PROTO_BYTE: Final = tuple(bytes([i]) for i in range(256))

IPV4_MIN_HEADER: Final = 20
IPV6_HEADER: Final = 40
TCP_MIN_HEADER: Final = 20
UDP_HEADER: Final = 8
SCTP_COMMON_HEADER: Final = 12
ICMP_HEADER: Final = 8
ICMP_MIN: Final = 4

# The decode result: see `decode_headers`.
Headers = tuple[int, bytes, bytes, int, int, int, int, int, bool, int, int, int, int, int, int, int]


@dataclass(slots=True)
class PacketColumns:
    """A batch of packets, columnar as in `PacketBatch`: frames back to back in `data`, one entry per
    packet in each list; `interfaces[i]` is (interface name, link type) for `interface_ids == i`."""

    data: bytes
    caplens: list[int]
    origlens: list[int]
    timestamps_ns: list[int]
    interface_ids: list[int]
    interfaces: list[tuple[str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.caplens)

    def iter_packets(self) -> Iterator[tuple[int, int, int, int, int]]:
        """(offset in data, caplen, origlen, timestamp_ns, interface id) per packet, in order."""
        off = 0
        for caplen, origlen, ts, ifid in zip(
            self.caplens, self.origlens, self.timestamps_ns, self.interface_ids, strict=False
        ):
            yield off, caplen, origlen, ts, ifid
            off += caplen

    def link_type(self, interface_id: int) -> int:
        """Link type of an interface index; -1 when the index is unknown (the caller counts it)."""
        if 0 <= interface_id < len(self.interfaces):
            return self.interfaces[interface_id][1]
        return -1

    def to_proto(
        self, node: str, source: int, seq: int, dropped: dict[str, int] | None = None
    ) -> packets_pb2.PacketBatch:
        from wiretide.proto.v1 import packets_pb2  # here: offline analysis never loads protobuf

        batch = packets_pb2.PacketBatch(
            node=node,
            source=source,  # type: ignore[arg-type]
            seq=seq,
            interfaces=[
                packets_pb2.CaptureInterface(index=i, name=name, link_type=lt)
                for i, (name, lt) in enumerate(self.interfaces)
            ],
            data=bytes(self.data),
            caplens=self.caplens,
            origlens=self.origlens,
            timestamps_ns=self.timestamps_ns,
            interface_ids=self.interface_ids,
        )
        if dropped:
            for reason, count in dropped.items():
                batch.dropped[reason] = count
        return batch

    @classmethod
    def from_proto(cls, batch: packets_pb2.PacketBatch) -> PacketColumns:
        """Columns of a received batch. Interfaces are placed by their `index`; gaps get ("", -1)."""
        size = max((i.index for i in batch.interfaces), default=-1) + 1
        # An index far beyond the batch's own interface count is bogus; do not allocate for it.
        size = min(size, len(batch.interfaces) * 2 + 1)
        interfaces: list[tuple[str, int]] = [("", -1)] * size
        for iface in batch.interfaces:
            if iface.index < size:
                interfaces[iface.index] = (iface.name, iface.link_type)
        return cls(
            data=batch.data,
            caplens=list(batch.caplens),
            origlens=list(batch.origlens),
            timestamps_ns=list(batch.timestamps_ns),
            interface_ids=list(batch.interface_ids),
            interfaces=interfaces,
        )

    def consistent(self) -> bool:
        """True when the columns agree with each other and with `data` (check received batches)."""
        n = len(self.caplens)
        return (
            len(self.origlens) == n
            and len(self.timestamps_ns) == n
            and len(self.interface_ids) == n
            and sum(self.caplens) == len(self.data)
        )


class ColumnBuilder:
    """Accumulates packets into columns; `take()` hands back a `PacketColumns` and starts afresh."""

    __slots__ = ("_data", "caplens", "interface_ids", "interfaces", "origlens", "timestamps_ns")

    def __init__(self, interfaces: Iterable[tuple[str, int]] = ()) -> None:
        self._data = bytearray()
        self.caplens: list[int] = []
        self.origlens: list[int] = []
        self.timestamps_ns: list[int] = []
        self.interface_ids: list[int] = []
        self.interfaces: list[tuple[str, int]] = list(interfaces)

    def __len__(self) -> int:
        return len(self.caplens)

    @property
    def nbytes(self) -> int:
        return len(self._data)

    def interface(self, name: str, link_type: int) -> int:
        """Index of (name, link_type), adding it if new."""
        key = (name, link_type)
        try:
            return self.interfaces.index(key)
        except ValueError:
            self.interfaces.append(key)
            return len(self.interfaces) - 1

    def append(self, frame: bytes | memoryview, origlen: int, ts_ns: int, interface_id: int) -> None:
        self._data += frame
        self.caplens.append(len(frame))
        self.origlens.append(origlen)
        self.timestamps_ns.append(ts_ns)
        self.interface_ids.append(interface_id)

    def take(self) -> PacketColumns:
        cols = PacketColumns(
            bytes(self._data),
            self.caplens,
            self.origlens,
            self.timestamps_ns,
            self.interface_ids,
            list(self.interfaces),
        )
        self._data = bytearray()
        self.caplens = []
        self.origlens = []
        self.timestamps_ns = []
        self.interface_ids = []
        return cols


def _l3_offset(buf: memoryview, off: int, end: int, link_type: int) -> tuple[int, int]:
    """(network layer offset, ip version 4|6) or (-1, 0) when the frame does not carry IP."""
    if link_type == LINKTYPE_ETHERNET:
        if end - off < 14:
            return -1, 0
        etype = _U16.unpack_from(buf, off + 12)[0]
        pos = off + 14
    elif link_type == LINKTYPE_LINUX_SLL:
        if end - off < 16:
            return -1, 0
        etype = _U16.unpack_from(buf, off + 14)[0]
        pos = off + 16
    elif link_type == LINKTYPE_LINUX_SLL2:
        if end - off < 20:
            return -1, 0
        etype = _U16.unpack_from(buf, off)[0]
        pos = off + 20
    elif link_type in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if end - off < 1:
            return -1, 0
        version = buf[off] >> 4
        if version == 4 and link_type != LINKTYPE_IPV6:
            return off, 4
        if version == 6 and link_type != LINKTYPE_IPV4:
            return off, 6
        return -1, 0
    elif link_type in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if end - off < 4:
            return -1, 0
        # DLT_NULL carries the family in the writer's byte order, DLT_LOOP in network order.
        family = _U32_BE.unpack_from(buf, off)[0]
        if link_type == LINKTYPE_NULL and family > 0xFFFF:
            family = _U32_LE.unpack_from(buf, off)[0]
        if family == AF_INET:
            return off + 4, 4
        if family in AF_INET6_VALUES:
            return off + 4, 6
        return -1, 0
    else:
        return -1, 0
    # 802.1Q / 802.1ad tags: 2 bytes TCI + 2 bytes inner EtherType each.
    tags = 0
    while etype in (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD):
        tags += 1
        if tags > MAX_VLAN_TAGS or end - pos < 4:
            return -1, 0
        etype = _U16.unpack_from(buf, pos + 2)[0]
        pos += 4
    if etype == ETH_P_IP:
        return pos, 4
    if etype == ETH_P_IPV6:
        return pos, 6
    return -1, 0


# Names of the IP protocols (IANA) and EtherTypes Wiretide counts without dissecting. The set is
# fixed, so a counter keyed by these names (and a metric label) stays bounded: anything else is
# `IP_OTHER` / `L2_OTHER`.
IP_PROTOCOL_NAMES: Final[dict[int, str]] = {
    IPPROTO_ICMP: "icmp",
    2: "igmp",
    4: "ipip",
    IPPROTO_TCP: "tcp",
    IPPROTO_UDP: "udp",
    41: "ipv6-in-ipv4",
    47: "gre",
    50: "esp",
    51: "ah",
    IPPROTO_ICMPV6: "icmpv6",
    88: "eigrp",
    89: "ospf",
    103: "pim",
    112: "vrrp",
    115: "l2tp",
    IPPROTO_SCTP: "sctp",
    136: "udplite",
}
ETHERTYPE_NAMES: Final[dict[int, str]] = {
    0x0806: "arp",
    0x8035: "rarp",
    0x809B: "appletalk",
    0x8863: "pppoe",
    0x8864: "pppoe",
    0x8847: "mpls",
    0x8848: "mpls",
    0x888E: "eapol",
    0x88CC: "lldp",
    0x88F7: "ptp",
    0x8906: "fcoe",
    0x88E5: "macsec",
    0x22F0: "avtp",
}
IP_OTHER: Final = "ip-other"
L2_OTHER: Final = "l2-other"
IP_MALFORMED: Final = "ip-malformed"  # an IP frame too short or inconsistent to decode
ETHERNET_MAX_LENGTH: Final = 1500  # an EtherType field up to this is an 802.3 length (LLC/STP/CDP follow)


def frame_protocol(buf: memoryview, off: int, end: int, link_type: int) -> str:
    """The name under which a frame `decode_headers` refused is counted: its EtherType's name (`arp`,
    `lldp`, `llc` for 802.3 frames), `ip-malformed` for IP it could not place, else `l2-other`. Only
    called for such frames (off the TCP/UDP path). Never raises."""
    try:
        l3, _ = _l3_offset(buf, off, end, link_type)
        if l3 >= 0:
            return IP_MALFORMED
        if link_type == LINKTYPE_ETHERNET and end - off >= 14:
            etype = _U16.unpack_from(buf, off + 12)[0]
            pos = off + 14
            tags = 0
            while etype in (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD) and tags < MAX_VLAN_TAGS:
                if end - pos < 4:
                    return L2_OTHER
                etype = _U16.unpack_from(buf, pos + 2)[0]
                pos += 4
                tags += 1
        elif link_type == LINKTYPE_LINUX_SLL and end - off >= 16:
            etype = _U16.unpack_from(buf, off + 14)[0]
        elif link_type == LINKTYPE_LINUX_SLL2 and end - off >= 20:
            etype = _U16.unpack_from(buf, off)[0]
        else:
            return L2_OTHER
        if etype <= ETHERNET_MAX_LENGTH:
            return "llc"
        return ETHERTYPE_NAMES.get(etype, L2_OTHER)
    except (struct.error, IndexError, ValueError, TypeError):
        return L2_OTHER


def ip_protocol_name(proto: int) -> str:
    """The counted name of an IP protocol number (bounded: unknown numbers are `ip-other`)."""
    return IP_PROTOCOL_NAMES.get(proto, IP_OTHER)


def decode_headers(buf: memoryview, off: int, end: int, link_type: int) -> Headers | None:
    """Decode L2–L4 of the frame at `buf[off:end]`.

    Returns None for anything that is not IPv4/IPv6 or is too short / bogus, else
    (ip_version, src, dst, ip_proto, sport, dport, ip_id, frag_offset_bytes, more_fragments,
     l4_offset, payload_offset, payload_end, tcp_seq, tcp_ack, tcp_flags, ttl_or_hoplimit).
    Offsets are absolute in `buf`. Non-first fragments: ports/seq 0 and payload_offset == l4_offset.
    ICMP/ICMPv6: sport/dport = type/code. Never raises.
    """
    try:
        return _decode(buf, off, end, link_type)
    except (struct.error, IndexError, ValueError, TypeError):
        return None


def _decode(buf: memoryview, off: int, end: int, link_type: int) -> Headers | None:
    if off < 0 or end > len(buf) or end <= off:
        return None
    l3, version = _l3_offset(buf, off, end, link_type)
    if l3 < 0:
        return None
    avail = end - l3
    if version == 4:
        # RFC 791 §3.1.
        if avail < IPV4_MIN_HEADER:
            return None
        vihl, total_len, ip_id, frag_word, ttl, proto = _IPV4.unpack_from(buf, l3)
        if vihl >> 4 != 4:
            return None
        ihl = (vihl & 0x0F) * 4
        if ihl < IPV4_MIN_HEADER or ihl > avail:
            return None
        if total_len == 0:
            # TCP segmentation offload hands up super-frames with total length 0: take the capture.
            ip_end = end
        elif total_len < ihl:
            return None
        else:
            ip_end = l3 + total_len
        src = bytes(buf[l3 + 12 : l3 + 16])
        dst = bytes(buf[l3 + 16 : l3 + 20])
        frag_off = (frag_word & 0x1FFF) * 8
        more = bool(frag_word & 0x2000)
        l4 = l3 + ihl
    elif version == 6:
        # RFC 8200 §3.
        if avail < IPV6_HEADER:
            return None
        if buf[l3] >> 4 != 6:
            return None
        payload_len, proto, ttl = _IPV6.unpack_from(buf, l3)
        ip_end = end if payload_len == 0 else l3 + IPV6_HEADER + payload_len  # 0: jumbogram (RFC 2675)
        src = bytes(buf[l3 + 8 : l3 + 24])
        dst = bytes(buf[l3 + 24 : l3 + 40])
        ip_id = 0
        frag_off = 0
        more = False
        l4 = l3 + IPV6_HEADER
        limit = min(ip_end, end)
        for _ in range(MAX_IPV6_EXT_HEADERS + 1):
            if proto in (IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS, IPV6_MOBILITY):
                # RFC 8200 §4.3-4.6: length in 8-octet units, not counting the first 8.
                if limit - l4 < 8:
                    return None
                proto = buf[l4]
                l4 += (buf[l4 + 1] + 1) * 8
            elif proto == IPV6_AH:
                # RFC 4302 §2.2: length in 4-octet units, minus 2.
                if limit - l4 < 8:
                    return None
                proto = buf[l4]
                l4 += (buf[l4 + 1] + 2) * 4
            elif proto == IPV6_FRAGMENT:
                # RFC 8200 §4.5.
                if limit - l4 < 8:
                    return None
                proto, offword, ip_id = _IPV6_FRAG.unpack_from(buf, l4)
                frag_off = offword & 0xFFF8
                more = bool(offword & 1)
                l4 += 8
            else:
                break
        else:
            return None
        if l4 > limit:
            return None
    else:
        return None

    truncated = ip_end > end
    payload_end = end if truncated else ip_end
    if l4 > payload_end:
        return None
    sport = dport = seq = ack = flags = 0
    if frag_off:
        return (version, src, dst, proto, 0, 0, ip_id, frag_off, more, l4, l4, payload_end, 0, 0, 0, ttl)
    room = payload_end - l4
    if proto == IPPROTO_TCP:
        # RFC 9293 §3.1.
        if room < TCP_MIN_HEADER:
            return None
        sport, dport, seq, ack, word = _TCP.unpack_from(buf, l4)
        doff = (word >> 12) * 4
        if doff < TCP_MIN_HEADER:
            return None
        flags = word & 0x01FF
        payload = l4 + doff
        if payload > payload_end:
            if not truncated:
                return None
            payload = payload_end
    elif proto == IPPROTO_UDP:
        # RFC 768.
        if room < UDP_HEADER:
            return None
        sport, dport = _PORTS.unpack_from(buf, l4)
        payload = l4 + UDP_HEADER
    elif proto == IPPROTO_SCTP:
        # RFC 9260 §3.1.
        if room < SCTP_COMMON_HEADER:
            return None
        sport, dport = _PORTS.unpack_from(buf, l4)
        payload = l4 + SCTP_COMMON_HEADER
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        # RFC 792 / RFC 4443 §2.1: type and code lead the header.
        if room < ICMP_MIN:
            return None
        sport, dport = _ICMP.unpack_from(buf, l4)
        payload = min(l4 + ICMP_HEADER, payload_end)
    else:
        payload = l4
    return (
        version,
        src,
        dst,
        proto,
        sport,
        dport,
        ip_id,
        frag_off,
        more,
        l4,
        payload,
        payload_end,
        seq,
        ack,
        flags,
        ttl,
    )


def flow_hash(src: bytes, sport: int, dst: bytes, dport: int, proto: int) -> int:
    """A 32-bit hash of the 5-tuple, equal for both directions and stable across processes and hosts:
    CRC-32 of (lower endpoint address, higher address, their ports, protocol) in network byte order,
    the lower endpoint being the one whose (address, port) sorts first. The key layout equals the bytes
    of an IPv4 header from the source address through the ports, so a hot path can hash them in place."""
    if (src, sport) <= (dst, dport):
        return zlib.crc32(
            _PROTO_BYTE[proto & 0xFF],
            zlib.crc32(_PORT_PAIR.pack(sport & 0xFFFF, dport & 0xFFFF), zlib.crc32(dst, zlib.crc32(src))),
        )
    return zlib.crc32(
        _PROTO_BYTE[proto & 0xFF],
        zlib.crc32(_PORT_PAIR.pack(dport & 0xFFFF, sport & 0xFFFF), zlib.crc32(src, zlib.crc32(dst))),
    )


def flow_id(src: bytes, sport: int, dst: bytes, dport: int, proto: int) -> str:
    """The flow hash as the 8-hex-digit string used in APIs (e.g. `CaptureServiceSnapshotRequest.flow_id`)."""
    return f"{flow_hash(src, sport, dst, dport, proto):08x}"

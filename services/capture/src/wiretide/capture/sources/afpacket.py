"""Live capture from an AF_PACKET socket with a TPACKET_V3 memory-mapped ring.

Rule: the kernel fills blocks, we walk a ready block packet by packet (one struct unpack and one copy
into the sink per packet, no syscall), then hand the block back; the only syscalls are poll and the
occasional statistics read. Filters are attached before the socket is bound, so nothing unfiltered
ever reaches the ring.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import socket
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from wiretide.capture.bpf import SO_DETACH_FILTER, BpfProgram, compile_bpf, skip_outgoing
from wiretide.capture.shard import (
    FAST_MIN,
    FAST_PROTOS,
    FLOW_KEY,
    FRAG_MASK,
    IPV4_NO_OPTIONS,
    TABLE_SHIFT,
    EndpointBatch,
)
from wiretide.common.packets import (
    ETH_P_IP,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
)

# <linux/if_packet.h>
SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_MR_PROMISC: Final = 1
PACKET_RX_RING: Final = 5
PACKET_STATISTICS: Final = 6
PACKET_VERSION: Final = 10
PACKET_FANOUT: Final = 18
TPACKET_V3: Final = 2
TP_STATUS_KERNEL: Final = 0
TP_STATUS_USER: Final = 1
TP_STATUS_VLAN_VALID: Final = 0x10
TP_STATUS_VLAN_TPID_VALID: Final = 0x40
ETH_P_ALL: Final = 0x0003
SIOCGIFHWADDR: Final = 0x8927  # <linux/sockios.h>: the answer's sa_family is the ARPHRD type
IFNAMSIZ: Final = 16
ETH_P_8021Q: Final = 0x8100

# Fanout modes (PACKET_FANOUT_*); DEFRAG makes the kernel reassemble before hashing so fragments
# of one datagram reach the same socket.
FANOUT_MODES: Final[dict[str, int]] = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "qm": 5}
PACKET_FANOUT_FLAG_DEFRAG: Final = 0x8000

# ARPHRD_* types whose SOCK_RAW frames we can label with one link type; anything else (and `any`)
# is captured with SOCK_DGRAM and given a Linux cooked v2 header built from sockaddr_ll.
ARPHRD_LOOPBACK: Final = 772
ARPHRD_ETHERNET_LIKE: Final = frozenset(
    {1, ARPHRD_LOOPBACK}
)  # ether, loopback (carries a zeroed Ethernet header)
ARPHRD_RAW_IP: Final = frozenset({65534, 768, 769, 776, 778})  # none (tun/wireguard), ipip, ip6tnl, sit, gre

DEFAULT_BLOCK_SIZE: Final = 1 << 20  # 1 MiB blocks: ~700 small frames per wake-up at full rate
DEFAULT_RING_BYTES: Final = 16 << 20  # per socket; ~40 ms of a 10 Gbit/s line, plenty for veths
DEFAULT_FRAME_SIZE: Final = 2048  # V3 packs frames by their size; this only sets tp_frame_nr
DEFAULT_RETIRE_MS: Final = 50  # a partly filled block is handed to us after this long
DEFAULT_SNAPLEN: Final = 262144  # as tcpdump: whole frames, TSO super-frames included
TPACKET3_HDR_LEN: Final = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))

_BLOCK_HDR = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (at +8)
_PKT_HDR = struct.Struct("=IIIIIIH")  # next_offset, sec, nsec, snaplen, len, status, mac
_VLAN = struct.Struct("=IH")  # tp_vlan_tci, tp_vlan_tpid (at +32)
_SLL_PROTO = struct.Struct("!H")
_SLL_REST = struct.Struct("=iHBB8s")
_SLL2 = struct.Struct("!HHIHBB8s")  # protocol, reserved, ifindex, hatype, pkttype, halen, addr
_VLAN_TAG = struct.Struct("!HH")
_STATS = struct.Struct("=III")  # tpacket_stats_v3: packets, drops, freeze_q_cnt
_MREQ = struct.Struct("=iHH8s")
_REQ3 = struct.Struct("=IIIIIII")
_ZERO4: Final = b"\x00\x00\x00\x00"

# Where the kernel puts an Ethernet frame in a SOCK_RAW TPACKET_V3 slot (no tp_reserve, no vnet
# header): netoff = TPACKET_ALIGN(TPACKET3_HDRLEN + 16) = TPACKET_ALIGN(68 + 16) = 96, minus the
# 14-byte MAC header (net/packet/af_packet.c, tpacket_rcv). Checked per packet (tp_mac); a frame
# elsewhere takes the generic path.
HOT_MAC: Final = 82
# One native-order unpack per hot-path packet: tpacket3_hdr as _PKT_HDR (but only the low byte of
# tp_status, where the VLAN flags are: a small int, not a new object per packet), then, from the
# frame's EtherType on, the fields of shard.FAST_HEADER. The EtherType and the flags/fragment word come
# out byte-swapped on little-endian hosts and are compared with constants read the same way; the ports
# come out in native order, which FLOW_KEY writes back as they were on the wire.
_STATUS_LOW_BYTE: Final = "B3x" if sys.byteorder == "little" else "3xB"
_HOT = struct.Struct(f"=IIIII{_STATUS_LOW_BYTE}H{HOT_MAC + 12 - _PKT_HDR.size}xHBxxxxxHxB2x4s4sHH")
_ETH_P_IP_NATIVE: Final = int.from_bytes(ETH_P_IP.to_bytes(2, "big"), sys.byteorder)
_FRAG_MASK_NATIVE: Final = int.from_bytes(FRAG_MASK.to_bytes(2, "big"), sys.byteorder)
_FAST_PROTO: Final = tuple(p in FAST_PROTOS for p in range(256))  # one index instead of a set lookup


class PacketSink(Protocol):
    """Where a source puts packets: frame bytes `buf[start:end]`, copied before `add` returns."""

    def add(
        self, buf: memoryview, start: int, end: int, origlen: int, ts_ns: int, interface_id: int
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RingConfig:
    """How to open a ring socket."""

    ring_bytes: int = DEFAULT_RING_BYTES
    block_size: int = DEFAULT_BLOCK_SIZE
    snaplen: int = DEFAULT_SNAPLEN
    promisc: bool = False
    fanout_group: int = 0  # 0 = no fanout
    fanout_mode: str = "hash"
    bpf: str = ""
    retire_ms: int = DEFAULT_RETIRE_MS

    def check(self) -> None:
        page = mmap.PAGESIZE
        if self.block_size < page or self.block_size % page or self.block_size & (self.block_size - 1):
            raise ValueError(f"ring block size must be a power of two >= {page}, got {self.block_size}")
        if self.ring_bytes < self.block_size:
            raise ValueError(f"ring size {self.ring_bytes} is smaller than one block ({self.block_size})")
        if not 64 <= self.snaplen <= DEFAULT_SNAPLEN:
            raise ValueError(f"snaplen must be 64..{DEFAULT_SNAPLEN}, got {self.snaplen}")
        if self.fanout_mode not in FANOUT_MODES:
            raise ValueError(f"fanout mode must be one of {sorted(FANOUT_MODES)}, got {self.fanout_mode!r}")
        if not 0 <= self.fanout_group <= 0xFFFF:
            raise ValueError(f"fanout group must be 0..65535, got {self.fanout_group}")


@dataclass(frozen=True, slots=True)
class RingStats:
    """Kernel counters since the socket opened (PACKET_STATISTICS is read-and-reset; we accumulate)."""

    packets: int
    drops: int
    freezes: int


def _arphrd(ifname: str) -> int:
    """The device's ARPHRD type, asked of the kernel in the calling thread's network namespace
    (/sys/class/net shows the namespace /sys was mounted in, which need not be ours)."""
    if not ifname or ifname == "any" or len(ifname.encode()) >= IFNAMSIZ:
        return -1
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            ifreq = fcntl.ioctl(probe, SIOCGIFHWADDR, struct.pack("16s16x", ifname.encode()))
    except OSError:
        try:
            return int(Path(f"/sys/class/net/{ifname}/type").read_text().strip())
        except (OSError, ValueError):
            return -1
    return int(struct.unpack_from("=H", ifreq, 16)[0])


def _loopback_ifindex() -> int:
    try:
        return socket.if_nametoindex("lo")
    except OSError:
        return 0


def _bind_all(sock: socket.socket) -> None:
    """Bind to every interface (ifindex 0) with ETH_P_ALL. Python's AF_PACKET address needs a device
    name, so the sockaddr_ll (<linux/if_packet.h>) goes to bind(2) directly."""
    addr = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_ALL), 0, 0, 0, 0, b"")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.bind(sock.fileno(), ctypes.c_char_p(addr), len(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind to all interfaces: {os.strerror(err)}")


def link_type_of(ifname: str) -> tuple[int, int]:
    """(socket type, link type) to capture `ifname` with; `any` and unusual devices get cooked SLL2."""
    if ifname in ("", "any"):
        return socket.SOCK_DGRAM, LINKTYPE_LINUX_SLL2
    arphrd = _arphrd(ifname)
    if arphrd in ARPHRD_ETHERNET_LIKE:
        return socket.SOCK_RAW, LINKTYPE_ETHERNET
    if arphrd in ARPHRD_RAW_IP:
        return socket.SOCK_RAW, LINKTYPE_RAW
    return socket.SOCK_DGRAM, LINKTYPE_LINUX_SLL2


class RingSocket:
    """One AF_PACKET TPACKET_V3 socket on one interface (or `any`)."""

    def __init__(self, ifname: str, config: RingConfig, interface_id: int = 0) -> None:
        config.check()
        self.ifname = ifname or "any"
        self.interface_id = interface_id
        self.sock_type, self.link_type = link_type_of(ifname)
        self._arphrd = _arphrd(self.ifname)
        self.config = config
        self._cooked = self.sock_type == socket.SOCK_DGRAM
        self.block_size = config.block_size
        self.block_nr = config.ring_bytes // config.block_size
        self._block = 0
        self.last_bytes = 0
        self._packets = 0
        self._drops = 0
        self._freezes = 0
        self.program: BpfProgram | None = None
        # Protocol 0 until bound: the socket sees nothing before its filter and ring are in place.
        sock = socket.socket(socket.AF_PACKET, self.sock_type, 0)
        try:
            self.program = self._program(config.bpf)
            if self.program is not None:
                self.program.attach(sock)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = _REQ3.pack(
                self.block_size,
                self.block_nr,
                DEFAULT_FRAME_SIZE,
                self.block_size * self.block_nr // DEFAULT_FRAME_SIZE,
                config.retire_ms,
                0,
                0,
            )
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._mmap = mmap.mmap(
                sock.fileno(),
                self.block_size * self.block_nr,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
            self._view = memoryview(self._mmap)
            if self.ifname == "any":
                _bind_all(sock)
            else:
                sock.bind((self.ifname, ETH_P_ALL))
            self.ifindex = socket.if_nametoindex(self.ifname) if self.ifname != "any" else 0
            if config.promisc and self.ifindex:
                sock.setsockopt(
                    SOL_PACKET, PACKET_ADD_MEMBERSHIP, _MREQ.pack(self.ifindex, PACKET_MR_PROMISC, 0, b"")
                )
            if config.fanout_group:
                mode = FANOUT_MODES[config.fanout_mode]
                if mode == FANOUT_MODES["hash"]:
                    mode |= PACKET_FANOUT_FLAG_DEFRAG
                sock.setsockopt(
                    SOL_PACKET, PACKET_FANOUT, struct.pack("=I", config.fanout_group | (mode << 16))
                )
        except BaseException:
            view = getattr(self, "_view", None)
            if view is not None:
                view.release()
                self._mmap.close()
            sock.close()
            raise
        self.sock = sock

    def _program(self, bpf: str) -> BpfProgram | None:
        """The kernel program for `bpf` on this socket: the expression (and snaplen), and on loopback
        or `any` the rule that keeps each looped-back packet once."""
        snaplen = self.config.snaplen
        filter_link = LINKTYPE_RAW if self._cooked else self.link_type
        program = compile_bpf(bpf, filter_link, snaplen) if bpf or snaplen < DEFAULT_SNAPLEN else None
        if self._arphrd == ARPHRD_LOOPBACK:
            program = skip_outgoing(program, filter_link, snaplen)
        elif self.ifname == "any":
            lo = _loopback_ifindex()
            if lo:
                program = skip_outgoing(program, filter_link, snaplen, only_ifindex=lo)
        return program

    def set_filter(self, bpf: str) -> None:
        """Replace the kernel filter while capturing (SO_ATTACH_FILTER swaps it atomically); raises
        FilterError, leaving the old one in place, when `bpf` does not compile or attach."""
        program = self._program(bpf)
        if program is None:
            with contextlib.suppress(OSError):  # ENOENT: there was none
                self.sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        else:
            program.attach(self.sock)
        self.program = program

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, sink: PacketSink, max_blocks: int = 0) -> int:
        """Hand the packets of ready blocks (at most `max_blocks`, 0 = all) to `sink`; return the count."""
        # A sharder may let us place untagged Ethernet/IPv4 TCP/UDP frames ourselves (see _walk_hot).
        fast_route = getattr(sink, "fast_route", None)
        route = fast_route() if fast_route is not None and self.link_type == LINKTYPE_ETHERNET else None
        if route is not None and not self._cooked:
            return self._walk_hot(sink, route[0], route[1], max_blocks or self.block_nr)
        view = self._view
        bsize = self.block_size
        nblocks = self.block_nr
        cur = self._block
        block_unpack = _BLOCK_HDR.unpack_from
        pkt_unpack = _PKT_HDR.unpack_from
        add = sink.add
        ifid = self.interface_id
        cooked = self._cooked
        vlan_valid = TP_STATUS_VLAN_VALID
        total = 0
        nbytes = 0
        for _ in range(max_blocks or nblocks):
            base = cur * bsize
            status, num, first = block_unpack(view, base + 8)
            if not status & TP_STATUS_USER:
                break
            off = base + first
            for _ in range(num):
                next_off, sec, nsec, snap, wirelen, pstatus, mac = pkt_unpack(view, off)
                start = off + mac
                nbytes += snap
                if cooked:
                    self._add_cooked(sink, view, off, start, snap, wirelen, sec * 1_000_000_000 + nsec)
                elif pstatus & vlan_valid:
                    self._add_vlan(sink, view, off, start, snap, wirelen, sec * 1_000_000_000 + nsec, pstatus)
                else:
                    add(view, start, start + snap, wirelen, sec * 1_000_000_000 + nsec, ifid)
                off += next_off
            total += num
            view[base + 8 : base + 12] = _ZERO4  # block_status = TP_STATUS_KERNEL: the kernel may refill it
            cur = (cur + 1) % nblocks
        self._block = cur
        self.last_bytes = nbytes
        return total

    def _walk_hot(
        self, sink: PacketSink, table: tuple[int, ...], batches: list[EndpointBatch], limit: int
    ) -> int:
        """drain() for a raw Ethernet socket feeding a sharder. Frames on the hot path (untagged, at
        the usual offset, IPv4 without options, unfragmented TCP/UDP between two addresses) are read
        with one unpack (_HOT), hashed and added to their endpoint's batch here, without a call into
        the sink; every other frame goes to the sink as in the generic walk. Same bytes, same hash
        (flow_hash) and same endpoint as Sharder.add."""
        view = self._view
        ring = self._mmap  # slicing the mmap gives bytes: the one copy of the frame, no view to release
        bsize = self.block_size
        nblocks = self.block_nr
        cur = self._block
        block_unpack = _BLOCK_HDR.unpack_from
        hot_unpack = _HOT.unpack_from
        key = FLOW_KEY.pack
        crc = zlib.crc32
        add = sink.add
        ifid = self.interface_id
        # Constants as locals: the loop below runs once per packet.
        hot_mac = HOT_MAC
        eth_ip = _ETH_P_IP_NATIVE
        no_options = IPV4_NO_OPTIONS
        frag_mask = _FRAG_MASK_NATIVE
        fast_proto = _FAST_PROTO
        fast_min = FAST_MIN
        vlan_valid = TP_STATUS_VLAN_VALID
        shift = TABLE_SHIFT
        # Each endpoint's batch, by endpoint index (the sink swaps in new rows only in take()).
        rows = [b.rows.extend for b in batches]
        last_sec = -1
        sec_ns = 0
        total = 0
        nbytes = 0
        for _ in range(limit):
            base = cur * bsize
            status, num, first = block_unpack(view, base + 8)
            if not status & TP_STATUS_USER:
                break
            off = base + first
            for _ in range(num):
                try:
                    # fmt: off
                    next_off, sec, nsec, snap, wirelen, pstatus, mac, etype, vihl, frag, proto, src, dst, sport, dport = (  # noqa: E501
                        hot_unpack(ring, off)
                    )
                    # fmt: on
                except struct.error:
                    # A frame too short for _HOT at the very end of the mapping.
                    next_off, sec, nsec, snap, wirelen, pstatus, mac = _PKT_HDR.unpack_from(view, off)
                    etype = 0
                nbytes += snap
                if (
                    mac == hot_mac
                    and etype == eth_ip
                    and vihl == no_options
                    and not frag & frag_mask
                    and fast_proto[proto]
                    and snap >= fast_min
                    and not pstatus & vlan_valid
                ):
                    # flow_hash's key starts with the lower address; equal addresses leave the order
                    # to the ports, which the sink compares.
                    if src < dst:
                        k = table[crc(key(src, dst, sport, dport, proto)) >> shift]
                    elif src == dst:
                        start = off + mac
                        add(view, start, start + snap, wirelen, sec * 1_000_000_000 + nsec, ifid)
                        off += next_off
                        continue
                    else:
                        k = table[crc(key(dst, src, dport, sport, proto)) >> shift]
                    if sec != last_sec:  # one multiplication per second of capture, not per packet
                        last_sec = sec
                        sec_ns = sec * 1_000_000_000
                    start = off + hot_mac
                    rows[k]((ring[start : start + snap], snap, wirelen, sec_ns + nsec, ifid))
                elif pstatus & vlan_valid:
                    start = off + mac
                    self._add_vlan(sink, view, off, start, snap, wirelen, sec * 1_000_000_000 + nsec, pstatus)
                else:
                    start = off + mac
                    add(view, start, start + snap, wirelen, sec * 1_000_000_000 + nsec, ifid)
                off += next_off
            total += num
            view[base + 8 : base + 12] = _ZERO4  # block_status = TP_STATUS_KERNEL: the kernel may refill it
            cur = (cur + 1) % nblocks
        self._block = cur
        self.last_bytes = nbytes
        return total

    def _add_vlan(
        self,
        sink: PacketSink,
        view: memoryview,
        hdr: int,
        start: int,
        snap: int,
        wirelen: int,
        ts: int,
        st: int,
    ) -> None:
        # The NIC stripped the 802.1Q tag into the header; put it back as tcpdump shows it.
        tci, tpid = _VLAN.unpack_from(view, hdr + 32)
        if not st & TP_STATUS_VLAN_TPID_VALID or not tpid:
            tpid = ETH_P_8021Q
        frame = (
            bytes(view[start : start + 12])
            + _VLAN_TAG.pack(tpid, tci & 0xFFFF)
            + bytes(view[start + 12 : start + snap])
        )
        sink.add(memoryview(frame), 0, len(frame), wirelen + 4, ts, self.interface_id)

    def _add_cooked(
        self, sink: PacketSink, view: memoryview, hdr: int, start: int, snap: int, wirelen: int, ts: int
    ) -> None:
        # SOCK_DGRAM: the frame starts at the network header; sockaddr_ll follows tpacket3_hdr.
        sll = hdr + TPACKET3_HDR_LEN
        proto = _SLL_PROTO.unpack_from(view, sll + 2)[0]
        ifindex, hatype, pkttype, halen, addr = _SLL_REST.unpack_from(view, sll + 4)
        frame = _SLL2.pack(proto, 0, ifindex & 0xFFFFFFFF, hatype, pkttype, halen, addr) + bytes(
            view[start : start + snap]
        )
        sink.add(memoryview(frame), 0, len(frame), wirelen + _SLL2.size, ts, self.interface_id)

    def stats(self) -> RingStats:
        """Kernel counters, accumulated (each read resets the kernel's copy)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        packets, drops, freezes = _STATS.unpack(raw)
        self._packets += packets
        self._drops += drops
        self._freezes += freezes
        return RingStats(self._packets, self._drops, self._freezes)

    def close(self) -> None:
        view = getattr(self, "_view", None)
        if view is not None:
            view.release()
            self._mmap.close()
        self.sock.close()


def can_capture() -> bool:
    """True when this process may open AF_PACKET sockets (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        return False
    except OSError:
        return False
    return os.name == "posix"

"""Capture filters: BPF expressions compiled by libpcap's own compiler (via ctypes, no tcpdump process),
structured filters (ports, CIDRs) turned into such expressions, attaching to sockets, and matching
recorded frames offline.

Rule: a filter that does not compile is a `FilterError` naming the expression and libpcap's complaint,
raised before any socket sees it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from wiretide.common.packets import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW

LIBPCAP_NAMES: Final = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")
SO_ATTACH_FILTER: Final = 26  # <asm-generic/socket.h>
SO_DETACH_FILTER: Final = 27
PCAP_NETMASK_UNKNOWN: Final = 0xFFFFFFFF
# The kernel refuses classic programs longer than this (BPF_MAXINSNS in <linux/bpf_common.h>).
BPF_MAXINSNS: Final = 4096
# Highest TCP/UDP port.
MAX_PORT: Final = 65535

# pcap_open_dead takes DLT_* values; on Linux these differ from LINKTYPE_* for raw IP.
_DLT_FOR_LINKTYPE: Final[dict[int, int]] = {
    LINKTYPE_ETHERNET: 1,
    LINKTYPE_RAW: 12,  # DLT_RAW on Linux
    LINKTYPE_LINUX_SLL: 113,
    LINKTYPE_LINUX_SLL2: 276,
}


class FilterError(ValueError):
    """A capture filter that cannot be compiled or attached."""


class _Insn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    )


class _Program(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn)))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Insn)))


class _PktHdr(ctypes.Structure):
    _fields_ = (
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("caplen", ctypes.c_uint),
        ("len", ctypes.c_uint),
    )


_lib: ctypes.CDLL | None = None


def _libpcap() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    names = [*LIBPCAP_NAMES]
    found = ctypes.util.find_library("pcap")
    if found:
        names.append(found)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = (
            ctypes.c_void_p,
            ctypes.POINTER(_Program),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint32,
        )
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
        lib.pcap_freecode.argtypes = (ctypes.POINTER(_Program),)
        lib.pcap_close.argtypes = (ctypes.c_void_p,)
        lib.pcap_offline_filter.restype = ctypes.c_int
        lib.pcap_offline_filter.argtypes = (
            ctypes.POINTER(_Program),
            ctypes.POINTER(_PktHdr),
            ctypes.c_char_p,
        )
        _lib = lib
        return lib
    raise FilterError("libpcap is not installed (apt-get install libpcap0.8)")


@dataclass(frozen=True, slots=True)
class BpfProgram:
    """A compiled classic BPF program: the expression it came from and its 8-byte instructions."""

    expression: str
    link_type: int
    instructions: bytes
    _native: _Program = field(compare=False, repr=False, hash=False)
    _array: ctypes.Array[_Insn] = field(compare=False, repr=False, hash=False)

    def __len__(self) -> int:
        return len(self.instructions) // ctypes.sizeof(_Insn)

    def attach(self, sock: socket.socket) -> None:
        """Attach to a socket with SO_ATTACH_FILTER; the kernel drops what does not match."""
        prog = _SockFprog(len(self), ctypes.cast(self._array, ctypes.POINTER(_Insn)))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))
        except OSError as exc:
            raise FilterError(f"cannot attach filter {self.expression!r}: {exc}") from None

    def matches(self, frame: bytes, origlen: int | None = None) -> bool:
        """Run the program over one recorded frame (snapshots; not the live path)."""
        hdr = _PktHdr(0, 0, len(frame), len(frame) if origlen is None else origlen)
        return bool(_libpcap().pcap_offline_filter(ctypes.byref(self._native), ctypes.byref(hdr), frame))


def compile_bpf(expression: str, link_type: int = LINKTYPE_ETHERNET, snaplen: int = 262144) -> BpfProgram:
    """Compile a tcpdump-syntax expression for frames of `link_type`."""
    dlt = _DLT_FOR_LINKTYPE.get(link_type)
    if dlt is None:
        raise FilterError(f"cannot compile filters for link type {link_type}")
    lib = _libpcap()
    handle = lib.pcap_open_dead(dlt, snaplen)
    if not handle:
        raise FilterError("pcap_open_dead failed")
    prog = _Program()
    try:
        if lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
            message = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
            raise FilterError(f"bad filter {expression!r}: {message}")
        count = prog.bf_len
        if count > BPF_MAXINSNS:
            lib.pcap_freecode(ctypes.byref(prog))
            raise FilterError(f"filter {expression!r} compiles to {count} instructions (max {BPF_MAXINSNS})")
        raw = ctypes.string_at(prog.bf_insns, count * ctypes.sizeof(_Insn))
        lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)
    array = (_Insn * max(count, 1)).from_buffer_copy(raw or bytes(ctypes.sizeof(_Insn)))
    native = _Program(count, ctypes.cast(array, ctypes.POINTER(_Insn)))
    return BpfProgram(expression, link_type, raw, native, array)


class OfflineFilter:
    """One expression run over recorded frames (a replayed file), compiled once for each link type it
    meets. A frame of a link type the expression cannot be compiled for does not match: a live socket
    with this filter would not have captured it either."""

    __slots__ = ("_programs", "expression")

    def __init__(self, expression: str) -> None:
        compile_bpf(expression)  # a bad expression fails here, before any frame is read
        self.expression = expression
        self._programs: dict[int, BpfProgram | None] = {}

    def matches(self, frame: bytes, origlen: int, link_type: int) -> bool:
        try:
            prog = self._programs[link_type]
        except KeyError:
            try:
                prog = compile_bpf(self.expression, link_type)
            except FilterError:
                prog = None
            self._programs[link_type] = prog
        return prog is not None and prog.matches(frame, origlen)


def from_instructions(expression: str, link_type: int, raw: bytes) -> BpfProgram:
    """A program from raw 8-byte instructions (e.g. a compiled one with a prefix)."""
    count = len(raw) // ctypes.sizeof(_Insn)
    if count == 0 or count > BPF_MAXINSNS or len(raw) % ctypes.sizeof(_Insn):
        raise FilterError(f"bad program for {expression!r}: {len(raw)} bytes")
    array = (_Insn * count).from_buffer_copy(raw)
    native = _Program(count, ctypes.cast(array, ctypes.POINTER(_Insn)))
    return BpfProgram(expression, link_type, raw, native, array)


# Linux ancillary load of skb->pkt_type (SKF_AD_OFF + SKF_AD_PKTTYPE, <linux/filter.h>) and
# PACKET_OUTGOING (<linux/if_packet.h>).
_SKF_AD_PKTTYPE: Final = 0xFFFFF004
_SKF_AD_IFINDEX: Final = 0xFFFFF008
_PACKET_OUTGOING: Final = 4
_BPF_LD_W_ABS: Final = 0x20
_BPF_JEQ_K: Final = 0x15
_BPF_RET_K: Final = 0x06


def skip_outgoing(
    program: BpfProgram | None, link_type: int, snaplen: int, only_ifindex: int | None = None
) -> BpfProgram:
    """`program` preceded by "drop packets this host sends" (only those on device `only_ifindex`, when
    given: a socket on every interface skips just loopback's outgoing copies). On loopback every
    packet passes twice (out, then in); libpcap keeps only the incoming copy, and so do we. Classic BPF
    jumps are relative and forward, so a prefix leaves the program's own jumps intact."""
    prefix = struct.pack(
        "<HBBIHBBIHBBI",
        _BPF_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE,
        _BPF_JEQ_K, 0, 1, _PACKET_OUTGOING,
        _BPF_RET_K, 0, 0, 0,
    )  # fmt: skip
    if only_ifindex is not None:
        # ld ifindex; not that device -> past the whole prefix (3 instructions on).
        prefix = struct.pack(
            "<HBBIHBBI", _BPF_LD_W_ABS, 0, 0, _SKF_AD_IFINDEX, _BPF_JEQ_K, 0, 3, only_ifindex
        ) + prefix  # fmt: skip
    body = program.instructions if program is not None else struct.pack("<HBBI", _BPF_RET_K, 0, 0, snaplen)
    expression = program.expression if program is not None else ""
    return from_instructions(
        f"inbound{' and (' + expression + ')' if expression else ''}", link_type, prefix + body
    )


def structured_expression(ports: Iterable[int] = (), cidrs: Iterable[str] = ()) -> str:
    """A BPF expression for "any of these ports" and "to/from any of these networks" (both if given)."""
    parts: list[str] = []
    port_list = sorted(set(ports))
    for port in port_list:
        if not 0 < port <= MAX_PORT:
            raise FilterError(f"port {port} is out of range 1..{MAX_PORT}")
    if port_list:
        parts.append("(" + " or ".join(f"port {p}" for p in port_list) + ")")
    nets: list[str] = []
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as exc:
            raise FilterError(f"bad CIDR {text!r}: {exc}") from None
        nets.append(f"net {net.with_prefixlen}")
    if nets:
        parts.append("(" + " or ".join(nets) + ")")
    return " and ".join(parts)


def combine(expression: str, structured: str) -> str:
    """Both filters must match; an empty one matches everything."""
    if expression and structured:
        return f"({expression}) and {structured}"
    return expression or structured

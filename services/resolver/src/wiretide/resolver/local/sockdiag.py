"""A network namespace's listening and established TCP sockets, asked of the kernel over netlink.

Reading /proc/<pid>/net/tcp makes the kernel format a line for every socket in the namespace, TIME_WAIT
ones included: a host that has just served 10,000 short connections takes ~17 ms of system time per
read, at every scan, to list sockets the scan then throws away. A NETLINK_SOCK_DIAG dump names the
states it wants and the kernel filters before formatting anything (`bench/resolve.py --scan` prints
both). A netlink socket belongs to the namespace it was created in, so one is opened inside the
namespace (setns on a short-lived thread, which ends with it) and then read from anywhere.

Rule: every failure (no privilege to enter the namespace, netlink refused, a malformed answer) is an
OSError, and the caller reads /proc instead: the answer is the same, only dearer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import struct
import threading
from typing import Final

NETLINK_SOCK_DIAG: Final = 4
SOCK_DIAG_BY_FAMILY: Final = 20
NLM_F_REQUEST: Final = 0x1
NLM_F_DUMP: Final = 0x300
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
CLONE_NEWNET: Final = 0x40000000
TCP_ESTABLISHED: Final = 1
TCP_LISTEN: Final = 10
STATES: Final = (1 << TCP_ESTABLISHED) | (1 << TCP_LISTEN)

_HEADER: Final = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
# inet_diag_req_v2 (family, protocol, extensions, pad, states) and an empty inet_diag_sockid (48 bytes)
_REQUEST: Final = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, (timer, retransmits), sockid (source port and destination port, big-endian;
# source and destination addresses, 16 bytes each; interface; cookie), (expires, queues, uid), inode
_MESSAGE: Final = struct.Struct("=BB2x4x16s16x4x8x16xI")
_PORT: Final = struct.Struct(">H")
RECV_BYTES: Final = 1 << 16

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_in(netns_path: str) -> socket.socket:
    """A NETLINK_SOCK_DIAG socket of the network namespace at `netns_path` (e.g. /proc/<pid>/ns/net).

    Raises OSError when the namespace cannot be entered (no CAP_SYS_ADMIN) or netlink is refused."""
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if os.fstat(target).st_ino == os.stat("/proc/self/ns/net").st_ino:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        made: list[socket.socket] = []
        failed: list[OSError] = []

        def enter() -> None:  # a thread of its own: whatever happens to its namespace ends with it
            try:
                home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
                try:
                    _setns(target)
                    made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG))
                    _setns(home)
                finally:
                    os.close(home)
            except OSError as exc:
                failed.append(exc)

        worker = threading.Thread(target=enter, name="sockdiag-setns", daemon=True)
        worker.start()
        worker.join()
        if failed or not made:
            for sock in made:
                sock.close()
            raise failed[0] if failed else OSError("netlink socket not opened")
        return made[0]
    finally:
        os.close(target)


def _address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4-mapped: the IPv4 address, as /proc is read
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return socket.inet_ntop(socket.AF_INET6, raw)


def parse(data: bytes, seq: int) -> tuple[list[tuple[str, int, bool, int]], bool]:
    """(ip, port, listening, inode) of the sockets in one read of a dump's answer, and whether the dump
    ended in it. Raises OSError on an error message or a malformed one."""
    out: list[tuple[str, int, bool, int]] = []
    at, end = 0, len(data)
    while at + _HEADER.size <= end:
        length, kind, _flags, got_seq, _port = _HEADER.unpack_from(data, at)
        if length < _HEADER.size or at + length > end:
            raise OSError(f"sock_diag: malformed message ({length} bytes at {at} of {end})")
        if got_seq == seq:
            if kind == NLMSG_DONE:
                return out, True
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, at + _HEADER.size)
                raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
            if kind == SOCK_DIAG_BY_FAMILY and length - _HEADER.size >= _MESSAGE.size:
                family, state, src, inode = _MESSAGE.unpack_from(data, at + _HEADER.size)
                (sport,) = _PORT.unpack_from(data, at + _HEADER.size + 4)
                out.append((_address(family, src), sport, state == TCP_LISTEN, inode))
        at += (length + 3) & ~3
    return out, False


def tcp_sockets(sock: socket.socket, limit: int) -> list[tuple[str, int, bool, int]]:
    """Listening and established TCP sockets (IPv4 and IPv6) of `sock`'s namespace, at most `limit`."""
    found: list[tuple[str, int, bool, int]] = []
    for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
        request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, STATES)
        flags = NLM_F_REQUEST | NLM_F_DUMP
        sock.send(_HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + request)
        done = False
        while not done:
            chunk = sock.recv(RECV_BYTES)
            if not chunk:
                raise OSError("sock_diag: netlink closed mid-dump")
            part, done = parse(chunk, seq)
            found.extend(part)
        if len(found) >= limit:
            break
    return found[:limit]

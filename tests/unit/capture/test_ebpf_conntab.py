"""The eBPF source's connection table: a process's socket fd → its TCP 4-tuple, read from /proc."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from wiretide.capture.sources.ebpf.conntab import Connection, ConnectionTable, parse_tcp_table

# /proc/net/tcp as the kernel writes it: a listener on 127.0.0.1:8443 and one accepted connection from
# 10.91.0.1:40000 (addresses are 32-bit words in host order, ports in hex).
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
TAIL = "00000000:00000000 00:00000000 00000000     0        0"
TCP = "\n".join(
    (
        HEADER,
        f"   0: 0100007F:20FB 00000000:0000 0A {TAIL} 1001 1 0 100 0 0 10 0",
        f"   1: 0100007F:20FB 01005B0A:9C40 01 {TAIL} 1002 1 0 20 4 30 10 -1",
    )
)
# /proc/net/tcp6: a dual-stack socket's IPv4-mapped connection and a real IPv6 one (::1 → ::1).
MAPPED_LO = "0000000000000000FFFF00000100007F"
LO6 = "00000000000000000000000001000000"
TCP6 = "\n".join(
    (
        HEADER,
        f"   0: {MAPPED_LO}:1F90 {MAPPED_LO}:D431 01 {TAIL} 2001 1 0 20 4 30 10 -1",
        f"   1: {LO6}:0050 {LO6}:C000 01 {TAIL} 2002 1 0 20 4 30 10 -1",
    )
)


def test_an_ipv4_table_names_each_socket_inode_by_its_addresses_and_lists_the_listening_ports() -> None:
    by_inode, listening = parse_tcp_table(TCP)
    assert listening == {8443}
    assert by_inode == {1002: (bytes([127, 0, 0, 1]), 8443, bytes([10, 91, 0, 1]), 40000)}


def test_an_ipv4_mapped_tcp6_socket_is_its_ipv4_connection_and_ipv6_stays_ipv6() -> None:
    by_inode, listening = parse_tcp_table(TCP6)
    assert listening == set()
    assert by_inode[2001] == (bytes([127, 0, 0, 1]), 8080, bytes([127, 0, 0, 1]), 54321)
    loopback6 = bytes(15) + b"\x01"
    assert by_inode[2002] == (loopback6, 80, loopback6, 49152)


def test_short_or_header_only_lines_are_skipped() -> None:
    assert parse_tcp_table(TCP.splitlines()[0] + "\n   7: garbage\n") == ({}, set())


def _fake_proc(root: Path, pid: int, fds: dict[int, str]) -> Path:
    (root / str(pid) / "fd").mkdir(parents=True)
    (root / str(pid) / "net").mkdir()
    (root / str(pid) / "net" / "tcp").write_text(TCP)
    (root / str(pid) / "net" / "tcp6").write_text(TCP6)
    for fd, target in fds.items():
        os.symlink(target, root / str(pid) / "fd" / str(fd))
    return root


def test_a_servers_accepted_socket_is_named_with_the_local_end_listening(tmp_path: Path) -> None:
    fds = {5: "socket:[1002]", 6: "socket:[2001]", 7: "/dev/null"}
    table = ConnectionTable(_fake_proc(tmp_path, 42, fds))
    assert table.get(42, 5) == Connection(bytes([127, 0, 0, 1]), 8443, bytes([10, 91, 0, 1]), 40000, True)
    assert table.get(42, 6) == Connection(bytes([127, 0, 0, 1]), 8080, bytes([127, 0, 0, 1]), 54321, False)
    assert table.get(42, 7) is None  # not a socket
    assert table.get(43, 5) is None  # no such process


def test_proc_is_read_once_per_socket_until_the_fd_is_forgotten(tmp_path: Path) -> None:
    table = ConnectionTable(_fake_proc(tmp_path, 42, {5: "socket:[1002]"}))
    for _ in range(3):
        assert table.get(42, 5) is not None
    assert table.lookups == 1
    table.forget(42, 5)
    table.get(42, 5)
    assert table.lookups == 2
    table.forget_process(42)
    table.get(42, 5)
    assert table.lookups == 3


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        yield client, server
    finally:
        for s in (client, server, listener):
            s.close()


def test_this_processs_real_sockets_are_named_from_its_own_proc(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    table = ConnectionTable()
    lo = bytes([127, 0, 0, 1])
    c = table.get(os.getpid(), client.fileno())
    s = table.get(os.getpid(), server.fileno())
    assert c == Connection(lo, client.getsockname()[1], lo, server.getsockname()[1], False)
    assert s == Connection(lo, server.getsockname()[1], lo, client.getsockname()[1], True)

"""Parsing /proc and the static inventory: real file shapes, including the broken ones."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from wiretide.resolver.local import procfs, sockdiag
from wiretide.resolver.local.inventory import InventoryError, load_inventory

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.77.0.0/24 2 0 2
        |-- 10.77.0.0
           /24 link UNICAST
        |-- 10.77.0.2
           /32 host LOCAL
Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
"""

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0
   1: 024D000A:C350 014D000A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0
   2: 024D000A:C351 014D000A:1F90 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0
   3: garbage
"""

TCP6 = (
    "  sl  local_address                         remote_address                        st\n"
    "   0: 0000000000000000FFFF0000024D000A:1F90 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000     0        0 3333 1 0\n"
)


def test_fib_trie_yields_the_local_addresses() -> None:
    assert procfs.parse_fib_trie(FIB_TRIE) == {"10.77.0.2", "127.0.0.1"}


def test_proc_net_tcp_yields_listening_and_established_sockets_and_skips_the_rest() -> None:
    socks = procfs.parse_proc_net_tcp(TCP)
    assert [(s.ip, s.port, s.listening, s.inode) for s in socks] == [
        ("0.0.0.0", 8080, True, 1111),
        ("10.0.77.2", 50000, False, 2222),
    ]


def test_ipv4_mapped_ipv6_sockets_read_as_ipv4() -> None:
    (sock,) = procfs.parse_proc_net_tcp(TCP6)
    assert (sock.ip, sock.port) == ("10.0.77.2", 8080)


def test_container_ids_come_from_cgroup_paths() -> None:
    cid = "a" * 64
    assert procfs.container_id(f"0::/system.slice/docker-{cid}.scope\n") == cid
    assert procfs.container_id("0::/user.slice\n") == ""


def test_an_inventory_in_either_shape_loads(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(
        "- {ip: 10.0.0.5, name: billing-db, namespace: prod, labels: {tier: db}}\n"
        "- {ip: 10.0.0.6, name: ldap, port: 389, service: directory, workload: {kind: VM, name: ldap-1}}\n"
    )
    claims = load_inventory(path)
    assert [(c.ip, c.port, c.identity.name) for c in claims] == [
        ("10.0.0.5", 0, "billing-db"),
        ("10.0.0.6", 389, "ldap"),
    ]
    assert claims[1].identity.workload.name == "ldap-1" and claims[0].identity.labels["tier"] == "db"
    path.write_text("10.0.0.7: {name: printer}\n")
    assert load_inventory(path)[0].identity.name == "printer"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- {ip: nope, name: x}\n", "not an IP"),
        ("- {ip: 10.0.0.1}\n", "name"),
        ("- {ip: 10.0.0.1, name: x, port: 70000}\n", "port"),
        ("just a string\n", "list or a mapping"),
        ("- [unclosed\n", "not YAML"),
    ],
)
def test_a_bad_inventory_fails_naming_the_setting(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=problem) as info:
        load_inventory(path)
    assert "WIRETIDE_RESOLVER_INVENTORY" in str(info.value)


def _diag(seq: int, family: int, state: int, src: bytes, port: int, inode: int) -> bytes:
    body = struct.pack("=BBBB", family, state, 0, 0) + struct.pack(">HH", port, 0) + src.ljust(16, b"\0")
    body += bytes(16 + 4 + 8 + 16) + struct.pack("=I", inode)
    return struct.pack("=IHHII", 16 + len(body), sockdiag.SOCK_DIAG_BY_FAMILY, 2, seq, 0) + body


def _done(seq: int) -> bytes:
    return struct.pack("=IHHII", 20, sockdiag.NLMSG_DONE, 2, seq, 0) + bytes(4)


def test_a_sock_diag_answer_yields_addresses_ports_states_and_inodes() -> None:
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 0, 77, 2])
    data = (
        _diag(1, socket.AF_INET, sockdiag.TCP_LISTEN, bytes([10, 0, 77, 2]), 8080, 1111)
        + _diag(1, socket.AF_INET6, sockdiag.TCP_ESTABLISHED, mapped, 50000, 2222)
        + _diag(1, socket.AF_INET6, sockdiag.TCP_LISTEN, socket.inet_pton(socket.AF_INET6, "fd00::1"), 443, 3)
        + _diag(7, socket.AF_INET, sockdiag.TCP_LISTEN, bytes(4), 1, 4)  # another request's: not ours
    )
    found, done = sockdiag.parse(data, 1)
    assert found == [
        ("10.0.77.2", 8080, True, 1111),
        ("10.0.77.2", 50000, False, 2222),
        ("fd00::1", 443, True, 3),
    ]
    assert not done
    assert sockdiag.parse(_done(1), 1) == ([], True)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("=IHHII", 8, sockdiag.SOCK_DIAG_BY_FAMILY, 2, 1, 0),  # shorter than its own header
        struct.pack("=IHHII", 4000, sockdiag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(20),  # past the end
        struct.pack("=IHHII", 20, sockdiag.NLMSG_ERROR, 2, 1, 0) + struct.pack("=i", -1),  # EPERM
    ],
)
def test_a_malformed_or_refused_sock_diag_answer_is_an_oserror(data: bytes) -> None:
    with pytest.raises(OSError):
        sockdiag.parse(data, 1)


def test_a_truncated_message_body_is_skipped_not_misread() -> None:
    short = struct.pack("=IHHII", 16 + 8, sockdiag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(8)
    assert sockdiag.parse(short + _done(1), 1) == ([], True)

"""The eBPF source's decoding of the program's events (struct event_t): TLS chunks with their library
and direction, TCP and UDP socket owners, and bad events counted, never raised.

Events are built here byte for byte as the program lays them out and handed to the source as BCC's
perf buffer reader would (an address and a size).
"""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.capture.sources.ebpf import EbpfSource, _program
from wiretide.capture.sources.ebpf.source import _HEADER, _HEADER_SIZE

CLIENT = bytes([10, 95, 0, 1])
SERVER = bytes([10, 95, 0, 2])
MAPPED = bytes(10) + b"\xff\xff"


def event(
    kind: int = _program.DATA,
    *,
    data: bytes = b"",
    direction: int = _program.WRITE,
    known: int = _program.SERVER,
    family: int = 2,
    local: bytes = SERVER,
    remote: bytes = CLIENT,
    lport: int = 443,
    rport: int = 40000,
    lib: int = _program.OPENSSL,
    offset: int = 0,
    comm: bytes = b"nginx",
) -> bytes:
    head = _HEADER.pack(
        10**9, 7, offset, 4242, 4243, 5, direction, len(data), 0, len(data), kind, comm,
        local.ljust(16, b"\0"), remote.ljust(16, b"\0"), lport, rport, family, known, lib, 0,
    )  # fmt: skip
    return head + data


def deliver(source: EbpfSource, raw: bytes) -> None:
    buf = ctypes.create_string_buffer(raw, len(raw))
    source._on_event(0, ctypes.addressof(buf), len(raw))


def _source(tmp_path: Path) -> EbpfSource:
    return EbpfSource(proc=tmp_path, cgroup_root=str(tmp_path))


def test_the_header_is_laid_out_as_the_program_s_event_up_to_its_data() -> None:
    assert _HEADER_SIZE == 120
    assert "u32 lib;\n    u32 pad;\n    u8 data[CHUNK];" in _program.SOURCE


def test_a_boringssl_write_of_a_server_is_a_chunk_from_the_server_to_its_client(tmp_path: Path) -> None:
    s = _source(tmp_path)
    deliver(s, event(data=b"HTTP/1.1 200 OK\r\n\r\n", lib=_program.BORINGSSL, offset=100))
    deliver(s, event(data=b"GET / HTTP/1.1\r\n\r\n", direction=_program.READ, lib=_program.BORINGSSL))
    answer, request = s.drain()
    assert (answer.src_ip, answer.src_port, answer.dst_ip, answer.dst_port) == (SERVER, 443, CLIENT, 40000)
    assert (answer.from_client, answer.local_is_sender, answer.offset) == (False, True, 100)
    assert (request.src_ip, request.dst_ip, request.from_client, request.local_is_sender) == (
        CLIENT,
        SERVER,
        True,
        False,
    )
    assert {c.library for c in (answer, request)} == {"boringssl"}
    assert (answer.pid, answer.tid, answer.comm, answer.cgroup_id) == (4242, 4243, "nginx", 7)


def test_an_unknown_library_number_reads_as_openssl(tmp_path: Path) -> None:
    s = _source(tmp_path)
    deliver(s, event(data=b"x", lib=99))
    assert [c.library for c in s.drain()] == ["openssl"]


def test_a_udp_owner_of_an_ipv4_socket_bound_to_any_address_keeps_the_unspecified_address(
    tmp_path: Path,
) -> None:
    s = _source(tmp_path)
    deliver(s, event(_program.SOCKET, known=_program.DATAGRAM, local=bytes(4), lport=53, rport=51719))
    (owner,) = s.take_sockets()
    assert (owner.local_ip, owner.local_port, owner.remote_ip, owner.remote_port) == (
        bytes(4),
        53,
        CLIENT,
        51719,
    )
    assert (owner.protocol, owner.local_is_server, owner.comm) == (17, False, "nginx")


def test_a_udp_owner_of_an_ipv6_socket_sending_to_a_mapped_ipv4_peer_is_an_ipv4_owner(tmp_path: Path) -> None:
    """An IPv6 socket's own address is not read in the kernel: unspecified, of its peer's family."""
    s = _source(tmp_path)
    deliver(s, event(_program.SOCKET, known=_program.DATAGRAM, family=10, local=b"", remote=MAPPED + CLIENT))
    v6_peer = bytes.fromhex("fd00000000000000000000000000000a")
    deliver(s, event(_program.SOCKET, known=_program.DATAGRAM, family=10, local=b"", remote=v6_peer))
    mapped, v6 = s.take_sockets()
    assert (mapped.local_ip, mapped.remote_ip) == (bytes(4), CLIENT)
    assert (v6.local_ip, v6.remote_ip) == (bytes(16), v6_peer)


def test_a_tcp_owner_keeps_both_addresses_and_which_end_accepted(tmp_path: Path) -> None:
    s = _source(tmp_path)
    deliver(
        s, event(_program.SOCKET, known=_program.CLIENT, local=CLIENT, remote=SERVER, lport=40000, rport=443)
    )
    (owner,) = s.take_sockets()
    assert (owner.local_ip, owner.remote_ip, owner.local_is_server, owner.protocol) == (
        CLIENT,
        SERVER,
        False,
        6,
    )


def test_an_event_shorter_than_its_header_is_counted_not_read(tmp_path: Path) -> None:
    s = _source(tmp_path)
    deliver(s, event(data=b"abc")[:50])
    assert s.drain() == [] and s.stats.drops == {"short_event": 1}


def test_a_length_beyond_the_event_s_bytes_gives_only_the_bytes_there(tmp_path: Path) -> None:
    s = _source(tmp_path)
    raw = bytearray(event(data=b"abcdef"))
    struct.pack_into("=I", raw, 48, 1 << 20)  # len: a megabyte, of which 6 bytes came
    deliver(s, bytes(raw))
    assert [c.data for c in s.drain()] == [b"abcdef"]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400), st.sampled_from([0, 1, 2, 3, 7]))
def test_random_events_never_raise(raw: bytes, kind: int) -> None:
    s = EbpfSource(proc=Path("/nonexistent"), cgroup_root="/nonexistent")
    if len(raw) >= _HEADER_SIZE:
        raw = raw[:52] + struct.pack("=I", kind) + raw[56:]
    deliver(s, raw)
    s.drain()
    s.take_sockets()

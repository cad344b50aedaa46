"""The shared L2–L4 vocabulary: header decoding over real frame bytes, flow hashing, batch columns."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.common.packets import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    ColumnBuilder,
    PacketColumns,
    decode_headers,
    flow_hash,
)
from wiretide.proto.v1 import packets_pb2

A4 = socket.inet_pton(socket.AF_INET, "10.1.2.3")
B4 = socket.inet_pton(socket.AF_INET, "10.9.8.7")
A6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
B6 = socket.inet_pton(socket.AF_INET6, "fd00::2")
MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"


def tcp4(payload: bytes = b"GET / HTTP/1.1\r\n\r\n", *, sport: int = 40000, dport: int = 80) -> dpkt.ip.IP:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=1000, ack=2000, flags=0x18, data=payload)
    return dpkt.ip.IP(src=A4, dst=B4, p=6, ttl=61, id=77, data=tcp)


def udp6(payload: bytes = b"hello", *, sport: int = 5353, dport: int = 53) -> dpkt.ip6.IP6:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = 8 + len(payload)
    ip6 = dpkt.ip6.IP6(src=A6, dst=B6, nxt=17, hlim=64, data=udp)
    ip6.plen = len(bytes(udp))
    return ip6


def eth(ip: dpkt.Packet, etype: int = 0x0800) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=etype, data=ip))


def decode(frame: bytes, link: int = LINKTYPE_ETHERNET) -> tuple | None:
    return decode_headers(memoryview(frame), 0, len(frame), link)


def test_an_ethernet_tcp_frame_decodes_to_its_addresses_ports_sequence_and_payload() -> None:
    frame = eth(tcp4())
    h = decode(frame)
    assert h is not None
    ver, src, dst, proto, sport, dport, ip_id, frag, more, l4, pay, pend, seq, ack, flags, ttl = h
    assert (ver, src, dst, proto, sport, dport, ip_id, frag, more) == (4, A4, B4, 6, 40000, 80, 77, 0, False)
    assert (l4, pay, pend) == (34, 54, len(frame))
    assert frame[pay:pend] == b"GET / HTTP/1.1\r\n\r\n"
    assert (seq, ack, flags, ttl) == (1000, 2000, 0x18, 61)


def test_ethernet_padding_is_trimmed_to_the_ip_total_length() -> None:
    frame = eth(tcp4(b"")) + b"\x00" * 6  # a minimum-size frame padded to 60 bytes
    h = decode(frame)
    assert h is not None
    assert h[10] == h[11] == 54


def test_tcp_options_move_the_payload() -> None:
    tcp = dpkt.tcp.TCP(sport=1, dport=2, flags=2, opts=b"\x02\x04\x05\xb4" + b"\x01" * 8, data=b"xy")
    tcp.off = (20 + 12) // 4
    frame = eth(dpkt.ip.IP(src=A4, dst=B4, p=6, data=tcp))
    h = decode(frame)
    assert h is not None
    assert frame[h[10] : h[11]] == b"xy"


def test_single_and_double_vlan_tags_are_skipped() -> None:
    inner = bytes(tcp4())
    one = MAC_B + MAC_A + struct.pack("!HHH", 0x8100, 10, 0x0800) + inner
    two = MAC_B + MAC_A + struct.pack("!HHHHH", 0x88A8, 100, 0x8100, 10, 0x0800) + inner
    for frame in (one, two):
        h = decode(frame)
        assert h is not None
        assert (h[1], h[4], h[5]) == (A4, 40000, 80)
        assert frame[h[10] : h[11]] == b"GET / HTTP/1.1\r\n\r\n"


def test_ipv4_options_are_skipped() -> None:
    ip = tcp4(b"abc")
    ip.opts = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    ip.hl = 6
    frame = eth(ip)
    h = decode(frame)
    assert h is not None
    assert h[9] == 14 + 24
    assert frame[h[10] : h[11]] == b"abc"


def test_ipv6_udp_through_every_link_type() -> None:
    raw = bytes(udp6())
    frames = {
        LINKTYPE_ETHERNET: eth(udp6(), 0x86DD),
        LINKTYPE_RAW: raw,
        LINKTYPE_IPV6: raw,
        LINKTYPE_LINUX_SLL: struct.pack("!HHH8sH", 0, 1, 6, MAC_A, 0x86DD) + raw,
        LINKTYPE_LINUX_SLL2: struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, MAC_A) + raw,
        LINKTYPE_NULL: struct.pack("<I", 30) + raw,
        LINKTYPE_LOOP: struct.pack("!I", 24) + raw,
    }
    for link, frame in frames.items():
        h = decode(frame, link)
        assert h is not None, link
        assert (h[0], h[1], h[2], h[3], h[4], h[5], h[12], h[13], h[14]) == (6, A6, B6, 17, 5353, 53, 0, 0, 0)
        assert frame[h[10] : h[11]] == b"hello", link


def test_an_ipv4_packet_under_the_ipv6_link_type_is_refused() -> None:
    assert decode(bytes(tcp4()), LINKTYPE_IPV6) is None
    assert decode(bytes(tcp4()), LINKTYPE_IPV4) is not None


def test_ipv4_fragments_carry_id_offset_and_only_the_first_has_ports() -> None:
    first = tcp4(b"A" * 32)
    first.mf = 1
    later = dpkt.ip.IP(src=A4, dst=B4, p=6, id=77, data=b"B" * 16)
    later.offset = 3  # in 8-octet units
    h1, h2 = decode(eth(first)), decode(eth(later))
    assert h1 is not None and h2 is not None
    assert (h1[4], h1[5], h1[6], h1[7], h1[8]) == (40000, 80, 77, 0, True)
    assert (h2[4], h2[5], h2[6], h2[7], h2[8], h2[12]) == (0, 0, 77, 24, False, 0)
    assert h2[9] == h2[10]


def test_ipv6_extension_headers_and_fragment_header_are_walked() -> None:
    udp = dpkt.udp.UDP(sport=1000, dport=2000, data=b"x" * 8)
    udp.ulen = 16
    hop = bytes([44, 0]) + b"\x01\x04\x00\x00\x00\x00"  # hop-by-hop -> fragment, PadN
    frag = struct.pack("!BxHI", 60, (0 << 3) | 1, 0xABCDEF)  # fragment -> dest opts, offset 0, M=1
    dstopts = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"
    ext = hop + frag + dstopts + bytes(udp)
    ip6 = dpkt.ip6.IP6(src=A6, dst=B6, nxt=0, hlim=9)
    raw = bytes(ip6)[:40]
    raw = raw[:4] + struct.pack("!HBB", len(ext), 0, 9) + raw[8:] + ext
    h = decode(raw, LINKTYPE_RAW)
    assert h is not None
    assert (h[3], h[4], h[5], h[6], h[7], h[8], h[15]) == (17, 1000, 2000, 0xABCDEF, 0, True, 9)
    assert raw[h[10] : h[11]] == b"x" * 8
    later = raw[:4] + struct.pack("!HBB", 8 + 8, 44, 9) + raw[8:40] + struct.pack("!BxHI", 17, 16, 0xABCDEF)
    later += b"y" * 8
    h2 = decode(later, LINKTYPE_RAW)
    assert h2 is not None
    assert (h2[3], h2[4], h2[5], h2[6], h2[7], h2[8]) == (17, 0, 0, 0xABCDEF, 16, False)
    assert h2[9] == h2[10] and later[h2[10] : h2[11]] == b"y" * 8


def test_icmp_type_and_code_take_the_port_slots() -> None:
    icmp = dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=2, data=b"ping"))
    frame = eth(dpkt.ip.IP(src=A4, dst=B4, p=1, data=icmp))
    h = decode(frame)
    assert h is not None
    assert (h[3], h[4], h[5]) == (1, 8, 0)
    assert frame[h[10] : h[11]] == b"ping"


def test_sctp_ports_are_read_and_tcp_fields_stay_zero() -> None:
    sctp = struct.pack("!HHII", 3868, 5000, 1, 0) + b"chunk"
    frame = eth(dpkt.ip.IP(src=A4, dst=B4, p=132, data=sctp))
    h = decode(frame)
    assert h is not None
    assert (h[3], h[4], h[5], h[12], h[13], h[14]) == (132, 3868, 5000, 0, 0, 0)


def test_bogus_and_short_frames_answer_none() -> None:
    good = eth(tcp4())
    assert decode(good[:13]) is None  # shorter than Ethernet
    assert decode(good[:30]) is None  # IPv4 header cut
    arp = MAC_B + MAC_A + b"\x08\x06" + b"\x00" * 28
    assert decode(arp) is None
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x43  # IHL 12 bytes < 20
    assert decode(bytes(bad_ihl)) is None
    bad_total = bytearray(good)
    bad_total[16:18] = b"\x00\x10"  # total length 16 < header length
    assert decode(bytes(bad_total)) is None
    bad_doff = bytearray(good)
    bad_doff[14 + 20 + 12] = 0x30  # TCP data offset 12 < 20
    assert decode(bytes(bad_doff)) is None
    assert decode(good, 9999) is None  # unknown link type
    assert decode_headers(memoryview(good), 10, 5, LINKTYPE_ETHERNET) is None
    assert decode_headers(memoryview(good), 0, len(good) + 10, LINKTYPE_ETHERNET) is None


def test_a_frame_cut_by_the_snap_length_keeps_its_ports() -> None:
    frame = eth(tcp4(b"z" * 500))[:60]
    h = decode(frame)
    assert h is not None
    assert (h[4], h[5], h[11]) == (40000, 80, 60)


def test_too_many_vlan_tags_or_ipv6_extensions_are_refused() -> None:
    tags = b"".join(struct.pack("!HH", 0x8100, 1) for _ in range(6))
    assert decode(MAC_B + MAC_A + tags[:-2] + b"\x08\x00" + bytes(tcp4())) is None
    hops = b"".join(bytes([0, 0]) + b"\x01\x04\x00\x00\x00\x00" for _ in range(12))
    raw = bytes(dpkt.ip6.IP6(src=A6, dst=B6, nxt=0, hlim=9))[:40]
    raw = raw[:4] + struct.pack("!HBB", len(hops), 0, 9) + raw[8:] + hops
    assert decode(raw, LINKTYPE_RAW) is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([0, 1, 101, 108, 113, 228, 229, 276, 7, -1]))
def test_random_bytes_never_raise(data: bytes, link: int) -> None:
    for off in (0, 1, 14):
        result = decode_headers(memoryview(data), off, len(data), link)
        assert result is None or (result[0] in (4, 6) and off <= result[9] <= result[10] <= result[11])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 80), st.binary(min_size=0, max_size=8))
def test_mutated_real_frames_never_raise(pos: int, junk: bytes) -> None:
    for frame in (eth(tcp4()), eth(udp6(), 0x86DD)):
        mutated = frame[:pos] + junk + frame[pos + len(junk) :]
        result = decode_headers(memoryview(mutated), 0, len(mutated), LINKTYPE_ETHERNET)
        assert result is None or result[11] <= len(mutated)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=4, max_size=16),
    st.integers(0, 65535),
    st.binary(min_size=4, max_size=16),
    st.integers(0, 65535),
    st.integers(0, 255),
)
def test_flow_hash_is_the_same_in_both_directions(
    src: bytes, sport: int, dst: bytes, dport: int, proto: int
) -> None:
    h = flow_hash(src, sport, dst, dport, proto)
    assert h == flow_hash(dst, dport, src, sport, proto)
    assert 0 <= h < 2**32


def test_flow_hash_is_stable_across_processes_and_separates_flows() -> None:
    code = (
        "import socket;from wiretide.common.packets import flow_hash;"
        "print(flow_hash(socket.inet_aton('10.1.2.3'),40000,socket.inet_aton('10.9.8.7'),80,6))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {str(flow_hash(A4, 40000, B4, 80, 6))}
    hashes = {flow_hash(A4, p, B4, 80, 6) for p in range(1000, 3000)}
    assert len(hashes) > 1990
    assert flow_hash(A4, 1, B4, 2, 6) != flow_hash(A4, 1, B4, 2, 17)


def test_columns_round_trip_through_the_proto() -> None:
    b = ColumnBuilder()
    i_eth = b.interface("eth0", LINKTYPE_ETHERNET)
    i_raw = b.interface("tun0", LINKTYPE_RAW)
    assert b.interface("eth0", LINKTYPE_ETHERNET) == i_eth
    f1, f2 = eth(tcp4()), bytes(udp6())
    b.append(f1, len(f1), 1_000, i_eth)
    b.append(memoryview(f2), len(f2) + 100, 2_000, i_raw)
    cols = b.take()
    assert len(cols) == 2 and len(b) == 0 and cols.consistent()
    msg = cols.to_proto("node-a", packets_pb2.CAPTURE_SOURCE_PCAP, 7, {"malformed": 3})
    wire = packets_pb2.PacketBatch.FromString(msg.SerializeToString())
    back = PacketColumns.from_proto(wire)
    assert back == cols
    assert (wire.node, wire.seq, dict(wire.dropped)) == ("node-a", 7, {"malformed": 3})
    assert [(o, c) for o, c, *_ in back.iter_packets()] == [(0, len(f1)), (len(f1), len(f2))]
    assert back.link_type(1) == LINKTYPE_RAW and back.link_type(5) == -1


def test_a_received_batch_with_lying_columns_is_detected_and_bogus_indexes_do_not_allocate() -> None:
    msg = packets_pb2.PacketBatch(
        data=b"abc", caplens=[2, 2], origlens=[2], timestamps_ns=[1, 2], interface_ids=[0, 0]
    )
    msg.interfaces.add(index=4_000_000_000, name="x", link_type=1)
    cols = PacketColumns.from_proto(msg)
    assert not cols.consistent()
    assert len(cols.interfaces) <= 3

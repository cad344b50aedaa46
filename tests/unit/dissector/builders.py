"""Builders for test traffic: Ethernet/IPv4/TCP/UDP frames and whole TCP conversations as PacketColumns."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder, PacketColumns

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
T0 = 1_700_000_000_000_000_000
MSS = 1400


def _ip4(addr: str) -> bytes:
    return socket.inet_aton(addr)


def ipv4(
    src: str, dst: str, proto: int, payload: bytes, ip_id: int = 1, frag: int = 0, more: bool = False
) -> bytes:
    word = (frag // 8) | (0x2000 if more else 0)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ip_id, word, 64, proto, 0, _ip4(src), _ip4(dst)
    )
    return header + payload


def ether(ip_packet: bytes) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip_packet


def tcp_frame(
    src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int, payload: bytes = b""
) -> bytes:
    seg = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0
    )
    return ether(ipv4(src, dst, 6, seg + payload))


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    dg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return ether(ipv4(src, dst, 17, dg))


def columns(frames: list[tuple[int, bytes]]) -> PacketColumns:
    b = ColumnBuilder()
    iface = b.interface("test0", LINKTYPE_ETHERNET)
    for ts, frame in frames:
        b.append(frame, len(frame), ts, iface)
    return b.take()


@dataclass
class Conversation:
    """A TCP connection between a client and a server, recorded as frames with increasing timestamps."""

    client: str = "10.0.0.1"
    cport: int = 40000
    server: str = "10.0.0.2"
    sport: int = 80
    cseq: int = 1000
    sseq: int = 5000
    ts: int = T0
    step: int = 1_000_000
    frames: list[tuple[int, bytes]] = field(default_factory=list)

    def _tick(self) -> int:
        self.ts += self.step
        return self.ts

    def handshake(self) -> Conversation:
        self.frames.append(
            (self._tick(), tcp_frame(self.client, self.cport, self.server, self.sport, self.cseq, 0, SYN))
        )
        self.frames.append(
            (
                self._tick(),
                tcp_frame(
                    self.server, self.sport, self.client, self.cport, self.sseq, self.cseq + 1, SYN | ACK
                ),
            )
        )
        self.cseq += 1
        self.sseq += 1
        self.frames.append(
            (
                self._tick(),
                tcp_frame(self.client, self.cport, self.server, self.sport, self.cseq, self.sseq, ACK),
            )
        )
        return self

    def segments(self, from_client: bool, data: bytes, mss: int = MSS) -> list[tuple[int, bytes]]:
        out = []
        for i in range(0, len(data), mss):
            piece = data[i : i + mss]
            if from_client:
                f = tcp_frame(
                    self.client, self.cport, self.server, self.sport, self.cseq, self.sseq, ACK | PSH, piece
                )
                self.cseq += len(piece)
            else:
                f = tcp_frame(
                    self.server, self.sport, self.client, self.cport, self.sseq, self.cseq, ACK | PSH, piece
                )
                self.sseq += len(piece)
            out.append((self._tick(), f))
        return out

    def send(self, from_client: bool, data: bytes, mss: int = MSS) -> Conversation:
        self.frames.extend(self.segments(from_client, data, mss))
        return self

    def close(self) -> Conversation:
        self.frames.append(
            (
                self._tick(),
                tcp_frame(self.client, self.cport, self.server, self.sport, self.cseq, self.sseq, FIN | ACK),
            )
        )
        self.cseq += 1
        self.frames.append(
            (
                self._tick(),
                tcp_frame(self.server, self.sport, self.client, self.cport, self.sseq, self.cseq, FIN | ACK),
            )
        )
        self.sseq += 1
        self.frames.append(
            (
                self._tick(),
                tcp_frame(self.client, self.cport, self.server, self.sport, self.cseq, self.sseq, ACK),
            )
        )
        return self

    def columns(self) -> PacketColumns:
        return columns(self.frames)


def http_get(path: str = "/", host: str = "example.test", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n{extra}\r\n".encode()


def http_ok(body: bytes = b"hello", ctype: str = "text/plain", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )

"""ICMP and ICMPv6 (RFC 792, RFC 4443): echo pairs and errors as entries, everything else counted.

Rule: an echo request waits in a bounded table for its reply, keyed by (addresses, identifier,
sequence); a reply pairs with it into one entry whose `elapsed_us` is the round trip; a request
nobody answers becomes an entry with error `timeout` once ECHO_TIMEOUT_NS of capture time has passed
(or at the end of input). An error message (unreachable, time exceeded, packet too big, parameter
problem) is an entry of its own naming the flow it quotes — the quoted packet's addresses, protocol
and ports — under that flow's `flow_id`, so the flow's entries and the error read together; when
the quoted TCP/UDP flow is in the pipeline's tables, the flow is marked (`mark`), so that its later
entries carry the error as an `icmp_errors` note and the error names the flow's last entry. Every
other type (neighbour discovery, router advertisements, MLD, redirects…) is counted per type name,
never an entry. Nothing here raises on packet bytes: a message too short for its type is counted as
`malformed`.

The headers are read with `struct` in place rather than through dpkt's `ICMP`/`ICMP6` classes: those
build an object per packet and parse the quoted datagram eagerly, where only four words are needed.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, Final

from wiretide.common.entry import UlidGenerator
from wiretide.common.packets import IPPROTO_ICMP, IPPROTO_ICMPV6, flow_id, ip_protocol_name

# A reply later than this (capture time) no longer answers its request: the request is a timeout.
# ping(8) gives up after 10 s by default (-W); beyond that a "reply" is a stray.
ECHO_TIMEOUT_NS: Final = 10_000_000_000
# Outstanding echo requests kept at once; beyond it the oldest is closed as a timeout (a ping flood
# against a silent host must not grow the table without bound).
MAX_PENDING: Final = 65_536
ICMP_HEADER: Final = 8
# Type, code, checksum, then identifier and sequence of an echo (RFC 792 p.14, RFC 4443 §4.1).
_ECHO = struct.Struct("!BB2xHH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

ECHO_REQUEST: Final = {IPPROTO_ICMP: 8, IPPROTO_ICMPV6: 128}
ECHO_REPLY: Final = {IPPROTO_ICMP: 0, IPPROTO_ICMPV6: 129}

# Error types → the entry's `method` (the same word for both versions).
_ERRORS: Final[dict[tuple[int, int], str]] = {
    (IPPROTO_ICMP, 3): "unreachable",
    (IPPROTO_ICMP, 11): "time_exceeded",
    (IPPROTO_ICMP, 12): "parameter_problem",
    (IPPROTO_ICMP, 4): "source_quench",
    (IPPROTO_ICMPV6, 1): "unreachable",
    (IPPROTO_ICMPV6, 2): "packet_too_big",
    (IPPROTO_ICMPV6, 3): "time_exceeded",
    (IPPROTO_ICMPV6, 4): "parameter_problem",
}
# Code names of the errors (RFC 792, RFC 1812 §5.2.7.1, RFC 4443 §3).
_CODES: Final[dict[tuple[int, int, int], str]] = {
    (IPPROTO_ICMP, 3, 0): "net unreachable",
    (IPPROTO_ICMP, 3, 1): "host unreachable",
    (IPPROTO_ICMP, 3, 2): "protocol unreachable",
    (IPPROTO_ICMP, 3, 3): "port unreachable",
    (IPPROTO_ICMP, 3, 4): "fragmentation needed",
    (IPPROTO_ICMP, 3, 5): "source route failed",
    (IPPROTO_ICMP, 3, 6): "destination network unknown",
    (IPPROTO_ICMP, 3, 7): "destination host unknown",
    (IPPROTO_ICMP, 3, 9): "network administratively prohibited",
    (IPPROTO_ICMP, 3, 10): "host administratively prohibited",
    (IPPROTO_ICMP, 3, 13): "communication administratively prohibited",
    (IPPROTO_ICMP, 11, 0): "TTL exceeded in transit",
    (IPPROTO_ICMP, 11, 1): "fragment reassembly time exceeded",
    (IPPROTO_ICMP, 12, 0): "pointer indicates the error",
    (IPPROTO_ICMPV6, 1, 0): "no route to destination",
    (IPPROTO_ICMPV6, 1, 1): "administratively prohibited",
    (IPPROTO_ICMPV6, 1, 2): "beyond scope of source address",
    (IPPROTO_ICMPV6, 1, 3): "address unreachable",
    (IPPROTO_ICMPV6, 1, 4): "port unreachable",
    (IPPROTO_ICMPV6, 1, 5): "source address failed policy",
    (IPPROTO_ICMPV6, 1, 6): "reject route",
    (IPPROTO_ICMPV6, 2, 0): "packet too big",
    (IPPROTO_ICMPV6, 3, 0): "hop limit exceeded in transit",
    (IPPROTO_ICMPV6, 3, 1): "fragment reassembly time exceeded",
    (IPPROTO_ICMPV6, 4, 0): "erroneous header field",
    (IPPROTO_ICMPV6, 4, 1): "unrecognized next header",
    (IPPROTO_ICMPV6, 4, 2): "unrecognized IPv6 option",
}
# Types that are counted, not entries (the counter's key is `<icmp|icmpv6>_<name>`; any other type is
# `<icmp|icmpv6>_other`, so the counter stays bounded).
_COUNTED: Final[dict[tuple[int, int], str]] = {
    (IPPROTO_ICMP, 5): "redirect",
    (IPPROTO_ICMP, 9): "router_advertisement",
    (IPPROTO_ICMP, 10): "router_solicitation",
    (IPPROTO_ICMP, 13): "timestamp",
    (IPPROTO_ICMP, 14): "timestamp_reply",
    (IPPROTO_ICMPV6, 130): "mld_query",
    (IPPROTO_ICMPV6, 131): "mld_report",
    (IPPROTO_ICMPV6, 132): "mld_done",
    (IPPROTO_ICMPV6, 133): "router_solicitation",
    (IPPROTO_ICMPV6, 134): "router_advertisement",
    (IPPROTO_ICMPV6, 135): "neighbor_solicitation",
    (IPPROTO_ICMPV6, 136): "neighbor_advertisement",
    (IPPROTO_ICMPV6, 137): "redirect",
    (IPPROTO_ICMPV6, 143): "mldv2_report",
}
_VERSION: Final = {IPPROTO_ICMP: "4", IPPROTO_ICMPV6: "6"}
_NAME: Final = {IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "icmpv6"}

# Key of an outstanding echo: (family, requester, responder, identifier, sequence).
EchoKey = tuple[int, bytes, bytes, int, int]


def _ip(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# Where a quoted packet's flow is: (IP protocol, source, source port, destination, destination port).
QuotedFlow = tuple[int, bytes, int, bytes, int]
# Marks a quoted flow with an error note; answers the id of the flow's last entry (None: not known).
Mark = Callable[[QuotedFlow, dict[str, Any]], str | None]


def _invoking(buf: memoryview | bytes, pos: int, end: int) -> tuple[QuotedFlow, int] | None:
    """The invoking packet's flow and where its L4 header starts, from the quoted IP header at
    `buf[pos:end]`; None when too little is there to name the addresses."""
    if end - pos < 1:
        return None
    version = buf[pos] >> 4
    if version == 4:
        ihl = (buf[pos] & 0x0F) * 4
        if ihl < 20 or end - pos < 20:
            return None
        proto = buf[pos + 9]
        src, dst = bytes(buf[pos + 12 : pos + 16]), bytes(buf[pos + 16 : pos + 20])
        l4 = pos + ihl
    elif version == 6:
        if end - pos < 40:
            return None
        proto = buf[pos + 6]
        src, dst = bytes(buf[pos + 8 : pos + 24]), bytes(buf[pos + 24 : pos + 40])
        l4 = pos + 40
    else:
        return None
    sport = dport = 0
    if proto in (6, 17, 132, 136) and end - l4 >= 4:
        sport, dport = _U16.unpack_from(buf, l4)[0], _U16.unpack_from(buf, l4 + 2)[0]
    return (proto, src, sport, dst, dport), l4


def quoted(buf: memoryview | bytes, pos: int, end: int) -> dict[str, Any] | None:
    """The flow an ICMP error quotes: the invoking packet's IP header and first L4 bytes at
    `buf[pos:end]` (RFC 792: IP header + 64 bits; RFC 4443 §2.4(c): as much as fits). None when too
    little of it is there to name the addresses. Never raises."""
    found = _invoking(buf, pos, end)
    if found is None:
        return None
    (proto, src, sport, dst, dport), l4 = found
    out: dict[str, Any] = {
        "protocol": ip_protocol_name(proto),
        "src": {"ip": _ip(src), "port": sport},
        "dst": {"ip": _ip(dst), "port": dport},
        "flow_id": flow_id(src, sport, dst, dport, proto),
    }
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and end - l4 >= ICMP_HEADER:
        # The error answers an echo: name it by identifier and sequence (traceroute -I, ping).
        qtype, _code, ident, seq = _ECHO.unpack_from(buf, l4)
        out["icmp"] = {"type": qtype, "id": ident, "seq": seq}
        out["flow_id"] = flow_id(src, ident, dst, ident, proto)
    return out


class IcmpTracker:
    """One pipeline's ICMP state: outstanding echo requests and per-type counts. `emit` receives
    every finished entry; `mark` is told of every flow an error quotes; `source`/`node` are read when
    an entry is built."""

    __slots__ = ("_emit", "_mark", "counted", "node", "pending", "source", "stats", "ulid")

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        ulid: UlidGenerator,
        stats: Counter[str],
        counted: Counter[str],
        node: str = "",
        source: str = "pcap",
        mark: Mark | None = None,
    ) -> None:
        self._emit = emit
        self._mark = mark
        self.ulid = ulid
        self.stats = stats  # counted messages by `<icmp|icmpv6>_<type name>` (a bounded set of keys)
        self.counted = counted  # messages that are no entry, by protocol (`icmp`, `icmpv6`)
        self.node = node
        self.source = source
        # (family, requester, responder, id, seq) → (ts, size, ttl, interface), oldest first.
        self.pending: OrderedDict[EchoKey, tuple[int, int, int, str]] = OrderedDict()

    def _count(self, proto: int, what: str) -> None:
        name = _NAME[proto]
        self.counted[name] += 1
        self.stats[f"{name}_{what}"] += 1

    def packet(
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
        """One ICMP (proto 1) or ICMPv6 (proto 58) message at `buf[l4:end]`."""
        if end - l4 < 4:
            self._count(proto, "malformed")
            return
        mtype = buf[l4]
        code = buf[l4 + 1]
        if mtype == ECHO_REQUEST[proto] or mtype == ECHO_REPLY[proto]:
            if end - l4 < ICMP_HEADER:
                self._count(proto, "malformed")
                return
            _, _, ident, seq = _ECHO.unpack_from(buf, l4)
            size = end - l4
            if mtype == ECHO_REQUEST[proto]:
                key = (proto, src, dst, ident, seq)
                if key in self.pending:
                    self.stats["icmp_echo_retransmissions"] += 1
                    return
                if len(self.pending) >= MAX_PENDING:
                    old, value = self.pending.popitem(last=False)
                    self._echo(old, value, None)
                    self.stats["icmp_pending_full"] += 1
                self.pending[key] = (ts, size, ttl, iface)
            else:
                found = self.pending.pop((proto, dst, src, ident, seq), None)
                if found is None:
                    self._echo((proto, dst, src, ident, seq), None, (ts, size, ttl, iface))
                else:
                    self._echo((proto, dst, src, ident, seq), found, (ts, size, ttl, iface))
            return
        method = _ERRORS.get((proto, mtype))
        if method is not None:
            self._error(proto, method, mtype, code, src, dst, buf, l4, end, ttl, ts, iface)
            return
        self._count(proto, _COUNTED.get((proto, mtype), "other"))

    def expire(self, now: int) -> None:
        """Requests older than ECHO_TIMEOUT_NS become timeout entries."""
        pending = self.pending
        while pending:
            key = next(iter(pending))
            value = pending[key]
            if now - value[0] < ECHO_TIMEOUT_NS:
                break
            del pending[key]
            self._echo(key, value, None)

    def finish(self) -> None:
        """End of input: every outstanding request is a timeout."""
        while self.pending:
            key, value = self.pending.popitem(last=False)
            self._echo(key, value, None)

    # ---- entries ------------------------------------------------------------------------------

    def _doc(
        self,
        proto: int,
        ts: int,
        src: str,
        dst: str,
        iface: str,
        fid: str,
    ) -> dict[str, Any]:
        return {
            "id": self.ulid.new(ts),
            "node": self.node,
            "timestamp": ts,
            "elapsed_us": 0,
            "protocol": "icmp",
            "version": _VERSION[proto],
            "transport": "icmp",
            "src": {"ip": src, "port": 0},
            "dst": {"ip": dst, "port": 0},
            "method": None,
            "path": None,
            "status": None,
            "summary": "",
            "request": None,
            "response": None,
            "error": None,
            "size": {"request": 0, "response": 0},
            "tls": None,
            "capture": {"source": self.source, "interface": iface},
            "flow_id": fid,
            "stream": None,
            "trace": None,
        }

    def _echo(
        self,
        key: EchoKey,
        req: tuple[int, int, int, str] | None,
        resp: tuple[int, int, int, str] | None,
    ) -> None:
        proto, requester, responder, ident, seq = key
        first = req if req is not None else resp
        assert first is not None
        src, dst = _ip(requester), _ip(responder)
        doc = self._doc(
            proto, first[0], src, dst, first[3], flow_id(requester, ident, responder, ident, proto)
        )
        doc["method"] = "echo"
        name = _NAME[proto]
        if req is not None:
            doc["request"] = {"type": ECHO_REQUEST[proto], "code": 0, "id": ident, "seq": seq, "ttl": req[2]}
            doc["size"]["request"] = req[1]
        if resp is not None:
            doc["response"] = {"type": ECHO_REPLY[proto], "code": 0, "id": ident, "seq": seq, "ttl": resp[2]}
            doc["size"]["response"] = resp[1]
            doc["status"] = 0
        if req is not None and resp is not None:
            rtt_us = max(0, resp[0] - req[0]) // 1000
            doc["elapsed_us"] = rtt_us
            doc["summary"] = f"{name} echo {src} → {dst} id {ident} seq {seq} {rtt_us / 1000:.3f} ms"
        elif req is not None:
            doc["error"] = {"type": "timeout", "message": "no echo reply seen"}
            doc["summary"] = f"{name} echo {src} → {dst} id {ident} seq {seq} unanswered"
        else:
            doc["error"] = {"type": "unmatched", "message": "echo reply without a captured request"}
            doc["summary"] = f"{name} echo reply {dst} → {src} id {ident} seq {seq}"
        self._emit(doc)

    def _error(
        self,
        proto: int,
        method: str,
        mtype: int,
        code: int,
        src: bytes,
        dst: bytes,
        buf: memoryview | bytes,
        l4: int,
        end: int,
        ttl: int,
        ts: int,
        iface: str,
    ) -> None:
        # The invoking packet follows the 8-byte header; the fifth to eighth bytes carry the MTU
        # (packet too big, fragmentation needed) or the pointer (parameter problem).
        inner = quoted(buf, l4 + ICMP_HEADER, end) if end - l4 >= ICMP_HEADER else None
        reason = _CODES.get((proto, mtype, code), f"code {code}")
        fields: dict[str, Any] = {"type": mtype, "code": code, "ttl": ttl, "reason": reason}
        if end - l4 >= ICMP_HEADER:
            word = _U32.unpack_from(buf, l4 + 4)[0]
            if method == "packet_too_big":
                fields["mtu"] = word
            elif proto == IPPROTO_ICMP and mtype == 3 and code == 4:
                fields["mtu"] = word & 0xFFFF
            elif method == "parameter_problem":
                fields["pointer"] = word if proto == IPPROTO_ICMPV6 else word >> 24
        s, d = _ip(src), _ip(dst)
        if inner is not None:
            fields["quoted"] = inner
            fid = inner["flow_id"]
            qs, qd = inner["src"], inner["dst"]
            about = (
                f"{inner['protocol']} {_endpoint(qs['ip'], qs['port'])} → {_endpoint(qd['ip'], qd['port'])}"
            )
        else:
            fid = flow_id(src, 0, dst, 0, proto)
            about = "an unquoted packet"
        doc = self._doc(proto, ts, s, d, iface, fid)
        doc["method"] = method
        doc["path"] = about if inner is not None else None
        doc["status"] = code
        doc["request"] = fields
        doc["size"]["request"] = end - l4
        doc["summary"] = f"{_NAME[proto]} {reason} from {s} for {about}"
        doc["error"] = {"type": method, "message": f"{reason} for {about}"}
        invoking = _invoking(buf, l4 + ICMP_HEADER, end) if inner is not None else None
        if invoking is not None and inner is not None and self._mark is not None:
            # The quoted flow's later entries carry this error; this entry names its last one.
            note = {"id": doc["id"], "type": method, "code": code, "reason": reason, "from": s}
            last = self._mark(invoking[0], note)
            if last is not None:
                inner["entry_id"] = last
        self._emit(doc)

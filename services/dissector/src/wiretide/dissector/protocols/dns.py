"""DNS over UDP and TCP (RFC 1035, mDNS RFC 6762, LLMNR RFC 4795): messages parsed, queries and
answers matched by id.

Rule: names are read with a bounded pointer walk (RFC 1035 §4.1.4) so that compression loops and
out-of-range pointers are violations, never hangs; an unanswered query becomes a `timeout` entry.
Pairing follows tshark: a response answers the earliest outstanding query with its id (mDNS and LLMNR
send every query with id 0), a query repeating an outstanding id within the retransmission window is
a retransmission (an entry of its own, no error), and a response with no question and no query
waiting for it is an unsolicited announcement (an entry of its own, no error).
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Final

from wiretide.dissector.api import Event, Message, Presented, ProtocolSpec, SessionConfig, Verdict, Violation

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_Q = struct.Struct("!HH")
_U16 = struct.Struct("!H")
HEADER_LEN: Final = 12
# RFC 1035 §2.3.4: 255 octets per name; 127 labels at most.
MAX_NAME_LEN: Final = 255
MAX_LABELS: Final = 128
# Records read per section; a message claiming more is cut (and flagged), not looped over.
MAX_RECORDS: Final = 256
# TCP messages are length-prefixed (RFC 1035 §4.2.2); a prefix beyond this is not DNS.
MAX_TCP_MESSAGE: Final = 65535

TYPES: Final = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
    50: "NSEC3", 64: "SVCB", 65: "HTTPS", 99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA",
}  # fmt: skip
CLASSES: Final = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
RCODES: Final = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
    7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}  # fmt: skip
# RFC 1002 §4.2.1: NB and NBSTAT questions carry a 32-letter first-level-encoded name.
_NBNS_TYPES: Final = frozenset({32, 33})
_NBNS_NAME_LEN: Final = 32
OPCODES: Final = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}
# A query repeating the id of an outstanding one within this window is its retransmission (tshark's
# dns.retransmission_timer default); a later one starts a new transaction.
RETRANSMIT_WINDOW_NS: Final = 5_000_000_000
# Outstanding queries remembered per flow: as many as the matcher keeps pending (matching.MAX_PENDING).
MAX_OUTSTANDING: Final = 256


class DnsError(ValueError):
    """Malformed message (caught inside this module; never escapes)."""


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """(name, offset after the name in place) following compression pointers (RFC 1035 §4.1.4)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    length = 0
    n = len(msg)
    while True:
        if pos >= n:
            raise DnsError("name runs past the message")
        c = msg[pos]
        if c == 0:
            pos += 1
            break
        if c & 0xC0 == 0xC0:
            if pos + 1 >= n:
                raise DnsError("truncated pointer")
            target = ((c & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > MAX_LABELS or target >= n:
                raise DnsError("bad compression pointer")
            pos = target
            continue
        if c & 0xC0:
            raise DnsError("reserved label type")
        label = msg[pos + 1 : pos + 1 + c]
        if len(label) != c:
            raise DnsError("label runs past the message")
        length += c + 1
        if length > MAX_NAME_LEN or len(labels) >= MAX_LABELS:
            raise DnsError("name too long")
        labels.append(label.decode("ascii", "backslashreplace"))
        pos += 1 + c
    return (".".join(labels) or "."), (end if end >= 0 else pos)


def _rdata(msg: bytes, rtype: int, pos: int, rdlen: int) -> Any:
    rd = msg[pos : pos + rdlen]
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, rd)
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, rd)
    if rtype in (2, 5, 12, 39):
        return read_name(msg, pos)[0]
    if rtype == 15 and rdlen >= 3:
        return {"preference": _U16.unpack_from(rd)[0], "exchange": read_name(msg, pos + 2)[0]}
    if rtype == 33 and rdlen >= 7:
        prio, weight, port = struct.unpack_from("!HHH", rd)
        return {"priority": prio, "weight": weight, "port": port, "target": read_name(msg, pos + 6)[0]}
    if rtype == 6:
        mname, p = read_name(msg, pos)
        rname, p = read_name(msg, p)
        if p + 20 > pos + rdlen:
            raise DnsError("short SOA")
        serial, refresh, retry, expire, minimum = struct.unpack_from("!IIIII", msg, p)
        return {"mname": mname, "rname": rname, "serial": serial, "refresh": refresh, "retry": retry,
                "expire": expire, "minimum": minimum}  # fmt: skip
    if rtype in (16, 99):
        out = []
        i = 0
        while i < rdlen:
            ln = rd[i]
            out.append(rd[i + 1 : i + 1 + ln].decode("utf-8", "replace"))
            i += 1 + ln
        return out
    if rtype == 257 and rdlen >= 2:
        tl = rd[1]
        return {"flags": rd[0], "tag": rd[2 : 2 + tl].decode("ascii", "replace"),
                "value": rd[2 + tl :].decode("utf-8", "replace")}  # fmt: skip
    if rtype in (64, 65) and rdlen >= 3:
        target, _ = read_name(msg, pos + 2)
        return {"priority": _U16.unpack_from(rd)[0], "target": target, "params": rd[2:].hex()}
    return rd.hex()


def parse(msg: bytes) -> dict[str, Any]:
    """A whole DNS message → its fields; raises DnsError (caught by callers in this module)."""
    if len(msg) < HEADER_LEN:
        raise DnsError("shorter than a header")
    mid, flags, qd, an, ns, ar = _HEADER.unpack_from(msg)
    pos = HEADER_LEN
    questions = []
    for _ in range(min(qd, MAX_RECORDS)):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise DnsError("truncated question")
        qtype, qclass = _Q.unpack_from(msg, pos)
        pos += 4
        questions.append(
            {
                "name": name,
                "type": TYPES.get(qtype, str(qtype)),
                "class": CLASSES.get(qclass & 0x7FFF, str(qclass)),
            }
        )
    sections: list[list[dict[str, Any]]] = []
    for count in (an, ns, ar):
        records = []
        for _ in range(min(count, MAX_RECORDS)):
            name, pos = read_name(msg, pos)
            if pos + 10 > len(msg):
                raise DnsError("truncated record")
            rtype, rclass, ttl, rdlen = _RR.unpack_from(msg, pos)
            pos += 10
            if pos + rdlen > len(msg):
                raise DnsError("record data runs past the message")
            rec: dict[str, Any] = {"name": name, "type": TYPES.get(rtype, str(rtype)), "ttl": ttl}
            if rtype == 41:  # EDNS(0) OPT pseudo-record (RFC 6891 §6.1.2): class is the UDP size
                rec = {"name": name, "type": "OPT", "udp_size": rclass, "data": msg[pos : pos + rdlen].hex()}
            else:
                rec["class"] = CLASSES.get(rclass & 0x7FFF, str(rclass))
                rec["data"] = _rdata(msg, rtype, pos, rdlen)
            records.append(rec)
            pos += rdlen
        sections.append(records)
    return {
        "id": mid,
        "qr": bool(flags & 0x8000),
        "opcode": OPCODES.get((flags >> 11) & 0xF, str((flags >> 11) & 0xF)),
        "flags": {
            "aa": bool(flags & 0x0400),
            "tc": bool(flags & 0x0200),
            "rd": bool(flags & 0x0100),
            "ra": bool(flags & 0x0080),
            "ad": bool(flags & 0x0020),
            "cd": bool(flags & 0x0010),
        },
        "rcode": flags & 0xF,
        "questions": questions,
        "answers": sections[0],
        "authorities": sections[1],
        "additionals": sections[2],
    }


def _fields(p: dict[str, Any]) -> dict[str, Any]:
    """The Entry side of a parsed message: a response with its records, a query with its questions."""
    if p["qr"]:
        return {
            "id": p["id"],
            "opcode": p["opcode"],
            "flags": p["flags"],
            "rcode": p["rcode"],
            "rcode_name": RCODES.get(p["rcode"], str(p["rcode"])),
            "questions": p["questions"],
            "answers": p["answers"],
            "authorities": p["authorities"],
            "additionals": p["additionals"],
        }
    fields = {"id": p["id"], "opcode": p["opcode"], "flags": p["flags"], "questions": p["questions"]}
    if p["additionals"]:
        fields["additionals"] = p["additionals"]
    return fields


class DnsSession:
    """UDP: one datagram, one message. TCP: 2-byte length prefix per message (RFC 1035 §4.2.2).

    `outstanding` maps a query id to (transaction number, capture time) of the earliest query with that
    id still waiting for its answer; the match key of a query and of its answer is (id, transaction).
    """

    __slots__ = ("bufs", "first_ts", "outstanding", "transactions")

    def __init__(self, config: SessionConfig) -> None:
        self.bufs = [bytearray(), bytearray()]
        self.first_ts = [0, 0]
        self.outstanding: dict[int, tuple[int, int]] = {}
        self.transactions = 0

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        return [self._message(data, ts, len(data))]

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        return []

    def close(self, ts: int) -> list[Event]:
        return []

    def _message(self, raw: bytes, ts: int, size: int) -> Message | Violation:
        try:
            p = parse(raw)
        except (DnsError, struct.error, IndexError, ValueError) as exc:
            return Violation(f"dns: {exc}")
        fields = _fields(p)
        mid: int = p["id"]
        waiting = self.outstanding.get(mid)
        if not p["qr"]:
            if waiting is not None and ts - waiting[1] <= RETRANSMIT_WINDOW_NS:
                fields["retransmission"] = True
                return Message(True, ts, ts, size, fields, standalone=True)
            if waiting is not None:
                # Too late for a retransmission: a new transaction under the same key, so the matcher
                # hands the old query back as unanswered at once.
                number = waiting[0]
                del self.outstanding[mid]
            else:
                self.transactions += 1
                number = self.transactions
            self.outstanding[mid] = (number, ts)
            if len(self.outstanding) > MAX_OUTSTANDING:
                del self.outstanding[next(iter(self.outstanding))]
            return Message(True, ts, ts, size, fields, key=(mid, number))
        if waiting is not None:
            del self.outstanding[mid]
            return Message(False, ts, ts, size, fields, key=(mid, waiting[0]))
        if not p["questions"]:  # RFC 6762 §8.3: an announcement answers nobody
            fields["unsolicited"] = True
            return Message(False, ts, ts, size, fields, standalone=True)
        return Message(False, ts, ts, size, fields, key=(mid, None))  # an answer without its query


class DnsTcpSession(DnsSession):
    __slots__ = ()

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        buf = self.bufs[from_client]
        if not buf:
            self.first_ts[from_client] = ts
        buf += data
        out: list[Event] = []
        while len(buf) >= 2:
            n = _U16.unpack_from(buf)[0]
            if n < HEADER_LEN:
                out.append(Violation("dns: tcp length prefix shorter than a header"))
                buf.clear()
                break
            if len(buf) < 2 + n:
                break
            out.append(self._message(bytes(buf[2 : 2 + n]), ts, n + 2))
            del buf[: 2 + n]
            self.first_ts[from_client] = ts
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[Event]:
        return [Violation("dns: capture gap in a TCP stream")]


def _looks_like_dns(data: bytes, stream: bool, response: bool) -> Verdict:
    """Header plausibility plus a first question that parses; MAYBE while a TCP message is incomplete."""
    complete = True
    if stream:
        if len(data) < 2:
            return Verdict.MAYBE
        n = _U16.unpack_from(data)[0]
        if n < HEADER_LEN:
            return Verdict.NO
        data = data[2:]
        complete = len(data) >= n
        data = data[:n]
    if len(data) < HEADER_LEN:
        return Verdict.MAYBE if stream else Verdict.NO
    _, flags, qd, an, ns, _ = _HEADER.unpack_from(data)
    if bool(flags & 0x8000) != response or (flags >> 11) & 0xF not in OPCODES or qd > 16:
        return Verdict.NO
    if an > MAX_RECORDS or ns > MAX_RECORDS:
        return Verdict.NO
    if qd == 0 and not (response and an):  # only an announcement (RFC 6762 §8.3) has no question
        return Verdict.NO
    try:
        # The first question, or an announcement's first record (its type and class lead the same way).
        qname, pos = read_name(data, HEADER_LEN)
        if pos + 4 > len(data):
            raise DnsError("truncated question")
        qtype, qclass = _Q.unpack_from(data, pos)
    except (DnsError, struct.error):
        return Verdict.NO if complete else Verdict.MAYBE
    if qtype in _NBNS_TYPES and len(qname) == _NBNS_NAME_LEN and qname.isalpha() and qname.isupper():
        return Verdict.NO  # NetBIOS name service (RFC 1002): DNS wire format, not DNS
    if qclass & 0x7FFF in CLASSES and (qtype in TYPES or qtype < 1024):
        return Verdict.YES
    return Verdict.NO


def probe_udp(client: bytes, server: bytes) -> Verdict:
    if client and _looks_like_dns(client, False, False) == Verdict.YES:
        return Verdict.YES
    if server and _looks_like_dns(server, False, True) == Verdict.YES:
        return Verdict.YES
    return Verdict.NO


def probe_tcp(client: bytes, server: bytes) -> Verdict:
    if client:
        return _looks_like_dns(client, True, False)
    if server:
        return _looks_like_dns(server, True, True)
    return Verdict.MAYBE


def present(req: Message | None, resp: Message | None) -> Presented:
    first = req if req is not None else resp
    assert first is not None
    fields = first.fields
    status = resp.fields["rcode"] if resp is not None else None
    if fields.get("unsolicited"):
        records = fields["answers"]
        rr = records[0] if records else {"name": "", "type": ""}
        more = f" +{len(records) - 1} records" if len(records) > 1 else ""
        return Presented(
            method=rr["type"], path=rr["name"], status=status,
            summary=f"{rr['type']} {rr['name']}{more} announced", stream=str(fields["id"]),
        )  # fmt: skip
    qs = fields.get("questions") or []
    q = qs[0] if qs else {"name": "", "type": ""}
    answers = len(resp.fields["answers"]) if resp is not None else 0
    tail = f" → {resp.fields['rcode_name']} ({answers} answers)" if resp is not None else ""
    if fields.get("retransmission"):
        tail = " (retransmission)"
    return Presented(
        method=q["type"], path=q["name"], status=status, summary=f"{q['type']} {q['name']}{tail}",
        stream=str(fields["id"]),
    )  # fmt: skip


SPEC: Final = ProtocolSpec(
    name="dns",
    transports=("udp",),
    ports=(53, 5353, 5355),
    probe=probe_udp,
    session=DnsSession,
    present=present,
    matcher="key",
    unanswered_error="timeout",
)

TCP_SPEC: Final = ProtocolSpec(
    name="dns-tcp",
    transports=("tcp",),
    ports=(53,),
    probe=probe_tcp,
    session=DnsTcpSession,
    present=present,
    matcher="key",
    unanswered_error="timeout",
    protocol="dns",
)

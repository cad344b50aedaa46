"""ICMP errors that quote an SCTP packet mark its association (pipeline `_icmp_mark`), as they mark
TCP and UDP flows: the association's entry and its later message entries carry the `icmp_errors`
note, and the error entry names the association's last entry. Built from packets: the association
from test_sctp's builder, the ICMP error around the first bytes of one of its packets (RFC 792: the IP
header and 64 bits of the datagram — for SCTP, the ports and the verification tag)."""

from __future__ import annotations

import struct

from tests.helpers import diameter as dia
from wiretide.common.packets import flow_id

from .builders import ether, ipv4
from .test_sctp import Assoc, association, init, run

MS = 1_000_000
ROUTER = "10.0.0.254"


def icmp_error(frame: bytes, code: int, sender: str, rest: int = 0) -> bytes:
    """Destination unreachable (type 3) from `sender` about `frame`: its IP header and 8 bytes more."""
    body = struct.pack("!BBHI", 3, code, 0, rest) + frame[14 : 14 + 28]
    return ether(ipv4(sender, "10.0.0.1", 1, body))


def ccr(hbh: int) -> bytes:
    avps = [dia.utf8(dia.SESSION_ID, f"c;{hbh}"), dia.utf8(dia.ORIGIN_HOST, "c"), dia.u32(416, 1)]
    return dia.message(272, 4, True, hbh, hbh, avps)


def cca(hbh: int) -> bytes:
    return dia.message(
        272, 4, False, hbh, hbh, [dia.utf8(dia.SESSION_ID, f"c;{hbh}"), dia.u32(dia.RESULT_CODE, 2001)]
    )


def test_a_fragmentation_needed_error_marks_the_association_and_its_later_messages() -> None:
    a = Assoc().handshake().send(True, ccr(1), ppid=46).send(False, cca(1), ppid=46)
    a.send(True, ccr(2), ppid=46)  # unanswered: the path to the server has a smaller MTU
    too_big = a.frames[-1][1]
    a.ts += MS
    a.frames.append((a.ts, icmp_error(too_big, 4, ROUTER, rest=1280)))
    entries, p = run(a.shutdown().frames)

    (err,) = [e for e in entries if e["protocol"] == "icmp"]
    first, second = sorted((e for e in entries if e["protocol"] == "diameter"), key=lambda e: e["stream"])
    assoc = association(entries)
    quoted = err["request"]["quoted"]
    assert (quoted["protocol"], quoted["src"], quoted["dst"]) == (
        "sctp", {"ip": "10.0.0.1", "port": 40000}, {"ip": "10.0.0.2", "port": 3868},
    )  # fmt: skip
    assert (
        err["flow_id"]
        == assoc["flow_id"]
        == flow_id(bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 2]), 3868, 132)
    )
    assert err["request"]["mtu"] == 1280
    assert quoted["entry_id"] == first["id"]  # the association's last entry when the error came
    note = {
        "id": err["id"],
        "type": "unreachable",
        "code": 4,
        "reason": "fragmentation needed",
        "from": ROUTER,
    }
    assert assoc["icmp_errors"] == [note]
    assert second["icmp_errors"] == [note] and second["response"] is None
    assert "icmp_errors" not in first  # made before the error arrived
    assert p.stats["icmp_errors_flow_marked"] == 1 and p.stats["icmp_errors_flow_unknown"] == 0


def test_an_init_answered_by_protocol_unreachable_is_an_unanswered_association_that_says_why() -> None:
    a = Assoc(sport=2905).raw(True, init(0x1111, 100), vtag=0)
    a.ts += MS
    a.frames.append((a.ts, icmp_error(a.frames[-1][1], 2, "10.0.0.2")))
    entries, p = run(a.frames)
    assoc = association(entries)
    assert assoc["error"] == {"type": "connection", "message": "INIT not answered"}
    [note] = assoc["icmp_errors"]
    assert (note["reason"], note["from"], note["code"]) == ("protocol unreachable", "10.0.0.2", 2)
    (err,) = [e for e in entries if e["protocol"] == "icmp"]
    assert "entry_id" not in err["request"]["quoted"]  # the association had made no entry yet
    assert p.stats["icmp_errors_flow_marked"] == 1


def test_an_error_about_an_association_never_seen_marks_nothing() -> None:
    stray = Assoc(cport=41000).raw(True, init(0x3333, 7), vtag=0).frames[-1][1]
    a = Assoc().handshake()
    a.ts += MS
    a.frames.append((a.ts, icmp_error(stray, 3, ROUTER)))  # about 10.0.0.1:41000, not this association
    entries, p = run(a.shutdown().frames)
    assert "icmp_errors" not in association(entries)
    (err,) = [e for e in entries if e["protocol"] == "icmp"]
    assert err["request"]["quoted"]["src"] == {"ip": "10.0.0.1", "port": 41000}
    assert p.stats["icmp_errors_flow_unknown"] == 1 and p.stats["icmp_errors_flow_marked"] == 0

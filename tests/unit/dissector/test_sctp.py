"""SCTP associations over built packets (this kernel has no SCTP sockets, so live SCTP is not tested;
the shared captures are in test_sctp_pcaps.py): the handshake, DATA reassembled by TSN with B/E
fragments, duplicates, stream order and unordered delivery, I-DATA, TSN wrap-around, ABORT, SHUTDOWN,
restarts, payloads dispatched by PPID and by content — and hostile chunks that never raise."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import diameter as dia
from wiretide.dissector.flows import sctp
from wiretide.dissector.flows.sctp import SctpAssociation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

from .builders import T0, columns, ether, http_get, http_ok, ipv4

B, E, U = sctp.FLAG_B, sctp.FLAG_E, sctp.FLAG_U

# ---- a small builder of SCTP packets (RFC 9260 §3) -------------------------------------------------


def chunk(ctype: int, flags: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("!BBH", ctype, flags, length) + value + b"\x00" * (-length % 4)


def data(tsn: int, payload: bytes, sid: int = 0, ssn: int = 0, ppid: int = 0, flags: int = B | E) -> bytes:
    return chunk(sctp.DATA, flags, struct.pack("!IHHI", tsn, sid, ssn, ppid) + payload)


def i_data(tsn: int, payload: bytes, sid: int, mid: int, ppid_or_fsn: int, flags: int) -> bytes:
    return chunk(sctp.I_DATA, flags, struct.pack("!IHHII", tsn, sid, 0, mid, ppid_or_fsn) + payload)


def init(tag: int, tsn: int, ack: bool = False, streams: int = 10) -> bytes:
    return chunk(
        sctp.INIT_ACK if ack else sctp.INIT, 0, struct.pack("!IIHHI", tag, 65535, streams, streams, tsn)
    )


def sack(cum: int) -> bytes:
    return chunk(sctp.SACK, 0, struct.pack("!IIHH", cum, 65535, 0, 0))


def abort(cause: int = 12) -> bytes:
    return chunk(sctp.ABORT, 0, struct.pack("!HH", cause, 4))


def packet(sport: int, dport: int, vtag: int, *chunks: bytes) -> bytes:
    return struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks)


@dataclass
class Assoc:
    """Both ends of an association, recorded as Ethernet frames with increasing timestamps."""

    client: str = "10.0.0.1"
    cport: int = 40000
    server: str = "10.0.0.2"
    sport: int = 3868
    ctag: int = 0x1111
    stag: int = 0x2222
    ctsn: int = 100
    stsn: int = 900
    ts: int = T0
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    ssn: dict[tuple[bool, int], int] = field(default_factory=dict)

    def raw(self, from_client: bool, *chunks: bytes, vtag: int | None = None) -> Assoc:
        self.ts += 1_000_000
        if from_client:
            pkt = packet(self.cport, self.sport, self.stag if vtag is None else vtag, *chunks)
            self.frames.append((self.ts, ether(ipv4(self.client, self.server, 132, pkt))))
        else:
            pkt = packet(self.sport, self.cport, self.ctag if vtag is None else vtag, *chunks)
            self.frames.append((self.ts, ether(ipv4(self.server, self.client, 132, pkt))))
        return self

    def handshake(self) -> Assoc:
        self.raw(True, init(self.ctag, self.ctsn), vtag=0)
        self.raw(False, init(self.stag, self.stsn, ack=True))
        self.raw(True, chunk(sctp.COOKIE_ECHO, 0, b"cookie!!"))
        return self.raw(False, chunk(sctp.COOKIE_ACK, 0, b""))

    def chunks(self, from_client: bool, payload: bytes, ppid: int = 0, sid: int = 0, size: int = 1200,
               unordered: bool = False) -> list[bytes]:  # fmt: skip
        """The DATA chunks of one user message, fragmented at `size` bytes."""
        key = (from_client, sid)
        ssn = self.ssn.get(key, 0)
        if not unordered:
            self.ssn[key] = ssn + 1
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        out = []
        for i, piece in enumerate(pieces):
            flags = (B if i == 0 else 0) | (E if i == len(pieces) - 1 else 0) | (U if unordered else 0)
            tsn = self.ctsn if from_client else self.stsn
            out.append(data(tsn & 0xFFFFFFFF, piece, sid, ssn, ppid, flags))
            if from_client:
                self.ctsn += 1
            else:
                self.stsn += 1
        return out

    def send(self, from_client: bool, payload: bytes, ppid: int = 0, sid: int = 0, size: int = 1200) -> Assoc:
        for c in self.chunks(from_client, payload, ppid, sid, size):
            self.raw(from_client, c)
        return self

    def shutdown(self) -> Assoc:
        self.raw(True, chunk(sctp.SHUTDOWN, 0, struct.pack("!I", (self.stsn - 1) & 0xFFFFFFFF)))
        self.raw(False, chunk(sctp.SHUTDOWN_ACK, 0, b""))
        return self.raw(True, chunk(sctp.SHUTDOWN_COMPLETE, 0, b""))


def run(frames: list[tuple[int, bytes]]) -> tuple[list[dict[str, Any]], Pipeline]:
    p = Pipeline(default_registry())
    return p.feed(columns(frames)) + p.finish(), p


def association(entries: list[dict[str, Any]]) -> dict[str, Any]:
    (entry,) = [e for e in entries if e["protocol"] == "sctp"]
    return entry


# ---- associations --------------------------------------------------------------------------------


def test_a_handshake_data_and_shutdown_make_one_association_entry() -> None:
    a = Assoc(sport=9).handshake()
    a.send(True, b"\x00\x01binary" * 3, sid=1).send(False, b"\x00\x02binary", sid=1).send(True, b"x" * 3000)
    entries, p = run(a.shutdown().frames)
    entry = association(entries)
    assert entry["transport"] == "sctp" and entry["src"] == {"ip": "10.0.0.1", "port": 40000}
    req, resp = entry["request"], entry["response"]
    assert req["handshake"] == "complete" and req["close"] == "shutdown" and entry["error"] is None
    assert (req["initiate_tag"], req["initial_tsn"], resp["initiate_tag"]) == (
        "0x00001111",
        100,
        "0x00002222",
    )
    assert (req["data_chunks"], req["messages"], resp["messages"]) == (4, 2, 1)
    assert req["fragmented"] == 1 and req["streams_used"] == 2 and req["ppids"] == {"0 unspecified": 2}
    assert [ev["chunk"] for ev in req["events"]] == [
        "INIT", "INIT_ACK", "COOKIE_ECHO", "COOKIE_ACK", "SHUTDOWN", "SHUTDOWN_ACK", "SHUTDOWN_COMPLETE",
    ]  # fmt: skip
    assert req["events"][1]["from"] == "server" and req["handshake_rtt_us"] == 1000
    assert (
        entry["summary"].startswith("sctp 10.0.0.1:40000 → 10.0.0.2:9 ") and "3 messages" in entry["summary"]
    )
    assert p.stats["sctp_associations"] == 1 and p.stats["closed_shutdown"] == 1
    assert not p.undissected  # SCTP is no longer only counted


def test_http_over_sctp_with_a_fragmented_response_out_of_order_and_a_duplicate() -> None:
    a = Assoc(sport=80).handshake().send(True, http_get("/page"))
    body = bytes(range(256)) * 20
    pieces = a.chunks(False, http_ok(body, "application/octet-stream"), size=1000)
    order = [pieces[2], pieces[0], pieces[4], pieces[1], pieces[1], pieces[3], *pieces[5:]]
    for c in order:
        a.raw(False, c)
    entries, _ = run(a.shutdown().frames)
    (http,) = [e for e in entries if e["protocol"] == "http"]
    assert http["transport"] == "sctp" and http["method"] == "GET" and http["path"] == "/page"
    assert http["status"] == 200 and http["response"]["body"]["size"] == len(body)
    entry = association(entries)
    assert entry["response"]["duplicates"] == 1 and entry["response"]["fragmented"] == 1
    assert entry["request"]["protocol"] == "http" and http["flow_id"] == entry["flow_id"]


def test_diameter_is_dispatched_by_its_ppid_on_any_port_and_the_answer_pairs() -> None:
    ccr = dia.message(272, 4, True, 5, 5, [dia.utf8(dia.SESSION_ID, "s;1"), dia.utf8(dia.ORIGIN_HOST, "c")])
    cca = dia.message(272, 4, False, 5, 5, [dia.utf8(dia.SESSION_ID, "s;1"), dia.u32(dia.RESULT_CODE, 2001)])
    # No handshake captured, on ports nobody registered, the server's answer first seen on stream 3.
    a = Assoc(cport=5000, sport=6000)
    a.send(True, ccr, ppid=46, sid=2).send(False, cca, ppid=46, sid=3)
    entries, p = run(a.frames)
    (entry,) = [e for e in entries if e["protocol"] == "diameter"]
    assert (entry["method"], entry["path"], entry["status"], entry["transport"]) == (
        "CCR",
        "Gy/Ro",
        2001,
        "sctp",
    )
    assert entry["src"]["port"] == 5000 and entry["error"] is None
    assert association(entries)["request"]["ppids"] == {"46 Diameter": 1}
    assert p.stats["sctp_ppid_diameter"] == 1


def test_m3ua_and_other_named_payloads_are_counted_never_probed() -> None:
    aspup = struct.pack("!BBBBI", 1, 0, 3, 1, 8)
    a = (
        Assoc(sport=2905)
        .handshake()
        .send(True, aspup, ppid=3)
        .send(False, struct.pack("!BBBBI", 1, 0, 3, 4, 8), ppid=3)
    )
    a.send(True, http_get(), ppid=60)  # NGAP by its PPID, whatever its bytes look like
    entries, p = run(a.frames)
    entry = association(entries)
    assert [e["protocol"] for e in entries] == ["sctp"]
    assert entry["request"]["m3ua"] == {"ASPUP": 1} and entry["response"]["m3ua"] == {"ASPUP_ACK": 1}
    assert entry["request"]["ppids"] == {"3 M3UA": 1, "60 NGAP": 1}
    assert p.stats["sctp_m3ua_messages"] == 2


def test_an_abort_and_an_unanswered_init_are_connection_errors() -> None:
    a = Assoc(sport=80).handshake().send(True, b"hello").raw(False, abort(12))
    lone = Assoc(cport=40001, sport=80)
    lone.raw(True, init(0x77, 5), vtag=0).raw(True, init(0x77, 5), vtag=0)
    entries, p = run(sorted(a.frames + lone.frames))
    aborted, unanswered = sorted(
        (e for e in entries if e["protocol"] == "sctp"), key=lambda e: e["src"]["port"]
    )
    assert aborted["error"] == {
        "type": "connection",
        "message": "ABORT from the server: user-initiated abort",
    }
    assert aborted["request"]["close"] == "abort" and aborted["summary"].endswith("ABORT")
    assert unanswered["error"] == {"type": "connection", "message": "INIT not answered"}
    assert unanswered["request"]["handshake"] == "init" and len(unanswered["request"]["events"]) == 2
    assert p.stats["closed_abort"] == 1


def test_a_new_init_with_a_new_tag_restarts_the_association() -> None:
    a = Assoc(sport=7).handshake().send(True, b"first life")
    a.ctag, a.stag, a.ctsn, a.stsn, a.ssn = 0x3333, 0x4444, 5000, 7000, {}
    a.handshake().send(True, b"second life").send(True, b"again")
    entries, p = run(a.frames)
    first, second = [e for e in entries if e["protocol"] == "sctp"]
    assert (first["request"]["close"], first["request"]["messages"], first["request"]["packets"]) == (
        "restart",
        1,
        3,
    )
    assert (second["request"]["initiate_tag"], second["request"]["messages"]) == ("0x00003333", 2)
    assert p.stats["sctp_restarts"] == 1


def test_a_packet_with_the_wrong_verification_tag_is_dropped_and_counted() -> None:
    a = Assoc(sport=7).handshake().send(True, b"kept")
    a.raw(True, data(a.ctsn, b"forged"), vtag=0xBAD)
    entry = association(run(a.frames)[0])
    assert entry["request"]["messages"] == 1 and entry["request"]["vtag_mismatch"] == 1


# ---- reassembly, directly on the association ------------------------------------------------------


def feed(assoc: SctpAssociation, d: int, *chunks: bytes, vtag: int = 0) -> list[sctp.Delivered]:
    return assoc.packet(d, packet(1, 2, vtag, *chunks), 0, 12 + sum(len(c) for c in chunks), 0)


def test_ordered_messages_wait_for_their_turn_per_stream_and_unordered_ones_do_not() -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, 10), vtag=0)
    out = feed(s, 0, data(11, b"second", sid=1, ssn=1))
    out += feed(s, 0, data(12, b"other stream", sid=2, ssn=0))
    out += feed(s, 0, data(13, b"urgent", sid=1, ssn=0, flags=B | E | U))
    out += feed(s, 0, data(10, b"first", sid=1, ssn=0))
    assert [m[3] for m in out] == [b"other stream", b"urgent", b"first", b"second"]
    assert s.sides[0].unordered == 1 and s.sides[0].held_bytes == 0


def test_tsns_wrap_around_like_any_other_number() -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, 0xFFFFFFFE), vtag=0)
    out = feed(
        s, 0, data(0xFFFFFFFE, b"ab", flags=B), data(0xFFFFFFFF, b"cd", flags=0), data(0, b"ef", flags=E)
    )
    out += feed(s, 0, data(1, b"next"))
    out += feed(s, 0, data(0xFFFFFFFF, b"cd", flags=0))  # a retransmission from before the wrap
    assert [m[3] for m in out] == [b"abcdef", b"next"]
    assert s.sides[0].duplicates == 1 and s.sides[0].cum == 1


def test_i_data_fragments_of_two_messages_interleave() -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, 1), vtag=0)
    out = feed(
        s, 0, i_data(1, b"A1", 0, 0, 46, B), i_data(2, b"B1", 0, 1, 46, B), i_data(3, b"B2", 0, 1, 1, E)
    )
    assert out == []  # message 1 (MID 1) is complete but waits for MID 0 on the same stream
    out = feed(s, 0, i_data(5, b"A3", 0, 0, 2, E), i_data(4, b"A2", 0, 0, 1, 0))
    assert [(m[2], m[3]) for m in out] == [(46, b"A1A2A3"), (46, b"B1B2")]
    assert s.sides[0].i_data == 5 and s.sides[0].fragmented == 2


def test_a_hole_the_peer_acknowledged_releases_what_waits_after_it_as_a_gap() -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, 1), vtag=0)
    out = feed(s, 0, data(2, b"after the hole", ssn=1))
    assert out == []
    out = feed(s, 1, sack(2), vtag=1)  # the receiver has TSN 1, which the capture lost
    assert [(m[0], m[3]) for m in out] == [(0, 1), (0, b"after the hole")]
    assert s.sides[0].tsn_gaps == 1 and s.sides[0].gaps == 1


@settings(max_examples=100, deadline=None)
@given(st.permutations(range(6)), st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_any_arrival_order_of_fragments_gives_the_same_message(order: list[int], first: int) -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, first), vtag=0)
    payload = bytes(range(60))
    pieces = [payload[i * 10 : i * 10 + 10] for i in range(6)]
    out: list[sctp.Delivered] = []
    for i in order:
        flags = (B if i == 0 else 0) | (E if i == 5 else 0)
        out += feed(s, 0, data((first + i) & 0xFFFFFFFF, pieces[i], flags=flags))
    assert [m[3] for m in out] == [payload]
    assert s.sides[0].frag_bytes == 0 and not s.sides[0].frags


# ---- hostile input --------------------------------------------------------------------------------


def test_lying_chunk_lengths_end_the_packet_and_are_counted() -> None:
    s = SctpAssociation()
    assert feed(s, 0, struct.pack("!BBH", 0, 3, 2) + b"\x00" * 30) == []  # below the chunk header
    assert feed(s, 0, struct.pack("!BBH", 0, 3, 4000) + b"\x00" * 30) == []  # beyond the packet
    assert feed(s, 0, chunk(sctp.DATA, 3, b"\x00" * 12)) == []  # DATA without user data
    assert s.malformed == {"chunk_length": 1, "chunk_truncated": 1, "data_without_user_data": 1}


def test_a_chunk_storm_is_cut_at_the_per_packet_bound() -> None:
    s = SctpAssociation()
    storm = [chunk(sctp.HEARTBEAT, 0, b"") for _ in range(sctp.MAX_CHUNKS + 500)]
    feed(s, 0, *storm)
    assert s.chunks["HEARTBEAT"] == sctp.MAX_CHUNKS and s.malformed["chunks_over_limit"] == 1


def test_fragments_that_never_complete_and_held_messages_stay_bounded() -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, 0), vtag=0)
    out: list[sctp.Delivered] = []
    # A flood of first fragments that never end, then ordered messages waiting behind a missing SSN 0.
    for tsn in range(3 * sctp.MAX_FRAGMENTS):
        out += feed(s, 0, data(tsn, b"y" * 900, sid=1, flags=B))
        assert (
            s.sides[0].frag_bytes <= sctp.MAX_HELD_BYTES and len(s.sides[0].frags or ()) <= sctp.MAX_FRAGMENTS
        )
    base = 3 * sctp.MAX_FRAGMENTS
    for i in range(2 * sctp.MAX_HELD_MESSAGES):
        out += feed(s, 0, data(base + i, b"z", sid=7, ssn=i + 1))
    side = s.sides[0]
    assert side.incomplete > 0 and side.gaps >= 3
    assert len(side.streams[7].held or ()) <= sctp.MAX_HELD_MESSAGES  # type: ignore[index]
    assert [m[3] for m in out if m[1] == 7][:2] == [1, b"z"]  # a gap, then the messages in order
    s.flush(0)
    assert not side.frags and side.frag_bytes == 0


def test_scattered_tsns_keep_the_window_bounded() -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, 0), vtag=0)
    rnd = random.Random(5)
    for _ in range(3 * sctp.MAX_TSN_WINDOW):
        feed(s, 0, data(rnd.randrange(2, 1 << 30), b"q"))
        assert len(s.sides[0].above or ()) <= sctp.MAX_TSN_WINDOW
    assert s.sides[0].tsn_gaps >= 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=1))
def test_random_chunk_bytes_never_raise(body: bytes, d: int) -> None:
    s = SctpAssociation()
    feed(s, 0, init(1, 0), vtag=0)
    s.packet(d, packet(1, 2, 0, b"") + body, 0, 12 + len(body), 0)
    s.flush(0)
    s.describe(0, 0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 3, 6, 7, 14, 64]), st.integers(0, 15), st.binary(max_size=40)),
        max_size=12,
    )
)
def test_random_chunk_sequences_through_the_pipeline_never_raise(
    chunks: list[tuple[int, int, bytes]],
) -> None:
    a = Assoc(sport=3868).handshake()
    for ctype, flags, value in chunks:
        a.raw(bool(flags & 1), chunk(ctype, flags, value))
    entries, p = run(a.frames)
    assert p.stats["packet_errors"] == 0
    assert len([e for e in entries if e["protocol"] == "sctp"]) >= 1


def test_an_ip_fragmented_sctp_packet_is_reassembled_first() -> None:
    a = Assoc(sport=80).handshake()
    whole = packet(a.cport, a.sport, a.stag, *a.chunks(True, http_get("/" + "a" * 2000), size=4000))
    ip1 = ipv4(a.client, a.server, 132, whole[:1480], ip_id=9, frag=0, more=True)
    ip2 = ipv4(a.client, a.server, 132, whole[1480:], ip_id=9, frag=1480)
    a.frames += [(a.ts + 1000, ether(ip1)), (a.ts + 2000, ether(ip2))]
    a.ts += 3000
    a.send(False, http_ok())
    entries, _ = run(a.frames)
    (http,) = [e for e in entries if e["protocol"] == "http"]
    assert http["path"] == "/" + "a" * 2000 and http["status"] == 200

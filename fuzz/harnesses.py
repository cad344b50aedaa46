"""Fuzz harnesses: one per dissector, one for the KFL parser and one for the entries on the bus, each a
function of one input.

Rule: a harness raises only for a bug — a parser that raises, an entry that JSON cannot encode, a
query error that is not a `KflError`. Everything a hostile peer may legitimately cause (violations,
truncation, "not my protocol") is a normal return. `fuzz/run.py` drives them with atheris (`make
fuzz`); `tests/unit/dissector/test_fuzz_corpus.py` replays every input kept in `fuzz/corpus/`.

Inputs are shaped the same way for every session harness: each chunk starts with one control byte —
bit 7 says which side sent it, the low bits how long it is — so that the fuzzer explores both
directions and every chunking of the same bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Final

import orjson

# Most bytes one control byte can announce (the low 7 bits, scaled): chunks from 1 to 4,064 bytes.
_CHUNK_SCALE: Final = 32
T0: Final = 1_700_000_000_000_000_000


def chunks(data: bytes) -> Iterator[tuple[bool, bytes]]:
    """(from client, bytes) pieces of an input: a control byte, then up to its length of payload."""
    pos = 0
    while pos < len(data):
        control = data[pos]
        size = (control & 0x7F) * _CHUNK_SCALE + 1
        yield bool(control & 0x80), data[pos + 1 : pos + 1 + size]
        pos += 1 + size


def _encodable(fields: Any) -> None:
    """An Entry part must encode as JSON: no integer beyond 64 bits, no nesting deeper than orjson's."""
    orjson.dumps(fields)


def _session(name: str) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        from wiretide.dissector.api import Message, SessionConfig
        from wiretide.dissector.protocols import BUILTINS

        (spec,) = [s for s in BUILTINS if s.name == name]
        session = spec.session(SessionConfig(body_cap=4096))
        ts = T0
        for from_client, piece in chunks(data):
            ts += 1000
            events = (
                session.gap(from_client, len(piece), ts)
                if piece[:1] == b"\xff"
                else session.feed(from_client, piece, ts)
            )
            for ev in events:
                if isinstance(ev, Message):
                    _encodable(ev.fields)
        for ev in session.close(ts):
            if isinstance(ev, Message):
                _encodable(ev.fields)
        spec.probe(data[:4096], data[4096:8192])

    run.__name__ = f"fuzz_{name.replace('-', '_')}"
    return run


def fuzz_pipeline(data: bytes) -> None:
    """The whole pipeline: the input as one TCP conversation (handshake, chunks, close) and as UDP
    datagrams, on a port the first byte picks; every entry must encode."""
    from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder
    from wiretide.dissector.pipeline import Pipeline
    from wiretide.dissector.registry import default_registry

    if not data:
        return
    port = (80, 443, 53, 8080, 50051, 34567)[data[0] % 6]
    frames = _conversation(port, data[1:])
    b = ColumnBuilder()
    iface = b.interface("fuzz0", LINKTYPE_ETHERNET)
    for i, frame in enumerate(frames):
        b.append(frame, len(frame), T0 + i * 1000, iface)
    p = Pipeline(default_registry(plugins=False))
    entries = p.feed(b.take()) + p.finish()
    _encodable(entries)


def _conversation(port: int, data: bytes) -> list[bytes]:
    import struct

    def frame(client: bool, seq: int, ack: int, flags: int, payload: bytes, proto: int = 6) -> bytes:
        a, b = b"\n\x00\x00\x01", b"\n\x00\x00\x02"
        src, dst = (a, b) if client else (b, a)
        sport, dport = (40000, port) if client else (port, 40000)
        if proto == 6:
            l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
        else:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + len(payload), 0, 0, 64, proto, 0, src, dst)
        return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + l4 + payload

    seqs = [1000, 5000]
    out = [frame(True, 999, 0, 0x02, b""), frame(False, 4999, 1000, 0x12, b"")]
    out.append(frame(True, 1000, 5000, 0x10, b""))
    for client, chunk in chunks(data):
        piece = chunk[:1400]
        d = 0 if client else 1
        out.append(frame(client, seqs[d], seqs[1 - d], 0x18, piece))
        seqs[d] = (seqs[d] + len(piece)) & 0xFFFFFFFF
        out.append(frame(client, 0, 0, 0, piece[:512], proto=17))
    out.append(frame(True, seqs[0], seqs[1], 0x11, b""))
    out.append(frame(False, seqs[1], seqs[0] + 1, 0x11, b""))
    return out


def fuzz_protobuf(data: bytes) -> None:
    from wiretide.dissector.protocols import protobuf

    _encodable(protobuf.decode(data))
    protobuf.repeated_bytes(data, (4, 1))


def fuzz_grpc(data: bytes) -> None:
    """gRPC messages in DATA bytes, then the fields an entry gets (gzip and schemaless protobuf)."""
    from wiretide.dissector.protocols import grpc

    framer = grpc.MessageFramer(4096)
    for client, piece in chunks(data):
        if client and piece[:1] == b"\xff":
            framer.lost()
        else:
            framer.feed(piece)
    status = data[:12].decode("utf-8", "replace")
    req: dict[str, Any] = {"path": "/pkg.Svc/Method", "headers": {"grpc-timeout": status}}
    resp: dict[str, Any] = {"headers": {"grpc-encoding": "gzip"}, "trailers": {"grpc-status": status}}
    grpc.enrich_request(req, framer, grpc.SchemaStore())
    grpc.enrich_response(resp, framer, req, grpc.SchemaStore())
    _encodable([req, resp])


def fuzz_graphql(data: bytes) -> None:
    from wiretide.dissector.protocols import graphql

    text = data.decode("utf-8", "replace")
    req: dict[str, Any] = {
        "method": "POST",
        "path": "/graphql",
        "body": {"content": text, "encoding": "json", "mime": "application/json", "truncated": False},
    }
    resp: dict[str, Any] = {"status": 200, "body": dict(req["body"])}
    graphql.classify_http1(req, resp)
    graphql.parse_document(text, None)
    _encodable([req, resp])


def fuzz_hpack(data: bytes) -> None:
    from wiretide.dissector.protocols.hpack import HpackDecoder, HpackError

    decoder = HpackDecoder(complete=bool(data[:1] and data[0] & 1))
    for _, block in chunks(data):
        with contextlib.suppress(HpackError):
            decoder.decode(block)


def fuzz_kfl(data: bytes) -> None:
    """Any text: a parsed, compiled query or a KflError — and a compiled one evaluates without raising."""
    from wiretide.common.kfl import KflError, compile_predicate, parse_query

    text = data.decode("utf-8", "replace")
    try:
        query = parse_query(text)
        predicate = compile_predicate(query)
    except KflError:
        return
    predicate(_SAMPLE_ENTRY)


_SAMPLE_ENTRY: Final[dict[str, Any]] = {
    "id": "01J00000000000000000000000",
    "node": "n",
    "timestamp": T0,
    "elapsed_us": 1500,
    "protocol": "http",
    "version": "1.1",
    "transport": "tcp",
    "src": {"ip": "10.0.0.1", "port": 40000, "name": "a", "namespace": "shop"},
    "dst": {"ip": "10.0.0.2", "port": 80, "name": "b", "namespace": "shop"},
    "method": "GET",
    "path": "/api/items",
    "status": 200,
    "summary": "GET /api/items → 200",
    "request": {"headers": {"host": "b"}, "query": {"q": ["1"]}, "cookies": {}, "body": None},
    "response": {"headers": {"content-type": "text/plain"}, "body": None},
    "error": None,
    "size": {"request": 100, "response": 200},
    "tls": None,
    "capture": {"source": "pcap", "interface": "eth0"},
    "flow_id": "f",
    "stream": None,
    "trace": None,
}


def fuzz_sctp(data: bytes) -> None:
    """SCTP chunks (flows/sctp.py): each input chunk is the chunk area of one packet from its side,
    after an INIT from the client; the messages it hands up and the association's entry must encode."""
    import struct

    from wiretide.dissector.flows.sctp import INIT, SctpAssociation

    assoc = SctpAssociation()
    init = struct.pack("!HHII", 1, 2, 0, 0) + struct.pack("!BBHIIHHI", INIT, 0, 20, 7, 65535, 10, 10, 1)
    assoc.packet(0, init, 0, len(init), T0)
    ts = T0
    for from_client, piece in chunks(data):
        ts += 1000
        packet = struct.pack("!HHII", 1, 2, 0 if from_client else 7, 0) + piece
        assoc.packet(0 if from_client else 1, packet, 0, len(packet), ts)
    assoc.flush(ts)
    _encodable(assoc.describe(0, T0))


# Every harness by name: one per built-in dissector, the pieces inside them, the pipeline, and KFL.
def fuzz_bus(data: bytes) -> None:
    """Any bytes as an EntryBatch message off the bus, and as the entries packed in one (compressed for
    real; the first byte sets the declared unpacked size, exact at 128, and whether the declared count
    is the true one): decoded, refused as newer, unpacked within the bound or counted and skipped —
    never raised, never more than declared."""
    import cramjam

    from wiretide.common.bus.entries import (
        CONTRACT_VERSION,
        PACKING,
        NewerContract,
        Skipped,
        count_entries,
        documents_in_end_order,
        indexed_entries,
    )
    from wiretide.proto.v1 import entries_pb2

    body = data[1:]
    head = data[0] if data else 0
    count = head  # an odd first byte: a count that may lie; an even one: the entries the body holds
    if not head & 1:
        try:
            count = len(entries_pb2.EntryBatch.FromString(body).entries)
        except Exception:
            count = 0
    packed = entries_pb2.EntryBatch(
        version=CONTRACT_VERSION, packing=PACKING, packed=bytes(cramjam.zstd.compress(body)),
        unpacked_size=max(0, len(body) + head - 128), packed_count=count,
    ).SerializeToString()  # fmt: skip

    class Message:
        subject = "wt.entries.fuzz"

        def __init__(self, payload: bytes) -> None:
            self.data = payload

    messages = [Message(data), Message(packed)]
    count_entries(messages)
    documents_in_end_order(messages, Skipped(), [])
    with contextlib.suppress(NewerContract):
        for _ in indexed_entries(messages, Skipped()):
            pass


HARNESSES: Final[dict[str, Callable[[bytes], None]]] = {
    "http1": _session("http"),
    "http2": _session("http2"),
    "h2c": _session("h2c"),
    "websocket": _session("ws"),
    "tls": _session("tls"),
    "dns": _session("dns"),
    "dns-tcp": _session("dns-tcp"),
    "postgresql": _session("postgresql"),
    "redis": _session("redis"),
    "kafka": _session("kafka"),
    "amqp": _session("amqp"),
    "mysql": _session("mysql"),
    "mongodb": _session("mongodb"),
    "radius": _session("radius"),
    "diameter": _session("diameter"),
    "sctp": fuzz_sctp,
    "ldap": _session("ldap"),
    "cldap": _session("cldap"),
    "smtp": _session("smtp"),
    "imap": _session("imap"),
    "pop3": _session("pop3"),
    "hpack": fuzz_hpack,
    "grpc": fuzz_grpc,
    "protobuf": fuzz_protobuf,
    "graphql": fuzz_graphql,
    "pipeline": fuzz_pipeline,
    "kfl": fuzz_kfl,
    "bus": fuzz_bus,
}

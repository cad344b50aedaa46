"""Plaintext chunks (eBPF, `PlaintextChunk`) → entries, through the same protocol sessions as packets.

Rule: a connection's plaintext is its own flow, apart from the packet flow of the same 4-tuple (whose
bytes are ciphertext); it is ordered per direction by the chunk offsets (a jump is a gap, a repeat
is dropped) and fed to the pipeline's parsers as in-order TCP payload. When both ends of a connection
are hooked, the first process seen owns the byte stream and the other end only names its process.
The entries say `capture.source = "ebpf_tls"` and carry the packet flow's handshake metadata with
`tls.decrypted = true`. A decrypted connection is one set of entries: the packet side's `tls` entry
(its handshake) is held for `TLS_HOLD_NS` and folded away when the connection's plaintext arrives —
its metadata is on the plaintext entries — or released as it was when none comes.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from wiretide.dissector.flows.table import Flow
from wiretide.dissector.pipeline import Pipeline
from wiretide.proto.v1 import packets_pb2

SOURCE: Final = "ebpf_tls"
# How the handshake metadata reads when no packet of the connection was seen (capture filtered it).
_NO_HANDSHAKE: Final = {"sni": None, "version": None, "alpn": None, "cipher": None, "ja3": None, "ja4": None}
# How long a packet-side `tls` entry waits for its connection's plaintext before it is released: the
# first application bytes follow the handshake by a round trip, and reach the dissector within the
# eBPF source's poll (100 ms) and settling (5 ms). A connection idle longer after its handshake keeps
# its `tls` entry beside its later plaintext entries.
TLS_HOLD_NS: Final = 1_000_000_000
# `tls` entries held at once (beyond it the oldest is released early), and decrypted connections
# remembered after their plaintext ended.
MAX_HELD_TLS: Final = 16384

Key = tuple[bytes, int, bytes, int]


@dataclass(slots=True)
class _State:
    """What a plaintext flow adds to the pipeline's `Flow`."""

    owner: int  # pid whose chunks are the byte stream
    library: str
    next_offset: list[int] = field(default_factory=lambda: [0, 0])
    processes: list[dict[str, Any] | None] = field(default_factory=lambda: [None, None])  # client, server


def _key(c: packets_pb2.PlaintextChunk) -> Key:
    """The direction-independent 4-tuple of a chunk's connection."""
    src, sport, dst, dport = c.src_ip, c.src_port, c.dst_ip, c.dst_port
    if sport > dport or (sport == dport and src >= dst):
        return (src, sport, dst, dport)
    return (dst, dport, src, sport)


def _entry_key(doc: dict[str, Any]) -> Key | None:
    """The direction-independent 4-tuple of an entry's connection (as `_key` makes of a chunk)."""
    try:
        src, dst = doc["src"], doc["dst"]
        a = (ipaddress.ip_address(src["ip"]).packed, int(src["port"]))
        b = (ipaddress.ip_address(dst["ip"]).packed, int(dst["port"]))
    except (KeyError, TypeError, ValueError):
        return None
    if a[1] > b[1] or (a[1] == b[1] and a[0] >= b[0]):
        return (a[0], a[1], b[0], b[1])
    return (b[0], b[1], a[0], a[1])


def _name_end(st: _State, c: packets_pb2.PlaintextChunk) -> None:
    """Record the reporting process as the end it is: the sender when it wrote the bytes."""
    side = 0 if c.from_client == c.local_is_sender else 1
    if st.processes[side] is None:
        st.processes[side] = {
            "pid": c.pid,
            "name": c.comm,
            "cgroup_id": c.cgroup_id,
            "container_id": c.container_id or None,
        }


class PlaintextFlows:
    """The plaintext flows of one node, fed into `pipeline`'s sessions."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.flows: OrderedDict[Key, tuple[Flow, _State]] = OrderedDict()
        self._held_tls: OrderedDict[Key, dict[str, Any]] = OrderedDict()  # packet `tls` entries (fold)
        # Connections seen decrypted, kept past their plaintext's end: packets may come after it.
        self._decrypted: OrderedDict[Key, int] = OrderedDict()  # → its first chunk's time

    def fold(self, entries: Sequence[dict[str, Any]], now_ns: int) -> list[dict[str, Any]]:
        """The packet entries of this node as they should leave: a `tls` entry of a connection whose
        plaintext is known is dropped (counted `plaintext_tls_folded`), one of another connection is
        held for its plaintext; entries held longer than `TLS_HOLD_NS` before `now_ns` are released."""
        out: list[dict[str, Any]] = []
        for doc in entries:
            if doc.get("protocol") != "tls" or doc.get("capture", {}).get("source") == SOURCE:
                out.append(doc)
                continue
            key = _entry_key(doc)
            if key is None:
                out.append(doc)
            elif self._was_decrypted(key, int(doc.get("timestamp") or 0)):
                self.pipeline.stats["plaintext_tls_folded"] += 1
            elif key in self._held_tls:
                out.append(doc)  # a second handshake entry of one connection: not held twice
            else:
                if len(self._held_tls) >= MAX_HELD_TLS:
                    out.append(self._held_tls.popitem(last=False)[1])
                self._held_tls[key] = doc
        out += self.release_tls(now_ns)
        return out

    def _was_decrypted(self, key: Key, handshake_ns: int) -> bool:
        """The connection's plaintext began within `TLS_HOLD_NS` of this handshake (a later connection
        reusing the 4-tuple is another one)."""
        first = self._decrypted.get(key)
        return first is not None and abs(first - handshake_ns) < TLS_HOLD_NS

    def release_tls(self, now_ns: int, everything: bool = False) -> list[dict[str, Any]]:
        """The held `tls` entries whose time is up (all of them with `everything`)."""
        out: list[dict[str, Any]] = []
        held = self._held_tls
        while held:
            key = next(iter(held))
            if not everything and now_ns - int(held[key].get("timestamp") or 0) < TLS_HOLD_NS:
                break
            out.append(held.pop(key))
        return out

    def feed(self, chunks: Iterable[packets_pb2.PlaintextChunk]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        p = self.pipeline
        batch = list(chunks)
        # Both ends of a connection may be hooked, and their chunks come from different per-CPU
        # buffers in no particular order: name every end seen in this batch before any call of it
        # completes, so an entry names both processes whenever both were seen together.
        for c in batch:
            item = self.flows.get(_key(c))
            if item is not None:
                _name_end(item[1], c)
        for c in batch:
            try:
                self._chunk(c, out)
            except Exception:
                p.stats["plaintext_errors"] += 1
        return out

    def _chunk(self, c: packets_pb2.PlaintextChunk, out: list[dict[str, Any]]) -> None:
        p = self.pipeline
        src, sport = c.src_ip, c.src_port
        key = _key(c)
        ts = c.timestamp_ns
        item = self.flows.get(key)
        if item is None:
            if c.closed:
                return
            if len(self.flows) >= p.limits.max_flows:
                _, (old, _st) = self.flows.popitem(last=False)
                p.drops["plaintext_flow_table_full"] += 1
                self._close(old, _st, old.last_ts, "evicted", out)
            flow = Flow(key, "tcp", key[0], key[1], key[2], key[3], ts)
            flow.interface = ""
            d = 0 if (sport == flow.a_port and src == flow.a_ip) else 1
            flow.client = d if c.from_client else 1 - d
            item = self.flows[key] = (flow, _State(c.pid, c.library or "openssl"))
            p.stats["plaintext_flows"] += 1
            if self._held_tls.pop(key, None) is not None:  # its handshake entry: folded into these
                p.stats["plaintext_tls_folded"] += 1
            if len(self._decrypted) >= MAX_HELD_TLS:
                self._decrypted.popitem(last=False)
            self._decrypted[key] = ts
        else:
            self.flows.move_to_end(key)
        flow, st = item
        _name_end(st, c)
        if c.pid != st.owner:
            p.stats["plaintext_other_end"] += 1
            return
        if c.closed:
            self.flows.pop(key, None)
            self._close(flow, st, ts, "fin", out)
            return
        d = 0 if (sport == flow.a_port and src == flow.a_ip) else 1
        data = c.data
        expected = st.next_offset[d]
        if c.offset + len(data) <= expected:
            p.stats["plaintext_repeats"] += 1
            return
        flow.last_ts = ts
        if d == 0:
            flow.pkts_a += 1
            flow.bytes_a += len(data)
        else:
            flow.pkts_b += 1
            flow.bytes_b += len(data)
        if c.offset > expected:
            self._run(flow, st, out, d, c.offset - expected, ts)  # bytes never seen: a gap
        elif c.offset < expected:
            data = data[expected - c.offset :]
        st.next_offset[d] = c.offset + len(c.data)
        self._run(flow, st, out, d, data, ts)

    def _run(
        self, flow: Flow, st: _State, out: list[dict[str, Any]], d: int, chunk: bytes | int, ts: int
    ) -> None:
        p = self.pipeline
        flow.tls = self._tls(flow, st)
        mine: list[dict[str, Any]] = []
        saved, p._out = p._out, mine
        try:
            p._deliver(flow, d, chunk, ts)
        finally:
            p._out = saved
        self._decorate(mine, st)
        out.extend(mine)

    def _close(self, flow: Flow, st: _State, ts: int, reason: str, out: list[dict[str, Any]]) -> None:
        p = self.pipeline
        flow.tls = self._tls(flow, st)
        mine: list[dict[str, Any]] = []
        saved, p._out = p._out, mine
        try:
            p._close(flow, ts, reason)
        finally:
            p._out = saved
        self._decorate(mine, st)
        out.extend(mine)

    def _tls(self, flow: Flow, st: _State) -> dict[str, Any]:
        packets = self.pipeline.tcp.get(flow.key)
        seen = packets.tls if packets is not None and packets.tls else _NO_HANDSHAKE
        return {**seen, "decrypted": True, "library": st.library}

    def _decorate(self, entries: list[dict[str, Any]], st: _State) -> None:
        client, server = st.processes
        for doc in entries:
            doc["capture"] = {"source": SOURCE, "interface": None}
            if client is not None:
                doc["src"]["process"] = client
            if server is not None:
                doc["dst"]["process"] = server

    def flush_idle(self, now_ns: int) -> list[dict[str, Any]]:
        """Close flows silent for the pipeline's TCP idle time (their process died without a close)."""
        out = self.release_tls(now_ns)
        idle = self.pipeline.limits.tcp_idle_ns
        while self.flows:
            key = next(iter(self.flows))
            flow, st = self.flows[key]
            if now_ns - flow.last_ts < idle:
                break
            del self.flows[key]
            self._close(flow, st, flow.last_ts, "idle", out)
        return out

    def finish(self) -> list[dict[str, Any]]:
        out = self.release_tls(0, everything=True)
        while self.flows:
            _, (flow, st) = self.flows.popitem(last=False)
            self._close(flow, st, flow.last_ts, "end", out)
        return out

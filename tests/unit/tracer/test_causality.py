"""Kernel-observed causality in the tracer: edges (as capture publishes them) name the outbound call by
its connection and write time and the inbound request by its connection and read time; links made
from them are `syscall` links with confidence 1; without an edge the tracer falls back to timing;
bad input is counted and the tables stay bounded."""

from __future__ import annotations

import ipaddress
from typing import Any

from wiretide.common.bus.causality import CAUSALITY_VERSION
from wiretide.common.bus.subjects import causality_subject
from wiretide.proto.v1 import causality_pb2
from wiretide.tracer.assemble import AssemblyConfig
from wiretide.tracer.causality import KernelCausality
from wiretide.tracer.engine import Engine
from wiretide.tracer.spans import KIND_CLIENT, KIND_SERVER, LINK_SYSCALL, LINK_TIMING, Span

from .chains import peer

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
SUBJECT = causality_subject("node-a")
FRONTEND, API, BACKEND = "10.0.0.9", "10.0.1.1", "10.0.2.1"


def call(
    eid: str, src: tuple[str, str, int], dst: tuple[str, str, int], start_ms: float, end_ms: float
) -> dict[str, Any]:
    """One HTTP call from (name, ip, port) to (name, ip, port)."""
    return {
        "id": eid,
        "node": "node-a",
        "timestamp": T0 + int(start_ms * MS),
        "elapsed_us": int((end_ms - start_ms) * 1000),
        "protocol": "http",
        "transport": "tcp",
        "method": "GET",
        "path": f"/{dst[0]}",
        "status": 200,
        "src": peer(src[0], 0, src[1], src[2]),
        "dst": peer(dst[0], 0, dst[1], dst[2]),
        "request": {"headers": {}},
    }


def conn(client: tuple[str, int], server: tuple[str, int]) -> causality_pb2.CausalConnection:
    return causality_pb2.CausalConnection(
        client_ip=ipaddress.ip_address(client[0]).packed,
        client_port=client[1],
        server_ip=ipaddress.ip_address(server[0]).packed,
        server_port=server[1],
    )


def edge(
    out: dict[str, Any], out_ms: float, inbound: dict[str, Any], in_ms: float
) -> causality_pb2.CausalEdge:
    """The edge the kernel emits: `out`'s first write at `out_ms`, while serving `inbound` (read at
    `in_ms`)."""
    return causality_pb2.CausalEdge(
        outbound=conn((out["src"]["ip"], out["src"]["port"]), (out["dst"]["ip"], out["dst"]["port"])),
        outbound_ns=T0 + int(out_ms * MS),
        inbound=conn(
            (inbound["src"]["ip"], inbound["src"]["port"]), (inbound["dst"]["ip"], inbound["dst"]["port"])
        ),
        inbound_ns=T0 + int(in_ms * MS),
        pid=7,
        tid=8,
        comm="api",
    )


def batch(*edges: causality_pb2.CausalEdge, version: int = CAUSALITY_VERSION) -> bytes:
    return causality_pb2.CausalEdgeBatch(
        node="node-a", seq=1, version=version, edges=edges
    ).SerializeToString()


def assemble(entries: list[dict[str, Any]], kernel: KernelCausality) -> dict[tuple[str, int], Span]:
    engine = Engine(AssemblyConfig(), causality=kernel)
    spans = engine.ingest(entries) + engine.flush()
    return {(s.entry_id, s.kind): s for s in spans}


def crossed() -> tuple[list[dict[str, Any]], list[causality_pb2.CausalEdge]]:
    """Two overlapping requests to api; the later one's thread calls backend first. Timing keeps the
    order of service and gets both wrong; the kernel saw which thread wrote which call."""
    r1 = call("r1", ("frontend", FRONTEND, 40001), ("api", API, 8080), 0, 20)
    r2 = call("r2", ("frontend", FRONTEND, 40002), ("api", API, 8080), 1, 21)
    c_of_r2 = call("c2", ("api", API, 50001), ("backend", BACKEND, 9090), 5, 8)
    c_of_r1 = call("c1", ("api", API, 50002), ("backend", BACKEND, 9090), 6, 9)
    entries = [c_of_r2, c_of_r1, r1, r2]  # in the order the calls ended
    return entries, [edge(c_of_r2, 4.99, r2, 1.1), edge(c_of_r1, 5.99, r1, 0.1)]


def test_edges_link_each_call_to_the_request_its_thread_was_serving_even_against_timing() -> None:
    entries, edges = crossed()
    kernel = KernelCausality()
    assert kernel.add_batch(batch(*edges), SUBJECT) == 2
    s = assemble(entries, kernel)
    for child, parent in (("c2", "r2"), ("c1", "r1")):
        span = s[(child, KIND_CLIENT)]
        assert span.parent_span_id == s[(parent, KIND_SERVER)].span_id
        assert (span.link, span.confidence) == (LINK_SYSCALL, 1.0)
    assert kernel.stats["linked"] == 2 and kernel.held[0] == 0


def test_without_edges_the_same_calls_fall_back_to_timing() -> None:
    entries, _ = crossed()
    kernel = KernelCausality()
    s = assemble(entries, kernel)
    links = {s[(c, KIND_CLIENT)].link for c in ("c1", "c2")}
    assert links == {LINK_TIMING}
    assert all(s[(c, KIND_CLIENT)].confidence < 1.0 for c in ("c1", "c2"))
    assert kernel.stats["no_edge"] >= 2 and kernel.stats["linked"] == 0
    # Timing keeps the order of service: both calls under the other request (what the edges fix).
    assert s[("c2", KIND_CLIENT)].parent_span_id == s[("r1", KIND_SERVER)].span_id
    assert s[("c1", KIND_CLIENT)].parent_span_id == s[("r2", KIND_SERVER)].span_id


def test_calls_on_one_keep_alive_connection_each_take_their_own_edge() -> None:
    # One api thread keeps one connection to backend and serves two requests one after another.
    r1 = call("r1", ("frontend", FRONTEND, 40001), ("api", API, 8080), 0, 10)
    r2 = call("r2", ("frontend", FRONTEND, 40001), ("api", API, 8080), 12, 22)
    c1 = call("c1", ("api", API, 50001), ("backend", BACKEND, 9090), 2, 6)
    c2 = call("c2", ("api", API, 50001), ("backend", BACKEND, 9090), 14, 18)
    # A third call on the connection by no request (a health check from a background thread): no edge.
    c3 = call("c3", ("api", API, 50001), ("backend", BACKEND, 9090), 30, 31)
    kernel = KernelCausality()
    kernel.add_batch(batch(edge(c1, 1.99, r1, 0.05), edge(c2, 13.99, r2, 12.05)), SUBJECT)
    s = assemble([c1, r1, c2, r2, c3], kernel)
    assert s[("c1", KIND_CLIENT)].parent_span_id == s[("r1", KIND_SERVER)].span_id
    assert s[("c2", KIND_CLIENT)].parent_span_id == s[("r2", KIND_SERVER)].span_id
    assert {s[(c, KIND_CLIENT)].link for c in ("c1", "c2")} == {LINK_SYSCALL}
    assert s[("c3", KIND_CLIENT)].link != LINK_SYSCALL  # its connection's edges were both taken
    assert kernel.stats["linked"] == 2


def test_an_edge_whose_inbound_request_never_arrives_is_counted_and_answers_nothing() -> None:
    r1 = call("r1", ("frontend", FRONTEND, 40001), ("api", API, 8080), 0, 20)
    c1 = call("c1", ("api", API, 50001), ("backend", BACKEND, 9090), 5, 8)
    kernel = KernelCausality()
    kernel.add_batch(batch(edge(c1, 4.99, r1, 0.1)), SUBJECT)
    s = assemble([c1], kernel)  # the inbound request's entry was never made (e.g. dropped)
    assert s[("c1", KIND_CLIENT)].link != LINK_SYSCALL
    assert kernel.stats["inbound_unseen"] == 1


def test_edges_for_sockets_no_entry_names_age_out_counted() -> None:
    ghost = call("g", ("api", API, 55555), ("backend", BACKEND, 9090), 0, 1)
    kernel = KernelCausality(horizon_ns=1_000 * MS)
    kernel.add_batch(batch(*[edge(ghost, float(i), ghost, 0.0) for i in range(3)]), SUBJECT)
    assert kernel.held[0] == 3
    later = [
        call(f"e{i}", ("frontend", FRONTEND, 40000 + i), ("api", API, 8080), 5000.0 * i, 5000.0 * i + 1)
        for i in range(3)
    ]
    kernel.observe(later)
    assert kernel.held[0] == 0 and kernel.stats["unmatched"] == 3
    assert kernel.held[1] == 1  # inbound requests older than the horizon are forgotten too


def test_the_tables_are_bounded_and_what_is_evicted_is_counted() -> None:
    kernel = KernelCausality(max_edges=10, max_inbound=20)
    entries = [
        call(f"e{i}", ("api", API, 20000 + i), ("backend", BACKEND, 9090), i, i + 0.5) for i in range(50)
    ]
    kernel.add_batch(batch(*[edge(e, i - 0.01, e, 0.0) for i, e in enumerate(entries)]), SUBJECT)
    kernel.observe(entries)
    edges, inbound = kernel.held
    assert edges == 10 and inbound == 20
    assert kernel.stats["evicted"] == 40 + 30


def test_undecodable_messages_newer_versions_and_bad_edges_are_counted_not_raised() -> None:
    kernel = KernelCausality()
    assert kernel.add_batch(b"\xff\xff\xff not a protobuf", SUBJECT) == 0
    assert kernel.stats["invalid"] == 1
    assert kernel.add_batch(batch(version=CAUSALITY_VERSION + 1), SUBJECT) == 0
    assert kernel.stats["refused"] == 1 and f"version {CAUSALITY_VERSION + 1}" in kernel.refused
    bad = causality_pb2.CausalEdge(
        outbound=causality_pb2.CausalConnection(
            client_ip=b"\x01\x02\x03", client_port=1, server_ip=b"", server_port=2
        ),
        outbound_ns=1,
        inbound=conn(("10.0.0.1", 1), ("10.0.0.2", 2)),
    )
    no_port = edge(
        call("x", ("a", API, 0), ("b", BACKEND, 9090), 0, 1),
        0,
        call("y", ("c", FRONTEND, 1), ("a", API, 80), 0, 1),
        0,
    )
    assert kernel.add_batch(batch(bad, no_port), SUBJECT) == 0
    assert kernel.stats["invalid"] == 3
    # Entries that are not calls between two addresses are ignored, not raised on.
    kernel.observe([{}, {"src": "x"}, {"id": 1, "src": {"ip": 1}, "dst": {}}])
    assert kernel.cause_of({}) is None and kernel.cause_of({"src": {}, "dst": None}) is None


def test_an_ipv4_connection_on_a_dual_stack_socket_is_named_as_ipv4() -> None:
    r1 = call("r1", ("frontend", FRONTEND, 40001), ("api", API, 8080), 0, 20)
    c1 = call("c1", ("api", API, 50001), ("backend", BACKEND, 9090), 5, 8)
    e = edge(c1, 4.99, r1, 0.1)
    mapped = b"\0" * 10 + b"\xff\xff"
    e.inbound.client_ip = mapped + e.inbound.client_ip
    e.inbound.server_ip = mapped + e.inbound.server_ip
    kernel = KernelCausality()
    kernel.add_batch(batch(e), SUBJECT)
    s = assemble([c1, r1], kernel)
    assert s[("c1", KIND_CLIENT)].link == LINK_SYSCALL


def test_kernel_causality_can_be_turned_on_in_a_running_engine() -> None:
    entries, edges = crossed()
    engine = Engine(AssemblyConfig())
    engine.ingest(entries[:1])
    kernel = KernelCausality()
    engine.use_kernel_causality(kernel)
    kernel.add_batch(batch(*edges), SUBJECT)
    spans = engine.ingest(entries[1:]) + engine.flush()
    linked = {s.entry_id: s.link for s in spans if s.kind == KIND_CLIENT and s.parent is not None}
    # c2 arrived before the switch (its inbound request was not indexed yet); c1 after.
    assert linked.get("c1") == LINK_SYSCALL


def test_a_long_lived_connection_keeps_only_its_recent_edges_and_requests() -> None:
    kernel = KernelCausality(horizon_ns=100 * MS)
    calls = [call(f"k{i}", ("api", API, 50001), ("backend", BACKEND, 9090), i, i + 0.5) for i in range(1000)]
    kernel.add_batch(batch(*[edge(c, i - 0.01, c, 0.0) for i, c in enumerate(calls)]), SUBJECT)
    kernel.observe(calls)
    edges, inbound = kernel.held
    assert edges <= 102 and inbound <= 102
    assert kernel.stats["unmatched"] == 1000 - edges

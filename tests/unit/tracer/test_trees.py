"""Every trace is one connected tree on Wiretide's own spans — with propagated context (the app's
span ids become links), without names (anonymous workloads, servers sharing one address), and the
delay model learns only from links not in doubt."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from wiretide.tracer.assemble import PARENT_APP, Assembler, AssemblyConfig
from wiretide.tracer.delays import MIN_SAMPLES, DelayModel
from wiretide.tracer.export.otlp import encode_request
from wiretide.tracer.export.otlp_json import request_json
from wiretide.tracer.spans import KIND_CLIENT, KIND_SERVER, Span

from .chains import build, score

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
TRACE = "0af7651916cd43dd8448eb211c80319c"


def end(ip: str, port: int, name: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {"ip": ip, "port": port}
    if name:
        doc.update(name=name, namespace="shop")
    return doc


def call(eid: str, src: dict[str, Any], dst: dict[str, Any], start_ms: float, end_ms: float,
         parent_hex: str = "") -> dict[str, Any]:  # fmt: skip
    headers = {"traceparent": f"00-{TRACE}-{parent_hex}-01"} if parent_hex else {}
    return {
        "id": eid, "node": "n", "timestamp": T0 + int(start_ms * MS),
        "elapsed_us": int((end_ms - start_ms) * 1000), "protocol": "http", "transport": "tcp",
        "method": "GET", "path": f"/{eid}", "status": 200, "src": src, "dst": dst,
        "request": {"headers": headers},
    }  # fmt: skip


def run(entries: list[dict[str, Any]], **cfg: Any) -> list[Span]:
    a = Assembler(AssemblyConfig(**cfg))
    a.add_many(sorted(entries, key=lambda e: e["timestamp"] + e["elapsed_us"] * 1000))
    a.flush()
    return a.drain()


def trees(spans: list[Span]) -> dict[bytes, list[Span]]:
    """The spans by trace, each trace checked to be one connected tree: one root, every parent id
    the id of a span of the same trace."""
    by_trace: dict[bytes, list[Span]] = defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
    for members in by_trace.values():
        ids = {s.span_id for s in members}
        roots = [s for s in members if not s.parent_span_id]
        assert len(roots) == 1, [(s.name, s.kind) for s in roots]
        assert all(s.parent_span_id in ids for s in members if s.parent_span_id)
    return by_trace


def by_entry(spans: list[Span]) -> dict[tuple[str, int], Span]:
    return {(s.entry_id, s.kind): s for s in spans}


def three_hops(named: bool, headers: bool) -> list[dict[str, Any]]:
    def n(x: str) -> str:
        return x if named else ""

    return [
        call("a", end("192.168.1.5", 50000), end("10.0.0.1", 8080, n("frontend")), 0, 12,
             "00000000000000a1" if headers else ""),
        call("b", end("10.0.0.1", 40001, n("frontend")), end("10.0.0.2", 8080, n("api")), 2, 10,
             "00000000000000b1" if headers else ""),
        call("c", end("10.0.0.2", 40002, n("api")), end("10.0.0.3", 6379, n("db")), 3, 8,
             "00000000000000c1" if headers else ""),
    ]  # fmt: skip


def test_with_propagated_context_the_trace_is_one_tree_and_the_apps_span_ids_are_links() -> None:
    spans = run(three_hops(named=True, headers=True))
    assert len(spans) == 6 and {s.trace_id.hex() for s in spans} == {TRACE}
    trees(spans)
    s = by_entry(spans)
    root = s[("a", KIND_CLIENT)]  # the outside caller's call: the root, its app parent a link
    assert root.parent_span_id == b"" and root.link == "header"
    assert s[("b", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
    assert s[("c", KIND_CLIENT)].parent_span_id == s[("b", KIND_SERVER)].span_id
    request = ExportTraceServiceRequest.FromString(encode_request(spans))
    links = {
        span.name: [(ln.trace_id.hex(), ln.span_id.hex()) for ln in span.links]
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
        if span.kind == KIND_CLIENT
    }
    # Every client span links the application's span that sent it — the first call's included.
    assert links == {"GET /a": [(TRACE, "00000000000000a1")], "GET /b": [(TRACE, "00000000000000b1")],
                     "GET /c": [(TRACE, "00000000000000c1")]}  # fmt: skip


def test_app_mode_hangs_the_entering_call_under_the_applications_span() -> None:
    spans = run(three_hops(named=True, headers=True), parent=PARENT_APP)
    s = by_entry(spans)
    assert s[("a", KIND_CLIENT)].parent_span_id.hex() == "00000000000000a1"
    assert s[("b", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
    request = ExportTraceServiceRequest.FromString(encode_request([s[("a", KIND_CLIENT)]]))
    assert not request.resource_spans[0].scope_spans[0].spans[0].links  # its parent already says it


def test_without_names_anonymous_workloads_still_give_one_tree_per_request() -> None:
    for headers in (False, True):
        spans = run(three_hops(named=False, headers=headers))
        (members,) = trees(spans).values()
        s = by_entry(spans)
        assert s[("b", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
        assert s[("c", KIND_CLIENT)].parent_span_id == s[("b", KIND_SERVER)].span_id
        # The anonymous caller is the anonymous server whose request made the call.
        assert s[("b", KIND_CLIENT)].workload.service_name == "10.0.0.1:8080"
        assert s[("a", KIND_SERVER)].workload.service_name == "10.0.0.1:8080"
        assert s[("a", KIND_CLIENT)].workload.service_name == "192.168.1.5"
        assert len(members) == 6


def test_servers_sharing_one_address_are_told_apart_by_their_listening_port() -> None:
    lo = "127.0.0.1"
    entries = [
        call("a", end(lo, 50000), end(lo, 8080), 0, 12),
        call("b", end(lo, 50001), end(lo, 8081), 2, 10),  # made by :8080's request
        call("x", end(lo, 50002), end(lo, 9000), 20, 30),  # someone else's, later
        call("y", end(lo, 50003), end(lo, 9001), 22, 28),  # made by :9000's request
    ]
    spans = run(entries)
    assert len(trees(spans)) == 2
    s = by_entry(spans)
    assert s[("b", KIND_CLIENT)].parent_span_id == s[("a", KIND_SERVER)].span_id
    assert s[("y", KIND_CLIENT)].parent_span_id == s[("x", KIND_SERVER)].span_id
    assert s[("b", KIND_CLIENT)].workload.service_name == "127.0.0.1:8080"
    assert s[("y", KIND_CLIENT)].workload.service_name == "127.0.0.1:9000"


def test_propagated_chains_under_concurrency_are_trees_with_perfect_links() -> None:
    chains = build(200, 10, seed=3, propagate=True)
    spans = run(chains.entries)
    assert len(trees(spans)) == 200 and score(chains, spans) == (1.0, 1.0)


def test_the_delay_model_learns_from_links_not_in_doubt_and_reweighs_by_the_steady_gap() -> None:
    # Header-linked traffic teaches it: calls go out 0.5–9.5 ms into a request (spread wide), and the
    # answer follows the call's return 0.3 ms later (steady).
    entries = []
    for i in range(40):
        t = i * 30.0
        before = 0.5 + (i % 10)
        hexes = (f"{i + 1:016x}", f"{i + 100:016x}")
        entries.append(call(f"in{i}", end("192.168.1.5", 50000 + i), end("10.0.0.1", 8080, "frontend"),
                            t, t + before + 5 + 0.3, hexes[0]))  # fmt: skip
        entries[-1]["request"]["headers"]["traceparent"] = f"00-{i + 1:032x}-{hexes[0]}-01"
        entries.append(call(f"out{i}", end("10.0.0.1", 41000 + i, "frontend"), end("10.0.0.2", 80, "api"),
                            t + before, t + before + 5, hexes[1]))  # fmt: skip
        entries[-1]["request"]["headers"]["traceparent"] = f"00-{i + 1:032x}-{hexes[1]}-01"
    for e in entries:
        e["path"] = "/checkout" if e["id"].startswith("in") else "/stock"
    a = Assembler()
    a.add_many(sorted(entries, key=lambda e: e["timestamp"] + e["elapsed_us"] * 1000))
    a.flush()
    a.drain()
    assert a.delays.learned == 40
    # Now two concurrent requests without headers: raw milliseconds prefer the crossed pairing (its
    # start gaps are smaller), the learned model the one whose answer follows its call by 0.3 ms.
    t = 5_000.0
    plain = [
        call("r1", end("192.168.1.5", 60001), end("10.0.0.1", 8080, "frontend"), t, t + 20.3),
        call("r2", end("192.168.1.5", 60002), end("10.0.0.1", 8080, "frontend"), t + 1, t + 20.5),
        call("k1", end("10.0.0.1", 42001, "frontend"), end("10.0.0.2", 80, "api"), t + 12, t + 20),
        call("k2", end("10.0.0.1", 42002, "frontend"), end("10.0.0.2", 80, "api"), t + 2, t + 20.2),
    ]
    for e in plain:  # the same endpoint in, the same call out
        e["path"] = "/checkout" if e["id"].startswith("r") else "/stock"
    a.add_many(sorted(plain, key=lambda e: e["timestamp"] + e["elapsed_us"] * 1000))
    a.flush()
    s = by_entry(a.drain())
    assert s[("k1", KIND_CLIENT)].parent_span_id == s[("r1", KIND_SERVER)].span_id
    assert s[("k2", KIND_CLIENT)].parent_span_id == s[("r2", KIND_SERVER)].span_id
    fresh = Assembler()  # without what was learned, the crossed pairing wins
    fresh.add_many(sorted(plain, key=lambda e: e["timestamp"] + e["elapsed_us"] * 1000))
    fresh.flush()
    s = by_entry(fresh.drain())
    assert s[("k1", KIND_CLIENT)].parent_span_id == s[("r2", KIND_SERVER)].span_id


def test_the_delay_model_needs_enough_samples_and_stays_bounded() -> None:
    model = DelayModel()
    spans = run([call("a", end("192.168.1.5", 1), end("10.0.0.1", 80, "f"), 0, 10),
                 call("b", end("10.0.0.1", 2, "f"), end("10.0.0.2", 80, "g"), 2, 8)])  # fmt: skip
    s = by_entry(spans)
    parent, child = s[("a", KIND_SERVER)], s[("b", KIND_CLIENT)]
    raw = model.cost(parent, child)
    assert raw == 2.0**2 + 2.0**2  # ms², before anything is learned
    for _ in range(MIN_SAMPLES - 1):
        model.learn(parent, child)
    assert model.cost(parent, child) == raw
    model.learn(parent, child)
    assert model.cost(parent, child) == 0.0  # exactly the usual gaps


def test_otlp_json_is_the_protobuf_request_with_hex_ids_and_integer_enums() -> None:
    spans = run(three_hops(named=True, headers=True))
    doc = request_json(encode_request(spans))
    out = [sp for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
    assert len(out) == 6 and {sp["traceId"] for sp in out} == {TRACE}
    assert {sp["kind"] for sp in out} == {KIND_CLIENT, KIND_SERVER}
    assert all(len(sp["spanId"]) == 16 and isinstance(sp["startTimeUnixNano"], str) for sp in out)
    assert {ln["spanId"] for sp in out for ln in sp.get("links", [])} == {
        "00000000000000a1", "00000000000000b1", "00000000000000c1"}  # fmt: skip
    ids = {sp["spanId"] for sp in out}
    assert all(sp["parentSpanId"] in ids for sp in out if sp.get("parentSpanId"))


def test_analyze_traces_output_counts_what_a_receiver_refuses_and_writes_the_file(tmp_path: Path) -> None:
    import json

    from wiretide.cli.traces_out import TracesOut, guess_protocol

    from .receiver import HttpReceiver

    assert guess_protocol("http://collector:4318") == "http/protobuf"
    assert guess_protocol("https://x/otlp/v1/traces") == "http/protobuf"
    assert guess_protocol("http://collector:4317") == "grpc"
    receiver = HttpReceiver()
    try:
        out = TracesOut(str(tmp_path / "t.json"), receiver.endpoint + "/nowhere/v1/traces")
        out.add(sorted(three_hops(named=False, headers=True), key=lambda e: e["timestamp"]))
        assert not out.finish(None)  # a 404 is not worth retrying: counted, said, exit status 1
        assert (out.spans, out.exported, out.failed) == (6, 0, 6) and "404" in out.error
    finally:
        receiver.stop()
    (doc,) = [json.loads(line) for line in (tmp_path / "t.json").read_text().splitlines()]
    assert sum(len(ss["spans"]) for rs in doc["resourceSpans"] for ss in rs["scopeSpans"]) == 6

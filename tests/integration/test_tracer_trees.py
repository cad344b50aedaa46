"""Traces that are whole trees, on real traffic: a four-service chain of real HTTP servers (one
network namespace per "pod", each its own address — or all on one shared loopback address), driven
at 1, 4, 10 and 50 concurrent requests over fresh and keep-alive connections, with and without
propagated `traceparent`; captured by tcpdump, dissected by the dissector's pipeline, assembled as
`wiretide analyze --traces-endpoint` does, and exported to a real OTLP receiver, which checks that
every trace is one connected tree. Ground truth is written by the servers (tests/helpers/chain.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chain import Run, drive_chain, entries_of, link_scores
from tests.unit.tracer.receiver import GrpcReceiver, HttpReceiver, Received
from wiretide.cli.traces_out import TracesOut

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="network namespaces and tcpdump need root (CAP_NET_ADMIN, CAP_NET_RAW)"
)

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = {1: 20, 4: 40, 10: 60, 50: 100}


def assert_one_tree_per_trace(spans: list[Received]) -> dict[bytes, list[Received]]:
    """Every trace the receiver got is one connected tree: one root, every parent id the id of a span
    of the same trace (the application's span ids arrive as links, never as parents)."""
    traces: dict[bytes, list[Received]] = defaultdict(list)
    for r in spans:
        traces[r.span.trace_id].append(r)
    for trace_id, members in traces.items():
        ids = {r.span.span_id for r in members}
        roots = [r for r in members if not r.span.parent_span_id]
        dangling = [r for r in members if r.span.parent_span_id and r.span.parent_span_id not in ids]
        assert len(roots) == 1 and not dangling, (trace_id.hex(), len(roots), len(dangling))
    return traces


def trace_and_export(
    run: Run, named: bool, receiver: GrpcReceiver
) -> tuple[list[dict[str, Any]], list[Any], list[Received]]:
    """The run's entries assembled and exported as `wiretide analyze --traces-endpoint` does."""
    entries = entries_of(run, named)
    out = TracesOut(None, receiver.endpoint)
    spans: list[Any] = []
    original = out._write

    def keep(batch: list[Any]) -> None:
        spans.extend(batch)
        original(batch)

    out._write = keep  # type: ignore[method-assign]
    out.add(entries)
    assert out.finish(None)
    assert out.exported == len(spans) == 2 * len(entries)
    return entries, spans, receiver.collected.wait_for(len(spans), 30)


@needs_root
@pytest.mark.parametrize("concurrency", [1, 4, 10, 50])
@pytest.mark.parametrize("keepalive", [False, True], ids=["fresh", "keep-alive"])
@pytest.mark.parametrize("shared", [False, True], ids=["pods", "shared-address"])
def test_with_propagated_context_every_request_is_one_tree_with_the_apps_trace_id_and_exact_links(
    tmp_path: Path, shared: bool, keepalive: bool, concurrency: int
) -> None:
    run = drive_chain(
        tmp_path, shared=shared, keepalive=keepalive, propagate=True,
        requests=REQUESTS[concurrency], concurrency=concurrency, seed=concurrency,
    )  # fmt: skip
    assert run.dropped == 0 and len(run.truth) == 3 * REQUESTS[concurrency]
    receiver = GrpcReceiver()
    try:
        entries, spans, got = trace_and_export(run, named=False, receiver=receiver)
    finally:
        receiver.stop()
    traces = assert_one_tree_per_trace(got)
    assert {t.hex() for t in traces} == run.app_traces  # the application's trace ids, kept
    assert all(len(members) == 8 for members in traces.values())  # 4 calls, 2 spans each
    precision, recall, _ = link_scores(run, entries, spans)
    assert (precision, recall) == (1.0, 1.0)
    for r in got:
        if r.span.kind == 3:  # every call links the application's span that sent it
            assert [(ln.trace_id, len(ln.span_id)) for ln in r.span.links] == [(r.span.trace_id, 8)]
            assert r.span.links[0].span_id != r.span.parent_span_id


@needs_root
@pytest.mark.parametrize("concurrency", [1, 4, 10, 50])
@pytest.mark.parametrize("keepalive", [False, True], ids=["fresh", "keep-alive"])
@pytest.mark.parametrize("shared", [False, True], ids=["pods", "shared-address"])
def test_without_propagation_timing_gives_connected_trees_with_honest_confidence(
    tmp_path: Path, shared: bool, keepalive: bool, concurrency: int
) -> None:
    requests = REQUESTS[concurrency]
    run = drive_chain(
        tmp_path, shared=shared, keepalive=keepalive, propagate=False,
        requests=requests, concurrency=concurrency, seed=concurrency + 100,
    )  # fmt: skip
    assert run.dropped == 0 and len(run.truth) == 3 * requests
    receiver = GrpcReceiver()
    try:
        entries, spans, got = trace_and_export(run, named=not shared, receiver=receiver)
    finally:
        receiver.stop()
    assert_one_tree_per_trace(got)
    precision, recall, confidence = link_scores(run, entries, spans)
    where, conn = "shared" if shared else "pods", "keep-alive" if keepalive else "fresh"
    print(f"timing {where} {conn} c={concurrency}: precision {precision:.3f} recall {recall:.3f}")
    print(f"  mean confidence {confidence:.2f}")
    timing = [r for r in got if r.attributes["wiretide.link"] == "timing"]
    assert timing and all(0 < r.attributes["wiretide.confidence"] < 1 for r in timing)
    if concurrency == 1 and not shared:
        assert (precision, recall) == (1.0, 1.0)
        assert len({r.span.trace_id for r in got}) == requests
    elif concurrency == 1:  # the client shares the address too: its first calls may be taken for theirs
        assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # Confidence stays honest: never above what the links turn out to be worth, give or take — the
    # take being 0.1 plus three standard errors of a precision measured on this many links.
    links = len(run.truth)
    slack = 0.1 + 3 * math.sqrt(max(precision * (1 - precision), 0.01) / links)
    assert confidence <= precision + slack, (confidence, precision, links)


@needs_root
def test_analyze_writes_the_captures_traces_as_otlp_json_and_exports_them(tmp_path: Path) -> None:
    run = drive_chain(tmp_path, shared=True, keepalive=True, propagate=True, requests=10, concurrency=2)
    out = tmp_path / "traces.json"
    receiver = HttpReceiver()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "wiretide.cli", "analyze", str(run.pcap), "--format", "table",
             "--traces", str(out), "--traces-endpoint", f"{receiver.endpoint}/v1/traces",
             "--no-redact"],  # the card rule can rewrite digits inside a traceparent (see chain.py)
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        got = receiver.collected.wait_for(80, 30)
    finally:
        receiver.stop()
    assert "traces: 10 traces, 80 spans" in done.stderr and "80 exported" in done.stderr
    traces = assert_one_tree_per_trace(got)
    assert {t.hex() for t in traces} == run.app_traces
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    written = [
        sp for doc in lines for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]
    ]
    assert sorted(sp["spanId"] for sp in written) == sorted(r.span.span_id.hex() for r in got)
    services = {kv["value"]["stringValue"] for doc in lines for rs in doc["resourceSpans"]
                for kv in rs["resource"]["attributes"] if kv["key"] == "service.name"}  # fmt: skip
    # Nobody named these servers: one shared address, told apart by their listening ports.
    assert {"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"} <= services


def test_analyze_refuses_bad_trace_options_with_a_usage_error(tmp_path: Path) -> None:
    pcap = tmp_path / "empty.pcap"
    pcap.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    for extra, message in (
        (["--traces-endpoint", "localhost:4317"], "must be http(s)://host:port"),
        (["--traces-protocol", "grpc"], "needs --traces-endpoint"),
        (["--traces", "-"], "needs a file name"),
        (["--traces", str(tmp_path / "no" / "such" / "dir.json")], "No such file"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "wiretide.cli", "analyze", str(pcap), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)

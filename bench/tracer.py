"""Benchmark: the tracer's throughput and the accuracy of its parent links.

1. Throughput — spans/s assembled (streaming, timing + header links) and encoded for OTLP export, from a
   stream of entries on one core (target >= 20k spans/s); also with the service map and trace store on;
   and the ingest as the service runs it, on 3-hop chains and on edge calls (small API calls from a
   client with no name, as `ab` against nginx makes them), with what the trace store holds at the end.
2. Accuracy — precision/recall of outbound-call → inbound-request links at 1, 4, 10 and 50 concurrent
   requests over fresh and keep-alive connections, on real traffic made by this run (new captures every
   time, never the ones the tracer was developed against): a 4-service chain of thread-per-request
   HTTP servers, one network namespace per service or all on one shared address (tests/helpers/chain.py),
   captured with tcpdump, dissected by the dissector's pipeline; ground truth written by the servers;
   with names (an inventory) and without. Timing alone, and with `traceparent` propagation; each row
   also counts the traces that are not one connected tree. Needs root (namespaces, tcpdump); without it
   only the synthetic figures are printed.

Figures are printed, never asserted. The machine is shared, so each throughput row is run `--repeat`
times and reports the best (least CPU time) and the median run: CPU time is inflated by whatever else
runs on the cores, never deflated, so the best run is the closest to the code's own cost.

    .venv/bin/python bench/tracer.py [--entries 30000] [--requests 150] [--repeat 3] [--no-live] [--only-live]

The tracer's hot modules run compiled when `make setup` built them (the header says which);
`WIRETIDE_NATIVE=0` runs the pure-Python modules, for comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.tracer.chains import build, score
from wiretide.common.bus.entries import Skipped, encode_entries
from wiretide.common.collector import collect_rarely
from wiretide.common.entry import encode_batch
from wiretide.tracer import native
from wiretide.tracer.assemble import Assembler
from wiretide.tracer.engine import Engine
from wiretide.tracer.export.otlp import Encoder
from wiretide.tracer.intake import end_ordered, slices
from wiretide.tracer.service import GC_THRESHOLDS
from wiretide.tracer.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_TRACES

BATCH = 500  # entries per EntryBatch, as the dissector publishes them
FETCH = BATCH * 8  # entries per pull of the tracer's consumer (a few messages at a time under load)


def throughput(n_entries: int, concurrency: int, propagate: bool, full: bool) -> tuple[int, float, float]:
    chains = build(n_entries // 3, concurrency, seed=11, pods=4, propagate=propagate)
    entries = chains.entries
    collect_rarely()  # as the tracer service does at start
    encoder = Encoder()
    exported = 0
    engine = Engine() if full else None
    assembler = engine.assembler if engine is not None else Assembler()
    t0 = time.perf_counter()
    c0 = time.process_time()
    for i in range(0, len(entries), BATCH):
        chunk = entries[i : i + BATCH]
        if engine is not None:
            spans = engine.ingest(chunk)
        else:
            assembler.add_many(chunk)
            spans = assembler.drain()
        if spans:
            encoder.request(spans)
            exported += len(spans)
    spans = engine.flush() if engine is not None else (assembler.flush() or assembler.drain())
    encoder.request(spans)
    exported += len(spans)
    return exported, time.perf_counter() - t0, time.process_time() - c0


@dataclass
class Message:
    data: bytes
    subject: str = "wt.entries.bench"


def edge_calls(n_entries: int) -> list[dict[str, Any]]:
    """Small API calls from a client with no name (curl/`ab` against nginx: one hop, no parents to
    find), as the dissector makes them from `bench/analyze_vs_tshark.py`'s small-call capture."""
    from bench.analyze_vs_tshark import SMALL_PER_CONNECTION, generate_small
    from wiretide.capture.sources.pcapfile import read_batches
    from wiretide.dissector.pipeline import Pipeline
    from wiretide.dissector.registry import default_registry

    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "small.pcap"
        generate_small(pcap, -(-n_entries // SMALL_PER_CONNECTION) * SMALL_PER_CONNECTION)
        pipeline = Pipeline(default_registry(plugins=False), node="bench", source="pcap")
        out: list[dict[str, Any]] = []
        for cols in read_batches(str(pcap), 4096):
            out += pipeline.feed(cols)
        out += pipeline.finish()
    return out[:n_entries]


def ingest(
    n_entries: int, version: int, workload: str = "chains", gc_gen0: int = GC_THRESHOLDS[0]
) -> tuple[int, float, int, int]:
    """(entries, CPU seconds, traces the store holds at the end, calls among them) of the tracer's
    ingest as the service runs it: EntryBatch messages of one contract version ordered by end and
    decoded a slice at a time (intake.py), assembled into spans with the service map and store on,
    and encoded for OTLP export. The workload: 3-hop `chains` with propagated context, or `edge`
    calls (`edge_calls`)."""
    if workload == "edge":
        entries = edge_calls(n_entries)
    else:
        entries = build(n_entries // 3, 4, seed=11, pods=4, propagate=True).entries
    encode = encode_entries if version >= 2 else encode_batch  # 3: packed
    fetches = [
        [Message(encode(entries[j : j + BATCH], "bench", "bench", j)) for j in range(i, i + FETCH, BATCH)]
        for i in range(0, len(entries), FETCH)
    ]
    n_entries = len(entries)
    del entries
    collect_rarely((gc_gen0, *GC_THRESHOLDS[1:]))  # as the tracer service spaces the collector
    encoder, engine = Encoder(), Engine()
    c0 = time.process_time()
    for messages in fetches:
        skipped = Skipped()
        for docs, texts in slices(end_ordered(messages, skipped, []), skipped):
            spans = engine.ingest(docs, 0, texts)
            if spans:
                encoder.request(spans)
    encoder.request(engine.flush())
    cpu = time.process_time() - c0
    held = engine.store.spans()
    return n_entries, cpu, len(engine.store.traces), len({s.entry_id for s in held})


def live_accuracy(
    tmp: Path,
    *,
    shared: bool,
    keepalive: bool,
    propagate: bool,
    concurrency: int,
    requests: int,
    seed: int,
    wrong: int = 0,
) -> list[tuple[str, float, float, float, int, int, float, float]]:
    """One capture of the 4-service chain, made now (tests/helpers/chain.py), scored with the names
    an inventory would give (pods only) and without any: (names, precision, recall, mean confidence,
    links, traces that are not one connected tree, precision of the links made with confidence >=
    `SURE`, their share of the links made)."""
    from tests.helpers.chain import drive_chain, entries_of, link_scores

    run = drive_chain(
        tmp, shared=shared, keepalive=keepalive, propagate=propagate, requests=requests,
        concurrency=concurrency, seed=seed,
    )  # fmt: skip
    rows = []
    for named in (True, False) if not shared else (False,):
        entries = entries_of(run, named)
        assembler = Assembler()
        assembler.add_many(entries)
        assembler.flush()
        spans = assembler.drain()
        precision, recall, confidence = link_scores(run, entries, spans)
        sure_precision, sure_share = sure_links(run, entries, spans)
        if wrong and not named:
            print_wrong(run, entries, spans, wrong)
        rows.append(
            (
                "known" if named else "unknown", precision, recall, confidence, len(run.truth),
                not_trees(spans), sure_precision, sure_share,
            )
        )  # fmt: skip
    run.pcap.unlink()
    return rows


def print_wrong(run: Any, entries: list[dict[str, Any]], spans: list[Any], most: int) -> None:
    """The gaps (ms before the call starts, after it ends) of the true parent and of the request chosen,
    for up to `most` wrong links; and how the true gaps of all links spread (5th, 50th, 95th percentile)."""
    from tests.helpers.chain import call_of

    by_call = {call_of(e): e for e in entries}
    call = {e["id"]: call_of(e) for e in entries}
    by_id = {s.span_id: s for s in spans}

    def gaps(parent: dict[str, Any], child: dict[str, Any]) -> tuple[float, float]:
        p0, c0 = parent["timestamp"], child["timestamp"]
        p1, c1 = p0 + parent["elapsed_us"] * 1000, c0 + child["elapsed_us"] * 1000
        return (c0 - p0) / 1e6, (p1 - c1) / 1e6

    true_gaps, shown = [], 0
    for s in spans:
        parent = by_id.get(s.parent_span_id)
        if s.kind != 3 or parent is None or parent.kind != 2 or parent.entry_id == s.entry_id:
            continue
        child, truth, chosen = call[s.entry_id], run.truth.get(call[s.entry_id]), call[parent.entry_id]
        if truth is None or truth not in by_call:
            continue
        true_gaps.append(gaps(by_call[truth], by_call[child]))
        if truth != chosen and shown < most:
            shown += 1
            (tb, ta), (cb, ca) = true_gaps[-1], gaps(by_call[chosen], by_call[child])
            print(
                f"    wrong link: true parent {tb:.2f} ms before / {ta:.2f} ms after,"
                f" chosen {cb:.2f} / {ca:.2f} (confidence {s.confidence:.2f})"
            )
    for i, what in ((0, "before"), (1, "after")):
        ordered = sorted(g[i] for g in true_gaps)
        if ordered:
            p5, p50, p95 = (ordered[int(q * (len(ordered) - 1))] for q in (0.05, 0.5, 0.95))
            print(f"    true gaps {what}: {p5:.2f} / {p50:.2f} / {p95:.2f} ms (5th / 50th / 95th percentile)")


# Links whose confidence is at least this are "sure" (`sure_links`): is the confidence honest?
SURE = 0.7


def sure_links(run: Any, entries: list[dict[str, Any]], spans: list[Any]) -> tuple[float, float]:
    """(precision, share) of the call → request links made with confidence >= `SURE`."""
    from tests.helpers.chain import call_of

    call = {e["id"]: call_of(e) for e in entries}
    by_id = {s.span_id: s for s in spans}
    made = sure = right = 0
    for s in spans:
        parent = by_id.get(s.parent_span_id)
        if s.kind == 3 and parent is not None and parent.kind == 2 and parent.entry_id != s.entry_id:
            made += 1
            if s.confidence >= SURE:
                sure += 1
                right += run.truth.get(call[s.entry_id]) == call[parent.entry_id]
    return (right / sure if sure else 1.0), (sure / made if made else 0.0)


def not_trees(spans: list[Any]) -> int:
    """Traces that are not one connected tree (more than one root, or a parent id not among them)."""
    traces: dict[bytes, list[Any]] = {}
    for s in spans:
        traces.setdefault(s.trace_id, []).append(s)
    bad = 0
    for members in traces.values():
        ids = {s.span_id for s in members}
        roots = sum(1 for s in members if not s.parent_span_id)
        bad += roots != 1 or any(s.parent_span_id and s.parent_span_id not in ids for s in members)
    return bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=30_000)
    parser.add_argument("--requests", type=int, default=150, help="root requests per live accuracy row")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput row (best and median)")
    parser.add_argument("--no-live", action="store_true", help="skip the live-traffic accuracy rows")
    parser.add_argument("--only-live", action="store_true", help="only the live-traffic accuracy rows")
    parser.add_argument(
        "--concurrency", type=int, action="append", help="live rows at this many concurrent requests only"
    )
    parser.add_argument(
        "--wrong", type=int, default=0, metavar="N", help="live rows: print N wrong links with their gaps"
    )
    parser.add_argument(
        "--gc-gen0",
        type=int,
        default=GC_THRESHOLDS[0],
        help=f"ingest rows: the collector's gen0 threshold (the tracer service's: {GC_THRESHOLDS[0]:,})",
    )
    args = parser.parse_args()
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[0]
    print(f"tracer benchmark — {os.cpu_count()} CPUs, load average {load}, one Python thread")
    print(
        f"tracer modules: {native.STATUS} (compiled: the mypyc build of `make setup`;"
        " WIRETIDE_NATIVE=0: pure Python)"
    )
    print()
    if not args.only_live:
        print(
            "Throughput (entries → spans assembled → OTLP protobuf encoded), 3-hop chains, 4 pods per tier:"
        )
        for concurrency, propagate, full in (
            (4, False, False),
            (4, True, False),
            (4, False, True),
            (10, False, False),
        ):
            runs = sorted(
                (throughput(args.entries, concurrency, propagate, full) for _ in range(max(args.repeat, 1))),
                key=lambda run: run[2],
            )
            spans, seconds, cpu = runs[0]
            median_cpu = runs[len(runs) // 2][2]
            what = "headers" if propagate else "timing"
            extra = " + service map + store" if full else ""
            print(
                f"  {what:7s} c={concurrency:<3d}{extra:22s} {spans:7d} spans: {spans / seconds:7.0f} spans/s"
                f" wall, {spans / cpu:7.0f} spans per CPU-second"
                f" (median of {len(runs)}: {spans / median_cpu:.0f})"
            )
        print()
        print(
            "Ingest as the service runs it (EntryBatch bytes → documents → spans, map, store → OTLP bytes):"
        )
        rows = (
            ("chains", 3, "3-hop chains, contract v3"),
            ("chains", 1, "3-hop chains, contract v1"),
            ("edge", 3, "edge calls, contract v3"),
        )
        per_entry: dict[tuple[str, int], list[float]] = {(w, v): [] for w, v, _ in rows}
        held: dict[str, tuple[int, int, int]] = {}
        for _ in range(max(args.repeat, 1)):  # alternated: the machine's speed drifts
            for workload, version, _ in rows:
                n, cpu, traces, calls = ingest(args.entries, version, workload, args.gc_gen0)
                per_entry[(workload, version)].append(cpu / n * 1e6)
                held[workload] = (traces, calls, n)
        for workload, version, label in rows:
            per = sorted(per_entry[(workload, version)])
            print(
                f"  {label:28s} {per[0]:6.1f} µs CPU per entry"
                f" (best of {len(per)}; median {per[len(per) // 2]:.1f})"
            )
        for workload, (traces, calls, n) in held.items():
            print(
                f"  the trace store holds, after the {workload}: {traces:,} traces ({calls:,} of the {n:,}"
                f" calls; bounds {DEFAULT_MAX_TRACES:,} traces, {DEFAULT_MAX_BYTES >> 20} MiB estimated)"
            )
        print()
        print("Parent-link accuracy, synthetic chains (1 pod per tier, 1500 requests):")
        for concurrency in (1, 4, 10, 50):
            chains = build(1500, concurrency, seed=5)
            a = Assembler()
            a.add_many(chains.entries)
            a.flush()
            p, r = score(chains, a.drain())
            print(f"  timing  c={concurrency:<3d} precision {p:.3f} recall {r:.3f}")
        print()
    if args.no_live:
        return
    if os.geteuid() != 0:
        print("Live accuracy skipped: network namespaces and tcpdump need root.")
        return
    print(
        "Parent-link accuracy, live traffic: a 4-service chain (client → s0 → s1 → s2 → s3) of thread-per-"
        "request"
        f" HTTP servers, {args.requests} root requests per row (3 links each), captured by tcpdump in network"
        " namespaces by this run (new captures, seeds from the clock); pods = one namespace and address per"
        " service, shared = every service on one loopback address; names known = an inventory names each"
        " address, unknown = no names at all:"
    )
    seed = int(time.time()) % 100_000
    rows = [(False, shared, c) for shared in (False, True) for c in (1, 4, 10, 50)]
    rows += [(True, shared, c) for shared in (False, True) for c in (10, 50)]
    if args.concurrency:
        rows = [row for row in rows if row[2] in args.concurrency]
    with tempfile.TemporaryDirectory() as tmp:
        for propagate, shared, concurrency in rows:
            for keepalive in (False, True):
                seed += 1
                for names, p, r, conf, links, bad, sure_p, sure_share in live_accuracy(
                    Path(tmp), shared=shared, keepalive=keepalive, propagate=propagate,
                    concurrency=concurrency, requests=args.requests, seed=seed, wrong=args.wrong,
                ):  # fmt: skip
                    what = "headers" if propagate else "timing"
                    where = "shared" if shared else "pods"
                    conn = "keep-alive" if keepalive else "fresh"
                    print(
                        f"  {what:7s} {where:6s} names {names:7s} {conn:10s} c={concurrency:<3d}"
                        f" precision {p:.3f} recall {r:.3f} mean confidence {conf:.2f}"
                        f" ({links} links; traces not one tree: {bad};"
                        f" confidence >= {SURE}: precision {sure_p:.3f} of {sure_share:.0%} of the links)",
                        flush=True,
                    )


if __name__ == "__main__":
    main()

"""Benchmark: what tracer replicas (`WIRETIDE_TRACER_PARTITIONS`) save each replica, against one tracer.

Every replica reads every entry (decoding its batch) and assembles, exports and maps only its share, so
the decode is paid N times and the rest is split by workload. This measures, per replica, the CPU of
the service's per-fetch path — EntryBatch messages decoded and ordered (`documents_in_end_order`),
`Engine.ingest` with the service map and trace store on, the exported spans encoded for OTLP, the
facts for other replicas encoded and theirs decoded and applied — on two workloads in the same run:

- spread: an 8-service chain, 4 pods each — many workloads, the split even;
- hot: one frontend calling one api (every call of the api is the frontend's, every request of the
  frontend comes from outside) — the split is as uneven as a workload split can be.

Replicas run one after another in this process, each timed on its own (`time.process_time`), so the
figures are CPU per entry of the stream, not throughput of a machine.

    .venv/bin/python bench/tracer_replicas.py [--entries 30000] [--replicas 1,2,3]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.tracer.chains import build
from wiretide.common.bus.entries import Skipped, documents_in_end_order, encode_entries
from wiretide.common.collector import collect_rarely
from wiretide.tracer import native
from wiretide.tracer.engine import Engine
from wiretide.tracer.export.otlp import Encoder
from wiretide.tracer.partition import Partition, decode_facts, encode_facts

BATCH = 500  # entries per EntryBatch, as the dissector publishes them
FETCH = BATCH * 8


@dataclass
class Message:
    data: bytes
    subject: str = "wt.entries.bench"


def workload(name: str, n_entries: int) -> list[dict[str, Any]]:
    if name == "spread":
        tiers = tuple(f"svc{i}" for i in range(8))
        return build(n_entries // len(tiers), 6, seed=21, pods=4, tiers=tiers).entries
    return build(n_entries // 2, 6, seed=22, pods=1, tiers=("frontend", "api")).entries


def run(entries: list[dict[str, Any]], replicas: int) -> tuple[list[float], int, int]:
    """(CPU seconds of each replica, spans exported in all, facts told in all)."""
    fetches = [
        [
            Message(encode_entries(entries[j : j + BATCH], "bench", "bench", j))
            for j in range(i, i + FETCH, BATCH)
        ]
        for i in range(0, len(entries), FETCH)
    ]
    collect_rarely()
    parts = [Partition(i, replicas) if replicas > 1 else None for i in range(replicas)]
    engines = [Engine(partition=p) for p in parts]
    encoders = [Encoder() for _ in range(replicas)]
    cpu = [0.0] * replicas
    exported = told = 0
    inbox: list[list[bytes]] = [[] for _ in range(replicas)]

    def step(r: int, messages: list[Message] | None) -> None:
        nonlocal exported, told
        c0 = time.process_time()
        engine = engines[r]
        spans = []
        for data in inbox[r]:
            spans += engine.told(decode_facts(data))
        inbox[r] = []
        if messages is None:
            spans += engine.flush()
        else:
            texts: list[bytes] = []
            spans += engine.ingest(documents_in_end_order(messages, Skipped(), [], texts), 0, texts)
        if spans:
            encoders[r].request(spans)
            exported += len(spans)
        for to, facts in engine.take_facts().items():
            inbox[to].append(encode_facts(r, facts))
            told += len(facts)
        cpu[r] += time.process_time() - c0

    for messages in fetches:
        for r in range(replicas):
            step(r, messages)
    for _ in range(3):  # facts told at the end may let go more, which may be told again
        for r in range(replicas):
            if inbox[r]:
                step(r, [])
    for r in range(replicas):
        step(r, None)
    return cpu, exported, told


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=30_000)
    ap.add_argument("--replicas", default="1,2,3")
    args = ap.parse_args()
    counts = [int(x) for x in args.replicas.split(",")]
    print(f"tracer modules: {native.STATUS}")
    print("| workload | replicas | µs CPU per entry, each replica | busiest | all replicas | spans | facts |")
    print("|---|---|---|---|---|---|---|")
    for name in ("spread", "hot"):
        entries = workload(name, args.entries)
        for n in counts:
            cpu, exported, told = run(entries, n)
            per = [c / len(entries) * 1e6 for c in cpu]
            each = ", ".join(f"{p:.1f}" for p in per)
            print(
                f"| {name} ({len(entries):,} entries) | {n} | {each} | {max(per):.1f} | {sum(per):.1f}"
                f" | {exported:,} | {told:,} |"
            )


if __name__ == "__main__":
    main()

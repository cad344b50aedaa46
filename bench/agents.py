"""Benchmark: entries per second of CPU through the agents runtime, and the cost per entry with 10 agents.

What is measured is the agents service's per-batch work as the consumer does it: the batch's entries
encoded to JSON once, `kfl.match` queries evaluated in Python once per batch and query, one call into
each agent's QuickJS sandbox per 256 entries, and the helpers' records handled afterwards. NATS is left
out (the bus costs the same for every consumer; bench/store_writer.py measures it).

Rows:
1. one agent with a typical `onItemCaptured` (the 5xx alert: a `kfl.match`, a counter per protocol, a
   log line and a webhook for each server error) — target >= 20,000 entries/s per core;
2. the same agent with no `kfl.match` (JavaScript only);
3. ten agents loaded (the six templates and four typical agents): CPU per entry in all.

Figures are printed, never asserted; the machine is shared, so each row is run --repeat times and the
best (least CPU time) run is reported with the median beside it.

    .venv/bin/python bench/agents.py [--entries 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.entries import entries as make_entries
from wiretide.agents.model import AgentDef
from wiretide.agents.runtime import Backend, Limits, Runtime
from wiretide.agents.templates import TEMPLATES

BATCH = 500  # entries per fetched message batch, as the dissectors publish them

TYPICAL = """
function onItemCaptured(entry) {
  prometheus.vector("calls", "calls by protocol", "counter", ["protocol"], [entry.protocol], 1);
  if (kfl.match("http && status_code >= 500", entry)) {
    console.log("server error", entry.status, entry.path);
    vendor.webhook("POST", "http://127.0.0.1:9/alert", {id: entry.id, status: entry.status});
  }
}
"""
JS_ONLY = TYPICAL.replace(
    'kfl.match("http && status_code >= 500", entry)', 'entry.protocol === "http" && entry.status >= 500'
)
OTHERS = [
    "var n = {};\nfunction onItemCaptured(e) { var k = e.dst.name || e.dst.ip; n[k] = (n[k] || 0) + 1; }",
    "function onItemCaptured(e) { if (e.elapsed_us > 500000) console.log('slow', e.id); }",
    "function onItemCaptured(e) {\n"
    "  if (kfl.match('dns', e)) prometheus.metric('dns_calls', 'dns', 'counter', 1);\n}",
    JS_ONLY,
]


class Quiet(Backend):
    """Outbound work is counted and not run (the bench measures the hook path, not the network)."""

    def __init__(self) -> None:
        super().__init__("bench")
        self.submitted = 0

    def submit(self, host, what, work, done):  # type: ignore[no-untyped-def]
        self.submitted += 1


def run(sources: list[str], docs: list[dict[str, Any]], repeat: int) -> tuple[float, float]:
    """(best, median) CPU seconds to dispatch every entry to agents loaded from `sources`."""
    times = []
    for _ in range(repeat):
        rt = Runtime(Quiet(), Limits(memory_mb=64, time_limit_s=5.0))
        for i, src in enumerate(sources):
            rt.put(AgentDef(f"a{i}", src))
        bad = [a.agent for a in rt.agents.values() if a.state != "running"]
        assert not bad, bad
        start = time.process_time()
        for i in range(0, len(docs), BATCH):
            rt.dispatch("onItemCaptured", docs[i : i + BATCH])
        times.append(time.process_time() - start)
    return min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entries", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    docs = make_entries(args.entries, seed=11)
    rows = [
        ("one agent, typical onItemCaptured (kfl.match, counter, 5xx log + webhook)", [TYPICAL]),
        ("one agent, the same in JavaScript only (no kfl.match)", [JS_ONLY]),
        ("ten agents (six templates + four typical)", [t.source for t in TEMPLATES] + OTHERS),
    ]
    print(f"{args.entries} entries, batches of {BATCH}, best of {args.repeat} (median), CPU time")
    for label, sources in rows:
        best, median = run(sources, docs, args.repeat)
        per_entry_us = best / len(docs) * 1e6
        print(
            f"  {label:<76} {len(docs) / best:>9,.0f} entries/s (median {len(docs) / median:,.0f})"
            f"  {per_entry_us:6.1f} µs/entry in all"
        )


if __name__ == "__main__":
    main()

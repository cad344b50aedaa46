"""Synthetic call chains with ground truth, for assembly tests and the benchmark.

Rule: the generator writes down, for every outbound call, the inbound request that made it — the
truth the assembler is scored against — and never tells the assembler.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from wiretide.common.entry import UlidGenerator

MS = 1_000_000


@dataclass
class Chains:
    entries: list[dict[str, Any]] = field(default_factory=list)
    parent_of: dict[str, str] = field(default_factory=dict)  # outbound entry id -> inbound entry id
    roots: list[str] = field(default_factory=list)


def peer(name: str, pod: int, ip: str, port: int) -> dict[str, Any]:
    return {
        "ip": ip,
        "port": port,
        "name": name,
        "namespace": "shop",
        "pod": {"name": f"{name}-{pod}", "namespace": "shop", "labels": {"app": name}},
        "workload": {"kind": "Deployment", "name": name},
        "node": "node-a",
    }


def build(
    requests: int,
    concurrency: int,
    *,
    seed: int = 1,
    tiers: tuple[str, ...] = ("frontend", "api", "backend"),
    pods: int = 1,
    propagate: bool = False,
    t0: int = 1_700_000_000 * 10**9,
) -> Chains:
    """`requests` root requests, `concurrency` of them in flight at a time per pod on average."""
    rnd = random.Random(seed)
    ulid = UlidGenerator()
    out = Chains()
    leaf_ms = (2.0, 20.0)
    mean_ms = sum(leaf_ms) / 2 + len(tiers) * 2
    gap = mean_ms * MS / max(concurrency, 1) / pods

    def call(
        tier: int, pod: int, start: int, caller: dict[str, Any] | None, trace: str | None
    ) -> tuple[str, int]:
        name = tiers[tier]
        ip = f"10.0.{tier}.{pod + 1}"
        src = caller or {
            "ip": f"192.168.{rnd.randint(0, 9)}.{rnd.randint(1, 250)}",
            "port": rnd.randint(30000, 60000),
        }
        dst = peer(name, pod, ip, 8080)
        entry_id = ulid.new(start)
        headers: dict[str, str] = {"host": name, "user-agent": "chains/1"}
        span_hex = f"{rnd.getrandbits(64) or 1:016x}"
        if trace:
            headers["traceparent"] = f"00-{trace}-{span_hex}-01"
        if tier + 1 < len(tiers):
            child_pod = rnd.randrange(pods)
            think = int(rnd.uniform(0.1, 1.5) * MS)
            me = peer(name, pod, ip, rnd.randint(30000, 60000))
            child_id, child_end = call(tier + 1, child_pod, start + think, me, trace)
            out.parent_of[child_id] = entry_id
            end = child_end + int(rnd.uniform(0.1, 1.5) * MS)
        else:
            end = start + int(rnd.uniform(*leaf_ms) * MS)
        path = f"/{name}/items/{rnd.randint(1, 999)}"
        out.entries.append(
            {
                "id": entry_id,
                "node": "node-a",
                "timestamp": start,
                "elapsed_us": (end - start) // 1000,
                "protocol": "http",
                "version": "1.1",
                "transport": "tcp",
                "src": src,
                "dst": dst,
                "method": "GET",
                "path": path,
                "status": 200,
                "summary": f"GET {path}",
                "request": {"method": "GET", "path": path, "url": path, "headers": headers},
                "response": {"status": 200, "headers": {}},
                "size": {"request": 120, "response": 300},
                "error": None,
            }
        )
        return entry_id, end

    t = t0
    for _ in range(requests):
        t += int(rnd.expovariate(1.0) * gap)
        trace = f"{rnd.getrandbits(128) or 1:032x}" if propagate else None
        root_id, _ = call(0, rnd.randrange(pods), t, None, trace)
        out.roots.append(root_id)
    out.entries.sort(key=lambda e: e["timestamp"] + e["elapsed_us"] * 1000)  # response order
    return out


def score(chains: Chains, spans: list[Any]) -> tuple[float, float]:
    """Precision and recall of parent links between calls (outbound call → inbound request)."""
    by_span = {s.span_id: s for s in spans}
    predicted: dict[str, str] = {}
    for s in spans:
        if s.kind != 3 or s.parent_span_id not in by_span:  # client spans: the call at the caller
            continue
        parent = by_span[s.parent_span_id]
        if parent.kind == 2 and parent.entry_id != s.entry_id:
            predicted[s.entry_id] = parent.entry_id
    truth = chains.parent_of
    correct = sum(1 for child, parent in predicted.items() if truth.get(child) == parent)
    precision = correct / len(predicted) if predicted else 1.0
    recall = correct / len(truth) if truth else 1.0
    return precision, recall

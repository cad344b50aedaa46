"""Benchmark: what one more dissector or gateway buys, and the per-service cost behind the sizing guide.

Runs the services as separate processes (as in a cluster: `python -m wiretide.<service>`) on one NATS
server: one capture on the host side of a veth to nginx in a namespace (bench/e2e.py builds it), a
resolver, a tracer, the agents service (no agent loaded), D dissectors sharing the flows (the
capture's hash ring), and G gateways consuming the
entries stream through one durable consumer into one store (SQLite for G=1, the MongoDB-wire
stand-in nx-27017 for G=2, and G=1 on it too, so the store is compared like for like). For each
layout it drives `ab -k` keep-alive calls (small JSON) and prints: calls answered, entries stored,
entries stored per second of wall time from the first call to the last entry stored, and per service
CPU µs per stored entry and peak RSS. The sizing guide in the README is computed from these: CPU per
1k calls/s = µs per entry × 1000 / 10^6 cores, memory = peak RSS.

On a 2-core machine the services compete for the same two cores, so a second dissector or gateway
cannot add throughput here; the figures show what each copy costs, which is what sizing needs. Needs
root, nginx and ab.

    .venv/bin/python bench/scale.py                 # 30k calls per layout
    .venv/bin/python bench/scale.py --calls 5000    # quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e import ab, cpu_by_process, namespace, nginx, peak_rss_by_process

from tests.helpers.mongo import WireMongo
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env

START_TIMEOUT_S: Final = 120.0
DRAIN_TIMEOUT_S: Final = 600.0
SETTLE_S: Final = 5.0


@dataclass
class Layout:
    dissectors: int
    gateways: int
    store: str  # "sqlite" | "mongo"

    @property
    def name(self) -> str:
        return f"{self.dissectors} dissector(s), {self.gateways} gateway(s), {self.store}"


@dataclass
class Result:
    layout: Layout
    calls: int = 0
    stored: int = 0
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def stack(layout: Layout, work: Path, interface: str) -> Iterator[tuple[list[str], dict[str, int]]]:
    """Start the layout's processes; yield (gateway base URLs, {process label: pid})."""
    nats = NatsServer(work / "nats")
    nats.start()
    mongo = WireMongo(work / "mongo") if layout.store == "mongo" else None
    if mongo is not None:
        mongo.start()
    procs: list[ServiceProcess] = []

    def start(name: str, tag: str, **extra: str) -> ServiceProcess:
        env = service_env(nats.url, work / f"data-{tag}", WIRETIDE_LOG_LEVEL="WARNING", **extra)
        proc = ServiceProcess(name, env, work / f"{tag}.log")
        proc.start()
        procs.append(proc)
        return proc

    try:
        resolver = start("resolver", "resolver", WIRETIDE_RESOLVER_SOURCE="none")
        dissectors = [
            start(
                "dissector",
                f"dissector-{i}",
                WIRETIDE_DISSECTOR_GRPC=f"127.0.0.1:{free_port()}",
                WIRETIDE_RESOLVER_GRPC=resolver.grpc,
            )
            for i in range(layout.dissectors)
        ]
        ring = ",".join(d.grpc for d in dissectors)
        start(
            "capture",
            "capture",
            WIRETIDE_CAPTURE_INTERFACES=interface,
            WIRETIDE_DISSECTOR_GRPC=ring,
            WIRETIDE_RESOLVER_GRPC=resolver.grpc,
        )
        start("tracer", "tracer", WIRETIDE_RESOLVER_GRPC=resolver.grpc)
        start("agents", "agents", WIRETIDE_RESOLVER_GRPC=resolver.grpc)
        bases = []
        for i in range(layout.gateways):
            port = free_port()
            store = {"WIRETIDE_GATEWAY_MONGO_URL": mongo.url} if mongo is not None else {}
            start(
                "gateway",
                f"gateway-{i}",
                WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}",
                WIRETIDE_DISSECTOR_GRPC=ring,
                WIRETIDE_RESOLVER_GRPC=resolver.grpc,
                **store,
            )
            bases.append(f"http://127.0.0.1:{port}")
        for p in procs:
            p.wait_health("SERVING", timeout=START_TIMEOUT_S)
        pids: dict[str, int] = {"nats": nats.proc.pid if nats.proc else 0}
        counts: dict[str, int] = {}
        for p in procs:
            counts[p.name] = counts.get(p.name, 0) + 1
            assert p.proc is not None
            pids[f"{p.name}-{counts[p.name]}"] = p.proc.pid
        if mongo is not None and mongo.proc is not None:
            pids["store (nx-27017)"] = mongo.proc.pid
        yield bases, pids
    finally:
        for p in procs:
            p.kill()
        if mongo is not None:
            mongo.stop()
        nats.stop()


def stored(base: str) -> int:
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        body = httpx.get(f"{base}/api/stats", params={"q": "http", "by": "protocol"}, timeout=30).json()
        return int(body["total"])
    return -1


def run(layout: Layout, calls: int, target: Any, work: Path) -> Result:
    result = Result(layout)
    with stack(layout, work, target.host_if) as (bases, pids):
        url = f"http://{target.ip}/small"
        ab(url, 50, 1, True)  # warm-up: every connection path taken once
        deadline = time.monotonic() + 60
        while stored(bases[0]) < 50 and time.monotonic() < deadline:
            time.sleep(0.5)
        before_n = stored(bases[0])
        before_cpu = cpu_by_process(pids)
        t0 = time.monotonic()
        load = ab(url, calls, 8, True)
        result.calls = load.answered
        last, changed = before_n, time.monotonic()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            now_n = stored(bases[0])
            if now_n != last:
                last, changed = now_n, time.monotonic()
            if now_n - before_n >= result.calls or time.monotonic() - changed > SETTLE_S:
                break
            time.sleep(0.2)
        result.wall_s = changed - t0
        result.stored = last - before_n
        after = cpu_by_process(pids)
        result.cpu_s = {k: after[k] - before_cpu.get(k, 0.0) for k in after}
        result.rss_mb = peak_rss_by_process(pids)
    return result


def report(r: Result) -> None:
    n = max(r.stored, 1)
    print(f"\n== {r.layout.name}")
    print(
        f"calls {r.calls}, stored {r.stored} ({100 * r.stored / max(r.calls, 1):.1f}%), "
        f"{r.stored / max(r.wall_s, 1e-9):,.0f} entries/s wall"
    )
    print(f"{'process':<20}{'CPU s':>8}{'µs/entry':>10}{'peak RSS MB':>13}")
    for name in sorted(r.cpu_s):
        print(
            f"{name:<20}{r.cpu_s[name]:>8.2f}{r.cpu_s[name] * 1e6 / n:>10.1f}{r.rss_mb.get(name, 0):>13.0f}"
        )
    total = sum(r.cpu_s.values())
    print(f"{'all':<20}{total:>8.2f}{total * 1e6 / n:>10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--layouts", type=int, default=4, help="run the first N layouts (of 4)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/scale.py needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    layouts = [
        Layout(1, 1, "sqlite"),
        Layout(2, 1, "sqlite"),
        Layout(1, 1, "mongo"),
        Layout(2, 2, "mongo"),
    ]
    print(f"load: ab -k -c 8, {args.calls} small keep-alive calls per layout; {os.cpu_count()} cores")
    with (
        tempfile.TemporaryDirectory(prefix="wt-scale-") as tmp,
        namespace() as target,
        nginx(target, Path(tmp)),
    ):
        for i, layout in enumerate(layouts[: args.layouts]):
            report(run(layout, args.calls, target, Path(tmp) / f"run{i}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

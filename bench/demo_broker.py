"""Benchmark: what the demo's messaging hop costs — the RabbitMQ node's boot and its steady state.

The demo cluster is built without Wiretide (as `wiretide demo --cluster-only` does), the broker's
outcome is awaited, and the CPU time of every process in the broker pod's namespace (the Erlang VM,
epmd, their helpers; children included once reaped) is read from /proc: at the moment the node
listens, and again after --steady seconds of the demo's own traffic (loadgen's checkouts become order
events the api publishes and the worker consumes). The wall time to listen is printed too, for
reading beside the machine's load; it depends on that load far more than on the broker.

Figures are printed, never asserted. Needs root (network namespaces) and rabbitmq-server.

    sudo .venv/bin/python bench/demo_broker.py [--steady 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wiretide.cli.demo.cluster import PODS, DemoCluster, rabbitmq_server


def namespace_cpu_s(netns: str) -> float:
    """utime + stime (+ reaped children's) of every process in the namespace, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / tick


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of demo traffic to measure")
    args = parser.parse_args()
    if os.geteuid() != 0 or rabbitmq_server() is None:
        print("needs root and rabbitmq-server", file=sys.stderr)
        return 2
    load = os.getloadavg()
    cluster = DemoCluster(Path(tempfile.mkdtemp(prefix="wtbench-")) / "demo.json", tag="wtbdb")
    started = time.monotonic()
    cluster.up()
    try:
        netns = cluster.netns(next(p for p in PODS if p.app == "rabbitmq"))
        cluster.broker_settled.wait()
        listened = time.monotonic() - started
        if cluster.broker != "up":
            print(f"the broker did not start: {cluster.broker}", file=sys.stderr)
            return 1
        boot = namespace_cpu_s(netns)
        time.sleep(args.steady)  # the interval measured, not a wait for a condition
        steady = namespace_cpu_s(netns) - boot
    finally:
        cluster.down()
    print(f"load average at start: {load[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    print(f"broker listening after:          {listened:6.1f} s wall")
    print(f"broker boot CPU:                 {boot:6.2f} s")
    print(f"broker CPU per minute of demo:   {steady * 60 / args.steady:6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

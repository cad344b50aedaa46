"""Benchmark the identity path: lookups/s in a dissector's local table holding 50k pods and 5k services,
that table's memory, and how long a resolver takes to build its state from a 50k-pod list.

With `--scan N` (root): the local source's socket listing of a namespace holding N TIME_WAIT sockets
(what a host that has just served N short connections holds for a minute), two listeners and one
connection — CPU per listing read from /proc/<pid>/net/tcp{,6} against asked of the kernel over netlink
(sock_diag), which the resolver uses where it may enter the namespace.

Run: .venv/bin/python bench/resolve.py [--pods 50000] [--services 5000] [--lookups 2000000] [--skip-api]
     [--scan 10000]
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wiretide.cli.demo import kubeapi as ka
from wiretide.common.identity import NS, IdentityTable, apply_update
from wiretide.resolver.k8s.source import KubernetesSource, api_client
from wiretide.resolver.k8s.watch import PAGE, RELIST_BEGIN, RELIST_END
from wiretide.resolver.table import IdentityStore

T0 = 1_700_000_000 * NS


def pod_ip(i: int) -> str:
    return f"10.{64 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def svc_ip(i: int) -> str:
    return f"172.20.{i // 250}.{i % 250 + 1}"


def pod_docs(n: int) -> list[dict[str, object]]:
    created = time.time() - 3600
    docs = []
    for i in range(n):
        app = f"app{i % 2000}"
        doc = ka.to_json(
            ka.pod(
                f"{app}-7d9f-{i}",
                f"ns{i % 50}",
                pod_ip(i),
                labels={"app": app, "pod-template-hash": "7d9f"},
                owner=("ReplicaSet", f"{app}-7d9f"),
                node_name=f"node-{i % 100}",
                created=created,
            )
        )
        docs.append(doc)
    return docs


def build_store(pods: list[dict[str, object]], services: int) -> tuple[IdentityStore, float]:
    store = IdentityStore()
    source = KubernetesSource(store)
    svc_docs = [ka.to_json(ka.service(f"svc{i}", f"ns{i % 50}", svc_ip(i))) for i in range(services)]
    t = time.perf_counter()
    for kind, docs in (("service", svc_docs), ("pod", pods)):
        source.apply(kind, RELIST_BEGIN, None)
        for start in range(0, len(docs), 500):
            source.apply(kind, PAGE, docs[start : start + 500])
        source.apply(kind, RELIST_END, None)
    return store, time.perf_counter() - t


def _keys(rng: random.Random, pods: int, services: int, hot: int) -> list[tuple[str | bytes, int, int]]:
    now = time.time_ns()
    active = [rng.randrange(pods) for _ in range(hot)]
    keys: list[tuple[str | bytes, int, int]] = []
    for _ in range(10_000):
        r = rng.random()
        if r < 0.6:
            keys.append((pod_ip(rng.choice(active)), 8080, now))
        elif r < 0.8:
            keys.append((socket.inet_aton(pod_ip(rng.choice(active))), 443, now))
        elif r < 0.9:
            keys.append((svc_ip(rng.randrange(min(services, hot))), 80, now))
        else:
            keys.append((f"192.168.{rng.randrange(250)}.{rng.randrange(250)}", 80, now))  # unknown
    return keys


def bench_lookups(table: IdentityTable, pods: int, services: int, n: int) -> None:
    rng = random.Random(1)
    lookup = table.lookup
    print("lookup mix: 60% pod ip (text), 20% pod ip (packed bytes), 10% service ip, 10% unknown")
    for label, hot in (
        ("500 active endpoints (a node's usual working set)", 500),
        ("uniform over all pods", pods),
    ):
        keys = _keys(rng, pods, services, hot)
        rounds = max(1, n // len(keys))
        gc.disable()
        t = time.perf_counter()
        for _ in range(rounds):
            for ip, port, ts in keys:
                lookup(ip, port, ts)
        elapsed = time.perf_counter() - t
        gc.enable()
        total = rounds * len(keys)
        rate = total / elapsed
        print(f"  {label}: {rate:,.0f} lookups/s ({elapsed / total * 1e9:.0f} ns each, {total:,} lookups)")


def bench_table_memory(store: IdentityStore) -> IdentityTable:
    updates = store.flush()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    table = IdentityTable()
    for update in updates:
        apply_update(table, update)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del before
    stats = table.stats()
    print(
        f"local table: {stats.spans:,} spans, {stats.addresses:,} addresses, "
        f"{current / 2**20:.1f} MiB ({current / max(stats.spans, 1):.0f} B per span) incl. the decoded deltas"
    )
    return table


async def bench_api(pods: list[dict[str, object]]) -> None:
    api = ka.KubeApi(history_max=1000).start()
    for doc in pods:
        api.put(doc)
    kubeconfig = api.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
    store = IdentityStore()
    source = KubernetesSource(store)
    t = time.perf_counter()
    await source.start(api_client(str(kubeconfig)), page_size=500, watch_timeout_s=60)
    while len(source.pods) < len(pods) or store.stale():  # noqa: ASYNC110 - polling a plain counter
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t
    what = f"resolver state from a {len(pods):,}-pod list over HTTP (official client, pages of 500)"
    print(f"{what}: {elapsed:.2f}s")
    await source.stop()
    api.stop()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # microsecond resolution (os.times: 10 ms ticks)
    return usage.ru_utime + usage.ru_stime


def bench_scan(n: int, rounds: int = 20) -> None:
    """CPU of one socket listing of a namespace with `n` TIME_WAIT sockets: /proc text vs netlink."""
    from tests.helpers.netns import inside, veth_pair
    from tests.helpers.wait import wait_for
    from wiretide.resolver.local import procfs, sockdiag

    with veth_pair(subnet="10.93.0") as pair:
        holder = pair.popen(pair.ns_b, ["sleep", "600"])
        held: list[socket.socket] = []
        try:
            inside_b = os.stat(f"/run/netns/{pair.ns_b}").st_ino  # `ip netns exec` has entered it
            wait_for(
                "the holder inside its namespace",
                lambda: os.stat(f"/proc/{holder.pid}/ns/net").st_ino == inside_b,
            )
            with inside(pair.ns_b):
                listener = socket.create_server((pair.ip_b, 8080), backlog=1024)
                held.append(listener)
                for _ in range(n):  # the client closes first: its end stays in TIME_WAIT, here
                    client = socket.create_connection((pair.ip_b, 8080))
                    accepted, _ = listener.accept()
                    client.close()
                    accepted.close()
            text = Path(f"/proc/{holder.pid}/net/tcp").read_text()
            waiting = sum(1 for line in text.splitlines()[1:] if line.split()[3] == "06")
            print(f"socket listing of a namespace with {waiting:,} TIME_WAIT sockets:")
            started = _cpu()
            for _ in range(rounds):
                by_proc = procfs.parse_proc_net_tcp(
                    Path(f"/proc/{holder.pid}/net/tcp").read_text()
                ) + procfs.parse_proc_net_tcp(Path(f"/proc/{holder.pid}/net/tcp6").read_text())
            proc_ms = (_cpu() - started) / rounds * 1000
            started = _cpu()
            for _ in range(rounds):
                with sockdiag.open_in(f"/proc/{holder.pid}/ns/net") as diag:
                    by_netlink = sockdiag.tcp_sockets(diag, procfs.MAX_SOCKETS)
            netlink_ms = (_cpu() - started) / rounds * 1000
            print(
                f"  /proc/<pid>/net/tcp{{,6}}: {proc_ms:.2f} ms CPU per listing ({len(by_proc)} sockets kept)"
            )
            print(
                f"  netlink sock_diag:        {netlink_ms:.2f} ms CPU per listing ({len(by_netlink)} sockets)"
            )
        finally:
            for sock in held:
                sock.close()
            holder.kill()
            holder.wait()


def main() -> int:
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # as the resolver service does
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=50_000)
    parser.add_argument("--services", type=int, default=5_000)
    parser.add_argument("--lookups", type=int, default=2_000_000)
    parser.add_argument("--skip-api", action="store_true", help="skip the list-over-HTTP figure")
    parser.add_argument("--scan", type=int, default=0, help="only the socket listing, with N TIME_WAIT")
    args = parser.parse_args()
    if args.scan:
        bench_scan(args.scan)
        return 0
    print(f"python {sys.version.split()[0]}; {args.pods:,} pods, {args.services:,} services")
    pods = pod_docs(args.pods)
    store, built = build_store(pods, args.services)
    print(f"resolver applies a {args.pods:,}-pod + {args.services:,}-service list (no HTTP): {built:.2f}s")
    table = bench_table_memory(store)
    bench_lookups(table, args.pods, args.services, args.lookups)
    if not args.skip_api:
        asyncio.run(bench_api(pods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`wiretide demo`: a mini-cluster of network namespaces with live traffic, captured and named by Wiretide.

The eBPF source is on when this host can run it (root and BCC), so the api's HTTPS calls to payments
come out decrypted; when it cannot, the demo says why on stderr and the hop shows as TLS handshakes.

Rule: whatever the demo creates it removes — on Ctrl-C, on SIGTERM, on a failed start, or from
another shell with `wiretide demo --down` (which reads the state file in the data dir).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from wiretide.common.paths import default_data_dir

STATE_FILE = "demo.json"
DOWN_WAIT_S = 20.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="a mini-cluster of namespaces with live traffic, captured by Wiretide (root)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir() / "demo",
        help="state, logs and the store of the demo",
    )
    p.add_argument("--ui-port", type=int, default=8899, help="port of the UI and REST API (default 8899)")
    p.add_argument("--ui-host", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    p.add_argument("--down", action="store_true", help="remove a running demo (from another shell)")
    p.add_argument(
        "--cluster-only",
        action="store_true",
        help="only the namespaces, workloads and API emulator; no Wiretide",
    )
    p.add_argument(
        "--no-ebpf",
        action="store_true",
        help="do not read TLS plaintext through eBPF (on by default where root and BCC allow it)",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def down(data_dir: Path) -> int:
    from wiretide.cli.demo.cluster import DemoState, teardown

    path = data_dir / STATE_FILE
    state = DemoState.load(path)
    if state is None:
        print(f"wiretide demo: nothing to remove (no {path})")
        return 0
    if state.owner_pid and state.owner_pid != os.getpid() and _alive(state.owner_pid):
        os.kill(state.owner_pid, signal.SIGTERM)  # it removes its own; wait for it
        deadline = time.monotonic() + DOWN_WAIT_S
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        state = DemoState.load(path)
    removed = teardown(state) if state is not None else []
    print(f"wiretide demo: removed ({len(removed)} leftovers cleaned here)")
    return 0


def ebpf_choice(no_ebpf: bool) -> tuple[bool, str]:
    """Whether the demo runs the eBPF source, and what to say about it (on stderr)."""
    hop = "the api → payments HTTPS calls"
    if no_ebpf:
        return False, f"eBPF off (--no-ebpf): {hop} show as TLS handshakes only"
    from wiretide.capture.sources.ebpf import probe

    why = probe()
    if why is not None:
        return False, f"eBPF unavailable ({why}): {hop} show as TLS handshakes only, not decrypted"
    return True, f"eBPF on: {hop} come out decrypted (docs/ebpf.md; --no-ebpf turns it off)"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from wiretide.cli.demo.cluster import NODE, PODS, SERVICE_IPS, DemoCluster, DemoState, teardown

    data_dir = args.data_dir.expanduser().resolve()
    if os.geteuid() != 0:
        print("wiretide demo: needs root (it creates network namespaces and a bridge)", file=sys.stderr)
        return 2
    if args.down:
        return down(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    previous = DemoState.load(data_dir / STATE_FILE)
    if previous is not None:
        if _alive(previous.owner_pid):
            print(
                f"wiretide demo: already running (pid {previous.owner_pid}); "
                f"stop it with `wiretide demo --down --data-dir {data_dir}`",
                file=sys.stderr,
            )
            return 1
        teardown(previous)  # a crashed run's leftovers

    signal.signal(signal.SIGTERM, _raise_interrupt)
    cluster = DemoCluster(data_dir / STATE_FILE)
    try:
        cluster.up()
        assert cluster.kube is not None
        kubeconfig = cluster.kube.write_kubeconfig(data_dir / "demo-kubeconfig.yaml")
        where = f"node {NODE}, bridge {cluster.bridge}, Kubernetes API emulator {cluster.kube.url}"
        print(f"demo cluster up: {where}")
        for pod in PODS:
            svc = f"  service {pod.app} ({SERVICE_IPS[pod.app]})" if pod.app in SERVICE_IPS else ""
            print(f"  {pod.namespace:<5} {pod.name:<22} {pod.ip:<12}{svc}")
        print(f"  workload logs: {cluster.log_dir}", flush=True)
        if args.cluster_only:
            print("Press Ctrl-C (or run `wiretide demo --down`) to remove it.", flush=True)
            while True:
                signal.pause()
        from wiretide.cli import up

        os.environ.update(
            {
                "WIRETIDE_RESOLVER_SOURCE": "kubernetes",
                "WIRETIDE_RESOLVER_KUBECONFIG": str(kubeconfig),
                "WIRETIDE_CAPTURE_INTERFACES": cluster.bridge,
                "WIRETIDE_CAPTURE_PROMISC": "true",
            }
        )
        args.pcap, args.pace = None, False
        args.ebpf, said = ebpf_choice(args.no_ebpf)
        print(f"wiretide demo: {said}", file=sys.stderr, flush=True)
        return int(up.run(args))
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish cleaning up whatever arrives now
        removed = cluster.down()
        print(f"demo cluster removed ({len(removed)} things)", file=sys.stderr)

"""`wiretide up`: run Wiretide locally — NATS, the six services, the UI — until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from wiretide.common.paths import default_data_dir


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run Wiretide locally (NATS + six services + UI)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="state, logs and the store")
    p.add_argument("--ui-port", type=int, default=8899, help="port of the UI and REST API (default 8899)")
    p.add_argument("--ui-host", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    p.add_argument(
        "--pcap", type=Path, help="replay this pcap/pcapng through the whole stack instead of capturing"
    )
    p.add_argument(
        "--pace", action="store_true", help="with --pcap: replay at the recorded pace, not full speed"
    )
    p.add_argument("--kubeconfig", type=Path, help="name traffic from this cluster's Kubernetes API")


def print_table(states: dict[str, str], pids: dict[str, int | None], out: object = sys.stdout) -> None:
    width = max(len(n) for n in states)
    print(f"  {'SERVICE':<{width}}  {'STATUS':<12} PID", file=out)  # type: ignore[call-overload]
    for name, state in states.items():
        print(f"  {name:<{width}}  {state:<12} {pids.get(name) or '-'}", file=out)  # type: ignore[call-overload]


def run(args: argparse.Namespace) -> int:
    from wiretide.cli.supervisor import Supervisor, SupervisorError
    from wiretide.cli.validate import validate_environment

    logging.basicConfig(level=logging.INFO, format="wiretide up: %(message)s", stream=sys.stderr)
    try:
        validate_environment()
    except SupervisorError as exc:
        print(f"wiretide up: {exc}", file=sys.stderr)
        return 2
    extra: dict[str, str] = {}
    if getattr(args, "pcap", None) is not None:
        pcap = args.pcap.expanduser().resolve()
        if not pcap.is_file():
            print(f"wiretide up: --pcap {args.pcap}: no such file", file=sys.stderr)
            return 2
        extra["WIRETIDE_CAPTURE_PCAP"] = str(pcap)
        if getattr(args, "pace", False):
            extra["WIRETIDE_CAPTURE_PACE"] = "true"
        # A recording is explored after the fact: its entries are as old as its packets, so only the
        # size bound applies unless the user set an age bound explicitly.
        extra["WIRETIDE_GATEWAY_RETENTION_AGE_S"] = os.environ.get("WIRETIDE_GATEWAY_RETENTION_AGE_S", "0")
    if getattr(args, "kubeconfig", None) is not None:
        kubeconfig = args.kubeconfig.expanduser().resolve()
        if not kubeconfig.is_file():
            print(f"wiretide up: --kubeconfig {args.kubeconfig}: no such file", file=sys.stderr)
            return 2
        extra["WIRETIDE_RESOLVER_SOURCE"] = "kubernetes"
        extra["WIRETIDE_RESOLVER_KUBECONFIG"] = str(kubeconfig)
    sup = Supervisor(
        data_dir=args.data_dir.expanduser().resolve(),
        ui_host=args.ui_host,
        ui_port=args.ui_port,
        extra_env=extra,
    )

    import asyncio  # here, not at the top: every other command (analyze) starts faster without it

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            nats_bin = sup.preflight()
            sup.plan(nats_bin)
            elapsed = await sup.start_all()
        except SupervisorError as exc:
            print(f"wiretide up: {exc}", file=sys.stderr)
            sup.stop_all()
            return 1
        states = await sup.health()
        serving = sum(s == "SERVING" for s in states.values())
        print(f"Wiretide is up in {elapsed:.1f}s ({serving}/{len(sup.services)} services SERVING)")
        print_table(states, {c.name: c.pid for c in sup.children})
        print(
            f"\n  UI and API: {sup.ui_url}\n  logs:       {sup.logs_dir}\n\nPress Ctrl-C to stop.", flush=True
        )
        await sup.watch(stop)
        print("\nstopping…", file=sys.stderr, flush=True)
        sup.stop_all()
        print("stopped.", file=sys.stderr)
        return 0

    return asyncio.run(main())

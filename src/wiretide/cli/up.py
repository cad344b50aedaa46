"""`wiretide up`: run Wiretide locally — NATS, the six services, the UI — until Ctrl-C.

Rule: with `--pcap`, what the replay waits for and how it ended is said on stderr, so a replay that
has not started yet never looks like one that found nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wiretide.common.paths import default_data_dir
from wiretide.common.tls import PLAINTEXT, Transport

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("wiretide.up")

# How often `up --pcap` asks the capture service how its replay stands, and how often it repeats
# what the replay waits for (often enough that a wait never looks like a hang).
REPLAY_POLL_S: Final = 0.5
REPLAY_NOTE_EVERY_S: Final = 3.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run Wiretide locally (NATS + six services + UI)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="state, logs and the store")
    p.add_argument("--ui-port", type=int, default=8899, help="port of the UI and REST API (default 8899)")
    p.add_argument("--ui-host", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    p.add_argument(
        "--pcap",
        type=Path,
        nargs="+",
        action="extend",
        metavar="FILE",
        help="replay these pcap/pcapng files (one after the other) through the whole stack instead of "
        "capturing",
    )
    p.add_argument(
        "--pace", action="store_true", help="with --pcap: replay at the recorded pace, not full speed"
    )
    p.add_argument(
        "--recording",
        type=Path,
        nargs="+",
        action="extend",
        metavar="BUNDLE",
        help="open these recording bundles (wiretide record get): their entries, names as recorded",
    )
    p.add_argument("--bpf", default="", help="capture filter in tcpdump syntax (live and --pcap)")
    p.add_argument("--port", action="append", type=int, default=[], help="only these ports (repeatable)")
    p.add_argument("--cidr", action="append", default=[], help="only to/from these networks (repeatable)")
    p.add_argument("--kubeconfig", type=Path, help="name traffic from this cluster's Kubernetes API")
    p.add_argument(
        "--ebpf",
        action="store_true",
        help="read TLS plaintext from processes' OpenSSL calls (root, BCC; see docs/ebpf.md)",
    )


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
    try:
        extra.update(_filter_env(args))
    except ValueError as exc:
        print(f"wiretide up: {exc}", file=sys.stderr)
        return 2
    pcaps: list[Path] = []
    for given in getattr(args, "pcap", None) or []:
        pcap = given.expanduser().resolve()
        if not pcap.is_file():
            print(f"wiretide up: --pcap {given}: no such file", file=sys.stderr)
            return 2
        pcaps.append(pcap)
    if pcaps:
        from wiretide.common.bus import STORE_WRITER_DURABLE

        extra["WIRETIDE_CAPTURE_PCAP"] = os.pathsep.join(map(str, pcaps))
        # The replay sends nothing before the store's durable consumer is in place.
        extra["WIRETIDE_CAPTURE_REPLAY_CONSUMERS"] = os.environ.get(
            "WIRETIDE_GATEWAY_DURABLE", STORE_WRITER_DURABLE
        )
        if getattr(args, "pace", False):
            extra["WIRETIDE_CAPTURE_PACE"] = "true"
        # A recording is explored after the fact: its entries are as old as its packets, so only the
        # size bound applies unless the user set an age bound explicitly.
        extra["WIRETIDE_GATEWAY_RETENTION_AGE_S"] = os.environ.get("WIRETIDE_GATEWAY_RETENTION_AGE_S", "0")
    bundles = getattr(args, "recording", None) or []
    if bundles:
        from wiretide.cli.record_cmd import check_bundles

        try:
            extra["WIRETIDE_RECORDING_IMPORT"] = os.pathsep.join(map(str, check_bundles(bundles)))
        except ValueError as exc:
            print(f"wiretide up: --recording {exc}", file=sys.stderr)
            return 2
        extra["WIRETIDE_GATEWAY_RETENTION_AGE_S"] = os.environ.get("WIRETIDE_GATEWAY_RETENTION_AGE_S", "0")
    if getattr(args, "ebpf", False):
        extra["WIRETIDE_CAPTURE_EBPF"] = "true"
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
        reporter = (
            asyncio.create_task(
                report_replay(sup.child("capture").grpc, sup.ui_url, stop, sup.transport, sup.call_metadata())
            )
            if pcaps and "capture" in sup.services
            else None
        )
        await sup.watch(stop)
        if reporter is not None:
            await reporter
        print("\nstopping…", file=sys.stderr, flush=True)
        sup.stop_all()
        print("stopped.", file=sys.stderr)
        return 0

    return asyncio.run(main())


def _filter_env(args: argparse.Namespace) -> dict[str, str]:
    """--bpf/--port/--cidr as the capture service's settings, checked here (ValueError names the flag)."""
    from wiretide.capture.bpf import FilterError, combine, compile_bpf, structured_expression

    bpf: str = getattr(args, "bpf", "") or ""
    ports: list[int] = getattr(args, "port", None) or []
    cidrs: list[str] = getattr(args, "cidr", None) or []
    try:
        expression = combine(bpf, structured_expression(ports, cidrs))
        if expression:
            compile_bpf(expression)
    except FilterError as exc:
        raise ValueError(str(exc)) from None
    env: dict[str, str] = {}
    if bpf:
        env["WIRETIDE_CAPTURE_BPF"] = bpf
    if ports:
        env["WIRETIDE_CAPTURE_PORTS"] = ",".join(map(str, ports))
    if cidrs:
        env["WIRETIDE_CAPTURE_CIDRS"] = ",".join(cidrs)
    return env


async def report_replay(
    address: str,
    ui_url: str,
    stop: asyncio.Event,
    transport: Transport = PLAINTEXT,
    metadata: tuple[tuple[str, str], ...] = (),  # the service token: capture answers admins only
) -> None:
    """Say on stderr what the replay waits for (every few seconds) and, once it is done, what it sent."""
    import asyncio
    import contextlib

    import grpc

    from wiretide.common.rpc import channel
    from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc

    loop = asyncio.get_running_loop()
    noted = loop.time() - REPLAY_NOTE_EVERY_S
    async with channel(address, transport, peer="capture") as ch:
        stub = capture_pb2_grpc.CaptureServiceStub(ch)
        while not stop.is_set():
            try:
                status = await stub.GetStatus(
                    capture_pb2.GetStatusRequest(), timeout=REPLAY_NOTE_EVERY_S, metadata=metadata
                )
            except grpc.aio.AioRpcError:
                status = None  # the capture service is restarting: ask again
            if status is not None:
                replay = status.replay
                if replay.done:
                    n = len(replay.files)
                    left_out = f", {replay.filtered} left out by the filter" if replay.filtered else ""
                    log.info(
                        "replayed %d file%s: %d packets%s; the entries are at %s",
                        n, "" if n == 1 else "s", status.packets, left_out, ui_url,
                    )  # fmt: skip
                    if replay.error:
                        log.warning("replay: %s", replay.error)
                    return
                now = loop.time()
                if replay.waiting_for and now - noted >= REPLAY_NOTE_EVERY_S:
                    noted = now
                    log.info("replay waiting for %s…", ", ".join(replay.waiting_for))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=REPLAY_POLL_S)

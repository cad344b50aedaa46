"""`wiretide status`: the health table of a running local instance (from its gateway)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from wiretide.common.paths import default_data_dir


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="print the health of a running Wiretide")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--json", action="store_true", help="print the gateway's health document as JSON")


def run(args: argparse.Namespace) -> int:
    import httpx

    run_file = args.data_dir.expanduser() / "run.json"
    try:
        info = orjson.loads(run_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        print(f"Wiretide is not running (no {run_file})", file=sys.stderr)
        return 1
    try:
        resp = httpx.get(f"{info['ui_url']}/api/health", timeout=5.0)
        doc = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(
            f"Wiretide (pid {info.get('pid')}) does not answer at {info.get('ui_url')}: {exc}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0 if doc.get("status") == "SERVING" else 1
    services = doc.get("services", {})
    pids = {n: s.get("pid") for n, s in info.get("services", {}).items()}
    # Restarts after a crash, counted by the supervisor (run.json): a service that keeps dying shows here.
    restarts = {n: s.get("restarts", 0) for n, s in info.get("services", {}).items()}
    print(f"Wiretide {doc.get('status')} — {info['ui_url']} (supervisor pid {info.get('pid')})")
    print(f"  {'SERVICE':<10} {'STATUS':<12} {'PID':<8} {'RESTARTS':<9} ADDRESS")
    for name, s in services.items():
        print(
            f"  {name:<10} {s.get('status', '?'):<12} {pids.get(name) or '-'!s:<8} "
            f"{restarts.get(name, 0)!s:<9} {s.get('address', '')}"
        )
    nats = doc.get("nats", {})
    state = "CONNECTED" if nats.get("connected") else "DISCONNECTED"
    print(
        f"  {'nats':<10} {state:<12} {pids.get('nats') or '-'!s:<8} {restarts.get('nats', 0)!s:<9} "
        f"{info.get('nats_url')}"
    )
    counted = (doc.get("undissected") or {}).get("by_protocol") or {}
    if counted:  # captured, but no entry stands for these packets (the same line `wiretide analyze` prints)
        print("  counted, not dissected: " + ", ".join(f"{p} {n}" for p, n in counted.items()))
    return 0 if doc.get("status") == "SERVING" else 1

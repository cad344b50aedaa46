"""`wiretide tls`: the decryptability report — per node and process, the TLS library in use, whether
Wiretide reads its plaintext (eBPF hooks) and why not. Asks the running gateway (`--data-dir` as
`wiretide status` finds it, or `--url`), with its authorization.

    wiretide tls              # a table of the processes that use TLS
    wiretide tls --unread     # only what cannot be read, and why
    wiretide tls --json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from wiretide.cli.ask_cmd import gateway_url
from wiretide.common.paths import default_data_dir


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tls", help="which TLS traffic Wiretide can read, per process, and why not")
    p.add_argument("--unread", action="store_true", help="only libraries whose plaintext is not read")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--url", help="gateway URL (default: the local instance of --data-dir)")
    p.add_argument("--token", default="", help="bearer token (or WIRETIDE_GATEWAY_TOKEN)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())


def rows(report: dict[str, Any], unread: bool) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for node in report.get("nodes", []):
        if "error" in node:
            out.append((node.get("node", ""), "", "", "", "", "", f"node unreachable: {node['error']}"))
            continue
        for p in node.get("processes", []):
            for lib in p.get("libraries", []):
                if unread and lib["hooked"]:
                    continue
                read = "yes" if lib["hooked"] else "no"
                out.append(
                    (node["node"], str(p["pid"]), p["comm"], lib["kind"], lib["version"], read, lib["reason"])
                )
    return out


def render(report: dict[str, Any], unread: bool) -> str:
    lines = []
    for node in report.get("nodes", []):
        if "error" not in node:
            s = node["summary"]
            state = "eBPF running" if node["ebpf_running"] else node["ebpf_state"]
            lines.append(
                f"{node['node'] or 'node'}: {s['readable']}/{s['processes']} TLS processes read; {state}"
            )
    table = rows(report, unread)
    header = ("NODE", "PID", "COMM", "LIBRARY", "VERSION", "READ", "WHY NOT")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header) - 1)]
    for r in [header, *table]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import httpx

    base = gateway_url(args.url, args.data_dir)
    if base is None:
        print(
            f"wiretide tls: no running Wiretide found ({args.data_dir / 'run.json'}); pass --url",
            file=sys.stderr,
        )
        return 1
    token = args.token or os.environ.get("WIRETIDE_GATEWAY_TOKEN", "")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.get(f"{base}/api/tls", headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        print(f"wiretide tls: the gateway at {base} did not answer: {exc}", file=sys.stderr)
        return 1
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200:
        print(f"wiretide tls: {resp.status_code} {body.get('error', resp.text[:200])}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(body, args.unread))
    return 0

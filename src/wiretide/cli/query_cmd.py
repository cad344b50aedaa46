"""`wiretide query 'KFL'`: entries from a running gateway, as a table or JSON lines; `--follow` streams."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from wiretide.common.paths import default_data_dir

COLUMNS = (
    ("TIME", 12),
    ("PROTO", 7),
    ("SOURCE", 24),
    ("DESTINATION", 24),
    ("METHOD", 7),
    ("STATUS", 6),
    ("MS", 8),
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("query", help="query entries from a running Wiretide (KFL)")
    p.add_argument("kfl", nargs="?", default="", help="a KFL filter, e.g. 'http && status_code >= 500'")
    p.add_argument("--follow", "-f", action="store_true", help="stream new matching entries until Ctrl-C")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--limit", type=int, default=50, help="entries to print (newest first; default 50)")
    p.add_argument("--url", help="gateway URL (default: the local instance of --data-dir)")
    p.add_argument("--token", default="", help="bearer token (or WIRETIDE_GATEWAY_TOKEN)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())


def _end(end: Any) -> str:
    if not isinstance(end, dict):
        return "?"
    name = end.get("name") or end.get("ip") or "?"
    ns = end.get("namespace")
    port = end.get("port")
    text = f"{ns}/{name}" if ns else str(name)
    return f"{text}:{port}" if port and not end.get("name") else text


def row(e: dict[str, Any]) -> str:
    ts = (
        time.strftime("%H:%M:%S", time.localtime(e["timestamp"] / 1e9))
        + f".{e['timestamp'] // 1_000_000 % 1000:03d}"
    )
    ms = f"{e['elapsed_us'] / 1000:.1f}" if isinstance(e.get("elapsed_us"), int) else "-"
    cells = [
        ts,
        e.get("protocol", ""),
        _end(e.get("src")),
        _end(e.get("dst")),
        e.get("method") or "",
        str(e.get("status") if e.get("status") is not None else ""),
        ms,
    ]
    out = " ".join(str(c)[:w].ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True))
    return f"{out} {e.get('summary') or e.get('path') or ''}"


def header() -> str:
    return " ".join(name.ljust(w) for name, w in COLUMNS) + " SUMMARY"


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    run_file = args.data_dir.expanduser() / "run.json"
    try:
        return str(orjson.loads(run_file.read_bytes())["ui_url"]).rstrip("/")
    except (OSError, KeyError, orjson.JSONDecodeError):
        raise SystemExit(f"wiretide query: no running Wiretide found ({run_file}); pass --url") from None


def emit(e: dict[str, Any], fmt: str) -> None:
    if fmt == "jsonl":
        sys.stdout.write(orjson.dumps(e).decode() + "\n")
    else:
        sys.stdout.write(row(e) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    import os

    import httpx

    url = base_url(args)
    token = args.token or os.environ.get("WIRETIDE_GATEWAY_TOKEN", "")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if args.format == "table":
        print(header())
    if args.follow:
        return follow(url, args.kfl, token, args.format)
    try:
        resp = httpx.get(
            f"{url}/api/entries", params={"q": args.kfl, "limit": args.limit}, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        print(f"wiretide query: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    doc = resp.json()
    if resp.status_code != 200:
        print(f"wiretide query: {doc.get('error')}", file=sys.stderr)
        if "position" in doc:
            print(f"  {args.kfl}\n  {' ' * doc['position']}^ {doc.get('hint', '')}", file=sys.stderr)
        return 2 if resp.status_code == 400 else 1
    for e in doc["entries"]:
        emit(e, args.format)
    c = doc["completeness"]
    drops = sum(c.get("upstream_drops", {}).values())
    more = " (more: use the UI or the API's `next` cursor)" if doc.get("next") else ""
    print(
        f"{len(doc['entries'])} entries, scanned {c['scanned']}, upstream drops {drops}{more}",
        file=sys.stderr,
    )
    return 0


def follow(url: str, kfl: str, token: str, fmt: str) -> int:
    import asyncio
    from urllib.parse import urlencode

    import websockets

    ws_url = (
        url.replace("http://", "ws://").replace("https://", "wss://")
        + "/api/stream?"
        + urlencode({"q": kfl, **({"token": token} if token else {})})
    )

    async def stream() -> int:
        async with websockets.connect(ws_url, max_size=64 * 1024 * 1024) as ws:
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg.get("type") == "entry":
                    emit(msg["entry"], fmt)
                elif msg.get("type") == "error":
                    print(f"wiretide query: {msg.get('error')}", file=sys.stderr)
                    return 2
            print(f"wiretide query: stream closed: {ws.close_reason}", file=sys.stderr)
            return 1

    try:
        return asyncio.run(stream())
    except OSError as exc:
        print(f"wiretide query: cannot reach {url}: {exc}", file=sys.stderr)
        return 1

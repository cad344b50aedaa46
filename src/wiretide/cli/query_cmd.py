"""`wiretide query 'KFL'`: entries from a running gateway, as a table or JSON lines; `--follow` streams.

Rule: stdout carries only entries (and the table header); the query is checked here first, so a bad
one fails with the caret and exit 2 before any request, and KFL v1 spellings it translated are
reported on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.cli.output import TimeColumn, add_time_format, endpoint, kfl_warnings
from wiretide.common.paths import default_data_dir

EXIT_USAGE: Final = 2
COLUMNS = (
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
    add_time_format(p)
    p.add_argument("--limit", type=int, default=50, help="entries to print (newest first; default 50)")
    p.add_argument("--url", help="gateway URL (default: the local instance of --data-dir)")
    p.add_argument("--token", default="", help="bearer token (or WIRETIDE_GATEWAY_TOKEN)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())


# Cells never cut: an address cut short would name another endpoint (an IPv6 address without its port).
UNCUT: Final = frozenset({"SOURCE", "DESTINATION"})


def _end(end: Any) -> str:
    if not isinstance(end, dict):
        return "?"
    name = end.get("name")
    if not name:
        return endpoint(end.get("ip"), end.get("port"))
    ns = end.get("namespace")
    return f"{ns}/{name}" if ns else str(name)


def row(e: dict[str, Any], times: TimeColumn | None = None) -> str:
    times = times or TimeColumn()
    ms = f"{e['elapsed_us'] / 1000:.1f}" if isinstance(e.get("elapsed_us"), int) else "-"
    cells = [
        e.get("protocol", ""),
        _end(e.get("src")),
        _end(e.get("dst")),
        e.get("method") or "",
        str(e.get("status") if e.get("status") is not None else ""),
        ms,
    ]
    out = " ".join(
        (str(c) if name in UNCUT else str(c)[:w]).ljust(w)
        for c, (name, w) in zip(cells, COLUMNS, strict=True)
    )
    when = times(e["timestamp"]) if isinstance(e.get("timestamp"), int) else "-"
    return f"{when:<{times.width}} {out} {e.get('summary') or e.get('path') or ''}"


def header(times: TimeColumn | None = None) -> str:
    width = (times or TimeColumn()).width
    return f"{'TIME':<{width}} " + " ".join(name.ljust(w) for name, w in COLUMNS) + " SUMMARY"


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    run_file = args.data_dir.expanduser() / "run.json"
    try:
        return str(orjson.loads(run_file.read_bytes())["ui_url"]).rstrip("/")
    except (OSError, KeyError, orjson.JSONDecodeError):
        raise SystemExit(f"wiretide query: no running Wiretide found ({run_file}); pass --url") from None


def emit(e: dict[str, Any], fmt: str, times: TimeColumn | None = None) -> None:
    if fmt == "jsonl":
        sys.stdout.write(orjson.dumps(e).decode() + "\n")
    else:
        sys.stdout.write(row(e, times) + "\n")
    sys.stdout.flush()


def check_query(text: str) -> bool:
    """Parse the query here: report KFL v1 translations as warnings; False (reported) when it is bad."""
    if not text:
        return True
    from wiretide.common.kfl import KflError, parse_query

    try:
        query = parse_query(text)
    except KflError as exc:
        print(f"wiretide query: bad query:\n{exc.render(text)}", file=sys.stderr)
        return False
    kfl_warnings("wiretide query", text, query.warnings, sys.stderr)
    return True


def run(args: argparse.Namespace) -> int:
    import os

    import httpx

    if args.limit < 1:
        print("wiretide query: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if not check_query(args.kfl):
        return EXIT_USAGE
    url = base_url(args)
    token = args.token or os.environ.get("WIRETIDE_GATEWAY_TOKEN", "")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    times = TimeColumn(args.time_format)
    if args.follow:
        if args.format == "table":
            print(header(times), flush=True)
        return follow(url, args.kfl, token, args.format, times)
    try:
        resp = httpx.get(
            f"{url}/api/entries", params={"q": args.kfl, "limit": args.limit}, headers=headers, timeout=30
        )
        doc = resp.json()
    except httpx.HTTPError as exc:
        print(f"wiretide query: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    except ValueError:
        print(f"wiretide query: {url} answered HTTP {resp.status_code} without JSON", file=sys.stderr)
        return 1
    if resp.status_code != 200:
        print(f"wiretide query: {doc.get('error')}", file=sys.stderr)
        if "position" in doc:
            print(f"  {args.kfl}\n  {' ' * doc['position']}^ {doc.get('hint', '')}", file=sys.stderr)
        return 2 if resp.status_code == 400 else 1
    if args.format == "table":
        print(header(times))
    for e in doc["entries"]:
        emit(e, args.format, times)
    c = doc["completeness"]
    drops = sum(c.get("upstream_drops", {}).values())
    more = " (more: use the UI or the API's `next` cursor)" if doc.get("next") else ""
    print(
        f"{len(doc['entries'])} entries, scanned {c['scanned']}, upstream drops {drops}{more}",
        file=sys.stderr,
    )
    return 0


def follow(url: str, kfl: str, token: str, fmt: str, times: TimeColumn) -> int:
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
                    emit(msg["entry"], fmt, times)
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

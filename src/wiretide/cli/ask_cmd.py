"""`wiretide ask "why are checkout calls failing?"`: a question to the agent console of a running
Wiretide (found through its data dir's run.json, as `wiretide status` finds it).

Rule: stdout carries the answer only — streamed as the model writes it, then the entries it cites with
their UI links; the tools the model calls are reported on stderr as they run. Exit 0 with an answer,
1 when there is none (the LLM is disabled or failed, the gateway is not running), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from wiretide.common.paths import default_data_dir

EXIT_USAGE: Final = 2
# Between two events of one answer: the gateway bounds the model's turns, this bounds a silent gateway.
READ_TIMEOUT_S: Final = 300.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ask", help="ask the LLM agent console a question about the traffic")
    p.add_argument("question", help="e.g. 'why are checkout calls failing?'")
    p.add_argument("--json", action="store_true", help="print the final answer document as JSON")
    p.add_argument("--url", help="gateway URL (default: the local instance of --data-dir)")
    p.add_argument("--token", default="", help="bearer token (or WIRETIDE_GATEWAY_TOKEN)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())


def gateway_url(url: str | None, data_dir: Path) -> str | None:
    """The gateway's base URL: `url`, or the `ui_url` of the instance running on `data_dir`."""
    if url:
        return url.rstrip("/")
    run_file = data_dir.expanduser() / "run.json"
    try:
        return str(orjson.loads(run_file.read_bytes())["ui_url"]).rstrip("/")
    except (OSError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def events(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs from server-sent-event lines."""
    name, data = "message", list[str]()
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                try:
                    yield name, orjson.loads("\n".join(data))
                except orjson.JSONDecodeError:
                    yield "error", {"error": "the gateway sent an event that is not JSON"}
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def render_done(done: dict[str, Any], base: str, out: TextIO) -> None:
    if done.get("stopped"):
        out.write(f"\n\n({done['stopped']})")
    cited = done.get("citations") or []
    if cited:
        out.write("\n\nEntries cited:\n")
        for c in cited:
            out.write(f"  {c['id']}  {base}{c['url']}\n")
    else:
        out.write("\n")
    unverified = done.get("unverified_citations") or []
    if unverified:
        out.write(f"Cited but not returned by any tool (unverified): {', '.join(unverified)}\n")


def run(args: argparse.Namespace) -> int:
    import httpx

    question = str(args.question).strip()
    if not question:
        print("wiretide ask: the question is empty", file=sys.stderr)
        return EXIT_USAGE
    base = gateway_url(args.url, args.data_dir)
    if base is None:
        print(
            f"wiretide ask: no running Wiretide found ({args.data_dir / 'run.json'}); start one with "
            "`wiretide up` or pass --url",
            file=sys.stderr,
        )
        return 1
    token = args.token or os.environ.get("WIRETIDE_GATEWAY_TOKEN", "")
    headers = {"accept": "text/event-stream"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
    done: dict[str, Any] | None = None
    try:
        with httpx.stream(
            "POST", f"{base}/api/console", json={"question": question}, headers=headers, timeout=timeout
        ) as resp:
            if resp.status_code != 200:
                resp.read()
                try:
                    message = resp.json().get("error", resp.text)
                except ValueError:
                    message = resp.text
                print(f"wiretide ask: {message}", file=sys.stderr)
                return EXIT_USAGE if resp.status_code == 400 else 1
            for event, data in events(resp.iter_lines()):
                if event == "text" and not args.json:
                    sys.stdout.write(str(data.get("text", "")))
                    sys.stdout.flush()
                elif event == "tool":
                    print(f"→ {data.get('name')} {data.get('arguments', '')}", file=sys.stderr)
                elif event == "tool_result" and not data.get("ok"):
                    print(f"  ({data.get('name')} answered an error)", file=sys.stderr)
                elif event == "error":
                    print(f"\nwiretide ask: {data.get('error')}", file=sys.stderr)
                    return 1
                elif event == "done":
                    done = data
    except httpx.HTTPError as exc:
        print(f"wiretide ask: the gateway at {base} does not answer: {exc}", file=sys.stderr)
        return 1
    if done is None:
        print("\nwiretide ask: the answer was cut off (the stream ended without a result)", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(done, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render_done(done, base, sys.stdout)
    return 0

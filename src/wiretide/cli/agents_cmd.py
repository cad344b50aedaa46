"""`wiretide agents put|list|get|rm|enable|disable|logs|test|templates`: network agents from the shell.

Rule: every command but `test` and `templates` talks to the running instance's REST API (found from
`--data-dir` as `wiretide status` finds it, or `--url`), so it goes through the same authorization as
the UI; `test` runs the agent offline over a capture (the replay harness) and exits 1 when any
`test.fail` ran or the agent failed, 2 for a usage error or a syntax error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.common.paths import default_data_dir

EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2
FOLLOW_POLL_S: Final = 0.5


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agents", help="network agents: JavaScript run on the traffic")
    cmds = p.add_subparsers(dest="agents_command", metavar="SUBCOMMAND", required=True)

    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        c = cmds.add_parser(name, help=help_text)
        c.add_argument("--data-dir", type=Path, default=default_data_dir())
        c.add_argument("--url", help="gateway URL (default: the local instance of --data-dir)")
        c.add_argument("--token", default="", help="bearer token (or WIRETIDE_GATEWAY_TOKEN)")
        return c

    put = remote("put", "store an agent (checked first: syntax errors name their line and column)")
    put.add_argument("file", type=Path, help="the agent's JavaScript")
    put.add_argument("--name", help="the agent's name (default: the file's stem)")
    put.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a setting (env.KEY)")
    put.add_argument("--disabled", action="store_true", help="store it disabled")
    remote("list", "list the agents and their state")
    for name, text in (("get", "print an agent's source"), ("rm", "delete an agent")):
        remote(name, text).add_argument("name")
    for name in ("enable", "disable"):
        remote(name, f"{name} an agent").add_argument("name")
    logs = remote("logs", "print an agent's log")
    logs.add_argument("name")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    test = cmds.add_parser("test", help="run an agent offline over a capture; exit 1 on any test.fail")
    test.add_argument("file", type=Path, help="the agent's JavaScript")
    test.add_argument("--pcap", required=True, type=Path, help="a pcap or pcapng file")
    test.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a setting (env.KEY)")
    test.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    cmds.add_parser("templates", help="list the agent templates shipped with Wiretide (and where they are)")


def _env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"wiretide agents: --env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    run_file = args.data_dir.expanduser() / "run.json"
    try:
        return str(orjson.loads(run_file.read_bytes())["ui_url"]).rstrip("/")
    except (OSError, KeyError, orjson.JSONDecodeError):
        raise SystemExit(f"wiretide agents: Wiretide is not running (no {run_file}); pass --url") from None


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        import httpx

        token = args.token or os.environ.get("WIRETIDE_GATEWAY_TOKEN", "")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = _base_url(args)
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def call(self, method: str, path: str, body: Any = None, params: Any = None) -> tuple[int, Any]:
        import httpx

        try:
            resp = self.client.request(
                method, path, content=None if body is None else orjson.dumps(body), params=params
            )
        except httpx.HTTPError as exc:
            raise SystemExit(f"wiretide agents: cannot reach {self.url}: {exc}") from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, {"error": f"HTTP {resp.status_code} without JSON"}


def _fail(doc: Any) -> int:
    print(f"wiretide agents: {doc.get('error') if isinstance(doc, dict) else doc}", file=sys.stderr)
    return EXIT_FAIL


def run(args: argparse.Namespace) -> int:
    cmd = args.agents_command
    if cmd == "test":
        return run_test(args)
    if cmd == "templates":
        return run_templates()
    api = Api(args)
    if cmd == "put":
        try:
            source = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"wiretide agents: cannot read {args.file}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        name = args.name or args.file.stem
        body = {"source": source, "env": _env(args.env), "enabled": not args.disabled}
        status, doc = api.call("PUT", f"/api/agents/{name}", body)
        if status == 400 and doc.get("line"):
            where = f"{args.file}:{doc['line']}:{doc.get('column') or 0}"
            print(f"{where}: {doc.get('error')}", file=sys.stderr)
            lines = source.split("\n")
            if 0 < doc["line"] <= len(lines):
                print(f"  {lines[doc['line'] - 1]}", file=sys.stderr)
                if doc.get("column"):
                    print(f"  {' ' * (doc['column'] - 1)}^", file=sys.stderr)
            return EXIT_USAGE
        if status != 200:
            return _fail(doc)
        print(f"stored {name} (revision {doc.get('revision')}, {doc.get('state')})")
        return 0
    if cmd == "list":
        status, doc = api.call("GET", "/api/agents")
        if status != 200:
            return _fail(doc)
        print(f"{'NAME':<24} {'STATE':<9} {'ITEMS':>9} {'PASS':>6} {'FAIL':>6}  HOOKS / ERROR")
        for a in doc["agents"]:
            tail = a.get("last_error") or ",".join(a.get("hooks", []))
            print(
                f"{a['name']:<24} {a['state']:<9} {a.get('items', 0):>9} "
                f"{a.get('tests_passed', 0):>6} {a.get('tests_failed', 0):>6}  {tail}"
            )
        return 0
    if cmd == "get":
        status, doc = api.call("GET", f"/api/agents/{args.name}")
        if status != 200:
            return _fail(doc)
        sys.stdout.write(doc["source"] if doc["source"].endswith("\n") else doc["source"] + "\n")
        return 0
    if cmd == "rm":
        status, doc = api.call("DELETE", f"/api/agents/{args.name}")
        return 0 if status == 200 else _fail(doc)
    if cmd in ("enable", "disable"):
        status, doc = api.call("POST", f"/api/agents/{args.name}/{cmd}")
        if status != 200:
            return _fail(doc)
        print(f"{args.name}: {doc.get('state')}")
        return 0
    return run_logs(api, args)


def run_logs(api: Api, args: argparse.Namespace) -> int:
    after = 0
    while True:
        status, doc = api.call("GET", f"/api/agents/{args.name}/logs", params={"after": after})
        if status != 200:
            return _fail(doc)
        for line in doc["lines"]:
            out = sys.stderr if line["stream"] == "error" else sys.stdout
            prefix = "" if line["stream"] == "log" else f"[{line['stream']}] "
            print(prefix + line["text"], file=out, flush=True)
            after = line["seq"]
        if not args.follow:
            return 0
        time.sleep(FOLLOW_POLL_S)


def run_templates() -> int:
    from wiretide.agents.templates import TEMPLATES

    for t in TEMPLATES:
        print(f"{t.name:<22} {t.path}\n{'':<22} {t.summary}")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from wiretide.agents.replay import replay
    from wiretide.capture.sources.pcapfile import PcapError, check_readable
    from wiretide.cli.analyze_cmd import _work
    from wiretide.dissector.registry import default_registry

    try:
        source = args.file.read_text(encoding="utf-8")
        check_readable(str(args.pcap))
    except (OSError, UnicodeDecodeError, PcapError) as exc:
        print(f"wiretide agents test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    batches: list[list[dict[str, Any]]] = []
    stats = _work(str(args.pcap), None, default_registry(), "", 64 * 1024, None, batches.append, None)

    def show(line: Any) -> None:
        if args.quiet:
            return
        out = sys.stderr if line.stream == "error" else sys.stdout
        prefix = "" if line.stream == "log" else f"[{line.stream}] "
        print(prefix + line.text, file=out, flush=True)

    result = replay(source, batches, env=_env(args.env), name=args.file.stem, on_line=show)
    if result.error and result.entries == 0 and result.column:
        print(f"{args.file}:{result.line}:{result.column}: {result.error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"{result.entries} entries, {result.passed} passed, {result.failed} failed"
        + (f"; agent failed: {result.error}" if result.error else ""),
        file=sys.stderr,
    )
    if stats.get("error"):
        print(f"wiretide agents test: {stats['error']}", file=sys.stderr)
    return 0 if result.ok else EXIT_FAIL

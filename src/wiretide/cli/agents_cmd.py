"""`wiretide agents put|list|get|rm|enable|disable|logs|draft|improve|test|templates`: network agents
from the shell.

Rule: every command but `test` and `templates` talks to the running instance's REST API (found from
`--data-dir` as `wiretide status` finds it, or `--url`), so it goes through the same authorization as
the UI; `test` runs the agent offline over a capture (the replay harness) and exits 1 when any
`test.fail` ran or the agent failed, 2 for a usage error or a syntax error. `draft` and `improve` ask
the LLM and show what it proposes tried on recent traffic; they store it only once the user says yes
(at the terminal, or `--yes`) — without a terminal and without `--yes` they refuse (exit 2). With
several replicas of the agents service, `list` adds a row per replica under an agent and `logs`
starts each line with the replica that wrote it.
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
# A proposal waits for the model (WIRETIDE_LLM_TIMEOUT_S, 60 s by default) and for its trial run.
PROPOSAL_TIMEOUT_S: Final = 300.0


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
    draft = remote("draft", "the LLM writes an agent from a description; tried on recent traffic")
    draft.add_argument("description", help="what the agent should do, in words")
    draft.add_argument("--save", metavar="NAME", help="store the draft as this new agent (asks first)")
    improve = remote("improve", "the LLM proposes a change to an agent, shown as a diff (asks first)")
    improve.add_argument("name")
    improve.add_argument("instruction", help="what to change, in words")
    for c in (draft, improve):
        c.add_argument("--yes", "-y", action="store_true", help="do not ask: store it (for scripts)")
        c.add_argument("--kfl", default="", help="try it on the recent entries matching this filter")
        c.add_argument("--limit", type=int, default=200, help="on this many recent entries (default 200)")
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
            replicas = a.get("replicas") or []
            if len(replicas) > 1:
                for r in replicas:
                    state = "stale" if r.get("stale") else r.get("state", "")
                    who = f"replica {r.get('replica')}"
                    print(
                        f"  {who:<22} {state:<9} {r.get('items', 0):>9} {r.get('tests_passed', 0):>6} "
                        f"{r.get('tests_failed', 0):>6}  {r.get('last_error', '')}"
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
    if cmd in ("draft", "improve"):
        return run_proposal(api, args)
    if cmd in ("enable", "disable"):
        status, doc = api.call("POST", f"/api/agents/{args.name}/{cmd}")
        if status != 200:
            return _fail(doc)
        print(f"{args.name}: {doc.get('state')}")
        return 0
    return run_logs(api, args)


def run_logs(api: Api, args: argparse.Namespace) -> int:
    after = 0
    several = False  # lines name their replica once more than one has written
    while True:
        status, doc = api.call("GET", f"/api/agents/{args.name}/logs", params={"after": after})
        if status != 200:
            return _fail(doc)
        several = several or len(doc.get("replicas") or ()) > 1
        for line in doc["lines"]:
            out = sys.stderr if line["stream"] == "error" else sys.stdout
            prefix = f"{line.get('replica')}: " if several and line.get("replica") else ""
            prefix += "" if line["stream"] == "log" else f"[{line['stream']}] "
            print(prefix + line["text"], file=out, flush=True)
            after = line["seq"]
        if not args.follow:
            return 0
        time.sleep(FOLLOW_POLL_S)


def _ask(question: str) -> bool | None:
    """The user's yes/no at the terminal; None when there is no terminal to ask at."""
    if not sys.stdin.isatty():
        return None
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _show_try(test: dict[str, Any]) -> None:
    """A proposal's run over recent traffic: its console output, then the counts (as `agents test`)."""
    for line in test["lines"]:
        prefix = "" if line["stream"] == "log" else f"[{line['stream']}] "
        print(prefix + line["text"])
    if test["lines_dropped"]:
        print(f"… {test['lines_dropped']} more lines")
    where = f" (line {test['line']}{', column ' + str(test['column']) if test['column'] else ''})"
    failure = f"; agent failed{where if test['line'] else ''}: {test['error']}" if test["error"] else ""
    print(
        f"{test['entries']} entries, {test['passed']} passed, {test['failed']} failed{failure}",
        file=sys.stderr,
    )


def run_proposal(api: Api, args: argparse.Namespace) -> int:
    """`draft` and `improve`: ask, show, try again on a bad answer when the user wants, store on yes."""
    import httpx

    api.client.timeout = httpx.Timeout(PROPOSAL_TIMEOUT_S)
    improving = args.agents_command == "improve"
    path = f"/api/agents/{args.name}/improve" if improving else "/api/agents/draft"
    body: dict[str, Any] = {"kfl": args.kfl, "limit": args.limit}
    body["instruction" if improving else "description"] = args.instruction if improving else args.description
    while True:
        status, doc = api.call("POST", path, body)
        if status == 422:  # no code in the answer
            print(f"wiretide agents: {doc.get('error')}", file=sys.stderr)
            if doc.get("answer"):
                print(f"the model said: {doc['answer']}", file=sys.stderr)
            if _ask("Ask the model again?"):
                continue
            return EXIT_FAIL
        if status != 200:
            return _fail(doc)
        if improving:
            sys.stdout.write(doc["diff"] or "(no change proposed)\n")
        else:
            sys.stdout.write(doc["source"])
        if doc.get("explanation"):
            print(doc["explanation"], file=sys.stderr)
        test = doc["test"]
        print(f"── tried on the {test['entries']} most recent entries ──")
        _show_try(test)
        if test["error"]:
            if _ask("Ask the model to fix it?"):
                body["previous"] = {"source": doc["source"], "error": test["error"]}
                continue
            return EXIT_FAIL
        break
    if improving:
        if not doc["diff"]:
            return 0
        name, save = (
            args.name,
            {"env": doc["env"], "enabled": doc["enabled"], "base_revision": doc["base_revision"]},
        )
        question = f"Apply this change to {name}?"
    elif args.save:
        name, save = args.save, {"base_revision": 0}
        question = f"Save it as {name}?"
    else:
        print("not saved: pass --save NAME to store it", file=sys.stderr)
        return 0
    answer = True if args.yes else _ask(question)
    if answer is None:
        print("wiretide agents: no terminal to confirm at: pass --yes to store it", file=sys.stderr)
        return EXIT_USAGE
    if not answer:
        print(f"{name}: not applied" if improving else f"{name}: not saved", file=sys.stderr)
        return EXIT_FAIL
    status, stored = api.call("PUT", f"/api/agents/{name}", {"source": doc["source"], **save})
    if status != 200:
        return _fail(stored)
    done = "applied to" if improving else "saved"
    print(f"{done} {name} (revision {stored.get('revision')}, {stored.get('state')})")
    return 0


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

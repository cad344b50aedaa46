"""`wiretide` entry point: one argparse tree; each command lives in its own module.

Rule: a command module's top level stays cheap (argparse only); it imports the services it needs
inside `run`, so `wiretide --help` never pays for them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> module under wiretide.cli that defines add_parser(subparsers) and run(args) -> int
COMMANDS: dict[str, str] = {
    "up": "up",
    "status": "status",
    "capture": "capture_cmd",
    "analyze": "analyze_cmd",
    "query": "query_cmd",
    "demo": "demo_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wiretide", description="Network observability for Kubernetes: every API call, named and traced."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"wiretide.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"wiretide.cli.{module_name}":
                raise
            continue  # a command whose module is not part of this build
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"wiretide.cli.{COMMANDS[args.command]}")
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

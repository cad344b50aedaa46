"""`wiretide` entry point: one argparse tree; each command lives in its own module.

Rule: a command module's top level stays cheap (argparse only); it imports the services it needs
inside `run`, so `wiretide --help` never pays for them. Usage errors go to stderr with exit status 2
(argparse's convention, which the commands' own checks follow). Before any command runs, the
WIRETIDE_* environment is checked against every service's settings, as each service checks it at
start-up, so a mistyped name is caught with a suggestion whichever way Wiretide is started.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Final

# command name -> module under wiretide.cli that defines add_parser(subparsers) and run(args) -> int
COMMANDS: dict[str, str] = {
    "up": "up",
    "status": "status",
    "capture": "capture_cmd",
    "analyze": "analyze_cmd",
    "query": "query_cmd",
    "demo": "demo_cmd",
    "agents": "agents_cmd",
    "record": "record_cmd",
    "ask": "ask_cmd",
    "mcp": "mcp_cmd",
    "tap": "tap_cmd",
    "clean": "clean_cmd",
    "tls": "tls_cmd",
}
# The prefix of Wiretide's settings (wiretide.common.settings.ENV_PREFIX, spelled here so that a run
# without any WIRETIDE_* variable does not import the settings machinery at all).
ENV_PREFIX: Final = "WIRETIDE_"
EXIT_USAGE: Final = 2


def version() -> str:
    try:
        return importlib.metadata.version("wiretide")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wiretide", description="Network observability for Kubernetes: every API call, named and traced."
    )
    parser.add_argument("--version", action="version", version=f"wiretide {version()}")
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


def check_environment(environ: Mapping[str, str]) -> str | None:
    """Why the WIRETIDE_* environment is wrong (an unknown name, with the closest known one), or None."""
    if not any(key.startswith(ENV_PREFIX) for key in environ):
        return None
    from wiretide.cli.supervisor import SupervisorError
    from wiretide.cli.validate import validate_environment

    try:
        # Names only: a value is checked by whatever reads it (`wiretide up` checks them all).
        validate_environment(environ, values=False)
    except SupervisorError as exc:
        return str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.error("a command is required (wiretide --help lists them)")
    problem = check_environment(os.environ)
    if problem is not None:
        print(f"wiretide: {problem}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(f"wiretide.cli.{COMMANDS[args.command]}")
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

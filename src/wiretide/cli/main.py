"""`wiretide` entry point: one argparse tree; each command lives in its own module.

Rule: `wiretide COMMAND …` imports that command's module alone (its parser is the same one the whole
tree holds, so it parses and prints `--help` alike); only `wiretide --help`, `--version` or an
unknown command builds the whole tree. A command module's top level stays cheap (argparse only); it
imports the services it needs inside `run`. Usage errors go to stderr with exit status 2 (argparse's
convention, which the commands' own checks follow). Before any command runs, the WIRETIDE_*
environment is checked against the services' settings, as each service checks it at start-up, so a
mistyped name is caught with a suggestion whichever way Wiretide is started.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

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
EXIT_USAGE: Final = 2


def version() -> str:
    import importlib.metadata  # here: reading the installed metadata costs more than most commands

    try:
        return importlib.metadata.version("wiretide")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


class _VersionAction(argparse._VersionAction):
    """argparse's `--version`, with the version looked up only when the option is given."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        self.version = f"wiretide {version()}"
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    """The whole tree: every command of this build (`wiretide --help` lists them)."""
    return _tree(None)[0]


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for this command line: the tree holding only the named command when the line starts
    with one (the top level has no option that takes a value, so the first word is the command), else
    the whole tree."""
    if argv and argv[0] in COMMANDS:
        parser, built = _tree(argv[0])
        if built:
            return parser
    return build_parser()


def _tree(only: str | None) -> tuple[argparse.ArgumentParser, list[str]]:
    """The argparse tree with every command, or with `only` (importing that module alone); and the
    names of the commands it holds (a command whose module is not part of this build is left out)."""
    parser = argparse.ArgumentParser(
        prog="wiretide", description="Network observability for Kubernetes: every API call, named and traced."
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    built: list[str] = []
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f"wiretide.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"wiretide.cli.{module_name}":
                raise
            continue  # a command whose module is not part of this build
        module.add_parser(sub)
        built.append(name)
    return parser, built


def check_environment(environ: Mapping[str, str]) -> str | None:
    """Why the WIRETIDE_* environment is wrong (an unknown name, with the closest known one), or None.
    Names only: a value is checked by whatever reads it (`wiretide up` checks them all)."""
    from wiretide.cli.validate import problem_with_names

    return problem_with_names(environ)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = parser_for(args_list)
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

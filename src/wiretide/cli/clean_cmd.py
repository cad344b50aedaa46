"""`wiretide clean`: delete every object `wiretide tap` created (labelled as its own), nothing else."""

from __future__ import annotations

import argparse

from wiretide.cli import tap_cmd


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("clean", help="remove everything `wiretide tap` created from the kube context")
    tap_cmd.cluster_args(p)
    p.set_defaults(func=tap_cmd.clean)


def run(args: argparse.Namespace) -> int:
    return tap_cmd.run(args)

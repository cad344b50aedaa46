"""How the CLI writes what a person reads: endpoints, times in tables, KFL problems.

Rule: every command prints an endpoint, a table time and a KFL warning through this module, so
`analyze` and `query` read alike: an IPv6 address with a port is `[addr]:port` (RFC 3986 §3.2.2, as
curl and ss print it), and `--time-format` names mean the same in every table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from wiretide.common.kfl import Problem

# --time-format names (tshark -t in parentheses): time of day (a), date and time of day (ad),
# UTC date and time (ud), seconds since the epoch (e), seconds since the first row (r).
TIME_FORMATS: Final = ("time", "date", "utc", "epoch", "relative")
DEFAULT_TIME_FORMAT: Final = "time"
# Column width of each format: the longest value it prints (relative grows past it only after 11 days).
TIME_WIDTHS: Final[dict[str, int]] = {
    "time": 15,  # 12:34:56.123456
    "date": 32,  # 2024-05-01T12:34:56.123456+02:00
    "utc": 27,  # 2024-05-01T10:34:56.123456Z
    "epoch": 17,  # 1714559696.123456
    "relative": 13,  # 987654.123456
}


def add_time_format(parser: argparse.ArgumentParser) -> None:
    """The `--time-format` option of a command that prints a table."""
    parser.add_argument(
        "--time-format",
        choices=TIME_FORMATS,
        default=DEFAULT_TIME_FORMAT,
        help="TIME column of --format table: time (of day, local; default), date (local date and "
        "time, ISO 8601), utc (ISO 8601 in UTC), epoch (seconds since 1970), relative (seconds "
        "since the first row)",
    )


def endpoint(ip: object, port: object) -> str:
    """`ip:port`, `[ipv6]:port`, or the bare address when there is no port."""
    host = "?" if ip in (None, "") else str(ip)
    if port in (None, "", 0):
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TimeColumn:
    """Formats entry timestamps (ns since the epoch) for one table; `relative` counts from the first."""

    __slots__ = ("first_ns", "fmt", "width")

    def __init__(self, fmt: str = DEFAULT_TIME_FORMAT) -> None:
        if fmt not in TIME_WIDTHS:
            raise ValueError(f"unknown time format {fmt!r}; one of {', '.join(TIME_FORMATS)}")
        self.fmt = fmt
        self.width = TIME_WIDTHS[fmt]
        self.first_ns: int | None = None

    def __call__(self, ts_ns: int) -> str:
        seconds, ns = divmod(ts_ns, 1_000_000_000)
        micros = ns // 1000
        if self.fmt == "epoch":
            return f"{seconds}.{micros:06d}"
        if self.fmt == "relative":
            if self.first_ns is None:
                self.first_ns = ts_ns
            delta = ts_ns - self.first_ns
            sign = "-" if delta < 0 else ""
            rel_s, rel_ns = divmod(abs(delta), 1_000_000_000)
            return f"{sign}{rel_s}.{rel_ns // 1000:06d}"
        if self.fmt == "utc":
            when = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).replace(microsecond=micros)
            return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        when = dt.datetime.fromtimestamp(seconds).astimezone().replace(microsecond=micros)
        if self.fmt == "date":
            return when.isoformat(timespec="microseconds")
        return when.strftime("%H:%M:%S.%f")


def kfl_warnings(prog: str, text: str, warnings: Iterable[Problem], out: IO[str]) -> None:
    """Each spelling the query was translated from (KFL v1, a hint the parser accepted), with a caret
    under it and the spelling to use."""
    for w in warnings:
        out.write(f"{prog}: {w.render(text)}\n")


def reader_gone() -> None:
    """Stdout's reader left (`| head`): point fd 1 at /dev/null so the exit-time flush of what is still
    buffered cannot fail with a second, noisy BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

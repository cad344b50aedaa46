"""`wiretide capture`: run the capture source on its own and write what it sees to a pcapng file,
or with `-w -` to stdout, so `wiretide capture -i eth0 -w - | tshark -r -` works as with tcpdump.

Rule: stdout carries only pcapng (and only with `-w -`), flushed as each batch is captured; messages
and the totals go to stderr. The command prints packets, bytes and kernel drops on exit, per interface
and in total, and exits non-zero when nothing could be captured (with the reason). A reader that goes
away (`| head`, tshark quitting) ends the capture quietly.
"""

from __future__ import annotations

import argparse
import io
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wiretide.cli.output import reader_gone

if TYPE_CHECKING:
    from typing_extensions import Buffer

# The -w name that means standard output (tcpdump -w -).
STDOUT: Final = Path("-")
EXIT_USAGE: Final = 2


class _FlushingStdout(io.BufferedWriter):
    """Standard output for pcapng: each write (one per batch) is pushed down the pipe at once.
    It writes to fd 1 beside `sys.stdout`, which stays empty, and never closes it."""

    def __init__(self) -> None:
        super().__init__(io.FileIO(sys.stdout.fileno(), "wb", closefd=False))

    def write(self, data: Buffer, /) -> int:
        n = super().write(data)
        self.flush()
        return n


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "capture",
        help="capture packets (AF_PACKET ring) or replay a file, optionally writing pcapng",
        description="Capture like tcpdump, with Wiretide's ring, filters and interface selection.",
    )
    p.add_argument(
        "-i",
        "--interface",
        action="append",
        default=[],
        help="interface name or glob (repeatable, comma-separated); 'any'; default: auto",
    )
    p.add_argument("--bpf", default="", help="capture filter in tcpdump syntax, e.g. 'tcp port 80'")
    p.add_argument("--port", action="append", type=int, default=[], help="only these ports (repeatable)")
    p.add_argument("--cidr", action="append", default=[], help="only to/from these networks (repeatable)")
    p.add_argument(
        "-w", "--write", type=Path, help="write the packets to this pcapng file ('-': standard output)"
    )
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    p.add_argument("-c", "--count", type=int, default=0, help="stop after this many packets")
    p.add_argument("--snaplen", type=int, default=262144, help="bytes kept per packet")
    p.add_argument("--ring-mb", type=int, default=16, help="ring size per interface in MiB")
    p.add_argument("--promisc", action="store_true", help="put the interfaces in promiscuous mode")
    p.add_argument("--fanout-group", type=int, default=0, help="share the interfaces with other processes")
    p.add_argument("--fanout-mode", default="hash", help="hash | lb | cpu | rollover | rnd | qm")
    p.add_argument("--include-loopback", action="store_true", help="with auto selection, capture lo too")
    p.add_argument("--pcap", type=Path, help="read this pcap/pcapng file instead of interfaces")
    p.add_argument("--pace", action="store_true", help="with --pcap, replay at the recorded pace")


def run(args: argparse.Namespace) -> int:
    from wiretide.capture.bpf import FilterError, combine, compile_bpf, structured_expression
    from wiretide.capture.interfaces import Selection
    from wiretide.capture.sources.afpacket import RingConfig
    from wiretide.capture.sources.pcapfile import PcapError
    from wiretide.capture.standalone import Options
    from wiretide.capture.standalone import run as run_capture

    if args.duration < 0 or args.count < 0:
        print("wiretide capture: --duration and --count must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background by a shell, which ignores SIGINT for its background jobs: SIGINT
        # is still how a capture is told to stop, write its file out and print its summary (as tcpdump).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    to_stdout = args.write == STDOUT
    if to_stdout and sys.stdout.isatty():
        print(
            "wiretide capture: -w - writes binary pcapng; pipe it (| tshark -r -) or redirect it to a file",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        expression = combine(args.bpf, structured_expression(args.port, args.cidr))
        if expression:
            compile_bpf(expression)
        selection = Selection.parse(",".join(args.interface), args.include_loopback)
        ring = RingConfig(
            ring_bytes=args.ring_mb << 20,
            snaplen=args.snaplen,
            promisc=args.promisc,
            fanout_group=args.fanout_group,
            fanout_mode=args.fanout_mode,
            bpf=expression,
        )
        ring.check()
    except (FilterError, ValueError) as exc:
        print(f"wiretide capture: {exc}", file=sys.stderr)
        return 2
    options = Options(
        selection=selection,
        ring=ring,
        write=_FlushingStdout() if to_stdout else args.write,
        duration_s=args.duration,
        count=args.count,
        pcap=args.pcap,
        pace=args.pace,
        node=socket.gethostname(),
    )
    try:
        result = run_capture(options, on_change=lambda line: print(line, file=sys.stderr, flush=True))
    except PcapError as exc:
        print(f"wiretide capture: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        reader_gone()
        return 0
    except OSError as exc:
        print(f"wiretide capture: {exc}", file=sys.stderr)
        return 1
    if not result.interfaces and args.pcap is None:
        for name, error in result.errors.items():
            print(f"wiretide capture: cannot capture {name or 'anything'}: {error}", file=sys.stderr)
        return 1
    for t in result.interfaces:
        print(
            f"{t.name}: {t.packets} packets, {t.bytes} bytes, {t.kernel_drops} kernel drops"
            + ("" if t.up else " (released)"),
            file=sys.stderr,
        )
    print(
        f"{result.packets} packets, {result.bytes} bytes captured, {result.kernel_drops} dropped by kernel",
        file=sys.stderr,
    )
    return 0

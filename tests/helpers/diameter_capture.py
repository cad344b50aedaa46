"""The live Diameter tests' capture: a client (a function of tests/helpers/diameter.py) runs in the
client's namespace of a veth pair while tcpdump records Diameter's TCP port on the server's veth; the
tests dissect the capture offline and set it beside what the client itself recorded.

The rule this module keeps: a capture the kernel dropped packets of is no record. A session is run
again (up to CAPTURE_ATTEMPTS times) until tcpdump reports no kernel drop; the test fails if none is
whole, rather than comparing entries against a capture with holes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from tests.helpers.netns import NetPair
from tests.helpers.pcaps import REPO_ROOT
from tests.helpers.tcpdump import READY_TIMEOUT_S, Watched, tcpdump_argv

PORT: Final = 3868  # RFC 6733 §2.1
CAPTURE_ATTEMPTS: Final = 3
# tcpdump's buffer: a 200 KB request and its segments arrive faster than tcpdump writes them.
BUFFER_KIB: Final = 8192

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ClientRun:
    """One client session under capture: the client's exit and output, and tcpdump's kernel drops."""

    done: subprocess.CompletedProcess[bytes]
    pcap: Path
    dropped: int

    def record(self, context: str = "") -> dict[str, Any]:
        """What the client printed as its last line (JSON); fails with its stderr (and `context`, such
        as the peer's log) when it did not finish."""
        assert self.done.returncode == 0, self.done.stderr.decode()[-2000:] + context
        doc: dict[str, Any] = json.loads(self.done.stdout.decode().strip().splitlines()[-1])
        return doc


def capture_client(
    pair: NetPair,
    pcap: Path,
    function: str,
    args: tuple[object, ...],
    timeout: float,
    ready_timeout: float = READY_TIMEOUT_S,
    port: int = PORT,
) -> ClientRun:
    """Run `function(*args)` of tests.helpers.diameter (it returns what JSON can hold; `args` are
    literals) in `pair.ns_a`, while tcpdump on `pair.if_b` (in `pair.ns_b`) writes TCP `port` to `pcap`;
    tcpdump listens before the client starts and is stopped after it ends. The peer in `pair.ns_b` must
    already be listening."""
    dump = Watched(
        pair.popen(
            pair.ns_b,
            tcpdump_argv(pair.if_b, pcap, "tcp", "port", str(port), buffer_kib=BUFFER_KIB),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
    )
    try:
        dump.wait_for(b"listening on", ready_timeout)
        code = (
            f"import json; from tests.helpers.diameter import {function}; "
            f"print(json.dumps({function}(*{args!r})))"
        )
        done = pair.run(pair.ns_a, [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                        timeout=timeout, check=False)  # fmt: skip
    finally:
        dump.stop()
    return ClientRun(done, pcap, dump.dropped())


def first_whole_capture(
    directory: Path, stem: str, session: Callable[[Path], tuple[T, int]]
) -> tuple[T, Path]:
    """`session(pcap)` — returning (its result, packets the kernel dropped) — run with `directory`/
    STEM-N.pcap until one capture drops nothing; that session's result and its capture file."""
    dropped = 0
    for attempt in range(CAPTURE_ATTEMPTS):
        pcap = directory / f"{stem}-{attempt}.pcap"
        result, dropped = session(pcap)
        if not dropped:
            return result, pcap
    raise AssertionError(f"every capture lost packets ({dropped} dropped in the last one)")

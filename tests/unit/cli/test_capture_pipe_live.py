"""`wiretide capture -i IF -w - | tshark -r -` on a real interface: packets reach tshark while the capture
is still running (each batch is flushed down the pipe), and the capture ends cleanly on Ctrl-C.
Needs root for a network namespace and AF_PACKET; skipped with the reason otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.netns import NetPair, veth_pair

TSHARK = Path("/usr/bin/tshark")
READY_TIMEOUT_S = 60.0

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace and AF_PACKET"),
    pytest.mark.skipif(not TSHARK.exists(), reason="tshark is not installed"),
]


class Lines:
    """Collects a process stream's lines on a thread, so a test can wait for a condition on them."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, what: str, done: object) -> list[str]:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with self.cond:
            while not done(self.lines):  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; saw {self.lines!r}")
                self.cond.wait(left)
            return list(self.lines)


@pytest.fixture
def pair() -> Iterator[NetPair]:
    with veth_pair("10.79.0") as p:
        yield p


def test_a_live_capture_piped_into_tshark_shows_packets_before_it_ends(pair: NetPair) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    capture = pair.popen(
        pair.ns_a,
        [
            sys.executable,
            "-m",
            "wiretide.cli.main",
            "capture",
            "-i",
            pair.if_a,
            "--bpf",
            "udp port 9999",
            "-w",
            "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert capture.stdout is not None and capture.stderr is not None
    tshark = subprocess.Popen(
        [str(TSHARK), "-r", "-", "-l", "-T", "fields", "-e", "udp.payload"],
        stdin=capture.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    capture.stdout.close()  # tshark holds the reading end now
    try:
        assert tshark.stdout is not None
        logged = Lines(capture.stderr)
        listed = Lines(tshark.stdout)
        logged.wait_for("the capture to listen", lambda lines: any("listening on" in x for x in lines))
        send = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range(3): s.sendto(b'ping%d' % i, ('{pair.ip_b}', 9999))"
        )
        sent = pair.run(pair.ns_a, [sys.executable, "-c", send], capture_output=True)
        assert sent.returncode == 0, sent.stderr
        # The three datagrams are listed by tshark while the capture is still running.
        seen = listed.wait_for("tshark to list the datagrams", lambda lines: len(lines) >= 3)
        assert capture.poll() is None
        assert seen == [f"ping{i}".encode().hex() for i in range(3)]
        capture.send_signal(signal.SIGINT)
        assert capture.wait(timeout=30) == 0
        assert tshark.wait(timeout=30) == 0
        logged.thread.join(timeout=30)
        assert any(line.startswith("3 packets") for line in logged.lines), logged.lines
        assert not any("Traceback" in line for line in logged.lines)
    finally:
        for proc in (capture, tshark):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        capture.stderr.close()
        if tshark.stdout is not None:
            tshark.stdout.close()

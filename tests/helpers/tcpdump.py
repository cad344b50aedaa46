"""Capture scaffolding for the live tests: start tcpdump (or `wiretide capture`), wait until it listens,
stop it, dissect the file it wrote.

The rule this module keeps: a capturing child's stderr is read by a thread, so waiting for its
"listening on" line never blocks and its closing summary (packets dropped by the kernel) is kept.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry

# How long a capture may take to open its socket; generous for a loaded CI machine.
READY_TIMEOUT_S = 15.0
# How long a capture may take to flush and exit once interrupted before it is killed.
STOP_TIMEOUT_S = 20.0


def tcpdump_argv(interface: str, pcap: Path, *bpf: str, buffer_kib: int | None = None) -> list[str]:
    """tcpdump on `interface` writing every packet to `pcap` as it comes (-U, --immediate-mode)."""
    buffer = ["-B", str(buffer_kib)] if buffer_kib else []
    return ["tcpdump", "-i", interface, "--immediate-mode", *buffer, "-U", "-n", "-w", str(pcap), *bpf]


class Watched:
    """A child process whose stderr is collected by a thread, so waiting for a line never blocks."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, needle: bytes, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            if self.proc.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.02)
        self.proc.kill()
        self.wait()
        raise AssertionError(f"never saw {needle!r}: {b''.join(self.lines)!r}")

    def dropped(self) -> int:
        """Packets tcpdump says the kernel dropped (its closing summary)."""
        for line in self.lines:
            if b"dropped by kernel" in line:
                return int(line.split()[0])
        return 0

    def stop(self) -> str:
        """Interrupt (SIGINT: the capture flushes its file and prints its summary); its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> str:
        """Wait for the child to end (killed past `timeout`); its stderr."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return b"".join(self.lines).decode()


def watch(argv: list[str]) -> Watched:
    """Start `argv` on this host, stderr watched, stdout discarded."""
    return Watched(subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL))


@contextmanager
def loopback_capture(pcap: Path, port: int, timeout: float = READY_TIMEOUT_S) -> Iterator[Watched]:
    """tcpdump on this host's `lo` for one TCP port, listening when the block starts, stopped after."""
    dump = watch(tcpdump_argv("lo", pcap, "tcp", "port", str(port)))
    try:
        dump.wait_for(b"listening on", timeout)
        yield dump
    finally:
        dump.stop()


def dissect(pcap: Path) -> list[dict[str, Any]]:
    """Every entry the default dissector pipeline makes of a capture file, flows finished at its end."""
    pipe = Pipeline(default_registry())
    docs: list[dict[str, Any]] = []
    for cols in read_batches(str(pcap), 4096):
        docs.extend(pipe.feed(cols))
    docs.extend(pipe.finish())
    return docs

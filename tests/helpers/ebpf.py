"""The eBPF TLS tests' shared parts: the source polled on a thread into a dissector's plaintext flows,
a throwaway server certificate, "is this port listening" in a namespace, and the pytest fixtures built
from them. A module asks for the fixtures it uses (`source = source_fixture()`), so each module keeps
its own module-scoped source and its own addresses.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import NetPair, veth_pair
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import Chunk, EbpfSource
from wiretide.capture.sources.ebpf.source import SocketOwner
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.plaintext import PlaintextFlows
from wiretide.dissector.registry import default_registry

Cert = tuple[Path, Path]  # (key, certificate), PEM files


class Harness:
    """The eBPF source feeding a dissector pipeline's plaintext flows, polled by the test.

    The perf buffer is read all the time on a thread, as the capture service does (other processes'
    TLS traffic on a busy machine would fill it between the test's looks). `chunks` keeps every chunk
    `poll` has fed; with `record_pids`, `pids` is every process that reported a chunk; with `sockets`,
    the source's socket owners are collected too, for `take`.
    """

    def __init__(self, source: EbpfSource, *, record_pids: bool = False, sockets: bool = False) -> None:
        self.source = source
        self.flows = PlaintextFlows(Pipeline(default_registry(), node="test"))
        self.entries: list[dict[str, Any]] = []
        self.chunks: list[Chunk] = []
        self.pids: set[int] = set()
        self._record_pids = record_pids
        self._sockets = sockets
        self._new: list[Chunk] = []
        self._owners: list[SocketOwner] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            got = self.source.poll(20)
            owners = self.source.take_sockets() if self._sockets else []
            with self._lock:
                self._new += got
                self._owners += owners
                if self._record_pids:
                    self.pids.update(c.pid for c in got)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> tuple[list[Chunk], list[SocketOwner]]:
        """The chunks and socket owners read since the last look, raw (not fed to the flows)."""
        with self._lock:
            chunks, self._new = self._new, []
            owners, self._owners = self._owners, []
        return chunks, owners

    def poll(self) -> list[dict[str, Any]]:
        with self._lock:
            chunks, self._new = self._new, []
        self.chunks += chunks
        self.entries += self.flows.feed(c.to_proto() for c in chunks)
        return self.entries

    def http(self, path: str) -> list[dict[str, Any]]:
        return [e for e in self.poll() if e["protocol"] == "http" and e["path"] == path]

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [e for e in self.poll() if e["protocol"] in ("http", "http2") and e["path"] == path]


def make_cert(directory: Path) -> Cert:
    """A self-signed certificate for CN=server, valid one day: (key, certificate)."""
    key, crt = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
         "-days", "1", "-subj", "/CN=server"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, crt


def listening(net: NetPair, port: int) -> bool:
    """Whether a socket in the server's namespace (`ns_b`) listens on `port` (TCP, v4 or v6)."""
    text = net.run(net.ns_b, ["cat", "/proc/net/tcp", "/proc/net/tcp6"], capture_output=True).stdout.decode()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[1].endswith(f":{port:04X}") and cols[3] == "0A":  # 0A: TCP_LISTEN
            return True
    return False


def s_server(net: NetPair, cert: Cert, port: int) -> subprocess.Popen[bytes]:
    """`openssl s_server -www` in the server's namespace, once it listens."""
    key, crt = cert
    argv = ["openssl", "s_server", "-www", "-accept", str(port), "-cert", str(crt), "-key", str(key)]
    server = net.popen(net.ns_b, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("s_server listening", lambda: listening(net, port))
    return server


def source_fixture() -> Callable[[], Iterator[EbpfSource]]:
    """A module-scoped `source` fixture: one started EbpfSource for the module's tests."""

    @pytest.fixture(scope="module")
    def source() -> Iterator[EbpfSource]:
        s = EbpfSource()
        s.start()
        try:
            yield s
        finally:
            s.close()

    return source


def harness_fixture(
    *, record_pids: bool = False, sockets: bool = False
) -> Callable[[EbpfSource], Iterator[Harness]]:
    """A per-test `harness` fixture over the module's `source`."""

    @pytest.fixture
    def harness(source: EbpfSource) -> Iterator[Harness]:
        source.poll(0)  # whatever other processes did before this test
        if sockets:
            source.take_sockets()
        h = Harness(source, record_pids=record_pids, sockets=sockets)
        try:
            yield h
        finally:
            h.close()

    return harness


def cert_fixture() -> Callable[[pytest.TempPathFactory], Cert]:
    """A module-scoped `cert` fixture: `make_cert` in a fresh directory."""

    @pytest.fixture(scope="module")
    def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
        return make_cert(tmp_path_factory.mktemp("tls"))

    return cert


def net_fixture(prefix: str) -> Callable[[], Iterator[NetPair]]:
    """A per-test `net` fixture: a veth pair across two namespaces on `prefix`.0/24."""

    @pytest.fixture
    def net() -> Iterator[NetPair]:
        with veth_pair(prefix) as pair:
            yield pair

    return net

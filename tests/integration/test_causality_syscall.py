"""Kernel-observed causality on real traffic: a chain of three thread-per-request Python servers
(tests/helpers/chain.py: client → s0 → s1 → s2, one network namespace per "pod" or all on one
loopback address), driven at 10 concurrent requests while the eBPF causality probe runs; the
capture dissected by the dissector's pipeline, the probe's edges carried as the capture service
publishes them (a CausalEdgeBatch) into the tracer's `KernelCausality`, and the tracer's parent links
scored against the truth each server writes. No traceparent is sent: the only header the servers
carry is their own truth id, which the tracer does not read.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.chain import Run, drive_chain, entries_of, link_scores
from tests.helpers.netns import unique
from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for
from wiretide.capture.edges import edge_batch
from wiretide.capture.sources.ebpf import probe as ebpf_probe
from wiretide.capture.sources.ebpf.causality import CausalEdge, CausalityProbe
from wiretide.common.bus.subjects import causality_subject
from wiretide.tracer.assemble import AssemblyConfig
from wiretide.tracer.causality import KernelCausality
from wiretide.tracer.engine import Engine
from wiretide.tracer.spans import KIND_CLIENT, LINK_SYSCALL

_why = ebpf_probe()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"eBPF causality needs root and BCC: {_why}")

NODE = "causality-test"


class Collected:
    """The probe polled on a thread while the test drives traffic."""

    def __init__(self, probe: CausalityProbe) -> None:
        self.probe = probe
        self.edges: list[CausalEdge] = []
        self.polls = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):  # as the capture's feed reads: all that came meanwhile
            got = self.probe.poll(0)
            with self._lock:
                self.edges.extend(got)
                self.polls += 1

    def snapshot(self) -> list[CausalEdge]:
        with self._lock:
            return list(self.edges)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def collected() -> Iterator[Collected]:
    probe = CausalityProbe()
    probe.start()
    c = Collected(probe)
    try:
        yield c
    finally:
        c.stop()
        probe.close()


def edges_of(run: Run, collected: Collected) -> list[CausalEdge]:
    """The edges of the run's services (other processes on this machine make edges too), once each
    of the run's calls has had its edge read."""
    services = set(run.names)

    def mine() -> list[CausalEdge]:
        return [
            e
            for e in collected.snapshot()
            if (e.outbound.server_ip, e.outbound.server_port) in services
            and (e.inbound.server_ip, e.inbound.server_port) in services
        ]

    wait_for("every call's edge read", lambda: len(mine()) >= len(run.truth), timeout=10)
    return mine()


def _clean_up(procs: list[subprocess.Popen[bytes]], ns: str) -> None:
    """The test's servers killed and reaped, then its namespace removed."""
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.parametrize(
    ("shared", "keepalive"),
    [(False, False), (False, True), (True, False)],
    ids=["pods-fresh-connections", "pods-keepalive", "shared-loopback"],
)
def test_three_thread_per_request_servers_at_10_concurrent_requests_are_linked_exactly_by_syscall(
    tmp_path: Path, collected: Collected, shared: bool, keepalive: bool
) -> None:
    run = drive_chain(tmp_path, services=3, shared=shared, keepalive=keepalive, requests=60, concurrency=10)
    assert run.dropped == 0
    assert len(run.truth) == 120  # s0 → s1 and s1 → s2 for each of the 60 requests
    edges = edges_of(run, collected)
    assert len(edges) == len(run.truth)  # one edge per call, however many writes it took

    # As the capture service publishes them, as the tracer service reads them.
    causality = KernelCausality()
    assert causality.add_batch(edge_batch(NODE, 1, edges).SerializeToString(), causality_subject(NODE)) == 120
    # Named as an inventory names them: by address where one service owns it; on a shared address
    # only the listening ends (ip:port) are told apart, and the callers stay anonymous.
    entries = entries_of(run, named=not shared)
    engine = Engine(AssemblyConfig(), causality=causality)
    spans = engine.ingest(entries) + engine.flush()

    # The links made through the syscall source: exactly the truth.
    syscall = [s for s in spans if s.kind != KIND_CLIENT or s.link == LINK_SYSCALL]
    assert link_scores(run, entries, syscall) == (1.0, 1.0, 1.0)
    if not shared:
        # All links: the driver's calls (its thread serves no request: no edge) are roots.
        assert link_scores(run, entries, spans) == (1.0, 1.0, 1.0)
    # On one shared address the driver is an anonymous caller on the servers' address, and timing
    # (the fallback for calls without an edge) may hang its calls under a server's request.
    assert causality.stats["linked"] == 120
    assert causality.stats["inbound_unseen"] == 0
    assert causality.held[0] == 0  # every edge found its call


def test_without_edges_the_same_chain_is_linked_by_timing(tmp_path: Path, collected: Collected) -> None:
    """The fallback: an engine that has no edges links the same traffic by timing, never as syscall."""
    run = drive_chain(tmp_path, services=3, requests=20, concurrency=10)
    entries = entries_of(run, named=True)
    engine = Engine(AssemblyConfig(), causality=KernelCausality())
    spans = engine.ingest(entries) + engine.flush()
    linked = [s for s in spans if s.kind == KIND_CLIENT and s.parent is not None]
    assert linked and LINK_SYSCALL not in {s.link for s in linked}
    assert all(s.confidence < 1.0 for s in linked)


DYING_SERVER = textwrap.dedent(
    """
    import os, socket, sys, threading
    host, port, peer_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ls = socket.create_server((host, port))
    print("ready", flush=True)
    conn, _ = ls.accept()

    def serve():
        conn.recv(4096)  # the request
        out = socket.create_connection((host, peer_port))
        out.sendall(b"GET /next HTTP/1.0\\r\\n\\r\\n")  # the call, then gone before any answer
        os._exit(3)

    t = threading.Thread(target=serve)
    t.start()
    t.join()
    """
)

PEER = textwrap.dedent(
    """
    import socket, sys
    s = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.recv(4096)
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    try:
        c.recv(10)
    except OSError:
        pass  # the server died: reset or closed, either is fine here
    """
)


def test_a_process_exiting_mid_call_leaves_its_edge_and_no_thread_state(collected: Collected) -> None:
    """A server that exits between its outbound call and its answer: the edge was emitted at the
    write (named in the kernel, not from /proc, so its gone sockets are still named), and the kernel
    forgets its threads; the next process on the same ports is related as well."""
    ns = unique("cz")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", *argv], stdout=subprocess.PIPE
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        start([PEER, "127.0.0.1", "9102"])
        seen: set[int] = set()
        for _ in range(2):
            dying = start([DYING_SERVER, "127.0.0.1", "9101", "9102"])
            client = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, "127.0.0.1", "9101"],
                capture_output=True,
                timeout=30,
            )
            assert client.returncode == 0
            assert dying.wait(timeout=30) == 3
            # `ip netns exec` execs the interpreter in place, so the server's pid is the Popen's.
            pid = dying.pid

            def edge(pid: int = pid) -> CausalEdge | None:
                for e in collected.snapshot():
                    if e.pid == pid and e.outbound.server_port == 9102 and e.inbound.server_port == 9101:
                        return e
                return None

            found = wait_for("the dying server's edge", edge, timeout=10)
            assert found is not None and found.outbound.client_ip == "127.0.0.1"
            assert found.outbound_ns >= found.inbound_ns
            assert collected.probe.threads_of(pid) == 0  # the kernel's per-thread state is gone
            seen.add(pid)
        assert len(seen) == 2
    finally:
        _clean_up(procs, ns)
    assert collected.probe.stats.drops.get("malformed", 0) == 0


EVENT_LOOP_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    host, port, peer_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    both_read = asyncio.Event()
    read = []

    async def handle(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        read.append(1)
        if len(read) == 2:
            both_read.set()
        await both_read.wait()  # both requests in before either call: the loop interleaves them
        r, w = await asyncio.open_connection(host, peer_port)
        w.write(b"GET /next HTTP/1.0\\r\\n\\r\\n")
        await w.drain()
        w.close()
        writer.write(b"HTTP/1.0 200 OK\\r\\ncontent-length: 0\\r\\n\\r\\n")
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, host, port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
    """
)

TWO_CLIENTS = textwrap.dedent(
    """
    import socket, sys, threading

    def one():
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        c.recv(100)

    ts = [threading.Thread(target=one) for _ in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    """
)


def test_an_event_loop_serving_two_requests_at_once_yields_no_edge_but_a_count(collected: Collected) -> None:
    """One thread reads a second request before answering the first: its writes cannot be placed, so
    the process gets no edges (the tracer falls back to timing for it), and the kernel counts why."""
    ns = unique("cz")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", *argv]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    before = collected.probe.kernel_counts()
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        start([PEER, "127.0.0.1", "9102"])
        loop = start([EVENT_LOOP_SERVER, "127.0.0.1", "9101", "9102"])
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", TWO_CLIENTS, "127.0.0.1", "9101"],
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        after = wait_for(
            "a call counted as not placed",
            collected.probe.kernel_counts,
            lambda c: c["muxed_calls"] > before["muxed_calls"],
            timeout=10,
        )
        assert after["muxed_processes"] > before["muxed_processes"]
        polls = collected.polls
        wait_for("the buffer read since", lambda: collected.polls > polls + 1)
        # The other call came once the loop had answered the request it last read: still no edge.
        assert not [e for e in collected.snapshot() if e.pid == loop.pid]
    finally:
        _clean_up(procs, ns)


def test_wiretide_up_with_ebpf_carries_edges_from_the_capture_to_the_tracer(tmp_path: Path) -> None:
    """The services' own wiring: the capture's causality feed publishes on the bus, and the tracer
    turns kernel causality on at the first batch (each says so in its log)."""
    data = tmp_path / "data"
    stack = Stack(data, None, "--ebpf")
    ns = unique("cz")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        stack.wait_up()
        logs = data / "logs"
        wait_for(
            "the capture's causality source running",
            lambda: "eBPF causality source running" in (logs / "capture.log").read_text(),
            timeout=60,
        )
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for argv in ([PEER, "127.0.0.1", "9102"], [DYING_SERVER, "127.0.0.1", "9101", "9102"]):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", *argv], stdout=subprocess.PIPE
            )
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, "127.0.0.1", "9101"],
            check=True,
            timeout=30,
        )
        wait_for(
            "the tracer's kernel causality on",
            lambda: "kernel causality on" in (logs / "tracer.log").read_text(),
            timeout=30,
        )
    finally:
        _clean_up(procs, ns)
        stack.stop()

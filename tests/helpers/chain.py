"""A chain of real HTTP services (`client → s0 → s1 → … → sN-1`), each a thread-per-request server in
its own process, placed either one "pod" per network namespace (each its own address, on a bridge, as
a CNI wires pods) or all on one shared address inside one namespace (services on a host, host-network
pods); the traffic captured by tcpdump inside the test's own namespaces and dissected by the
dissector's pipeline. Ground truth is written by the services: each request carries an `x-wt-call`
id and each service appends "outbound inbound" for every call it makes.

Rule: everything this module creates (namespaces, links, processes, files) is removed on exit; the
tracer never sees the ground truth; timing is the services' own (random think times, no sleeps in the
test's logic).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.helpers.netns import ip, unique
from tests.helpers.tcpdump import Watched, tcpdump_argv
from tests.helpers.wait import wait_for

CALL: Final = "x-wt-call"
PORT: Final = 8080  # every service listens here when it has an address of its own
SHARED_IP: Final = "127.0.0.1"
SUBNET: Final = "10.231"  # 10.231.<run>.x inside the test's namespaces only
# Each service's own work, in ms: before its call, after it, and the leaf's.
THINK_MS: Final = (0.2, 2.0)
LEAF_MS: Final = (1.0, 6.0)

SERVER_CODE: Final = r"""
import http.client, http.server, random, socketserver, sys, threading, time
name, host, port, nxt_host, nxt_port, keepalive, truth_path, seed = sys.argv[1:9]
port, nxt_port, keepalive = int(port), int(nxt_port), keepalive == "1"
think, leaf = (float(sys.argv[9]), float(sys.argv[10])), (float(sys.argv[11]), float(sys.argv[12]))
rnd = random.Random(int(seed))
lock = threading.Lock()
truth = open(truth_path, "a", buffering=1)
local = threading.local()
counter = [0]

def next_id():
    with lock:
        counter[0] += 1
        return f"{name}-{counter[0]}-{rnd.getrandbits(32):08x}"

def outbound():
    if keepalive:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(nxt_host, nxt_port, timeout=30,
                                                           source_address=(host, 0))
        return conn
    return http.client.HTTPConnection(nxt_host, nxt_port, timeout=30, source_address=(host, 0))

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1" if keepalive else "HTTP/1.0"

    def do_GET(self):
        inbound = self.headers.get("x-wt-call", "")
        time.sleep(random.uniform(*think) / 1000)
        if nxt_port:
            call = next_id()
            headers = {"x-wt-call": call, "host": f"{nxt_host}:{nxt_port}"}
            tp = self.headers.get("traceparent")
            if tp:
                headers["traceparent"] = f"00-{tp.split('-')[1]}-{random.getrandbits(64) or 1:016x}-01"
            with lock:
                truth.write(f"{call} {inbound}\n")
            conn = outbound()
            conn.request("GET", f"/{name}/next/{random.randint(1, 99)}", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if not keepalive:
                conn.close()
            time.sleep(random.uniform(*think) / 1000)
        else:
            time.sleep(random.uniform(*leaf) / 1000)
        body = f"{name} ok".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        if not keepalive:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

Server((host, port), Handler).serve_forever()
"""

DRIVER_CODE: Final = r"""
import http.client, random, sys, threading
host, port, requests, concurrency, keepalive, propagate, seed, out = sys.argv[1:9]
port, requests, concurrency = int(port), int(requests), int(concurrency)
keepalive, propagate = keepalive == "1", propagate == "1"
rnd = random.Random(int(seed))
ids = iter(range(requests))
lock = threading.Lock()
failures = []
traces = []

def worker():
    conn = None
    while True:
        with lock:
            i = next(ids, None)
            trace = f"{rnd.getrandbits(128) or 1:032x}"
            span = f"{rnd.getrandbits(64) or 1:016x}"
        if i is None:
            break
        headers = {"x-wt-call": f"client-{i}"}
        if propagate:
            headers["traceparent"] = f"00-{trace}-{span}-01"
            with lock:
                traces.append(trace)
        if conn is None or not keepalive:
            conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request("GET", f"/checkout/{i}", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(resp.status)
        except OSError as exc:
            failures.append(str(exc))
            conn = None
        if not keepalive and conn is not None:
            conn.close()

threads = [threading.Thread(target=worker) for _ in range(concurrency)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(out, "w") as fh:
    fh.write("\n".join(traces))
sys.exit(1 if failures else 0)
"""


@dataclass
class Run:
    """What one driven chain produced: the capture, the truth, the app's trace ids."""

    pcap: Path
    truth: dict[str, str] = field(default_factory=dict)  # outbound call id -> inbound call id
    app_traces: set[str] = field(default_factory=set)
    names: dict[tuple[str, int], str] = field(default_factory=dict)  # (ip, listening port) -> service
    dropped: int = 0


@dataclass
class Topology:
    """Where the services run: `addresses[i]` and `ports[i]` of service i; `client` the driver's."""

    services: list[str]
    addresses: list[str]
    ports: list[int]
    client_ip: str
    namespaces: list[str]  # the namespace of each service (all the same when shared)
    client_ns: str
    capture_ns: str
    capture_if: str


def _ns_exec(ns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)


def _add_ns(ns: str, created: list[str]) -> None:
    ip("netns", "add", ns)
    created.append(ns)
    ip("-n", ns, "link", "set", "lo", "up")
    subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def topology(n: int, shared: bool) -> Iterator[Topology]:
    """`n` services: one namespace each on a bridge (`shared=False`), or all in one namespace on
    its loopback address (`shared=True`, the client too). Removed on exit."""
    tag = unique("c")
    services = [f"s{i}" for i in range(n)]
    created: list[str] = []
    try:
        if shared:
            ns = f"{tag}S"
            _add_ns(ns, created)
            ports = [PORT + i for i in range(n)]
            yield Topology(services, [SHARED_IP] * n, ports, SHARED_IP, [ns] * n, ns, ns, "lo")
            return
        run = os.getpid() % 200 + 20
        hub = f"{tag}H"
        _add_ns(hub, created)
        bridge = f"{tag}br"
        ip("-n", hub, "link", "add", bridge, "type", "bridge")
        ip("-n", hub, "link", "set", bridge, "up")
        names = [*services, "client"]
        addresses = [f"{SUBNET}.{run}.{i + 10}" for i in range(len(names))]
        spaces = []
        for i in range(len(names)):
            ns = f"{tag}{i}"
            _add_ns(ns, created)
            inner, outer = f"{tag}i{i}", f"{tag}o{i}"
            ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", hub)
            ip("-n", hub, "link", "set", outer, "master", bridge)
            ip("-n", hub, "link", "set", outer, "up")
            ip("-n", ns, "addr", "add", f"{addresses[i]}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
            spaces.append(ns)
        yield Topology(services, addresses[:n], [PORT] * n, addresses[n], spaces[:n], spaces[n], hub, bridge)
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _wait_listening(topo: Topology, i: int, proc: subprocess.Popen[bytes]) -> None:
    def probe() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"service {topo.services[i]} exited with {proc.returncode}")
        out = subprocess.run(
            ["ip", "netns", "exec", topo.namespaces[i], "ss", "-Hltn", f"sport = :{topo.ports[i]}"],
            capture_output=True,
            text=True,
        ).stdout
        return bool(out.strip())

    wait_for(f"{topo.services[i]} listening", probe, timeout=30)


def drive_chain(
    workdir: Path,
    *,
    services: int = 4,
    shared: bool = False,
    keepalive: bool = False,
    propagate: bool = False,
    requests: int = 100,
    concurrency: int = 1,
    seed: int = 1,
) -> Run:
    """Start the chain, send `requests` root requests `concurrency` at a time while tcpdump captures
    the traffic, stop everything; the capture and the truth."""
    tag = f"{'shared' if shared else 'pods'}-{'ka' if keepalive else 'fresh'}-{int(propagate)}-c{concurrency}"
    pcap = workdir / f"chain-{tag}-{seed}.pcap"
    run = Run(pcap)
    truth_dir = Path(tempfile.mkdtemp(prefix="wt-chain-", dir=workdir))
    with topology(services, shared) as topo:
        for i, name in enumerate(topo.services):
            run.names[(topo.addresses[i], topo.ports[i])] = name
        procs: list[subprocess.Popen[bytes]] = []
        dump: Watched | None = None
        try:
            for i in reversed(range(services)):
                nxt = (topo.addresses[i + 1], topo.ports[i + 1]) if i + 1 < services else ("", 0)
                argv = [
                    sys.executable, "-c", SERVER_CODE, topo.services[i], topo.addresses[i],
                    str(topo.ports[i]), nxt[0], str(nxt[1]), "1" if keepalive else "0",
                    str(truth_dir / topo.services[i]),
                    str(seed * 100 + i), *map(str, THINK_MS), *map(str, LEAF_MS),
                ]  # fmt: skip
                procs.append(_ns_exec(topo.namespaces[i], argv, stderr=subprocess.DEVNULL))
                _wait_listening(topo, i, procs[-1])
            argv = tcpdump_argv(topo.capture_if, pcap, "tcp", buffer_kib=65536)
            dump = Watched(
                _ns_exec(
                    topo.capture_ns, [*argv, "-Z", "root"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
                )
            )
            dump.wait_for(b"listening on")
            traces = truth_dir / "app-traces"
            driver = [
                sys.executable, "-c", DRIVER_CODE, topo.addresses[0], str(topo.ports[0]),
                str(requests), str(concurrency), "1" if keepalive else "0", "1" if propagate else "0",
                str(seed), str(traces),
            ]  # fmt: skip
            done = subprocess.run(
                ["ip", "netns", "exec", topo.client_ns, *driver], capture_output=True, timeout=600
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            run.app_traces = {t for t in traces.read_text().split() if t}
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=20)
            if dump is not None:
                dump.stop()
                run.dropped = dump.dropped()
    for path in truth_dir.iterdir():
        if path.name != "app-traces":
            for line in path.read_text().splitlines():
                outbound, _, inbound = line.partition(" ")
                run.truth[outbound] = inbound
        path.unlink()
    truth_dir.rmdir()
    return run


def call_of(entry: dict[str, Any]) -> str:
    headers = (entry.get("request") or {}).get("headers") or {}
    value = headers.get(CALL, "")
    return str(value[0] if isinstance(value, list) else value)


def entries_of(run: Run, named: bool) -> list[dict[str, Any]]:
    """The HTTP entries of the run's capture, in the order their calls ended; with `named`, each
    listening end named as an inventory would name it (by address and port), calling ends by address
    where one service alone owns it."""
    from wiretide.capture.sources.pcapfile import read_batches
    from wiretide.dissector.pipeline import Pipeline
    from wiretide.dissector.redact import NO_REDACTION
    from wiretide.dissector.registry import default_registry

    # Without redaction: its card-number rule can take a run of digits inside a traceparent's hex ids
    # for a card and rewrite it, which would lose that call's context.
    pipe = Pipeline(default_registry(), redactor=NO_REDACTION)
    docs: list[dict[str, Any]] = []
    for cols in read_batches(str(run.pcap), 4096):
        docs.extend(pipe.feed(cols))
    docs.extend(pipe.finish())
    entries = [e for e in docs if e.get("protocol") == "http"]
    if named:
        by_ip: dict[str, set[str]] = {}
        for (addr, _), name in run.names.items():
            by_ip.setdefault(addr, set()).add(name)
        for e in entries:
            dst_name = run.names.get((e["dst"]["ip"], e["dst"]["port"]))
            if dst_name:
                e["dst"].update(name=dst_name, namespace="chain", resolution="ip-and-port")
            owners = by_ip.get(e["src"]["ip"], set())
            if len(owners) == 1:
                e["src"].update(name=next(iter(owners)), namespace="chain", resolution="ip")
    entries.sort(key=lambda e: e["timestamp"] + (e.get("elapsed_us") or 0) * 1000)
    return entries


def link_scores(run: Run, entries: list[dict[str, Any]], spans: list[Any]) -> tuple[float, float, float]:
    """Precision, recall and mean confidence of the outbound-call → inbound-request links among
    `spans` (the tracer's `Span`s): a client span's parent server span, both named by their entries."""
    call = {e["id"]: call_of(e) for e in entries}
    by_id = {s.span_id: s for s in spans}
    predicted: dict[str, tuple[str, float]] = {}
    for s in spans:
        parent = by_id.get(s.parent_span_id)
        if s.kind == 3 and parent is not None and parent.kind == 2 and parent.entry_id != s.entry_id:
            predicted[call[s.entry_id]] = (call[parent.entry_id], s.confidence)
    correct = sum(1 for child, (parent, _) in predicted.items() if run.truth.get(child) == parent)
    precision = correct / len(predicted) if predicted else 1.0
    recall = correct / len(run.truth) if run.truth else 1.0
    confidence = sum(c for _, c in predicted.values()) / len(predicted) if predicted else 0.0
    return precision, recall, confidence

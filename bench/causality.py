"""Benchmark: what the eBPF causality probe (capture/sources/ebpf/causality.py) costs the processes it
observes, and its reader.

Two thread-per-request Python servers on loopback (`A` calls `B` for every request, each a process of
its own) driven by a client process making requests `--concurrency` at a time, over a new connection
each (HTTP/1.0: accept, connect and close per call, the probe's busiest case) or keep-alive. Rounds
alternate without and with the probe (off/on, then on/off) so the machine's drift falls on both
sides. The probe runs alone in a process of its own (its Python API: `CausalityProbe.start()` and a
`poll()` loop), started before its rounds and counted from after its program loaded.

Printed per load (medians over rounds): CPU per request of the servers (utime+stime from /proc: a
tracepoint's BPF program runs in the thread making the syscall and is charged to it), of the client,
and of the probe's reader; edges read per request. Figures are printed, never asserted; the machine
is shared, so compare CPU time, not wall time. Needs root and BCC; exits 2 saying why not.

    .venv/bin/python bench/causality.py                 # 3 rounds of 2,000 requests per load
    .venv/bin/python bench/causality.py --rounds 5 --requests 5000
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import textwrap
from typing import Final

TICK: Final = os.sysconf("SC_CLK_TCK")

SERVER: Final = textwrap.dedent(
    """
    import http.client, http.server, socketserver, sys
    port, nxt, keepalive = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keepalive else "HTTP/1.0"
        def do_GET(self):
            if nxt:
                c = http.client.HTTPConnection("127.0.0.1", nxt)
                c.request("GET", "/b")
                c.getresponse().read()
                c.close()
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a):
            pass

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 256

    s = S(("127.0.0.1", port), H)
    print("ready", flush=True)
    s.serve_forever()
    """
)

CLIENT: Final = textwrap.dedent(
    """
    import http.client, sys, threading
    port, n, conc, keepalive = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    left = iter(range(n))
    lock = threading.Lock()
    def work():
        c = None
        while True:
            with lock:
                if next(left, None) is None:
                    return
            if c is None or not keepalive:
                c = http.client.HTTPConnection("127.0.0.1", port)
            c.request("GET", "/a")
            c.getresponse().read()
            if not keepalive:
                c.close()
    ts = [threading.Thread(target=work) for _ in range(conc)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    """
)

PROBE: Final = textwrap.dedent(
    """
    import sys, threading
    from wiretide.capture.sources.ebpf.causality import CausalityProbe
    p = CausalityProbe()
    p.start()
    print("ready", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    n = 0
    while not stop.wait(0.1):  # as CausalityFeed reads: every 100 ms, all that came meanwhile
        n += len(p.poll(0))
    print(n, flush=True)
    p.close()
    """
)


def cpu_s(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(code: str, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise SystemExit(f"{code.split(chr(10))[1]}... did not start")
    return proc


def one_round(
    servers: list[subprocess.Popen[bytes]], port: int, args: argparse.Namespace, keepalive: bool, probe: bool
) -> tuple[float, float, float, float]:
    """(servers µs CPU/request, client µs/request, reader µs/request, edges/request)."""
    reader = start(PROBE) if probe else None
    before = [cpu_s(s.pid) for s in servers]
    reader_before = cpu_s(reader.pid) if reader else 0.0
    client = subprocess.run(
        [
            sys.executable,
            "-c",
            CLIENT,
            str(port),
            str(args.requests),
            str(args.concurrency),
            "1" if keepalive else "0",
        ],
        check=True,
        capture_output=True,
    )
    del client
    servers_us = sum(cpu_s(s.pid) - b for s, b in zip(servers, before, strict=True)) * 1e6 / args.requests
    # The client ran and was reaped by this process: its CPU is this process's children's.
    client_us = (os.times().children_user + os.times().children_system) * 1e6
    reader_us, edges = 0.0, 0.0
    if reader is not None:
        reader_us = (cpu_s(reader.pid) - reader_before) * 1e6 / args.requests
        out, _ = reader.communicate(b"", timeout=60)
        edges = int(out.split()[-1]) / args.requests
    return servers_us, client_us, reader_us, edges


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (eBPF)", file=sys.stderr)
        return 2
    try:
        import bcc  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        print("needs BCC (python3-bpfcc; `sudo make setup`)", file=sys.stderr)
        return 2
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds of {args.requests} requests, "
          f"{args.concurrency} at a time; µs of CPU per request (A and B together)")  # fmt: skip
    print("| load | servers without → with | client without → with | reader | edges/request |")
    print("|---|---|---|---|---|")
    for keepalive in (False, True):
        b_port, a_port = free_port(), free_port()
        flag = "1" if keepalive else "0"
        servers = [start(SERVER, str(b_port), "0", flag), start(SERVER, str(a_port), str(b_port), flag)]
        results: dict[bool, list[tuple[float, float, float, float]]] = {False: [], True: []}
        try:
            for r in range(args.rounds):
                for probe in (False, True) if r % 2 == 0 else (True, False):
                    children = os.times().children_user + os.times().children_system
                    servers_us, client_total, reader_us, edges = one_round(
                        servers, a_port, args, keepalive, probe
                    )
                    client_us = (client_total - children * 1e6) / args.requests
                    results[probe].append((servers_us, client_us, reader_us, edges))
        finally:
            for s in servers:
                s.kill()
                s.wait()
        off, on = results[False], results[True]

        def med(rows: list[tuple[float, float, float, float]], i: int) -> float:
            return statistics.median(row[i] for row in rows)

        name = "keep-alive (client → A)" if keepalive else "new connection each"
        print(
            f"| {name} | {med(off, 0):.0f} → {med(on, 0):.0f} | {med(off, 1):.0f} → {med(on, 1):.0f} "
            f"| {med(on, 2):.0f} | {med(on, 3):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what the eBPF TLS source costs the processes it observes, and what it can keep up with.

Builds a network namespace with nginx serving HTTPS (a self-signed P-256 certificate made here; small
JSON answers at /small, a 32 KiB JSON body at /large), joined to this host by a veth pair, and drives
it with `ab` over HTTPS from this host. The source runs alone, through its Python API
(`EbpfSource.start()` and a `poll()` loop, in a process of its own started by this script): the uprobes
and the reader, without the rest of the capture, the dissector or the bus. Its chunks are counted and
dropped.

1. Overhead: the same loads with and without the source, in alternating rounds (off/on, then on/off)
   so that the machine's drift falls on both sides:
   - keep-alive: `ab -k`, small answers, a few connections;
   - new connection: `ab` without keep-alive, a TLS handshake per call.
   For each it prints requests/s (ab's own figure), nginx CPU per request (master and worker,
   utime+stime from /proc: a uprobe and its BPF program run in the probed thread and are charged to
   it, so this is the probes' cost to the application), ab's CPU per request, and the source process's
   CPU per request. The loss is the median over rounds, on requests/s and on nginx CPU per request;
   the target is at most 5%. Both ends are hooked: ab links the same libssl as nginx, so the client
   pays the probes too (as two OpenSSL workloads calling each other inside a cluster would).
   With `--parts noop`: the keep-alive load with no probes, then with uprobes and uretprobes on the
   same libssl functions running a BPF program that does nothing (the cost of the uprobe mechanism
   itself, which no change to the source's programs can go below), then with the source.
2. Throughput: a flood (`ab -k`, high concurrency, small and large answers) with the source running;
   chunks and bytes per CPU-second of the source's process, chunks per second, and the chunks the
   kernel could not hand over (perf buffer full), against those delivered.

Figures are printed, never asserted. The machine is shared: compare CPU time, not wall time; the
requests/s figures move with whatever else runs. Needs root and BCC (python3-bpfcc), nginx, ab and
openssl; exits 2 saying which is missing. The namespace and veth are removed on exit.

    .venv/bin/python bench/ebpf.py                  # 3 rounds of 5k keep-alive / 500 new connection, floods
    .venv/bin/python bench/ebpf.py --small          # CI-sized
    .venv/bin/python bench/ebpf.py --rounds 5 --keepalive 20000 --newconn 2000 --flood 100000
    .venv/bin/python bench/ebpf.py --parts overhead --bpf-stats   # and the BPF programs' own run time
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from e2e import SMALL_BODY, Target, namespace, run_nginx, site  # noqa: E402

PORT: Final = 443
# How long the source may take to compile and attach (BCC runs clang: seconds on a loaded machine).
SOURCE_START_TIMEOUT_S: Final = 180.0
# Reader loop: one poll waits at most this long, then the control pipe is looked at.
POLL_MS: Final = 50
# After a load, the reader empties the perf buffer with at most this many zero-timeout polls.
DRAIN_POLLS: Final = 200
AB_TIMEOUT_S: Final = 600.0
# The processes of the load: their chunks are counted apart from the rest of the machine's.
LOAD_COMMS: Final = frozenset({"nginx", "ab"})
IDLE_S: Final = 3.0  # the reader's own idle CPU is measured over this long after it starts

NGINX_TLS_CONF: Final = """
worker_processes 1;
user root;
daemon off;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {{
        listen {port} ssl reuseport backlog=4096;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        root {dir}/www;
        location = /small {{ default_type application/json; return 200 '{small}'; }}
        location = /large {{ default_type application/json; try_files /large.json =404; }}
    }}
}}
"""


# -- CPU from /proc ----------------------------------------------------------------------------


def _tree(root: int) -> list[int]:
    """`root` and its descendants."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, ())
    return out


def cpu_s(root: int) -> float:
    """CPU time of a process tree, every thread, in ns resolution (schedstat's time on CPU; the
    tick-based utime+stime is 10 ms coarse, as much as a short run's whole difference)."""
    total = 0
    for pid in _tree(root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


# -- nginx with TLS ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nginx:
    pid: int  # the master (`ip netns exec` execs nginx); its worker is its child
    base: str  # https://IP


def _certificate(d: Path) -> None:
    """A self-signed P-256 certificate (what a current internal CA issues; RSA handshakes cost more)."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wiretide-bench",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def nginx_tls(target: Target, work: Path) -> Iterator[Nginx]:
    d = site(work)
    _certificate(d)
    conf = NGINX_TLS_CONF.format(dir=d, small=SMALL_BODY, port=PORT)
    base = f"https://{target.ip}"
    with run_nginx(target, d, conf, f"{base}/small", verify=False, timeout=15) as proc:
        yield Nginx(proc.pid, base)


# -- the source, in a process of its own -------------------------------------------------------


def source_main() -> int:
    """The reader: start the source, poll it, and answer `stats` lines on stdin with one JSON line
    (after emptying the perf buffer); stop at end of input."""
    from wiretide.capture.sources.ebpf import EbpfSource, EbpfUnavailable

    source = EbpfSource()
    try:
        source.start()
    except EbpfUnavailable as exc:
        print(orjson.dumps({"error": str(exc)}).decode(), flush=True)
        return 2
    hooks = [
        {"path": h.path, "library": h.library, "functions": list(h.functions), "error": h.error}
        for h in source.hooks.values()
    ]
    print(orjson.dumps({"ready": True, "hooks": hooks}).decode(), flush=True)
    stdin = sys.stdin.buffer
    ours = 0  # chunks of the benchmark's own nginx and ab (the machine's other TLS users are seen too)
    profiler = None
    if len(sys.argv) > 2:  # a file to write the reader's profile to (pstats), for --profile
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        while True:
            ours += sum(1 for ch in source.poll(POLL_MS) if ch.comm in LOAD_COMMS and not ch.closed)
            ready, _, _ = select.select([stdin], [], [], 0)
            if not ready:
                continue
            line = stdin.readline()
            if not line:
                return 0
            for _ in range(DRAIN_POLLS):
                got = source.poll(0)
                if not got:
                    break
                ours += sum(1 for ch in got if ch.comm in LOAD_COMMS and not ch.closed)
            st = source.stats
            doc = {
                "chunks": st.chunks,
                "ours": ours,
                "bytes": st.bytes,
                "drops": dict(st.drops),
                "bpf": bpf_run_time(source),
            }
            print(orjson.dumps(doc).decode(), flush=True)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(sys.argv[2])
        source.close()


def bpf_run_time(source: Any) -> dict[str, list[int]]:
    """Each loaded BPF program's [run time ns, runs] (kernel.bpf_stats_enabled; zeros when off)."""
    out: dict[str, list[int]] = {}
    for name, fn in source._bpf.funcs.items():
        try:
            info = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        except OSError:
            continue
        got = dict(re.findall(r"^(run_time_ns|run_cnt):\s+(\d+)", info, re.M))
        if got:
            out[name.decode()] = [int(got.get("run_time_ns", 0)), int(got.get("run_cnt", 0))]
    return out


@contextlib.contextmanager
def bpf_stats(on: bool) -> Iterator[None]:
    """kernel.bpf_stats_enabled for the run (it costs every BPF program of the machine two clock reads
    per run, hence off unless asked), restored afterwards."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    if not on:
        yield
        return
    before = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(before)


@contextlib.contextmanager
def noop_probes(on: bool) -> Iterator[list[str]]:
    """Uprobes and uretprobes whose BPF program does nothing, on the functions the source hooks in the
    system's libssl (in this process: uprobes stay attached only while their program is loaded)."""
    if not on:
        yield []
        return
    from wiretide.capture.sources.ebpf.source import FUNCTIONS, EbpfSource, compile_program

    library = sorted(EbpfSource()._system_libraries())
    bpf = compile_program("int noop(void *ctx) { return 0; }")
    hooked: list[str] = []
    try:
        for path in library[:1]:
            for sym, _ in FUNCTIONS:
                with contextlib.suppress(Exception):  # a function this libssl lacks
                    bpf.attach_uprobe(name=path.encode(), sym=sym.encode(), fn_name=b"noop")
                    bpf.attach_uretprobe(name=path.encode(), sym=sym.encode(), fn_name=b"noop")
                    hooked.append(f"{Path(path).name}:{sym}")
        yield hooked
    finally:
        bpf.cleanup()


class Source:
    """The reader process, seen from the driver."""

    def __init__(self, profile: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_source", *([profile] if profile else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], SOURCE_START_TIMEOUT_S)
        if not ready:
            self.stop()
            raise SystemExit(f"the eBPF source did not start within {SOURCE_START_TIMEOUT_S:.0f} s")
        line = self.proc.stdout.readline()
        doc: dict[str, Any] = orjson.loads(line) if line.strip() else {"error": "the source process exited"}
        if "error" in doc:
            self.stop()
            raise SystemExit(f"the eBPF source cannot run: {doc['error']}")
        self.hooks: list[dict[str, Any]] = doc["hooks"]
        # What the reader spends with no load of ours: the machine's other processes' execs (each
        # new executable is examined) and TLS traffic. Subtracted from the figures per request.
        c0, t0 = cpu_s(self.pid), time.monotonic()
        time.sleep(IDLE_S)
        self.idle_rate = (cpu_s(self.pid) - c0) / (time.monotonic() - t0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        doc: dict[str, Any] = orjson.loads(self.proc.stdout.readline())
        return doc

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def running_source(profile: str | None = None) -> Iterator[Source]:
    s = Source(profile)
    try:
        yield s
    finally:
        s.stop()


# -- one ab run --------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    load: str
    probes: bool
    answered: int
    failed: int
    rps: float
    nginx_cpu_s: float
    ab_cpu_s: float
    wall_s: float = 0.0
    source_cpu_s: float = 0.0  # above the reader's idle rate (see Source.idle_rate)
    source_raw_cpu_s: float = 0.0
    chunks: int = 0  # every chunk the source read (the machine's other TLS users included)
    ours: int = 0  # those of this load's nginx and ab
    nbytes: int = 0
    lost: int = 0
    drops: dict[str, int] | None = None
    bpf_ns: dict[str, int] | None = None  # BPF program → run time over the run (--bpf-stats)
    bpf_runs: dict[str, int] | None = None

    def per_request_us(self, cpu_s: float) -> float:
        return cpu_s * 1e6 / max(self.answered, 1)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def ab_https(url: str, n: int, concurrency: int, keepalive: bool) -> tuple[int, int, float, float]:
    """(answered, failed, requests/s, ab's CPU seconds)."""
    argv = ["ab", "-q", "-n", str(n), "-c", str(concurrency), "-s", "30"]
    if keepalive:
        argv.append("-k")
    c0 = _children_cpu_s()
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=False, timeout=AB_TIMEOUT_S)
    cpu = _children_cpu_s() - c0

    def grab(label: str) -> int:
        m = re.search(rf"^{label}:\s+(\d+)", out.stdout, re.M)
        return int(m.group(1)) if m else 0

    complete = grab("Complete requests")
    failed = grab("Failed requests") + grab("Non-2xx responses")
    rate = re.search(r"^Requests per second:\s+([\d.]+)", out.stdout, re.M)
    if not complete:
        raise SystemExit(f"ab failed: {(out.stderr or out.stdout).strip()[-300:]}")
    return complete - failed, failed, float(rate.group(1)) if rate else 0.0, cpu


def measure(
    load: str, url: str, n: int, c: int, keepalive: bool, server: Nginx, source: Source | None
) -> Run:
    s0 = source.stats() if source else None
    n0, src0, t0 = cpu_s(server.pid), cpu_s(source.pid) if source else 0.0, time.monotonic()
    answered, failed, rps, ab_cpu = ab_https(url, n, c, keepalive)
    s1 = source.stats() if source else None  # after the perf buffer is emptied
    n1, src1, wall = cpu_s(server.pid), cpu_s(source.pid) if source else 0.0, time.monotonic() - t0
    run = Run(load, source is not None, answered, failed, rps, n1 - n0, ab_cpu, wall_s=wall)
    if source is not None and s0 is not None and s1 is not None:
        run.source_raw_cpu_s = src1 - src0
        run.source_cpu_s = max(0.0, run.source_raw_cpu_s - source.idle_rate * wall)
        run.chunks = s1["chunks"] - s0["chunks"]
        run.ours = s1["ours"] - s0["ours"]
        run.nbytes = s1["bytes"] - s0["bytes"]
        drops = {k: v - s0["drops"].get(k, 0) for k, v in s1["drops"].items()}
        run.drops = {k: v for k, v in drops.items() if v}
        run.lost = run.drops.get("lost", 0)
        b0, b1 = s0.get("bpf", {}), s1.get("bpf", {})
        run.bpf_ns = {k: v[0] - b0.get(k, [0, 0])[0] for k, v in b1.items() if v[0] > b0.get(k, [0, 0])[0]}
        run.bpf_runs = {k: v[1] - b0.get(k, [0, 0])[1] for k, v in b1.items()}
    return run


# -- reports -----------------------------------------------------------------------------------


def fmt_drops(drops: dict[str, int] | None, skip: str = "") -> str:
    """The source's drop counters; `cut` counts bytes (beyond what one call copies), the rest chunks
    or processes."""
    items = sorted((k, v) for k, v in (drops or {}).items() if k != skip)
    return ", ".join(f"{k} {v:,}{' bytes' if k == 'cut' else ''}" for k, v in items) or "none"


def print_run(r: Run) -> None:
    side = "with probes   " if r.probes else "without probes"
    line = (
        f"   {r.load:<15} {side} {r.answered:>7,} ok {r.failed:>3} failed  {r.rps:>8,.0f} req/s  "
        f"nginx {r.per_request_us(r.nginx_cpu_s):>6.1f} µs/req  "
        f"ab {r.per_request_us(r.ab_cpu_s):>6.1f} µs/req"
    )
    if r.probes:
        line += (
            f"  source {r.per_request_us(r.source_cpu_s):>6.1f} µs/req, "
            f"{r.chunks:,} chunks ({r.ours:,} of nginx and ab)"
        )
        if r.drops:
            line += ", drops: " + fmt_drops(r.drops)
        if r.bpf_ns:
            line += f"  BPF {r.per_request_us(sum(r.bpf_ns.values()) / 1e9):.1f} µs/req"
    print(line, flush=True)


def print_bpf(runs: list[Run]) -> None:
    """Per BPF program, runs and run time per request (medians over the rounds), for each load."""
    for load in dict.fromkeys(r.load for r in runs if r.probes and r.bpf_ns):
        on = [r for r in runs if r.load == load and r.probes and r.bpf_ns is not None]
        names = sorted({k for r in on for k in r.bpf_ns or {}})
        print(f"\nBPF programs, {load} (run time inside the programs, every process of the machine):")
        print("| program | runs/req | ns/run | µs/req |\n|---|---|---|---|")
        for k in names:
            ns = statistics.median((r.bpf_ns or {}).get(k, 0) / max(r.answered, 1) for r in on)
            n = statistics.median((r.bpf_runs or {}).get(k, 0) / max(r.answered, 1) for r in on)
            if ns >= 10:  # 0.01 µs per request
                print(f"| {k} | {n:.2f} | {ns / max(n, 1e-9):,.0f} | {ns / 1000:.2f} |")
        total = statistics.median(sum((r.bpf_ns or {}).values()) / max(r.answered, 1) for r in on)
        print(f"| all | | | {total / 1000:.2f} |")


def _loss(off: float, on: float) -> float:
    return 100.0 * (off - on) / off if off else 0.0


def print_overhead(runs: list[Run]) -> None:
    print(
        "\n| load | req/s without | req/s with | req/s loss | nginx µs CPU/req without | with | "
        "nginx CPU added | ab µs CPU/req without | with | source µs CPU/req | chunks/req (nginx+ab) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for load in dict.fromkeys(r.load for r in runs):
        off = [r for r in runs if r.load == load and not r.probes]
        on = [r for r in runs if r.load == load and r.probes]
        if not off or not on:
            continue

        def med(rs: list[Run], f: Callable[[Run], float]) -> float:
            return float(statistics.median(f(r) for r in rs))

        rps_off, rps_on = med(off, lambda r: r.rps), med(on, lambda r: r.rps)
        ng_off = med(off, lambda r: r.per_request_us(r.nginx_cpu_s))
        ng_on = med(on, lambda r: r.per_request_us(r.nginx_cpu_s))
        ab_off = med(off, lambda r: r.per_request_us(r.ab_cpu_s))
        ab_on = med(on, lambda r: r.per_request_us(r.ab_cpu_s))
        src = med(on, lambda r: r.per_request_us(r.source_cpu_s))
        chunks = med(on, lambda r: r.ours / max(r.answered, 1))
        print(
            f"| {load} | {rps_off:,.0f} | {rps_on:,.0f} | {_loss(rps_off, rps_on):.1f}% | "
            f"{ng_off:.1f} | {ng_on:.1f} | {-_loss(ng_off, ng_on):+.1f}% | {ab_off:.1f} | {ab_on:.1f} | "
            f"{src:.1f} | {chunks:.2f} |"
        )
    print(
        f"(medians of {len(runs) // max(len(dict.fromkeys(r.load for r in runs)) * 2, 1)} rounds; "
        "target: at most 5% loss)"
    )


def print_flood(runs: list[Run]) -> None:
    print(
        "\n| flood | requests | req/s | chunks (of nginx+ab) | MB | reader CPU s (share of a core) | "
        "chunks per CPU-s | MB per CPU-s | lost (perf buffer full) | other drops |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        cpu = max(r.source_cpu_s, 1e-9)
        lost_pct = 100.0 * r.lost / max(r.chunks + r.lost, 1)
        share = r.source_raw_cpu_s / max(r.wall_s, 1e-9)
        print(
            f"| {r.load} | {r.answered:,} | {r.rps:,.0f} | {r.chunks:,} ({r.ours:,}) | "
            f"{r.nbytes / 1e6:,.1f} | "
            f"{r.source_cpu_s:.2f} ({share:.0%}) | {r.chunks / cpu:,.0f} | {r.nbytes / 1e6 / cpu:,.1f} | "
            f"{r.lost:,} ({lost_pct:.2f}%) | {fmt_drops(r.drops, 'lost')} |"
        )
    print(
        "(reader CPU is above its idle rate; the share of a core is of the raw figure: near 100% the reader "
        "was saturated, well below it the machine did not give it the time)"
    )


# -- main --------------------------------------------------------------------------------------


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, uprobes)"
    for tool, package in (("nginx", "nginx"), ("ab", "apache2-utils"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            return f"{tool} missing: apt-get install {package} (make setup does)"
    from wiretide.capture.sources.ebpf import probe

    return probe()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_source":
        return source_main()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="overhead rounds (each: without and with)")
    p.add_argument("--keepalive", type=int, default=5_000, help="requests of a keep-alive run")
    p.add_argument("--newconn", type=int, default=500, help="requests of a new-connection run")
    p.add_argument("--concurrency", type=int, default=8, help="ab's -c in the overhead runs")
    p.add_argument("--flood", type=int, default=50_000, help="requests of the small-answer flood")
    p.add_argument("--flood-large", type=int, default=5_000, help="requests of the 32 KiB-answer flood")
    p.add_argument("--flood-concurrency", type=int, default=64, help="ab's -c in the flood")
    p.add_argument("--parts", default="overhead,flood", help="comma-separated: overhead, noop, flood")
    p.add_argument("--profile", metavar="FILE", help="write the reader's cProfile (pstats) of the flood")
    p.add_argument(
        "--bpf-stats",
        action="store_true",
        help="time each BPF program (kernel.bpf_stats_enabled) in the runs",
    )
    p.add_argument("--small", action="store_true", help="CI-sized: 1 round of 1k/200, floods of 5k/500")
    args = p.parse_args()
    if args.small:
        args.rounds, args.keepalive, args.newconn, args.flood, args.flood_large = 1, 1_000, 200, 5_000, 500
    reason = why_not()
    if reason is not None:
        print(f"eBPF benchmark cannot run: {reason}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(
        f"wiretide ebpf: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
        "(CPU per request is the figure to compare; req/s moves with the machine's other work)",
        flush=True,
    )
    with (
        bpf_stats(args.bpf_stats),
        tempfile.TemporaryDirectory(prefix="wt-ebpf-") as tmp,
        namespace() as target,
        nginx_tls(target, Path(tmp)) as server,
    ):
        small, large = f"{server.base}/small", f"{server.base}/large"
        c = args.concurrency
        loads = [
            ("keep-alive", small, args.keepalive, True),
            ("new connection", small, args.newconn, False),
        ]
        # Warm-up: nginx's worker faulted in, ab's and the kernel's caches as they will be.
        ab_https(small, min(args.keepalive, 1000), c, True)
        parts = {x.strip() for x in args.parts.split(",") if x.strip()}
        shown = False

        def started(source: Source) -> None:
            nonlocal shown
            if not shown:
                hooked = [h for h in source.hooks if h["functions"]]
                print(
                    f"   the source hooked {len(hooked)} files: "
                    + ", ".join(f"{h['path']} ({h['library']})" for h in hooked[:6])
                )
                shown = True
            print(f"   reader idle: {source.idle_rate:.1%} of a core (subtracted below)", flush=True)

        if "overhead" in parts:
            runs: list[Run] = []
            print("\n== overhead: the same loads without and with the source, alternating", flush=True)
            for i in range(args.rounds):
                order = (False, True) if i % 2 == 0 else (True, False)
                for probes in order:
                    if probes:
                        with running_source() as source:
                            started(source)
                            for name, url, n, keepalive in loads:
                                run = measure(name, url, n, c, keepalive, server, source)
                                print_run(run)
                                runs.append(run)
                    else:
                        for name, url, n, keepalive in loads:
                            run = measure(name, url, n, c, keepalive, server, None)
                            print_run(run)
                            runs.append(run)
            print_overhead(runs)
            print_bpf(runs)
        if "noop" in parts:
            print("\n== the uprobe mechanism alone: keep-alive, no probes / do-nothing probes / the source")
            floor: dict[str, list[Run]] = {}
            for _ in range(args.rounds):
                for kind in ("no probes", "no-op probes", "the source"):
                    if kind == "the source":
                        with running_source() as source:
                            run = measure("keep-alive", small, args.keepalive, c, True, server, source)
                    else:
                        with noop_probes(kind == "no-op probes") as hooked:
                            run = measure("keep-alive", small, args.keepalive, c, True, server, None)
                    print(f"   {kind:<13}", end="")
                    print_run(run)
                    floor.setdefault(kind, []).append(run)
            print(f"\n(no-op probes on {', '.join(hooked) or 'nothing'})")
            print("| keep-alive | req/s | nginx µs CPU/req | ab µs CPU/req |\n|---|---|---|---|")
            for kind, rs in floor.items():
                print(
                    f"| {kind} | {statistics.median(r.rps for r in rs):,.0f} | "
                    f"{statistics.median(r.per_request_us(r.nginx_cpu_s) for r in rs):.1f} | "
                    f"{statistics.median(r.per_request_us(r.ab_cpu_s) for r in rs):.1f} |"
                )
        if "flood" in parts:
            print(f"\n== flood: ab -k -c {args.flood_concurrency} with the source running", flush=True)
            floods: list[Run] = []
            with running_source(args.profile) as source:
                started(source)
                for name, url, n in (
                    ("small answers", small, args.flood),
                    ("32 KiB answers", large, args.flood_large),
                ):
                    run = measure(name, url, n, args.flood_concurrency, True, server, source)
                    print_run(run)
                    floods.append(run)
            print_flood(floods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

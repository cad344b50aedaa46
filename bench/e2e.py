"""Benchmark: the CPU cost of one API call end to end, as a user runs Wiretide.

Builds a network namespace with nginx (small JSON answers at /small, a 32 KiB JSON body at /large),
joined to this host by a veth pair, starts `wiretide up` capturing the host side of that veth (a fresh
data dir per load, default settings), and drives loads at nginx from this host:

- keepalive: `ab -k` (Debian apache2-utils), small answers, a few connections;
- newconn:   `ab` without keep-alive, a new connection per call;
- large:     `ab -k` on the large body;
- burst:     `ab -k` flat out, as many calls as asked (each size its own run);
- paced:     a fixed rate of keep-alive calls for a while (the paced client below, in its own process).

For each load it prints, per Wiretide process (capture, dissector, nats, gateway, tracer, resolver,
agents; a process's children included): CPU time (utime+stime from /proc) from the load's start until
every process is quiet again, that time in µs per stored entry, and peak RSS (VmHWM); then entries
stored / calls answered, and the drops the capture and dissector report (kernel ring, queues, bus
buffer), and how busy the whole machine was meanwhile (cores, from /proc/stat; the load average
at the start). At the end, one Markdown table of all loads. Figures are printed, never asserted; the
machine is shared, so compare CPU time, not wall time.

Needs root (namespaces, AF_PACKET), nginx and ab. The namespace and veth are removed on exit.

    .venv/bin/python bench/e2e.py                      # the full set
    .venv/bin/python bench/e2e.py --small              # CI-sized
    .venv/bin/python bench/e2e.py --loads burst --burst 200000
    .venv/bin/python bench/e2e.py --loads paced --rate 10000 --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import httpx
import orjson

ROOT: Final = Path(__file__).resolve().parent.parent
PROCESSES: Final = ("capture", "dissector", "nats", "gateway", "tracer", "resolver", "agents")
# The /24s a run may take (host side .1, nginx .2), only ever on the veth it creates; each run takes one
# no other route uses, so two runs (or a chaos run that reuses these parts) never share an address.
SUBNETS: Final = tuple(f"10.88.{i}" for i in range(256))
TICK_S: Final = 1 / os.sysconf("SC_CLK_TCK")
SMALL_BODY: Final = '{"id":12345,"ok":true,"name":"widget"}'
LARGE_BYTES: Final = 32 * 1024
START_TIMEOUT_S: Final = 90.0
WARMUP_CALLS: Final = 20
# A load is drained when the stored count has not moved for this long (or reached the calls answered)…
SETTLE_S: Final = 5.0
DRAIN_TIMEOUT_S: Final = 300.0
# …and the processes are quiet when, over one interval, they use at most this much CPU above idle.
QUIET_INTERVAL_S: Final = 1.0
QUIET_ABOVE_IDLE: Final = 0.05  # of one core
QUIET_TIMEOUT_S: Final = 120.0
HTTP_ENTRIES: Final = (
    "SELECT count(*) FROM entries WHERE call IN (SELECT call FROM calls WHERE protocol = 'http')"
)


# -- the namespace and nginx -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    ns: str
    host_if: str
    ip: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def namespace() -> Iterator[Target]:
    """A namespace with a veth to this host; the host side is named so that no `auto` capture of
    another Wiretide on this machine picks it up (not veth*/eth*)."""
    tag = f"wtb{os.getpid() % 100000}"
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    start = os.getpid() % len(SUBNETS)
    subnet = next((n for n in SUBNETS[start:] + SUBNETS[:start] if f"{n}.0/24" not in routes), None)
    if subnet is None:
        raise SystemExit("no free 10.88.x.0/24 for the benchmark's namespace")
    target = Target(f"{tag}ns", f"{tag}h", f"{subnet}.2")
    try:
        _ip("netns", "add", target.ns)
        subprocess.run(
            ["ip", "netns", "exec", target.ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
            capture_output=True,
        )
        _ip("link", "add", target.host_if, "type", "veth", "peer", "name", "eth0", "netns", target.ns)
        subprocess.run(
            ["sysctl", "-q", "-w", f"net.ipv6.conf.{target.host_if}.disable_ipv6=1"], capture_output=True
        )
        _ip("addr", "add", f"{subnet}.1/24", "dev", target.host_if)
        _ip("link", "set", target.host_if, "up")
        _ip("-n", target.ns, "addr", "add", f"{target.ip}/24", "dev", "eth0")
        _ip("-n", target.ns, "link", "set", "eth0", "up")
        _ip("-n", target.ns, "link", "set", "lo", "up")
        yield target
    finally:
        subprocess.run(["ip", "netns", "del", target.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", target.host_if], capture_output=True)


NGINX_CONF: Final = """
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
    keepalive_requests 100000;
    keepalive_timeout 60s;
    server {{
        listen 80 reuseport backlog=4096;
        root {dir}/www;
        location = /small {{ default_type application/json; return 200 '{small}'; }}
        location = /large {{ default_type application/json; try_files /large.json =404; }}
    }}
}}
"""


def site(work: Path) -> Path:
    """nginx's directory under `work`, with www/large.json (a JSON body of about LARGE_BYTES)."""
    d = work / "nginx"
    (d / "www").mkdir(parents=True)
    item = b'{"id":1234567,"name":"a widget of some kind","tags":["x","y"],"price":12.5},'
    body = b'{"items":[' + item * ((LARGE_BYTES - 20) // len(item)) + b'{"id":0}]}'
    (d / "www" / "large.json").write_bytes(body)
    return d


@contextlib.contextmanager
def run_nginx(
    target: Target, d: Path, conf: str, probe: str, verify: bool = True, timeout: float = 10.0
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with configuration `conf` (written to d/nginx.conf, its log to d/nginx.log) in the target's
    namespace, ready once `probe` answers 200; stopped on exit. Yields the master (`ip netns exec` execs
    nginx; its worker is the master's child)."""
    path = d / "nginx.conf"
    path.write_text(conf)
    log = (d / "nginx.log").open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", target.ns, "nginx", "-e", "stderr", "-c", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(probe, timeout=1, verify=verify).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nginx did not start: {(d / 'nginx.log').read_text()[-500:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def nginx(target: Target, work: Path) -> Iterator[None]:
    d = site(work)
    with run_nginx(target, d, NGINX_CONF.format(dir=d, small=SMALL_BODY), f"http://{target.ip}/small"):
        yield


# -- processes: CPU and memory from /proc --------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out = [pid]
    for k in kids.get(pid, ()):
        out += _tree(k, kids)
    return out


def _cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    kids = _children()
    return {name: sum(_cpu_s(p) for p in _tree(pid, kids)) for name, pid in pids.items()}


def peak_rss_by_process(pids: dict[str, int]) -> dict[str, float]:
    kids = _children()
    return {name: max(_hwm_mb(p) for p in _tree(pid, kids)) for name, pid in pids.items()}


# -- wiretide up -------------------------------------------------------------------------------


class Up:
    """`wiretide up` on a fresh data dir, capturing one interface."""

    def __init__(self, work: Path, interface: str, env: dict[str, str]) -> None:
        self.data = work / "wt"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
        full_env.update(env)
        full_env["WIRETIDE_CAPTURE_INTERFACES"] = interface
        self.log = (work / "up.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wiretide.cli",
                "up",
                "--data-dir",
                str(self.data),
                "--ui-port",
                str(self.port),
            ],
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.interface = interface
        self.run: dict[str, Any] = {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = (self.data.parent / "up.log").read_text(errors="replace")[-1500:]
                raise SystemExit(f"wiretide up exited {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
                self.run = orjson.loads((self.data / "run.json").read_bytes())
                status = httpx.get(f"http://127.0.0.1:{self.port}/api/health", timeout=2).json()["status"]
                if status == "SERVING" and self.capturing():
                    return
            time.sleep(0.3)
        raise SystemExit("wiretide up did not become SERVING with the interface captured")

    def pids(self) -> dict[str, int]:
        run = orjson.loads((self.data / "run.json").read_bytes())
        return {name: int(run["services"][name]["pid"]) for name in PROCESSES if name in run["services"]}

    def _grpc(self, name: str) -> grpc.Channel:
        """A channel to a service, as the local CLI reaches it (mutual TLS when `up` made certificates
        under the data dir, else plaintext on loopback)."""
        address = self.run["services"][name]["grpc"]
        tls = self.data / "tls"
        if not (tls / "cli.crt").is_file():
            return grpc.insecure_channel(address)
        creds = grpc.ssl_channel_credentials(
            root_certificates=(tls / "ca.crt").read_bytes(),
            private_key=(tls / "cli.key").read_bytes(),
            certificate_chain=(tls / "cli.crt").read_bytes(),
        )
        return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", name)])

    def _metadata(self) -> list[tuple[str, str]]:
        """What `wiretide status` sends: the instance's service token, when it has one."""
        token = self.data / "service-token"
        return [("authorization", f"Bearer {token.read_text().strip()}")] if token.is_file() else []

    def capture_status(self) -> Any:
        from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc

        with self._grpc("capture") as ch:
            return capture_pb2_grpc.CaptureServiceStub(ch).GetStatus(
                capture_pb2.GetStatusRequest(), timeout=5, metadata=self._metadata()
            )

    def dissector_stats(self) -> Any:
        from wiretide.proto.v1 import dissector_pb2, dissector_pb2_grpc

        with self._grpc("dissector") as ch:
            return dissector_pb2_grpc.DissectorServiceStub(ch).GetStats(
                dissector_pb2.GetStatsRequest(), timeout=5, metadata=self._metadata()
            )

    def capturing(self) -> bool:
        try:
            st = self.capture_status()
        except grpc.RpcError:
            return False
        return any(i.name == self.interface and i.up for i in st.interfaces)

    def drops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with contextlib.suppress(grpc.RpcError):
            for reason, n in self.capture_status().drops.items():
                if n and reason not in ("undecodable_forwarded",):
                    out[f"capture.{reason}"] = n
        with contextlib.suppress(grpc.RpcError):
            for reason, n in self.dissector_stats().drops.items():
                if n:
                    out[f"dissector.{reason}"] = n
        return out

    def stored(self) -> int:
        """HTTP entries in the store (idle connections that carried no call are `tcp` entries)."""
        path = self.data / "entries.sqlite3"
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
                return int(db.execute(HTTP_ENTRIES).fetchone()[0])
        except sqlite3.Error:
            body = httpx.get(
                f"http://127.0.0.1:{self.port}/api/health", timeout=5, headers=dict(self._metadata())
            ).json()
            return int(body["store"]["stored"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- load generators ---------------------------------------------------------------------------


@dataclass(slots=True)
class LoadResult:
    answered: int
    failed: int
    wall_s: float
    note: str = ""


def ab(url: str, n: int, concurrency: int, keepalive: bool) -> LoadResult:
    argv = ["ab", "-q", "-n", str(n), "-c", str(concurrency), "-s", "30"]
    if keepalive:
        argv.append("-k")
    t0 = time.monotonic()
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0

    def grab(label: str) -> int:
        m = re.search(rf"^{label}:\s+(\d+)", out.stdout, re.M)
        return int(m.group(1)) if m else 0

    complete = grab("Complete requests")
    failed = grab("Failed requests") + grab("Non-2xx responses")
    rate = re.search(r"^Requests per second:\s+([\d.]+)", out.stdout, re.M)
    if not complete:
        raise SystemExit(f"ab failed: {out.stderr.strip()[-300:]}")
    return LoadResult(complete - failed, failed, wall, f"{float(rate.group(1)) if rate else 0:,.0f} calls/s")


def paced(host: str, path: str, rate: int, seconds: float, connections: int) -> LoadResult:
    """Run the paced client in its own process (its CPU is not Wiretide's) and read its report."""
    out = subprocess.run(
        [sys.executable, __file__, "_paced", host, path, str(rate), str(seconds), str(connections)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    doc = orjson.loads(out.stdout.strip().splitlines()[-1])
    note = (
        f"{doc['ok'] / max(doc['wall_s'], 1e-9):,.0f} calls/s achieved of {rate:,} asked; "
        f"{doc['late']} calls sent >100 ms late"
    )
    return LoadResult(int(doc["ok"]), int(doc["failed"]), float(doc["wall_s"]), note)


def paced_client(host: str, path: str, rate: int, seconds: float, connections: int) -> None:
    """Keep-alive GETs at `rate` per second for `seconds`: call i is due at start + i/rate and goes out
    on the first idle connection; one call in flight per connection (no pipelining). Prints JSON."""
    total = int(rate * seconds)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wiretide-bench\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    idle: list[socket.socket] = []
    buffers: dict[socket.socket, bytearray] = {}
    buffers_by_fd: dict[int, socket.socket] = {}
    for _ in range(connections):
        s = socket.create_connection((host, 80))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        buffers[s] = bytearray()
        buffers_by_fd[s.fileno()] = s
        idle.append(s)
    sent = ok = failed = late = 0
    t0 = time.monotonic()
    end = t0 + seconds + 30  # bounded: what is still unanswered then counts as failed
    while (sent < total or len(idle) < connections) and time.monotonic() < end:
        now = time.monotonic()
        due = min(total, int((now - t0) * rate) + 1)
        while sent < due and idle:
            s = idle.pop()
            if now - (t0 + sent / rate) > 0.1:
                late += 1
            s.send(request)
            sent += 1
        wait = 0.0005 if sent < due else max(0.0, min(0.01, t0 + sent / rate - time.monotonic()))
        for key, _ in sel.select(wait):
            s = buffers_by_fd[key.fd]
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            buf = buffers[s]
            buf += chunk
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                m = re.search(rb"(?i)content-length:\s*(\d+)", buf[:head_end])
                length = int(m.group(1)) if m else 0
                if len(buf) < head_end + 4 + length:
                    break
                if buf.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    failed += 1
                del buf[: head_end + 4 + length]
                idle.append(s)
            if not chunk:
                sel.unregister(s)
                failed += 1
    wall = time.monotonic() - t0
    for s in buffers:
        s.close()
    failed += sent - ok - failed
    print(orjson.dumps({"sent": sent, "ok": ok, "failed": failed, "late": late, "wall_s": wall}).decode())


# -- one load ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    load: str
    sent: LoadResult
    stored: int
    cpu: dict[str, float]
    rss: dict[str, float]
    drops: dict[str, int]
    idle_cpu: float
    packets: int  # captured on the interface during the load (kernel drops not included)
    nbytes: int
    restarted: list[str] = field(default_factory=list)
    machine_busy: float = 0.0  # cores the whole machine was busy, on average, from the load's start to quiet
    load_avg: float = 0.0  # 1-minute load average when the load started

    @property
    def per_entry(self) -> dict[str, float]:
        n = max(self.stored, 1)
        return {name: s * 1e6 / n for name, s in self.cpu.items()}


def wait_stored(up: Up, before: int, expected: int) -> int:
    """Stored entries since `before`, once they reach `expected` or stop moving for SETTLE_S."""
    last = -1
    moved = time.monotonic()
    deadline = moved + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        n = up.stored() - before
        if n >= expected:
            return n
        if n != last:
            last, moved = n, time.monotonic()
        elif time.monotonic() - moved >= SETTLE_S:
            return n
        time.sleep(0.25)
    return last


def wait_quiet(pids: dict[str, int], idle: float) -> None:
    """Until the processes use at most idle + QUIET_ABOVE_IDLE of a core over one interval."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    prev = sum(cpu_by_process(pids).values())
    while time.monotonic() < deadline:
        time.sleep(QUIET_INTERVAL_S)
        now = sum(cpu_by_process(pids).values())
        if (now - prev) / QUIET_INTERVAL_S <= idle + QUIET_ABOVE_IDLE:
            return
        prev = now


def run_load(name: str, target: Target, work: Path, drive: Any, env: dict[str, str]) -> Row:
    work.mkdir(parents=True)
    up = Up(work, target.host_if, env)
    try:
        up.wait_ready()
        pids = up.pids()
        # Warm up: every consumer connected and the first entries through, before anything is counted.
        ab(f"http://{target.ip}/small", WARMUP_CALLS, 1, True)
        wait_stored(up, 0, WARMUP_CALLS)
        c0 = cpu_by_process(pids)
        time.sleep(2.0)
        idle = sum(cpu_by_process(pids).values()) - sum(c0.values())
        idle /= 2.0
        wait_quiet(pids, idle)
        before = up.stored()
        drops_before = up.drops()
        st0 = up.capture_status()
        c0 = cpu_by_process(pids)
        m0, t0, load_avg = machine_busy_s(), time.monotonic(), os.getloadavg()[0]
        result: LoadResult = drive()
        stored = wait_stored(up, before, result.answered)
        wait_quiet(pids, idle)
        c1 = cpu_by_process(pids)
        busy = (machine_busy_s() - m0) / max(time.monotonic() - t0, 1e-9)
        now_pids = up.pids()
        drops = {k: v - drops_before.get(k, 0) for k, v in up.drops().items()}
        st1 = up.capture_status()
        return Row(
            name,
            result,
            stored,
            {k: c1[k] - c0[k] for k in pids},
            peak_rss_by_process(pids),
            {k: v for k, v in drops.items() if v},
            idle,
            st1.packets - st0.packets,
            st1.bytes - st0.bytes,
            [k for k in pids if now_pids.get(k) != pids[k]],
            busy,
            load_avg,
        )
    finally:
        up.stop()


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (every CPU, every process: /proc/stat)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) * TICK_S


def print_row(row: Row) -> None:
    r = row.sent
    pct = 100.0 * row.stored / max(r.answered, 1)
    print(f"\n== {row.load}: {r.answered:,} calls answered ({r.failed} failed) in {r.wall_s:.2f} s, {r.note}")
    print(f"   stored {row.stored:,} / {r.answered:,} answered ({pct:.1f}%)")
    per_call = row.packets / max(r.answered, 1)
    print(
        f"   captured {row.packets:,} packets, {row.nbytes / 1e6:,.1f} MB "
        f"({per_call:.2f} packets and {row.nbytes / max(r.answered, 1):,.0f} bytes per call)"
    )
    print(f"   {'process':<10} {'CPU s':>8} {'µs/entry':>9} {'peak RSS MB':>12}")
    per = row.per_entry
    for name in row.cpu:
        print(f"   {name:<10} {row.cpu[name]:>8.2f} {per[name]:>9.1f} {row.rss[name]:>12.0f}")
    print(f"   {'total':<10} {sum(row.cpu.values()):>8.2f} {sum(per.values()):>9.1f}")
    print(f"   idle CPU of all seven before the load: {row.idle_cpu * 100:.1f}% of a core")
    print(
        f"   the machine meanwhile: {row.machine_busy:.2f} of {os.cpu_count()} cores busy on average, "
        f"load average {row.load_avg:.1f} at the start (other work inflates CPU time; compare runs made "
        f"on a quiet machine)"
    )
    drops = ", ".join(f"{k} {v:,}" for k, v in sorted(row.drops.items())) or "none"
    print(f"   drops during the load: {drops}")
    if row.restarted:
        print(f"   RESTARTED during the load: {', '.join(row.restarted)}")


def print_table(rows: list[Row]) -> None:
    print(
        "\n| load | stored / answered | µs CPU per stored entry | "
        + " | ".join(PROCESSES)
        + " | drops | peak RSS MB (max) |"
    )
    print("|---|---|---|" + "---|" * len(PROCESSES) + "---|---|")
    for row in rows:
        per = row.per_entry
        pct = 100.0 * row.stored / max(row.sent.answered, 1)
        drops = ", ".join(f"{k} {v:,}" for k, v in sorted(row.drops.items())) or "none"
        cells = " | ".join(f"{per.get(p, 0):.1f}" for p in PROCESSES)
        print(
            f"| {row.load} | {row.stored:,} / {row.sent.answered:,} ({pct:.1f}%) | "
            f"**{sum(per.values()):.0f}** | {cells} | {drops} | {max(row.rss.values()):.0f} |"
        )


def native_status() -> str:
    """Whether each service with compiled hot modules runs them (a stale build runs the pure ones)."""
    out = []
    for service in ("dissector", "tracer", "gateway", "agents"):
        try:
            module = importlib.import_module(f"wiretide.{service}.native")
        except ImportError:
            continue
        out.append(f"{service} {getattr(module, 'STATUS', '?')}")
    return "; ".join(out) or "none"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_paced":
        host, path, rate, seconds, conns = sys.argv[2:7]
        paced_client(host, path, int(rate), float(seconds), int(conns))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loads", default="keepalive,newconn,large,burst,paced", help="comma-separated")
    p.add_argument("--keepalive", type=int, default=20_000, help="calls of the keep-alive load")
    p.add_argument("--newconn", type=int, default=10_000, help="calls of the new-connection load")
    p.add_argument("--large", type=int, default=2_000, help="calls of the large-body load")
    p.add_argument("--burst", type=int, nargs="+", default=[100_000, 200_000], help="burst sizes")
    p.add_argument("--rate", type=int, default=10_000, help="paced load: calls per second")
    p.add_argument("--seconds", type=float, default=60.0, help="paced load: how long")
    p.add_argument("--concurrency", type=int, default=16, help="ab's -c")
    p.add_argument("--connections", type=int, default=64, help="paced load: keep-alive connections")
    p.add_argument(
        "--small", action="store_true", help="CI-sized: 2k/1k/200 calls, a 20k burst, 1k/s for 5 s"
    )
    p.add_argument("--env", action="append", default=[], metavar="WIRETIDE_X=Y", help="extra settings")
    args = p.parse_args()
    if args.small:
        args.keepalive, args.newconn, args.large, args.burst = 2_000, 1_000, 200, [20_000]
        args.rate, args.seconds = 1_000, 5.0
    if os.geteuid() != 0:
        print("needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    for tool in ("nginx", "ab"):
        if shutil.which(tool) is None:
            print(f"{tool} missing: apt-get install nginx apache2-utils (make setup does)", file=sys.stderr)
            return 2
    env = dict(e.split("=", 1) for e in args.env)
    loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    rows: list[Row] = []
    if "WIRETIDE_NATIVE_DIR" in env:
        os.environ["WIRETIDE_NATIVE_DIR"] = env["WIRETIDE_NATIVE_DIR"]
    print(
        f"wiretide e2e: {os.cpu_count()} CPUs; loads {', '.join(loads)}; settings {env or 'default'}; "
        f"compiled modules: {native_status()}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="wt-e2e-") as tmp,
        namespace() as target,
        nginx(target, Path(tmp)),
    ):
        small, large = f"http://{target.ip}/small", f"http://{target.ip}/large"
        c = args.concurrency
        plan: list[tuple[str, Any]] = []
        for load in loads:
            if load == "keepalive":
                plan.append(
                    (f"{args.keepalive // 1000}k keep-alive", lambda: ab(small, args.keepalive, c, True))
                )
            elif load == "newconn":
                plan.append(
                    (
                        f"{args.newconn // 1000}k new connection each",
                        lambda: ab(small, args.newconn, c, False),
                    )
                )
            elif load == "large":
                plan.append(
                    (f"{args.large:,} keep-alive, 32 KiB bodies", lambda: ab(large, args.large, c, True))
                )
            elif load == "burst":
                for n in args.burst:
                    plan.append((f"{n // 1000}k keep-alive burst", lambda n=n: ab(small, n, c, True)))
            elif load == "paced":
                plan.append(
                    (
                        f"paced {args.rate:,}/s for {args.seconds:.0f} s",
                        lambda: paced(target.ip, "/small", args.rate, args.seconds, args.connections),
                    )
                )
            else:
                p.error(f"unknown load {load!r}")
        for i, (name, drive) in enumerate(plan):
            row = run_load(name, target, Path(tmp) / f"load{i}", drive, env)
            print_row(row)
            rows.append(row)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())

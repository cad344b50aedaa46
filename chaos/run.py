"""`make chaos`: faults and hostile traffic under a paced load, and what each one cost.

    .venv/bin/python chaos/run.py                          # every scenario, full size (root)
    .venv/bin/python chaos/run.py --only nats,kill --rate 100
    .venv/bin/python chaos/run.py --only synflood,slowloris,body,paths --flows 100000 --body-mb 1024

Reuses the end-to-end benchmark's parts (bench/e2e.py): a network namespace with nginx joined to this
host by a veth, `wiretide up` capturing the host side (a fresh data dir per scenario, default
settings), and /proc readers. Its own: a paced keep-alive client whose every call has its own path
(`/c/<n>`, answered 404 by nginx) and send time, so a call is found in the store — once, twice or not
at all — and placed against the fault's window. Scenarios:

- nats:    NATS killed (-9) and kept down for `--outage` seconds (the supervisor, which would restart it
           at once, is paused meanwhile), then restarted by the supervisor;
- kill:    `kill -9` of each service in turn (capture, dissector, resolver, tracer, agents, gateway),
           each restarted by the supervisor before the next;
- disk:    the SQLite store on a small tmpfs (WIRETIDE_GATEWAY_DB) filled to the last byte for
           `--outage` seconds, then freed; PRAGMA integrity_check afterwards;
- synflood:  a SYN flood of `--flows` half-open flows (spoofed, crafted in the namespace on a raw
           socket);
- slowloris: 1,000 connections sending a request's headers a line a second, never finishing;
- body:      one `--body-mb` response body;
- paths:     `--paths` calls, each with its own path;
  (`hostile` names these four.) Each hostile scenario runs on its own `wiretide up`, so each one's
  peak RSS per service (VmHWM, children included) is its own, and is held against the 300 MB budget;
  evictions and drops are printed.

A call is *accepted* unless it was sent while the process that takes it in (capture, or the
dissector) was down — those are reported apart, with the drops the capture counted for them. For
every scenario it prints calls sent, accepted, stored, lost (accepted, not stored) and duplicated
(stored more than once), and says FAIL for an accepted call lost or stored twice and for a service
over its memory budget; the exit status is 1 when anything failed.

Rule: it touches only what it creates (its namespace, veth, tmpfs and the processes of its own
`wiretide up`); everything is removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import selectors
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
import e2e  # noqa: E402 - the namespace, nginx, `wiretide up` and /proc readers of bench/e2e.py

from tests.helpers.disk import fill, tmpfs  # noqa: E402

HOSTILE: Final = ("synflood", "slowloris", "body", "paths")
SCENARIOS: Final = ("nats", "kill", "disk", *HOSTILE)
SERVICES: Final = ("capture", "dissector", "resolver", "tracer", "agents", "gateway")  # held to budget
VICTIMS: Final = ("capture", "dissector", "resolver", "tracer", "agents", "gateway")
TAKERS: Final = {"capture", "dissector"}  # while one of these is down, calls are not accepted
RSS_BUDGET_MB: Final = 300
# Calls sent this long before a kill may still be inside the killed process (the capture's batch and
# queue, the dissector's publish buffer of 50 ms): "in flight" rather than accepted.
IN_FLIGHT_S: Final = 1.0
LEAD_S: Final = 5.0  # load before the first fault
GAP_S: Final = 5.0  # load between a recovery and the next fault
RECOVER_TIMEOUT_S: Final = 180.0
# `wiretide up` may take minutes to start on a machine shared with other work (bench/e2e.py's own
# bound, 90 s, is for a quiet one).
START_TIMEOUT_S: Final = 600.0
SETTLE_S: Final = 10.0  # the store is drained once its count of our calls has not moved for this long
DRAIN_TIMEOUT_S: Final = 300.0
CALL_PREFIX: Final = "/c/"
WORD: Final = "p"  # the hostile load's paths: /c/p<n>, each its own route
STORE_TMPFS_MB: Final = 64
SLOWLORIS_CONNECTIONS: Final = 1000
SLOWLORIS_S: Final = 20.0


# -- the paced client (its own process) ---------------------------------------------------------


def client(host: str, rate: int, seconds: float, connections: int, out: Path, word: str = "") -> None:
    """Keep-alive GETs of /c/<word><n> at `rate`/s until `seconds` pass or SIGTERM; one call in flight
    per connection (a `word` keeps the segment from reading as an id, which routes fold to `{id}`).
    Writes {"sent_at": [wall time per call], "status": [HTTP status, 0 = no answer], "connects": the
    connections it opened (more than `connections` when the server closed some)}."""
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sel = selectors.DefaultSelector()
    inflight: dict[socket.socket, int] = {}
    buffers: dict[socket.socket, bytearray] = {}
    idle: list[socket.socket] = []
    connects = 0

    def connect() -> None:
        nonlocal connects
        connects += 1
        s = socket.create_connection((host, 80), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        buffers[s] = bytearray()
        idle.append(s)

    for _ in range(connections):
        connect()
    sent_at: list[float] = []
    status: list[int] = []
    t0 = time.monotonic()
    deadline = t0 + seconds
    while True:
        now = time.monotonic()
        if (stop or now >= deadline) and not inflight:
            break
        if stop or now >= deadline:
            if now >= deadline + 30:  # bounded: unanswered calls stay at status 0
                break
            due = len(sent_at)
        else:
            due = int((now - t0) * rate) + 1
        while len(sent_at) < due and idle:
            s = idle.pop()
            n = len(sent_at)
            sent_at.append(time.time())
            status.append(0)
            inflight[s] = n
            s.send(f"GET {CALL_PREFIX}{word}{n} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        for key, _ in sel.select(0.002):
            s = key.fileobj  # type: ignore[assignment]  # only sockets are registered
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                chunk = b""
            buf = buffers[s]
            buf += chunk
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = bytes(buf[:head_end]).lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
                if len(buf) >= head_end + 4 + length:
                    status[inflight.pop(s)] = int(buf[9:12])
                    del buf[: head_end + 4 + length]
                    idle.append(s)
            if not chunk:  # closed by the server: its call stays unanswered; open another
                sel.unregister(s)
                s.close()
                inflight.pop(s, None)
                buffers.pop(s)
                if s in idle:
                    idle.remove(s)
                connect()
    out.write_bytes(orjson.dumps({"sent_at": sent_at, "status": status, "connects": connects}))


@dataclass(slots=True)
class Load:
    """The paced client running in its own process (its CPU is not Wiretide's)."""

    proc: subprocess.Popen[bytes]
    out: Path

    @classmethod
    def start(
        cls,
        host: str,
        rate: int,
        work: Path,
        seconds: float = 3600.0,
        connections: int = 16,
        word: str = "",
    ) -> Load:
        out = work / f"calls-{time.monotonic_ns()}.json"
        argv = [
            sys.executable,
            __file__,
            "_client",
            host,
            str(rate),
            str(seconds),
            str(connections),
            str(out),
            word,
        ]
        return cls(subprocess.Popen(argv), out)

    def finish(self, stop: bool = True) -> Calls:
        """The calls made; `stop` ends an open-ended load now, else it runs its time out."""
        if stop and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(None if not stop else 120)
        doc = orjson.loads(self.out.read_bytes())
        return Calls(doc["sent_at"], doc["status"])


@dataclass(frozen=True, slots=True)
class Calls:
    sent_at: list[float]
    status: list[int]

    def answered(self) -> list[int]:
        return [i for i, s in enumerate(self.status) if s]


# -- the store ----------------------------------------------------------------------------------


def stored_calls(db: Path) -> Counter[int]:
    """How often each call of the client is in the store (read-only, beside the running gateway)."""
    counts: Counter[int] = Counter()
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn,
    ):
        for (path,) in conn.execute("SELECT path FROM entries WHERE path LIKE ?", (f"{CALL_PREFIX}%",)):
            tail = path[len(CALL_PREFIX) :].lstrip(WORD)
            if tail.isascii() and tail.isdigit():
                counts[int(tail)] += 1
    return counts


def wait_drained(db: Path, expected: int) -> Counter[int]:
    """The calls in the store once all `expected` are there or the count stopped moving."""
    last, moved = -1, time.monotonic()
    deadline = moved + DRAIN_TIMEOUT_S
    counts: Counter[int] = Counter()
    while time.monotonic() < deadline:
        counts = stored_calls(db)
        n = len(counts)
        if n >= expected:
            return counts
        if n != last:
            last, moved = n, time.monotonic()
        elif time.monotonic() - moved >= SETTLE_S:
            return counts
        time.sleep(0.5)
    return counts


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)


# -- faults -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outage:
    label: str
    start: float  # wall clock
    end: float
    accepts: bool  # False: calls sent meanwhile were not accepted (their taker was down)


@dataclass(slots=True)
class Report:
    name: str
    calls: Calls
    stored: Counter[int]
    outages: list[Outage]
    drops: dict[str, int]
    notes: list[str] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)

    def over_budget(self) -> dict[str, float]:
        return {k: v for k, v in self.rss.items() if k in SERVICES and v > RSS_BUDGET_MB}

    def failed(self) -> bool:
        t = self.tally()
        return bool(t.get("accepted_lost") or t.get("duplicated") or self.over_budget())

    def outage_of(self, t: float) -> Outage | None:
        for o in self.outages:
            lead = 0.0 if o.accepts else IN_FLIGHT_S
            if o.start - lead <= t <= o.end:
                return o
        return None

    def tally(self) -> dict[str, int]:
        t = Counter[str]()
        for i in self.calls.answered():
            n = self.stored.get(i, 0)
            o = self.outage_of(self.calls.sent_at[i])
            side = "accepted" if o is None or o.accepts else "outside"
            t["sent"] += 1
            t[side] += 1
            t[f"{side}_stored"] += n > 0
            t[f"{side}_lost"] += n == 0
            t["duplicated"] += max(0, n - 1)
        return dict(t)


def restarts(up: e2e.Up) -> dict[str, int]:
    services = orjson.loads((up.data / "run.json").read_bytes())["services"]
    return {name: int(s["restarts"]) for name, s in services.items()}


def spool_bound() -> int:
    from wiretide.dissector.service import DissectorSettings

    return int(DissectorSettings.model_fields["dissector_spool_bytes"].default)


def pid_changed(up: e2e.Up, name: str, old: int) -> bool:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return up.pids().get(name, old) != old
    return False


def wait_until(what: str, cond: Callable[[], bool], timeout: float = RECOVER_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"chaos: {what}: not reached after {timeout:.0f}s")
        time.sleep(0.1)


def settled(probe: Callable[[], int], timeout: float = DRAIN_TIMEOUT_S) -> int:
    """The value of `probe` once it has not moved for SETTLE_S (work in progress has drained)."""
    last, moved = probe(), time.monotonic()
    deadline = moved + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = probe()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved >= SETTLE_S:
            break
    return last


def recovered(up: e2e.Up) -> None:
    """Every service SERVING, the interface captured and a dissector stream ready."""
    up.wait_ready()

    def streaming() -> bool:
        with contextlib.suppress(Exception):
            return bool(up.capture_status().dissectors)
        return False

    wait_until("a dissector stream ready", streaming)


def health(up: e2e.Up) -> dict[str, Any]:
    token = up.data / "service-token"
    headers = {"authorization": f"Bearer {token.read_text().strip()}"} if token.is_file() else {}
    doc: dict[str, Any] = httpx.get(
        f"http://127.0.0.1:{up.port}/api/health", headers=headers, timeout=5
    ).json()
    return doc


def drops_since(up: e2e.Up, before: dict[str, int]) -> dict[str, int]:
    now = up.drops()
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0) > 0}


@contextlib.contextmanager
def wiretide(work: Path, target: e2e.Target, env: dict[str, str] | None = None) -> Iterator[e2e.Up]:
    work.mkdir(parents=True, exist_ok=True)
    e2e.START_TIMEOUT_S = START_TIMEOUT_S  # read by Up.wait_ready
    up = e2e.Up(work, target.host_if, env or {})
    try:
        up.wait_ready()
        recovered(up)
        yield up
    finally:
        up.stop()


def scenario_nats(target: e2e.Target, work: Path, args: argparse.Namespace) -> Report:
    with wiretide(work, target) as up:
        load = Load.start(target.ip, args.rate, work)
        time.sleep(LEAD_S)
        before = up.drops()
        spool_dir = up.data / "spool"
        nats = up.pids()["nats"]
        os.kill(up.proc.pid, signal.SIGSTOP)  # the supervisor would restart NATS within 0.5 s
        try:
            start = time.time()
            os.kill(nats, signal.SIGKILL)
            peak = 0
            while time.time() - start < args.outage:
                peak = max(peak, sum(p.stat().st_size for p in spool_dir.rglob("*.spool")))
                time.sleep(0.2)
        finally:
            os.kill(up.proc.pid, signal.SIGCONT)
        wait_until("NATS restarted", lambda: pid_changed(up, "nats", nats))
        recovered(up)
        end = time.time()
        time.sleep(GAP_S)
        drops = drops_since(up, before)
        calls = load.finish()
        stored = wait_drained(up.data / "entries.sqlite3", len(calls.answered()))
        left = sum(p.stat().st_size for p in spool_dir.rglob("*.spool"))
        return Report(
            f"NATS down {end - start:.0f} s",
            calls,
            stored,
            [Outage("nats", start, end, accepts=True)],
            drops,
            [
                f"spool peak {peak / 1e6:.1f} MB of the {spool_bound() / 1e6:,.0f} MB bound "
                f"(WIRETIDE_DISSECTOR_SPOOL_BYTES), {left} bytes left after",
                f"NATS restarts by the supervisor: {restarts(up)['nats']}",
            ],
        )


def scenario_kill(target: e2e.Target, work: Path, args: argparse.Namespace) -> Report:
    with wiretide(work, target) as up:
        load = Load.start(target.ip, args.rate, work)
        time.sleep(LEAD_S)
        before = up.drops()
        outages = []
        drops: Counter[str] = Counter()

        def count(restarted: str = "") -> dict[str, int]:
            """Add what was counted since `before`; a restarted process counts from 0 (all since the kill)."""
            now = up.drops()
            for k, v in now.items():
                drops[k] += v - (0 if k.startswith(f"{restarted}.") else before.get(k, 0))
            return now

        for victim in args.victims.split(","):
            before = count()
            old = up.pids()[victim]
            start = time.time()
            os.kill(old, signal.SIGKILL)
            wait_until(f"{victim} restarted", lambda: pid_changed(up, victim, old))  # noqa: B023 - called now
            recovered(up)
            outages.append(Outage(victim, start, time.time(), accepts=victim not in TAKERS))
            before = count(victim)
            time.sleep(GAP_S)
        count()
        calls = load.finish()
        stored = wait_drained(up.data / "entries.sqlite3", len(calls.answered()))
        counts = restarts(up)
        return Report(
            "kill -9 each service",
            calls,
            stored,
            outages,
            {k: v for k, v in drops.items() if v > 0},
            ["restarts by the supervisor: " + ", ".join(f"{n} {counts[n]}" for n in VICTIMS)],
        )


def scenario_disk(target: e2e.Target, work: Path, args: argparse.Namespace) -> Report:
    with tmpfs(work / "store", STORE_TMPFS_MB) as store:
        db = store / "entries.sqlite3"
        with wiretide(work, target, {"WIRETIDE_GATEWAY_DB": str(db)}) as up:
            load = Load.start(target.ip, args.rate, work)
            time.sleep(LEAD_S)
            before = up.drops()
            start = time.time()
            ballast = fill(store)
            error = ""

            def failing() -> bool:
                nonlocal error
                now = ""
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    now = health(up)["store"]["last_error"] or ""
                error = error or now  # the first error reported is the one printed
                return bool(now)

            wait_until("the store to report the full disk", failing)
            time.sleep(args.outage)
            ballast.unlink()
            wait_until("the store writing again", lambda: not failing())
            end = time.time()
            time.sleep(GAP_S)
            drops = drops_since(up, before)
            calls = load.finish()
            stored = wait_drained(db, len(calls.answered()))
            check = integrity(db)
        return Report(
            f"store disk full {end - start:.0f} s",
            calls,
            stored,
            [Outage("disk full", start, end, accepts=True)],
            drops,
            [f"error while full: {error!r}", f"PRAGMA integrity_check after: {check}"],
        )


# -- hostile traffic ----------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frames(src_mac: bytes, dst_mac: bytes, src: str, dst: str, n: int) -> Iterator[bytes]:
    """`n` SYNs, each of its own flow (source port x destination port), with valid checksums."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    eth = dst_mac + src_mac + b"\x08\x00"
    for i in range(n):
        sport, dport = 1024 + i % 64_000, 10_000 + i // 64_000
        tcp = struct.pack("!HHIIBBHHH", sport, dport, i, 0, 5 << 4, 0x02, 65535, 0, 0)
        csum = _checksum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xFFFF, 0, 64, 6, 0, s, d)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        yield eth + ip + tcp


def synflood(interface: str, dst_mac: str, src: str, dst: str, n: int) -> None:
    """Inside the namespace: `n` spoofed SYNs out of `interface` on a raw socket, as fast as it goes."""
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind((interface, 0))
    own = bytes.fromhex(Path(f"/sys/class/net/{interface}/address").read_text().strip().replace(":", ""))
    for frame in syn_frames(own, bytes.fromhex(dst_mac.replace(":", "")), src, dst, n):
        while True:
            try:
                raw.send(frame)
                break
            except BlockingIOError:  # the device queue is full: let it drain
                time.sleep(0.001)
    raw.close()


def slowloris(host: str, connections: int, seconds: float) -> int:
    """Connections that send a request's headers a line a second and never finish; how many held."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, connections + 256)), hard))
    socks = []
    for _ in range(connections):
        with contextlib.suppress(OSError):
            s = socket.create_connection((host, 80), timeout=5)
            s.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        time.sleep(1.0)
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(f"X-Slow-{n}: {'a' * 20}\r\n".encode())
        n += 1
    held = 0
    for s in socks:
        with contextlib.suppress(OSError):
            s.send(b"X-Last: 1\r\n")
            held += 1
        s.close()
    return held


@contextlib.contextmanager
def hostile_run(target: e2e.Target, work: Path) -> Iterator[tuple[e2e.Up, Callable[[str], None], list[str]]]:
    """A fresh `wiretide up` for one hostile scenario; `step(what)` notes every service's peak RSS."""
    with wiretide(work, target) as up:
        pids = up.pids()
        notes: list[str] = []

        def step(what: str) -> None:
            rss = e2e.peak_rss_by_process(pids)
            over = [f"{k} {v:.0f}" for k, v in rss.items() if k in SERVICES and v > RSS_BUDGET_MB]
            stats = up.dissector_stats()
            worst = max(SERVICES, key=lambda k: rss.get(k, 0.0))
            flagged = " OVER BUDGET: " + ", ".join(over) if over else ""
            notes.append(
                f"after {what}: peak RSS max {worst} {rss[worst]:.0f} MB{flagged}; "
                f"dissector flows {stats.flows_active:,}"
            )

        yield up, step, notes


def _hostile_report(
    name: str, up: e2e.Up, before: dict[str, int], notes: list[str], calls: Calls | None = None
) -> Report:
    stored = wait_drained(up.data / "entries.sqlite3", len(calls.answered())) if calls else Counter[int]()
    rss = e2e.peak_rss_by_process(up.pids())
    return Report(name, calls or Calls([], []), stored, [], drops_since(up, before), notes, rss)


def scenario_synflood(target: e2e.Target, work: Path, args: argparse.Namespace) -> Report:
    with hostile_run(target, work) as (up, step, notes):
        before = up.drops()
        host_mac = Path(f"/sys/class/net/{target.host_if}/address").read_text().strip()
        subnet = target.ip.rsplit(".", 1)[0]
        spoofed = f"{subnet}.77"  # on the link, never answers ARP: the host's replies go nowhere
        packets0 = up.capture_status().packets
        subprocess.run(
            ["ip", "netns", "exec", target.ns, sys.executable, __file__, "_synflood", "eth0", host_mac,
             spoofed, f"{subnet}.1", str(args.flows)],
            check=True,
        )  # fmt: skip
        wait_until(
            "the SYNs through the dissector",
            lambda: up.dissector_stats().packets >= min(args.flows, up.capture_status().packets - packets0),
        )
        step(f"a SYN flood of {args.flows:,} half-open flows")
        # A paced load after the flood: the flood's flows must not crowd out new calls.
        calls = Load.start(target.ip, args.rate, work, seconds=LEAD_S).finish(stop=False)
        return _hostile_report(f"SYN flood, {args.flows:,} half-open flows", up, before, notes, calls)


def scenario_slowloris(target: e2e.Target, work: Path, args: argparse.Namespace) -> Report:
    with hostile_run(target, work) as (up, step, notes):
        before = up.drops()
        load = Load.start(target.ip, args.rate, work)
        held = slowloris(target.ip, SLOWLORIS_CONNECTIONS, SLOWLORIS_S)
        calls = load.finish()
        step(f"slow-loris ({held:,} of {SLOWLORIS_CONNECTIONS:,} connections held {SLOWLORIS_S:.0f} s)")
        return _hostile_report("slow-loris HTTP beside a paced load", up, before, notes, calls)


def scenario_body(target: e2e.Target, work: Path, args: argparse.Namespace) -> Report:
    www = work.parent / "nginx" / "www"  # where bench/e2e.py's nginx serves static files from
    with hostile_run(target, work) as (up, step, notes):
        before = up.drops()
        big = www / "big.bin"
        with big.open("wb") as f:
            f.truncate(args.body_mb << 20)  # sparse: no disk used
        try:
            got = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", f"http://{target.ip}/big.bin"],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            big.unlink()
        settled(lambda: int(up.dissector_stats().packets))  # the body through the dissector
        step(f"a {int(got.stdout or 0) / 2**20:,.0f} MiB response body")
        calls = Load.start(target.ip, args.rate, work, seconds=LEAD_S).finish(stop=False)
        return _hostile_report(f"a {args.body_mb:,} MiB response body", up, before, notes, calls)


def scenario_paths(target: e2e.Target, work: Path, args: argparse.Namespace) -> Report:
    with hostile_run(target, work) as (up, step, notes):
        before = up.drops()
        load = Load.start(
            target.ip, args.path_rate, work, seconds=args.paths / args.path_rate, connections=32, word=WORD
        )
        calls = load.finish(stop=False)
        report = _hostile_report(f"{args.paths:,} distinct paths", up, before, notes, calls)
        step(f"{len(calls.answered()):,} calls with distinct paths, stored")
        report.rss = e2e.peak_rss_by_process(up.pids())
        return report


# -- output -------------------------------------------------------------------------------------


def print_report(r: Report) -> None:
    t = r.tally()
    print(f"\n== {r.name}")
    print(
        f"   sent {t.get('sent', 0):,} calls answered; accepted {t.get('accepted', 0):,}, stored "
        f"{t.get('accepted_stored', 0):,}, LOST {t.get('accepted_lost', 0):,}, "
        f"duplicated {t.get('duplicated', 0):,}"
    )
    if t.get("outside"):
        print(
            f"   not accepted (sent while capture or the dissector was down, or in flight in it): "
            f"{t['outside']:,}, of which stored {t.get('outside_stored', 0):,}"
        )
    for o in r.outages:
        inside = [i for i in r.calls.answered() if r.outage_of(r.calls.sent_at[i]) is o]
        kept = sum(1 for i in inside if r.stored.get(i))
        print(
            f"   {o.label:<10} down {o.end - o.start:5.1f} s: {len(inside):,} calls sent meanwhile, "
            f"{kept:,} stored"
        )
    print("   drops counted: " + (", ".join(f"{k} {v:,}" for k, v in sorted(r.drops.items())) or "none"))
    for note in r.notes:
        print(f"   {note}")
    if r.rss:
        print("   peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in r.rss.items()))
        over = r.over_budget()
        print(
            f"   memory budget {RSS_BUDGET_MB} MB per service: "
            + ("FAIL, over: " + ", ".join(f"{k} {v:.0f}" for k, v in over.items()) if over else "ok")
        )
    t = r.tally()
    if t.get("accepted_lost") or t.get("duplicated"):
        print("   FAIL: accepted calls lost or stored twice")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        host, rate, seconds, conns, out, word = sys.argv[2:8]
        client(host, int(rate), float(seconds), int(conns), Path(out), word)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_synflood":
        interface, mac, src, dst, n = sys.argv[2:7]
        synflood(interface, mac, src, dst, int(n))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help="comma-separated: " + ", ".join(SCENARIOS) + " (hostile: the last four)",
    )
    p.add_argument("--rate", type=int, default=200, help="calls per second of the paced load")
    p.add_argument("--outage", type=float, default=30.0, help="seconds NATS is down / the disk full")
    p.add_argument("--victims", default=",".join(VICTIMS), help="services killed in turn")
    p.add_argument("--flows", type=int, default=100_000, help="half-open flows of the SYN flood")
    p.add_argument("--paths", type=int, default=100_000, help="calls with distinct paths")
    p.add_argument("--path-rate", type=int, default=2_000, help="calls per second of those")
    p.add_argument("--keep", type=Path, help="work in this (new) directory and keep it: logs, stores, calls")
    p.add_argument("--body-mb", type=int, default=1024, help="size of the large response body")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("chaos needs root (network namespaces, AF_PACKET, tmpfs)", file=sys.stderr)
        return 2
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    chosen = [h for s in chosen for h in (HOSTILE if s == "hostile" else (s,))]
    for s in chosen:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    run = {
        "nats": scenario_nats,
        "kill": scenario_kill,
        "disk": scenario_disk,
        "synflood": scenario_synflood,
        "slowloris": scenario_slowloris,
        "body": scenario_body,
        "paths": scenario_paths,
    }
    print(f"wiretide chaos: {os.cpu_count()} CPUs; scenarios {', '.join(chosen)}; paced load {args.rate}/s")
    reports = []
    with (
        (
            contextlib.nullcontext(str(args.keep.resolve()))
            if args.keep
            else tempfile.TemporaryDirectory(prefix="wt-chaos-")
        ) as tmp,
        e2e.namespace() as target,
        e2e.nginx(target, Path(tmp)),
    ):
        for i, name in enumerate(chosen):
            report = run[name](target, Path(tmp) / f"s{i}-{name}", args)
            print_report(report)
            reports.append(report)
    lost = sum(r.tally().get("accepted_lost", 0) for r in reports)
    dup = sum(r.tally().get("duplicated", 0) for r in reports)
    over = sum(len(r.over_budget()) for r in reports)
    failed = [r.name for r in reports if r.failed()]
    print(
        f"\nchaos: accepted calls lost {lost:,}, duplicated {dup:,} (target: 0 and 0); "
        f"services over the {RSS_BUDGET_MB} MB budget: {over}"
    )
    if failed:
        print("chaos: FAIL in " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

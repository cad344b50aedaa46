"""The demo mini-cluster: network namespaces as pods on one bridge, as a CNI would wire them.

Three "namespaces" (shop, data, load), nine pods running real servers (PostgreSQL, Redis and a
RabbitMQ broker among them, when installed, and a payments service behind HTTPS whose certificates
are made at start in a scratch directory), and a Kubernetes API emulator describing exactly these
pods, their ReplicaSets/StatefulSets, Services and EndpointSlices. The broker takes seconds to boot, so
the demo does not wait for it: a watcher waits for its port and says when it listens, or why it never
will — the demo goes on without the messaging hop then.

Rule: everything created is written to the state file *before* it is created, so that `down()` —
from this process or from `wiretide demo --down` in another shell — removes all of it, even after a
crash — and every process left in a pod's namespace (a daemon a server forked, such as epmd) is
ended with it. The bridge carries no address; the pods' 10.x addresses exist only inside their
namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.cli.demo import kubeapi as ka
from wiretide.cli.demo.apps import PAYMENTS_SNI

SUBNET: Final = "10.244.0"  # pods' addresses, only ever inside the demo's namespaces
NODE: Final = "demo-node"
STOP_WAIT_S: Final = 3.0
PR_SET_PDEATHSIG: Final = 1


@dataclass(frozen=True, slots=True)
class PodPlan:
    name: str
    namespace: str
    app: str
    owner_kind: str  # "ReplicaSet" (of a Deployment) or "StatefulSet"
    owner_name: str
    host: int  # last octet
    port: int  # 0: a client only

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self.host}"


PODS: Final = (
    PodPlan("frontend-6d4cf-x7k2p", "shop", "frontend", "ReplicaSet", "frontend-6d4cf", 10, 8080),
    PodPlan("api-58b9d-m4q8z", "shop", "api", "ReplicaSet", "api-58b9d", 11, 8080),
    PodPlan("worker-7c5f8-h2n6r", "shop", "worker", "ReplicaSet", "worker-7c5f8", 12, 0),
    PodPlan("payments-5f7d9-k3v8t", "shop", "payments", "ReplicaSet", "payments-5f7d9", 13, 8443),
    PodPlan("redis-0", "data", "redis", "StatefulSet", "redis", 20, 6379),
    PodPlan("db-0", "data", "db", "StatefulSet", "db", 21, 5432),
    PodPlan("postgres-0", "data", "postgres", "StatefulSet", "postgres", 22, 5432),
    PodPlan("rabbitmq-0", "data", "rabbitmq", "StatefulSet", "rabbitmq", 23, 5672),
    PodPlan("loadgen-7f6c8-q9w2e", "load", "loadgen", "ReplicaSet", "loadgen-7f6c8", 30, 0),
)
SERVICE_IPS: Final = {
    "frontend": "10.96.0.10",
    "api": "10.96.0.11",
    "payments": "10.96.0.13",
    "redis": "10.96.0.20",
    "db": "10.96.0.21",
    "postgres": "10.96.0.22",
    "rabbitmq": "10.96.0.23",
}
# The demo's PostgreSQL: small, unlogged-fast, trusting its one client (it lives only in its namespace).
POSTGRES_USER: Final = "demo"
POSTGRES_SETTINGS: Final = (
    "fsync=off", "shared_buffers=16MB", "max_connections=20", "log_min_messages=fatal"
)  # fmt: skip
# The demo's RabbitMQ: one node named after the pod's loopback (resolvable in any namespace, whatever the
# host is called), its data, logs and Erlang cookie in a scratch directory, its distribution port and
# epmd on loopback only, one Erlang scheduler that does not spin (it runs beside Wiretide on a laptop).
RABBITMQ_SCRIPT: Final = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # not /usr/sbin's (it resets HOME)
RABBITMQ_USER: Final = "demo"  # apps.AMQP_USER: its broker lives only in its namespace
RABBITMQ_NODE: Final = "rabbit@localhost"
RABBITMQ_ERL_ARGS: Final = (
    "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"
)
# Here the node listens 14–26 s after it starts (2 loaded cores); past this it is stopped and left out.
RABBITMQ_START_TIMEOUT_S: Final = 180.0
RABBITMQ_NICE: Final = 10  # the broker boots in the background, behind everything else
BROKER_POLL_S: Final = 0.1  # how often the watcher looks for the broker's listening socket
TCP_LISTEN: Final = "0A"  # /proc/net/tcp's st column for LISTEN


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _die_with_parent() -> None:
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class DemoState:
    """What the demo created (or is about to create): enough to remove all of it."""

    path: Path
    owner_pid: int = 0
    bridge: str = ""
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    kubeapi: str = ""
    dirs: list[str] = field(default_factory=list)  # scratch directories (PostgreSQL's data)

    def save(self) -> None:
        doc = {k: v for k, v in self.__dict__.items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> DemoState | None:
        try:
            doc: dict[str, Any] = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return cls(path=path, **doc)


def teardown(state: DemoState) -> list[str]:
    """Remove everything in `state` (processes, namespaces, links, bridge). Returns what was removed."""
    removed: list[str] = []
    for pid in state.pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            removed.append(f"process {pid}")
    deadline = time.monotonic() + STOP_WAIT_S
    for pid in state.pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for ns in state.netns:
        strays = _stray_processes(ns)
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid} (left in {ns})")
        deadline = time.monotonic() + STOP_WAIT_S
        while strays and time.monotonic() < deadline:  # a SIGKILL takes effect soon, not at once
            time.sleep(0.05)
            strays = _stray_processes(ns)
        if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
            removed.append(f"netns {ns}")
    for link in [*state.links, state.bridge]:
        if link and subprocess.run(["ip", "link", "del", link], capture_output=True).returncode == 0:
            removed.append(f"link {link}")
    for path in state.dirs:
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"directory {path}")
    with contextlib.suppress(OSError):
        state.path.unlink()
    return removed


def _stray_processes(netns: str) -> list[int]:
    """Processes still inside a namespace (`ip netns pids`): what its servers forked and left behind."""
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split() if p.isdigit()] if done.returncode == 0 else []


def rabbitmq_server() -> str | None:
    """The broker's start script: Debian's own (the /usr/sbin wrapper switches user and resets HOME),
    else the `rabbitmq-server` on PATH; None when RabbitMQ is not installed."""
    return str(RABBITMQ_SCRIPT) if RABBITMQ_SCRIPT.exists() else shutil.which("rabbitmq-server")


def listening(pid: int, ip: str, port: int) -> bool:
    """Whether a TCP socket listens on ip:port (or the wildcard) in the network namespace of `pid`."""
    host = f"{struct.unpack('=I', socket.inet_aton(ip))[0]:08X}"  # /proc prints the address as a u32
    wanted = {f"{host}:{port:04X}", f"00000000:{port:04X}"}
    try:
        with open(f"/proc/{pid}/net/tcp") as table:
            next(table)
            return any(
                (cols := line.split())[1] in wanted and cols[3] == TCP_LISTEN
                for line in table
                if line.strip()
            )
    except (OSError, StopIteration, IndexError):
        return False


def _last_line(path: Path) -> str:
    """The last line a workload wrote to its log (its own reason for failing), shortened."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            lines = [ln.strip() for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


class DemoCluster:
    def __init__(self, state_file: Path, tag: str = "", rabbitmq: str | None = "") -> None:
        """`rabbitmq`: the broker's start script ("" finds the installed one, None leaves it out)."""
        self.tag = tag or f"wtd{os.getpid() % 100000}"
        self.state = DemoState(path=state_file, owner_pid=os.getpid())
        self.kube: ka.KubeApi | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = state_file.parent / "demo-logs"
        self.rabbitmq = rabbitmq_server() if rabbitmq == "" else rabbitmq
        # The messaging hop: "starting", then "up" or why not (also printed); `broker_settled` once known.
        self.broker = "not started"
        self.broker_settled = threading.Event()
        self._stopping = threading.Event()

    def netns(self, pod: PodPlan) -> str:
        return f"{self.tag}-{pod.name}"

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    # -- network -------------------------------------------------------------------------------
    def create_network(self) -> None:
        self.state.bridge = self.bridge
        self.state.save()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        for i, pod in enumerate(PODS):
            ns, host_if = self.netns(pod), f"{self.tag}v{i}"
            self.state.netns.append(ns)
            self.state.links.append(host_if)
            self.state.save()
            _ip("netns", "add", ns)
            subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
                capture_output=True,
            )
            _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", host_if, "master", self.bridge)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    # -- workloads -----------------------------------------------------------------------------
    def _spawn(
        self, pod: PodPlan, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{pod.app}.log").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns(pod), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - setsid + pdeathsig only
        )
        log.close()
        self.procs[pod.app] = proc
        self.state.pids.append(proc.pid)
        self.state.save()
        return proc

    def _payments_certificates(self, pod: PodPlan) -> tuple[Path, Path, Path]:
        """A throwaway CA and the payments pod's certificate (its Service's DNS names and its
        addresses), in a scratch directory removed with the demo: (CA, certificate, key)."""
        from wiretide.cli.certs import Leaf, ensure

        base = Path(tempfile.mkdtemp(prefix=f"{self.tag}-tls-"))
        self.state.dirs.append(str(base))
        self.state.save()
        labels = PAYMENTS_SNI.split(".")
        names = tuple(".".join(labels[:n]) for n in (len(labels), 3, 2, 1))  # …cluster.local … payments
        files = ensure(base, [Leaf(pod.app, names, (pod.ip, SERVICE_IPS[pod.app]))])[pod.app]
        return files.ca, files.cert, files.key

    def start_workloads(self) -> None:
        by_app = {p.app: p for p in PODS}
        app = [sys.executable, "-m", "wiretide.cli.demo.apps"]

        def addr(name: str) -> str:
            return f"{by_app[name].ip}:{by_app[name].port}"

        broker = self._start_rabbitmq(by_app["rabbitmq"])  # first: it takes longest to boot
        redis_bin = shutil.which("redis-server")
        if redis_bin is not None:
            redis = by_app["redis"]
            self._spawn(
                redis,
                [redis_bin, "--bind", redis.ip, "--port", str(redis.port), "--save", "", "--appendonly", "no",
                 "--protected-mode", "no", "--daemonize", "no"],
            )  # fmt: skip
        db_up = []
        if self._start_postgres(by_app["postgres"]):
            db_up = ["--upstream", f"postgres={addr('postgres')}"]
        self._spawn(by_app["db"], [*app, "db", "--listen", addr("db"), *db_up])
        api_up = ["--upstream", f"db={addr('db')}"]
        if redis_bin is not None:
            api_up += ["--upstream", f"redis={addr('redis')}"]
        if broker:
            api_up += ["--upstream", f"rabbitmq={addr('rabbitmq')}"]
            self._spawn(by_app["worker"], [*app, "worker", "--upstream", f"rabbitmq={addr('rabbitmq')}"])
        # The TLS hop: the api charges each order at payments over HTTPS (OpenSSL on both ends).
        ca, cert, key = self._payments_certificates(by_app["payments"])
        self._spawn(
            by_app["payments"],
            [*app, "payments", "--listen", addr("payments"), "--tls-cert", str(cert), "--tls-key", str(key)],
        )
        api_up += ["--upstream", f"payments={addr('payments')}", "--tls-ca", str(ca)]
        self._spawn(by_app["api"], [*app, "api", "--listen", addr("api"), *api_up])
        self._spawn(
            by_app["frontend"],
            [*app, "frontend", "--listen", addr("frontend"), "--upstream", f"api={addr('api')}"],
        )
        self._spawn(by_app["loadgen"], [*app, "loadgen", "--upstream", f"frontend={addr('frontend')}"])

    def _start_postgres(self, pod: PodPlan) -> bool:
        """A throwaway PostgreSQL cluster in the pod, run as the `postgres` user (the server refuses
        root); False, and the db pod makes its rows up, when PostgreSQL is not installed."""
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        runuser = shutil.which("runuser")
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            return False
        if not bins or runuser is None:
            return False
        bindir = bins[-1].parent
        # Not under the data dir: its parents may be closed to the `postgres` user.
        base = Path(tempfile.mkdtemp(prefix=f"{self.tag}-pg-"))
        self.state.dirs.append(str(base))
        self.state.save()
        base.chmod(0o755)
        os.chown(base, user.pw_uid, user.pw_gid)
        data = base / "data"
        init = subprocess.run(
            [runuser, "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(data), "-U", POSTGRES_USER,
             "--auth=trust", "--no-sync"],
            capture_output=True, check=False,
        )  # fmt: skip
        if init.returncode != 0:
            return False
        with (data / "pg_hba.conf").open("a") as hba:  # the pods' subnet may log in as the demo user
            hba.write(f"host all {POSTGRES_USER} {SUBNET}.0/24 trust\n")
        settings = [arg for kv in POSTGRES_SETTINGS for arg in ("-c", kv)]
        self._spawn(
            pod,
            [runuser, "-u", "postgres", "--", str(bindir / "postgres"), "-D", str(data), "-p", str(pod.port),
             "-c", f"listen_addresses={pod.ip}", "-k", str(base), *settings],
        )  # fmt: skip
        return True

    def _start_rabbitmq(self, pod: PodPlan) -> bool:
        """A throwaway RabbitMQ node in the pod (as the `rabbitmq` user when there is one), watched until
        it listens; False, and the demo has no messaging hop, when RabbitMQ is not installed."""
        if self.rabbitmq is None:
            self._broker_outcome("not installed", "rabbitmq-server is not installed: no messaging hop")
            return False
        base = Path(tempfile.mkdtemp(prefix=f"{self.tag}-rmq-"))
        self.state.dirs.append(str(base))
        self.state.save()
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {pod.ip}:{pod.port}\n"
            f"default_user = {RABBITMQ_USER}\ndefault_pass = {RABBITMQ_USER}\nloopback_users = none\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        cookie = base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        env = {
            **os.environ,
            "HOME": str(base),  # the Erlang cookie's home
            "RABBITMQ_NODENAME": RABBITMQ_NODE,
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_LOGS": "-",  # to the pod's log
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": RABBITMQ_ERL_ARGS,
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": str(base / "erl_crash.dump"),
        }
        argv = [self.rabbitmq]
        runuser = shutil.which("runuser")
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam("rabbitmq")
            if runuser is not None:  # the Erlang VM need not run as root; HOME survives runuser via env
                for path in (base, *base.iterdir()):
                    os.chown(path, user.pw_uid, user.pw_gid)
                argv = [runuser, "-u", "rabbitmq", "--", "env", f"HOME={base}", self.rabbitmq]
        base.chmod(0o700)
        nice = shutil.which("nice")
        if nice is not None:  # its boot (~8 CPU-seconds here) yields to Wiretide's own start-up
            argv = [nice, "-n", str(RABBITMQ_NICE), *argv]
        self.broker = "starting"
        proc = self._spawn(pod, argv, env=env, cwd=base)
        watcher = threading.Thread(
            target=self._watch_broker, args=(proc, pod, time.monotonic()), name="demo-broker", daemon=True
        )
        watcher.start()
        return True

    def _watch_broker(self, proc: subprocess.Popen[bytes], pod: PodPlan, started: float) -> None:
        """Wait for the broker's port (never a fixed time); say when it listens, or why it never will."""
        log = self.log_dir / f"{pod.app}.log"
        while not self._stopping.is_set():
            if proc.poll() is not None:
                why = f"it exited with status {proc.returncode} before listening: {_last_line(log)}"
                self._broker_outcome("failed", f"rabbitmq-server did not start ({why})", log)
                return
            if listening(proc.pid, pod.ip, pod.port):
                took = time.monotonic() - started
                self._broker_outcome(
                    "up",
                    f"rabbitmq-server listening on {pod.ip}:{pod.port} after {took:.1f} s "
                    "(api → rabbitmq → worker: order events on the orders queue)",
                )
                return
            if time.monotonic() - started > RABBITMQ_START_TIMEOUT_S:
                proc.terminate()
                why = f"not listening after {RABBITMQ_START_TIMEOUT_S:.0f} s: {_last_line(log)}"
                self._broker_outcome("failed", f"rabbitmq-server did not start ({why}); stopped it", log)
                return
            self._stopping.wait(BROKER_POLL_S)

    def _broker_outcome(self, status: str, message: str, log: Path | None = None) -> None:
        self.broker = status if status != "failed" else message
        if status == "failed":
            message += f"; the demo goes on without the messaging hop (log: {log})"
        print(f"wiretide demo: {message}", file=sys.stderr, flush=True)
        self.broker_settled.set()

    # -- the API's view ------------------------------------------------------------------------
    def start_kubeapi(self) -> ka.KubeApi:
        kube = ka.KubeApi().start()
        self.kube = kube
        self.state.kubeapi = kube.url
        self.state.save()
        describe(kube, datetime.now(UTC))
        return kube

    def up(self) -> None:
        try:
            self.create_network()
            self.start_kubeapi()
            self.start_workloads()
        except BaseException:
            self.down()
            raise

    def down(self) -> list[str]:
        self._stopping.set()
        if self.kube is not None:
            self.kube.stop()
            self.kube = None
        removed = teardown(self.state)
        for proc in self.procs.values():
            with contextlib.suppress(ChildProcessError):
                proc.poll()
        return removed


def describe(kube: ka.KubeApi, created: datetime) -> None:
    """Put exactly the demo's objects into the emulator."""
    for name in sorted({p.namespace for p in PODS}):
        kube.put(ka.namespace(name))
    kube.put(ka.node(NODE, ""))
    for pod in PODS:
        if pod.owner_kind == "ReplicaSet":
            kube.put(ka.replicaset(pod.owner_name, pod.namespace, pod.app))
        labels = {"app": pod.app}
        if pod.owner_kind == "ReplicaSet":
            labels["pod-template-hash"] = pod.owner_name.rsplit("-", 1)[1]
        kube.put(
            ka.pod(
                pod.name,
                pod.namespace,
                pod.ip,
                labels=labels,
                node_name=NODE,
                owner=(pod.owner_kind, pod.owner_name),
                created=created,
                ports=[pod.port] if pod.port else [],
            )
        )
        if pod.port:
            kube.put(ka.service(pod.app, pod.namespace, SERVICE_IPS[pod.app], pod.port))
            kube.put(ka.endpointslice(pod.app, pod.namespace, [(pod.name, pod.ip)], pod.port))

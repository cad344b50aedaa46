"""The demo mini-cluster: network namespaces as pods on one bridge, as a CNI would wire them.

Three "namespaces" (shop, data, load), six pods running real servers (PostgreSQL and Redis among
them, when installed), and a Kubernetes API emulator describing exactly these pods, their
ReplicaSets/StatefulSets, Services and EndpointSlices.

Rule: everything created is written to the state file *before* it is created, so that `down()` —
from this process or from `wiretide demo --down` in another shell — removes all of it, even after a
crash. The bridge carries no address; the pods' 10.x addresses exist only inside their namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from wiretide.cli.demo import kubeapi as ka

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
    PodPlan("redis-0", "data", "redis", "StatefulSet", "redis", 20, 6379),
    PodPlan("db-0", "data", "db", "StatefulSet", "db", 21, 5432),
    PodPlan("postgres-0", "data", "postgres", "StatefulSet", "postgres", 22, 5432),
    PodPlan("loadgen-7f6c8-q9w2e", "load", "loadgen", "ReplicaSet", "loadgen-7f6c8", 30, 0),
)
SERVICE_IPS: Final = {
    "frontend": "10.96.0.10",
    "api": "10.96.0.11",
    "redis": "10.96.0.20",
    "db": "10.96.0.21",
    "postgres": "10.96.0.22",
}
# The demo's PostgreSQL: small, unlogged-fast, trusting its one client (it lives only in its namespace).
POSTGRES_USER: Final = "demo"
POSTGRES_SETTINGS: Final = (
    "fsync=off", "shared_buffers=16MB", "max_connections=20", "log_min_messages=fatal"
)  # fmt: skip


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
    def __init__(self, state_file: Path, tag: str = "") -> None:
        self.tag = tag or f"wtd{os.getpid() % 100000}"
        self.state = DemoState(path=state_file, owner_pid=os.getpid())
        self.kube: ka.KubeApi | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = state_file.parent / "demo-logs"

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
    def _spawn(self, pod: PodPlan, argv: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{pod.app}.log").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns(pod), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - setsid + pdeathsig only
        )
        log.close()
        self.procs[pod.app] = proc
        self.state.pids.append(proc.pid)
        self.state.save()

    def start_workloads(self) -> None:
        by_app = {p.app: p for p in PODS}
        app = [sys.executable, "-m", "wiretide.cli.demo.apps"]

        def addr(name: str) -> str:
            return f"{by_app[name].ip}:{by_app[name].port}"

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

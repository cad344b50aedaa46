"""The demo's messaging hop at the cluster level: a real RabbitMQ node boots in its pod without holding
up the rest of the demo, the worker consumes from it, and everything the broker forked (epmd among it)
is gone when the demo is; a broker that cannot start is reported, and the demo goes on without it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.wait import wait_for
from wiretide.cli.demo.cluster import RABBITMQ_START_TIMEOUT_S, DemoCluster, rabbitmq_server

NO_BROKER = "rabbitmq-server is not installed (Makefile APT_PACKAGES)"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root"),
]

# The watcher settles the broker's outcome within its own deadline; this only bounds a hung watcher.
BROKER_TIMEOUT_S = RABBITMQ_START_TIMEOUT_S + 30


def in_namespace(cluster: DemoCluster, app: str) -> set[int]:
    """The processes inside one pod's namespace."""
    ns = next(n for n in cluster.state.netns if n.endswith(app) or app in n)
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def alive(pid: int) -> bool:
    """Running, or about to: neither gone nor a zombie waiting for its parent to read its status."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def describe(pids: set[int]) -> list[str]:
    out = []
    for p in sorted(pids):
        try:
            out.append(f"{p}: " + Path(f"/proc/{p}/stat").read_text()[:80])
        except OSError:
            out.append(f"{p}: gone")
    return out


def log_of(cluster: DemoCluster, app: str) -> str:
    path = cluster.log_dir / f"{app}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.slow
@pytest.mark.skipif(rabbitmq_server() is None, reason=NO_BROKER)
def test_the_broker_boots_in_its_pod_the_worker_consumes_and_down_leaves_no_process(tmp_path: Path) -> None:
    cluster = DemoCluster(tmp_path / "demo.json", tag=f"wtb{os.getpid() % 100000}")
    cluster.up()
    try:
        # up() returned before the broker listens: the rest of the demo does not wait for it.
        assert cluster.broker in ("starting", "up")
        assert cluster.procs["api"].poll() is None and cluster.procs["worker"].poll() is None
        wait_for("the broker's outcome", cluster.broker_settled.is_set, timeout=BROKER_TIMEOUT_S)
        assert cluster.broker == "up", (cluster.broker, log_of(cluster, "rabbitmq")[-2000:])
        wait_for("the worker consuming", lambda: "worker: consuming orders" in log_of(cluster, "worker"))
        # The node runs as the pod's processes: the VM and the epmd daemon it forked, all in its namespace.
        broker_pids = in_namespace(cluster, "rabbitmq-0")
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in broker_pids if alive(p)}
        assert {"beam.smp", "epmd"} <= names, names
    finally:
        cluster.down()
    assert not [p for p in broker_pids if alive(p)], describe(broker_pids)  # down() waited for them
    assert not any(Path(d).exists() for d in cluster.state.dirs)


def test_a_broker_that_cannot_start_is_reported_and_the_demo_goes_on_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such-rabbitmq-server")
    cluster = DemoCluster(tmp_path / "demo.json", tag=f"wtf{os.getpid() % 100000}", rabbitmq=missing)
    cluster.up()
    try:
        wait_for("the broker's outcome", cluster.broker_settled.is_set)
        said_why = cluster.broker
        assert said_why.startswith("rabbitmq-server did not start (it exited with status"), said_why
        assert "no-such-rabbitmq-server" in cluster.broker  # the reason, from the pod's own log
        said = capsys.readouterr().err
        assert "the demo goes on without the messaging hop" in said, said
        # Everything else runs; the worker keeps asking for the broker and says so once.
        running = ("frontend", "api", "db", "loadgen", "worker")
        assert all(cluster.procs[app].poll() is None for app in running)
        wait_for("the worker noticing", lambda: "unavailable" in log_of(cluster, "worker"))
    finally:
        removed = cluster.down()
    assert any(r.startswith("netns") for r in removed)


def test_without_rabbitmq_the_demo_has_no_messaging_hop_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = DemoCluster(tmp_path / "demo.json", tag=f"wtn{os.getpid() % 100000}", rabbitmq=None)
    cluster.up()
    try:
        assert cluster.broker_settled.is_set() and cluster.broker == "not installed"
        assert "rabbitmq-server is not installed: no messaging hop" in capsys.readouterr().err
        assert "worker" not in cluster.procs and "rabbitmq" not in cluster.procs
        assert cluster.procs["api"].poll() is None
    finally:
        cluster.down()

"""`wiretide up` brings NATS and the six services up, restarts what dies, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.nats import free_port

SERVICES = ("capture", "dissector", "resolver", "tracer", "agents", "gateway")


def wiretide(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    base.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "wiretide.cli", *args],
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes once reaped or defunct
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def health(port: int) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json()
    return doc


def wait_serving(port: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            doc = health(port)
            if doc["status"] == "SERVING":
                return doc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not SERVING after {timeout}s: {doc}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    port = free_port()
    data = tmp_path / "wt"
    proc = wiretide("up", "--data-dir", str(data), "--ui-port", str(port))
    try:  # reaped and its pipes closed however the test ends (a failure must not leak them)
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        else:
            raise AssertionError(
                "wiretide up did not come up:\n"
                + "".join(lines)
                + (proc.stderr.read() if proc.stderr else "")
            )
        assert "6/6 services SERVING" in "".join(lines)
        yield proc, data, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_up_serves_six_services_and_nats_and_ctrl_c_leaves_nothing_behind(
    running: tuple[subprocess.Popen[str], Path, int],
) -> None:
    proc, data, port = running
    doc = wait_serving(port)
    assert set(doc["services"]) == set(SERVICES)
    assert all(s["status"] == "SERVING" for s in doc["services"].values())
    assert doc["nats"]["connected"] is True
    status = subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "status", "--data-dir", str(data)],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    for name in SERVICES:
        assert name in status.stdout
    run = orjson.loads((data / "run.json").read_bytes())
    pids = [s["pid"] for s in run["services"].values()]
    assert len(pids) == 7 and all(alive(p) for p in pids)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not [p for p in pids if alive(p)]
    assert not (data / "run.json").exists()


def test_a_killed_service_is_restarted_and_serving_again(
    running: tuple[subprocess.Popen[str], Path, int],
) -> None:
    proc, data, port = running
    wait_serving(port)
    run = orjson.loads((data / "run.json").read_bytes())
    for victim in ("dissector", "nats"):
        old = run["services"][victim]["pid"]
        os.kill(old, signal.SIGKILL)
        time.sleep(0.5)
        doc = wait_serving(port, timeout=30)
        run = orjson.loads((data / "run.json").read_bytes())
        assert run["services"][victim]["pid"] != old
        assert run["services"][victim]["restarts"] == 1
        assert doc["services"]["dissector"]["status"] == "SERVING"
    log = (data / "logs").iterdir()
    assert {p.name for p in log} >= {f"{s}.log" for s in SERVICES}
    argv = [sys.executable, "-m", "wiretide.cli", "status", "--data-dir", str(data)]
    status = subprocess.run(argv, capture_output=True, text=True)
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[2:]}
    assert rows["dissector"][3] == rows["nats"][3] == "1"  # the restarts, as the user sees them
    assert rows["gateway"][3] == "0"


def test_a_second_instance_on_the_same_data_dir_is_refused_and_leaves_the_first_running(
    running: tuple[subprocess.Popen[str], Path, int],
) -> None:
    _proc, data, _port = running
    before = (data / "run.json").read_bytes()
    other = wiretide("up", "--data-dir", str(data), "--ui-port", str(free_port()))
    _out, err = other.communicate(timeout=60)
    assert other.returncode == 1
    assert "already running" in err
    # The refused instance touched nothing of the running one's: its run.json, hence `status`.
    assert (data / "run.json").read_bytes() == before
    status = subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "status", "--data-dir", str(data)],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert "SERVING" in status.stdout


def test_ui_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = wiretide("up", "--data-dir", str(tmp_path / "d"), "--ui-port", str(port))
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"127.0.0.1:{port} is in use" in err


def test_an_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = wiretide("up", "--data-dir", str(blocker / "sub"), "--ui-port", str(free_port()))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "is not writable" in err


def test_unknown_and_malformed_settings_stop_up_before_anything_starts(tmp_path: Path) -> None:
    proc = wiretide("up", "--data-dir", str(tmp_path / "d"), env={"WIRETIDE_GATEWAY_TOKN": "x"})
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "WIRETIDE_GATEWAY_TOKN" in err
    proc = wiretide("up", "--data-dir", str(tmp_path / "d"), env={"WIRETIDE_SHUTDOWN_GRACE_S": "soon"})
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "WIRETIDE_SHUTDOWN_GRACE_S" in err
    assert not (tmp_path / "d" / "run.json").exists()


def test_status_says_when_nothing_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wiretide.cli", "status", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "not running" in proc.stderr

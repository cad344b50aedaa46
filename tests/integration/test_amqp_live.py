"""Live AMQP 0-9-1: a throwaway `rabbitmq-server` node on a free loopback port (its own epmd, data and
logs in a temporary directory) and `pika` as the client — declare a queue, publish N messages, consume
and ack them, then redeclare the queue with conflicting arguments (406 PRECONDITION_FAILED) — captured
by tcpdump on the loopback interface and dissected offline. The entries are what the client did."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.tcpdump import dissect, loopback_capture
from tests.helpers.wait import wait_for
from wiretide.common.protocols import is_error, status_text

pika = pytest.importorskip("pika")

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD = shutil.which("epmd")
TCPDUMP = shutil.which("tcpdump")
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to capture on the loopback interface"),
    pytest.mark.skipif(
        not (RABBIT_BIN / "rabbitmq-server").exists() or EPMD is None,
        reason="rabbitmq-server is not installed (Makefile APT_PACKAGES)",
    ),
    pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed (Makefile APT_PACKAGES)"),
]

MESSAGES = 5
# The node usually starts in about five seconds here; beyond this the test skips and says why.
START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this test started, and its children (it leads its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def rabbit_node(tmp: Path) -> Iterator[int]:
    """A node on a free loopback port; yields the AMQP port. Skips if it cannot start in time."""
    assert EPMD is not None
    port, dist, epmd_port = free_port(), free_port(), free_port()
    node = f"wt{secrets.token_hex(4)}@localhost"
    (tmp / "rabbitmq.conf").write_text(f"loopback_users = none\nlisteners.tcp.default = 127.0.0.1:{port}\n")
    (tmp / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "HOME": str(tmp),  # the Erlang cookie lives here, not in the real home
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(tmp / "mnesia"),
        "RABBITMQ_LOG_BASE": str(tmp / "log"),
        "RABBITMQ_CONFIG_FILE": str(tmp / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp / "enabled_plugins"),
    }
    epmd = subprocess.Popen(
        [EPMD, "-port", str(epmd_port), "-address", "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    log = tmp / "server.out"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        ctl = [str(RABBIT_BIN / "rabbitmqctl"), "-n", node, "await_startup", "--timeout", "10"]

        def started() -> bool | None:
            if server.poll() is not None:
                return None  # it exited: no use waiting
            done = subprocess.run(ctl, env=env, capture_output=True, timeout=40)
            return done.returncode == 0

        try:
            up = wait_for("rabbitmq-server up", started, lambda v: v is not False, timeout=START_TIMEOUT_S)
        except AssertionError:
            up = None
        if not up:
            tail = log.read_text(errors="replace")[-600:]
            pytest.skip(f"rabbitmq-server did not start within {START_TIMEOUT_S:.0f}s: {tail!r}")
        yield port
    finally:
        stop(server)
        stop(epmd)


def client(port: int) -> list[tuple[int, bytes]]:
    """What the client does; returns the (delivery tag, body) of every message it consumed."""
    params = pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"))
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.queue_declare("orders", durable=False)
        for i in range(MESSAGES):
            props = pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=f"m-{i}",
                correlation_id=f"c-{i}", headers={"attempt": i},
            )  # fmt: skip
            ch.basic_publish("", "orders", f'{{"order": {i}}}'.encode(), props)
        got: list[tuple[int, bytes]] = []
        for method, _props, body in ch.consume("orders", inactivity_timeout=READY_TIMEOUT_S):
            assert method is not None, "a published message was not delivered"
            ch.basic_ack(method.delivery_tag)
            got.append((method.delivery_tag, body))
            if len(got) == MESSAGES:
                break
        ch.cancel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            ch.queue_declare("orders", durable=True)
        assert refused.value.reply_code == 406
    finally:
        conn.close()
    return got


def test_pika_against_rabbitmq_becomes_the_entries_it_did(tmp_path: Path) -> None:
    out = tmp_path / "amqp.pcap"
    with rabbit_node(tmp_path) as port, loopback_capture(out, port):
        consumed = client(port)
        # tcpdump writes each packet as it comes (-U); wait until the last close is on disk.
        wait_for("the capture holds the connection's end", lambda: out.stat().st_size > 4000)
    assert [tag for tag, _ in consumed] == list(range(1, MESSAGES + 1))

    entries = [e for e in dissect(out) if e["protocol"] == "amqp"]
    assert "guest\x00guest" not in repr(entries)
    publishes = [e for e in entries if e["method"] == "basic.publish"]
    assert [e["path"] for e in publishes] == ["(default)/orders"] * MESSAGES
    assert [e["request"]["properties"]["message_id"] for e in publishes] == [
        f"m-{i}" for i in range(MESSAGES)
    ]
    assert [e["request"]["body"]["content"] for e in publishes] == [b.decode() for _, b in consumed]
    assert publishes[0]["summary"] == "basic.publish (default) → orders (12 B)"
    delivers = [e for e in entries if e["method"] == "basic.deliver"]
    assert [
        (
            e["request"]["arguments"]["delivery_tag"],
            e["response"]["method"],
            e["response"]["arguments"]["delivery_tag"],
        )
        for e in delivers
    ] == [(t, "basic.ack", t) for t in range(1, MESSAGES + 1)]
    declares = [
        (e["path"], e["response"]["method"], e["status"]) for e in entries if e["method"] == "queue.declare"
    ]
    assert declares == [("orders", "queue.declare-ok", None), ("orders", "channel.close", 406)]
    errors = [e for e in entries if is_error(e)]
    assert [(e["method"], status_text(e)) for e in errors] == [("queue.declare", "PRECONDITION_FAILED (406)")]
    # Every exchange was answered: no unmatched or dissection errors.
    assert all(e["error"] is None for e in entries)
    methods = [e["method"] for e in entries]
    assert methods[:4] == ["connection.start", "connection.tune", "connection.open", "channel.open"]
    assert "basic.consume" in methods and "basic.cancel" in methods and methods[-1] == "connection.close"

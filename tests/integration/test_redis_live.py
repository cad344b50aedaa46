"""Live Redis between real peers in two network namespaces: `redis-server` (with a password) answering
`redis-cli` (plain commands, an error, MULTI/EXEC, RESP3 through `HELLO 3`, pub/sub) and
`redis-benchmark -P 16` (pipelining), captured by `wiretide capture` on the server's veth and dissected
offline. The entries are what the clients did, command by command; the password is in none of them."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.netns import NetPair, veth_pair
from tests.helpers.tcpdump import dissect
from tests.helpers.wait import wait_for
from tests.integration.test_http2_live import Capture, stop

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and AF_PACKET"),
    pytest.mark.skipif(
        any(not Path(f"/usr/bin/{b}").exists() for b in ("redis-server", "redis-cli", "redis-benchmark")),
        reason="redis-server, redis-cli and redis-benchmark are not installed (Makefile APT_PACKAGES)",
    ),
]

PASSWORD = "live-s3cret-pw"
PIPELINED = 160  # requests per benchmark test, sent 16 at a time
READY_TIMEOUT_S = 15.0


def cli(pair: NetPair, *args: str, stdin: bytes | None = None, resp3: bool = False) -> str:
    argv = ["redis-cli", "-h", pair.ip_b, "-a", PASSWORD, "--no-auth-warning", *(["-3"] if resp3 else [])]
    done = pair.run(pair.ns_a, [*argv, *args], input=stdin, capture_output=True, timeout=30, check=True)
    return done.stdout.decode()


def ping(pair: NetPair) -> bool:
    argv = ["redis-cli", "-h", pair.ip_b, "-a", PASSWORD, "--no-auth-warning", "PING"]
    done = pair.run(pair.ns_a, argv, capture_output=True, timeout=10)
    return b"PONG" in done.stdout


def test_redis_clients_become_redis_entries_command_by_command(tmp_path: Path) -> None:
    out = tmp_path / "redis.pcapng"
    with veth_pair("10.79.0") as pair:
        server = pair.popen(
            pair.ns_b,
            ["redis-server", "--bind", pair.ip_b, "--port", "6379", "--save", "", "--appendonly", "no",
             "--requirepass", PASSWORD, "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for("redis-server up", lambda: ping(pair), timeout=READY_TIMEOUT_S)
            capture = Capture(pair, out)
            try:
                assert cli(pair, "SET", "user:1", "alice").strip() == "OK"
                assert cli(pair, "GET", "user:1").strip() == "alice"
                assert "WRONGTYPE" in cli(pair, "LPUSH", "user:1", "x")
                assert cli(pair, stdin=b"MULTI\nINCR n\nINCR n\nEXEC\n").split()[-2:] == ["1", "2"]
                assert cli(pair, "HGETALL", "nothing", resp3=True).strip() in ("", "(empty hash)")
                subscriber = pair.popen(
                    pair.ns_a,
                    ["redis-cli", "-h", pair.ip_b, "-a", PASSWORD, "--no-auth-warning", "SUBSCRIBE", "news"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    assert subscriber.stdout is not None
                    seen: list[bytes] = []
                    wait_for(
                        "the subscriber listening",
                        lambda: cli(pair, "PUBSUB", "NUMSUB", "news").split()[-1:] == ["1"],
                        timeout=READY_TIMEOUT_S,
                    )
                    assert cli(pair, "PUBLISH", "news", "hello").strip() == "1"
                    assert cli(pair, "PUBLISH", "news", "again").strip() == "1"
                    while b"again" not in b"".join(seen):
                        seen.append(subscriber.stdout.readline())
                finally:
                    stop(subscriber)
                pair.run(
                    pair.ns_a,
                    ["redis-benchmark", "-h", pair.ip_b, "-a", PASSWORD, "-P", "16", "-n", str(PIPELINED),
                     "-c", "1", "-t", "set,get", "-q"],
                    capture_output=True, timeout=60, check=True,
                )  # fmt: skip
            finally:
                capture.stop()
        finally:
            server.terminate()
            server.wait(timeout=10)

    found = [e for e in dissect(out) if e["protocol"] == "redis"]
    assert PASSWORD not in repr(found)
    commands = Counter(e["method"] for e in found if e["request"] is not None)
    keyed = Counter((e["method"], e["path"]) for e in found if e["request"] is not None)
    # What redis-cli did: one AUTH per connection, then its command(s).
    assert keyed["SET", "user:1"] == 1 and keyed["GET", "user:1"] == 1 and keyed["LPUSH", "user:1"] == 1
    assert commands["MULTI"] == 1 and commands["EXEC"] == 1 and keyed["INCR", "n"] == 2
    assert commands["HELLO"] >= 1 and keyed["HGETALL", "nothing"] == 1
    assert commands["SUBSCRIBE"] == 1 and keyed["PUBLISH", "news"] == 2
    # What redis-benchmark did: PIPELINED SETs and GETs of its one key, 16 in flight at a time.
    assert keyed["SET", "key:__rand_int__"] == PIPELINED and keyed["GET", "key:__rand_int__"] == PIPELINED
    by_key = {(e["method"], e["path"]): e for e in found}
    error = by_key["LPUSH", "user:1"]
    assert error["status"] == -1 and error["error"]["type"] == "WRONGTYPE"
    assert by_key["GET", "user:1"]["response"]["value"] == "alice"
    exec_ = next(e for e in found if e["method"] == "EXEC")
    assert exec_["response"]["value"] == [1, 2]
    hgetall = by_key["HGETALL", "nothing"]
    assert hgetall["version"] == "RESP3" and hgetall["response"]["type"] == "map"
    pushes = [(e["method"], e["path"]) for e in found if e["request"] is None]
    assert pushes == [("SUBSCRIBE", "news"), ("MESSAGE", "news"), ("MESSAGE", "news")]
    auth = [e for e in found if e["method"] == "AUTH"]
    assert auth and all(e["request"]["args"] == ["[REDACTED]"] for e in auth)
    # Every command was answered, in order: no unmatched or dissection errors.
    assert all(e["error"] is None for e in found if e is not error)

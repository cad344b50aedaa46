"""Nothing is lost after a capture restart: keep-alive connections that were in progress when the
capture was killed (-9) are picked up again once it is back — the dissector sees a gap in each of
them, and the HTTP/1 session resynchronises on the next request and status line — so every call sent
after the pipeline is back is stored, exactly once.

`wiretide up` captures the host side of a veth while a paced client (chaos/run.py's, its own process)
sends GET /c/<n> over keep-alive connections it opened before the kill; "the pipeline is back" is
the capture time of the request of the first GET on a fresh connection, sent after the restart, that is
stored: the capture was running then, so every call sent after it went past a running capture.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for
from tests.integration.test_capture_burst import _capturing, _drops, served  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]
RATE = 40  # calls per second, over…
CONNECTIONS = 8  # …keep-alive connections opened before the kill and kept through it
AFTER = 150  # calls on those connections after the pipeline is back, at least


def stored(db: Path, prefix: str) -> Counter[str]:
    """How often each path under `prefix` is in the store (read-only, beside the running gateway)."""
    counts: Counter[str] = Counter()
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn,
    ):
        for (path,) in conn.execute("SELECT path FROM entries WHERE path LIKE ?", (f"{prefix}%",)):
            counts[str(path)] += 1
    return counts


def capture_pid(stack: Stack) -> int:
    run = orjson.loads((stack.data_dir / "run.json").read_bytes())
    return int(run["services"]["capture"]["pid"])


def first_captured(db: Path, prefix: str) -> float | None:
    """The capture time (s) of the earliest stored request with a path under `prefix`, if any."""
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn,
    ):
        (ts,) = conn.execute("SELECT min(ts) FROM entries WHERE path LIKE ?", (f"{prefix}%",)).fetchone()
        return None if ts is None else int(ts) / 1e9
    return None


class Probes:
    """GETs on new connections, one per call of `next_stored`; the capture time of the first one
    stored is when the pipeline was back for every connection.

    Not its send time: a probe sent while the capture is still starting is stored if its request gets
    there after the capture does (`httpx.get` can take a few hundred ms to put it on the wire on a loaded
    machine), and the calls sent in between were never on a captured interface. Nor the health's
    interface state, which keeps the killed capture's last answer until the new one is asked."""

    def __init__(self, server: str, db: Path) -> None:
        self.server = server
        self.db = db
        self.sent = 0

    def next_stored(self) -> float | None:
        path = f"/probe/{self.sent}"
        self.sent += 1
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://{self.server}{path}", timeout=5)
        return first_captured(self.db, "/probe/")


# The pairing across the two-way gap is reproduced deterministically by
# tests/unit/dissector/test_gap_pairing.py. The calls this test once found lost (12 of 151, all within
# 0.3 s of "back") were sent before the new capture was running: "back" was the probe's send time,
# up to 0.3 s before its request reached the wire. With "back" the capture time of that request, it
# passed 14 runs in a row (`sudo .venv/bin/pytest -q tests/integration/test_capture_restart.py`).
# The client sends each call on the connection answered last, so at this rate nearly every call rides
# one or two of the connections (the others stay open and idle through the gap).
def test_keep_alive_calls_after_a_capture_killed_and_restarted_are_all_stored_once(
    served: tuple[str, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    host_if, server = served
    stack = Stack(tmp_path / "wt", None, WIRETIDE_CAPTURE_INTERFACES=host_if)
    db = stack.data_dir / "entries.sqlite3"
    out = tmp_path / "calls.json"
    try:
        stack.wait_up(timeout=180)
        wait_for("the interface is captured", lambda: _capturing(stack, host_if), timeout=120)
        client = subprocess.Popen(
            [sys.executable, str(ROOT / "chaos" / "run.py"), "_client", server, str(RATE), "3600",
             str(CONNECTIONS), str(out), ""],
        )  # fmt: skip
        try:
            wait_for(
                "calls of the load stored",
                lambda: len(stored(db, "/c/")),
                lambda n: n >= 2 * RATE,
                timeout=120,
            )
            old = capture_pid(stack)
            os.kill(old, signal.SIGKILL)
            killed = time.time()
            wait_for("the capture restarted", lambda: capture_pid(stack), lambda pid: pid != old, timeout=120)
            restarted = time.time()
            wait_for("the interface captured again", lambda: _capturing(stack, host_if), timeout=120)
            probes = Probes(server, db)
            back = wait_for(
                "a call on a new connection stored", probes.next_stored, timeout=180, interval=0.2
            )
            assert back is not None and back > killed
            # The load runs on over the connections it opened before the kill, then stops.
            wait_for(
                "calls after the restart", lambda: time.time() - back, lambda s: s * RATE >= AFTER, timeout=60
            )
        finally:
            client.send_signal(signal.SIGTERM)
            client.wait(120)
        doc = orjson.loads(out.read_bytes())
        after = [
            n
            for n, (t, status) in enumerate(zip(doc["sent_at"], doc["status"], strict=True))
            if t >= back and status
        ]
        assert len(after) >= AFTER
        want = {f"/c/{n}" for n in after}
        with contextlib.suppress(AssertionError):  # a failure names what is missing, below
            wait_for(
                "every call sent after the restart stored",
                lambda: want <= set(stored(db, "/c/")),
                timeout=180,
            )
        got = stored(db, "/c/")
        missing = [n for n in after if f"/c/{n}" not in got]
        assert not missing, (
            f"{len(missing)} of {len(after)} calls sent after the pipeline was back are not stored: "
            + ", ".join(f"/c/{n} (+{doc['sent_at'][n] - back:.2f} s)" for n in missing[:40])
            + f"; back {back - killed:.1f} s after the kill; drops {_drops(stack)}"
        )
        assert {p: got[p] for p in want if got[p] != 1} == {}  # once each: none twice
        # The connections did cross a gap: calls sent while no capture ran are not there.
        outage = [n for n, t in enumerate(doc["sent_at"]) if killed + 0.1 <= t <= restarted]
        assert outage and any(f"/c/{n}" not in got for n in outage)
        # On the connections opened before the kill: the client never had to open another.
        assert doc["connects"] == CONNECTIONS
    finally:
        stack.stop()

"""The local source against real processes in real network namespaces made for the test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.netns import veth_pair
from wiretide.resolver.local.source import LocalSource, scan
from wiretide.resolver.table import IdentityStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

CLIENT = """
import socket, sys, time
for _ in range(200):
    try:
        s = socket.create_connection((sys.argv[1], 8080), timeout=1)
        break
    except OSError:
        time.sleep(0.05)
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def test_processes_listening_and_connected_in_namespaces_are_named_by_namespace_and_process() -> None:
    with veth_pair(subnet="10.78.0") as pair:
        server = pair.popen(
            pair.ns_b,
            [sys.executable, "-m", "http.server", "8080", "--bind", pair.ip_b],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = pair.popen(pair.ns_a, [sys.executable, "-c", CLIENT, pair.ip_b], stdout=subprocess.PIPE)
        try:
            assert client.stdout is not None
            client_port = int(client.stdout.readline())
            store = IdentityStore()
            source = LocalSource(store, host_name="this-host")
            source.apply(scan())
            now = time.time_ns()

            fields, how = store.table.lookup(pair.ip_b, 8080, now)
            assert how == "process" and fields is not None
            assert fields["name"] == pair.ns_b
            assert (
                fields["process"]["pid"] == server.pid
                and fields["process"]["name"] == Path(sys.executable).name[:15]
            )

            fields, how = store.table.lookup(pair.ip_a, client_port, now)
            assert how == "process" and fields is not None
            assert fields["name"] == pair.ns_a and fields["process"]["pid"] == client.pid

            fields, how = store.table.lookup(pair.ip_a, 9999, now)
            assert how == "ip" and fields is not None and fields["name"] == pair.ns_a

            # the server goes away: the next scan closes its claim, the namespace stays named
            server.terminate()
            server.wait(10)
            later = time.time_ns()
            source.apply(scan(), now_ns=later)
            fields, how = store.table.lookup(pair.ip_b, 8080, later + 60 * 10**9)
            assert how == "ip" and fields is not None and fields["name"] == pair.ns_b
            # …while entries from before still name the process that served them
            assert store.table.lookup(pair.ip_b, 8080, now)[1] == "process"
        finally:
            for proc in (server, client):
                proc.kill()
                proc.wait(10)
            if client.stdout is not None:
                client.stdout.close()
    # the namespaces are gone: a fresh scan no longer names their addresses
    store = IdentityStore()
    LocalSource(store).apply(scan())
    assert store.table.lookup(pair.ip_b, 0, time.time_ns()) == (None, "none")

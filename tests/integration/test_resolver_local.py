"""The local source against real processes in real network namespaces made for the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.netns import inside, veth_pair
from tests.helpers.wait import wait_for
from wiretide.resolver.local import procfs, sockdiag
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


def test_netlink_lists_the_same_sockets_as_proc_without_the_time_wait_ones() -> None:
    """sock_diag asked inside another namespace answers what /proc/<pid>/net/tcp{,6} lists of the
    listening and established sockets (IPv4 and IPv6), and nothing of the TIME_WAIT ones."""
    with veth_pair(subnet="10.79.0", ipv6=True) as pair:
        holder = pair.popen(pair.ns_b, ["sleep", "60"])
        held: list[socket.socket] = []
        try:
            # `ip netns exec` enters the namespace before it runs `sleep` (the same pid): until then
            # /proc/<pid>/net/ is this namespace's.
            inside_b = os.stat(f"/run/netns/{pair.ns_b}").st_ino
            wait_for(
                "the holder inside its namespace",
                lambda: os.stat(f"/proc/{holder.pid}/ns/net").st_ino == inside_b,
            )
            with inside(pair.ns_b):
                listener = socket.create_server((pair.ip_b, 8080), backlog=64)
                listener6 = socket.create_server(("::1", 8081), family=socket.AF_INET6)
                held += [listener, listener6]
                for _ in range(30):  # the client closes first: TIME_WAIT on the client's side, here
                    client = socket.create_connection((pair.ip_b, 8080))
                    accepted, _ = listener.accept()
                    client.close()
                    accepted.close()
                client = socket.create_connection((pair.ip_b, 8080))
                accepted, _ = listener.accept()
                held += [client, accepted]
            by_proc = procfs.parse_proc_net_tcp(
                Path(f"/proc/{holder.pid}/net/tcp").read_text()
            ) + procfs.parse_proc_net_tcp(Path(f"/proc/{holder.pid}/net/tcp6").read_text())
            with sockdiag.open_in(f"/proc/{holder.pid}/ns/net") as diag:
                by_netlink = [procfs.Socket(*found) for found in sockdiag.tcp_sockets(diag, 1000)]
            assert sorted(by_netlink, key=str) == sorted(by_proc, key=str)
            listed = {(s.ip, s.port, s.listening) for s in by_netlink}
            assert (pair.ip_b, 8080, True) in listed and ("::1", 8081, True) in listed
            assert (pair.ip_b, client.getsockname()[1], False) in listed
            assert len(by_netlink) == 4  # two listeners, one connection's two ends; no TIME_WAIT
            time_wait = Path(f"/proc/{holder.pid}/net/tcp").read_text().count(" 06 ")
            assert time_wait >= 30
            assert procfs.tcp_sockets(holder.pid) == by_netlink  # what a scan uses
        finally:
            for sock in held:
                sock.close()
            holder.kill()
            holder.wait()


def test_a_namespace_netlink_cannot_enter_is_read_from_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str) -> socket.socket:
        raise PermissionError(1, "setns: Operation not permitted")

    with veth_pair(subnet="10.80.0") as pair:
        server = pair.popen(
            pair.ns_b,
            [sys.executable, "-c", LISTENER, pair.ip_b],
            stdout=subprocess.PIPE,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == b"listening"
            through_netlink = procfs.tcp_sockets(server.pid)
            monkeypatch.setattr(sockdiag, "open_in", refuse)
            assert procfs.tcp_sockets(server.pid) == through_netlink
            assert [(s.ip, s.port, s.listening) for s in through_netlink] == [(pair.ip_b, 8080, True)]
        finally:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()


LISTENER = """
import socket, sys, time
s = socket.create_server((sys.argv[1], 8080))
print("listening", flush=True)
time.sleep(60)
"""

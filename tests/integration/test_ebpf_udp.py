"""UDP sockets' processes named in the kernel: a real DNS exchange (glibc's resolver through `getent`,
and a Python client sending with sendto()/sendmsg() from an unconnected socket) with a DNS server
bound to 0.0.0.0:53 in another network namespace; the packet entries (tcpdump on the server's veth)
name the client and the server processes.

Root and BCC (python3-bpfcc) are needed, and a kernel with the sock:sock_send_length tracepoint
(6.3+); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.ebpf import Harness, harness_fixture, net_fixture, source_fixture
from tests.helpers.netns import NetPair
from tests.helpers.tcpdump import tcpdump_argv, watch
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import EbpfSource, probe
from wiretide.capture.sources.ebpf.source import TRACEFS, SocketOwner
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.processes import ProcessTable
from wiretide.dissector.registry import default_registry

WHY_NOT = probe()
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"eBPF unavailable: {WHY_NOT}"),
    pytest.mark.skipif(shutil.which("getent") is None, reason="no getent (Debian: libc-bin)"),
]
ANSWER = "10.1.2.3"

# A DNS server answering every A question with ANSWER (RFC 1035 §4.1), bound to any address.
DNS_SERVER = textwrap.dedent(
    f"""
    import socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 53))
    print("ready", flush=True)
    while True:
        q, peer = s.recvfrom(512)
        end = 12
        while q[end]:
            end += q[end] + 1
        qtype = struct.unpack(">H", q[end + 1 : end + 3])[0]
        answers = b""
        if qtype == 1:
            answers = b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("{ANSWER}")
        head = q[:2] + b"\\x81\\x80" + struct.pack(">HHHH", 1, 1 if answers else 0, 0, 0)
        s.sendto(head + q[12 : end + 5] + answers, peer)
    """
)

# A client on an unconnected socket: argv[1] the server, then "sendto NAME" or "sendmsg NAME" each.
PY_CLIENT = textwrap.dedent(
    """
    import socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server = (sys.argv[1], 53)
    for i, (how, name) in enumerate(zip(sys.argv[2::2], sys.argv[3::2])):
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
        query = struct.pack(">HHHHHH", 0x4000 + i, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
        if how == "sendto":
            s.sendto(query, server)
        else:
            s.sendmsg([query], [], 0, server)
        s.settimeout(20)
        answer, _ = s.recvfrom(512)
        print(name, answer[:2].hex(), flush=True)
    """
)

MARKER = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'm', ('127.0.0.1', 9))"

source = source_fixture()
harness = harness_fixture(sockets=True)
net = net_fixture("10.94.0")


@pytest.fixture
def resolv_conf(net: NetPair) -> Iterator[None]:
    """`ip netns exec` mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf: the client's resolver
    asks the server's namespace."""
    d = Path("/etc/netns") / net.ns_a
    d.mkdir(parents=True)
    try:
        (d / "resolv.conf").write_text(f"nameserver {net.ip_b}\noptions timeout:5 attempts:2\n")
        yield
    finally:
        shutil.rmtree(d)


def _needs_udp_owners(source: EbpfSource) -> None:
    """Skip on kernels without the socket tracepoints; where they exist the program must use them."""
    if not all((TRACEFS / "events" / "sock" / n).is_dir() for n in ("sock_send_length", "sock_recv_length")):
        pytest.skip("this kernel has no sock:sock_send_length/sock_recv_length tracepoints (< 6.3)")
    assert source.kernel_sockets and source.udp_owners, "the program with the socket tracepoints did not load"


def _dns_entries(pcap: Path) -> list[dict[str, Any]]:
    pipe = Pipeline(default_registry(), node="test")
    entries: list[dict[str, Any]] = []
    for cols in read_batches(str(pcap), 4096):
        entries += pipe.feed(cols)
    entries += pipe.finish()
    return [e for e in entries if e["protocol"] == "dns"]


def test_dns_over_udp_packet_entries_name_the_resolving_client_and_the_server(
    source: EbpfSource, harness: Harness, net: NetPair, tmp_path: Path, resolv_conf: None
) -> None:
    _needs_udp_owners(source)
    pcap = tmp_path / "dns.pcap"
    dump = watch(["ip", "netns", "exec", net.ns_b, *tcpdump_argv(net.if_b, pcap, "udp", "port", "53")])
    server = net.popen(net.ns_b, [sys.executable, "-u", "-c", DNS_SERVER], stdout=-1)
    names = {"getent": "svc.wiretide.test", "sendto": "one.wiretide.test", "sendmsg": "two.wiretide.test"}
    try:
        dump.wait_for(b"listening on")
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        getent = net.run(net.ns_a, ["getent", "ahostsv4", names["getent"]], capture_output=True, timeout=60)
        assert getent.returncode == 0 and getent.stdout.split()[0].decode() == ANSWER, getent
        py = net.popen(
            net.ns_a,
            [
                sys.executable,
                "-c",
                PY_CLIENT,
                net.ip_b,
                "sendto",
                names["sendto"],
                "sendmsg",
                names["sendmsg"],
            ],
            stdout=-1,
        )
        out, _ = py.communicate(timeout=60)
        assert py.returncode == 0 and [line.split()[0] for line in out.decode().splitlines()] == [
            names["sendto"],
            names["sendmsg"],
        ]
        owners: list[SocketOwner] = []

        def all_ends_seen() -> bool:
            owners.extend(o for o in harness.take()[1] if o.protocol == 17)
            pids = {o.pid for o in owners}
            comms = {o.comm for o in owners}
            return server.pid in pids and py.pid in pids and "getent" in comms

        wait_for("the UDP owners of every end", all_ends_seen)
    finally:
        server.kill()
        server.wait()
        assert server.stdout is not None
        server.stdout.close()
        dump.stop()
    entries = _dns_entries(pcap)
    by_name = {e["path"]: e for e in entries}
    assert set(names.values()) <= set(by_name), sorted(by_name)
    table = ProcessTable()
    table.learn(o.to_proto() for o in owners)
    table.name(entries)
    server_name = Path(sys.executable).name[:15]
    for how, qname in names.items():
        e = by_name[qname]
        assert (e["src"]["ip"], e["dst"]["ip"], e["dst"]["port"]) == (net.ip_a, net.ip_b, 53)
        assert (e["dst"]["process"]["pid"], e["dst"]["process"]["name"]) == (server.pid, server_name), e[
            "dst"
        ]
        client = e["src"]["process"]
        if how == "getent":  # glibc's resolver on a connected socket: the kernel holds both addresses
            assert client["name"] == "getent"
        else:  # an unconnected socket: its peer from the sendto()/sendmsg() address
            assert (client["pid"], client["name"]) == (py.pid, server_name)
    # The server, bound to any address, is known by its port and each peer it answered.
    served = [o for o in owners if o.pid == server.pid]
    assert served and all(o.local_ip == bytes(4) and o.local_port == 53 for o in served)


def test_udp_owners_are_reported_once_per_socket_and_peer(
    source: EbpfSource, harness: Harness, net: NetPair
) -> None:
    """Ten datagrams to one peer and one answer back: one owner for each end, not one per datagram."""
    _needs_udp_owners(source)
    script = textwrap.dedent(
        """
        import socket, sys
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(10):
            b.sendto(b"x", a.getsockname())
        for _ in range(10):
            _, peer = a.recvfrom(16)
        a.sendto(b"y", peer)
        b.recvfrom(16)
        print(a.getsockname()[1], b.getsockname()[1], flush=True)
        """
    )
    proc = net.popen(net.ns_a, [sys.executable, "-c", script], stdout=-1)
    out, _ = proc.communicate(timeout=60)
    port_a, port_b = (int(p) for p in out.split())
    owners: list[SocketOwner] = []

    def both() -> set[int]:
        owners.extend(o for o in harness.take()[1] if o.pid == proc.pid)
        return {o.local_port for o in owners}

    wait_for("both sockets' owners", both, lambda ports: {port_a, port_b} <= ports)
    # A marker sent after the process exited: once its owner is read, every event the process made
    # (a repeat included) was in the buffers before that read.
    marker = net.popen(net.ns_a, [sys.executable, "-c", MARKER], stdout=-1)
    marker.communicate(timeout=60)

    def marker_seen() -> bool:
        got = harness.take()[1]
        owners.extend(o for o in got if o.pid == proc.pid)
        return any(o.pid == marker.pid for o in got)

    wait_for("the marker's owner", marker_seen)
    mine = sorted((o.local_port, o.remote_port) for o in owners)
    assert mine == sorted([(port_b, port_a), (port_a, port_b)]), mine
    assert all(o.protocol == 17 and not o.local_is_server for o in owners)

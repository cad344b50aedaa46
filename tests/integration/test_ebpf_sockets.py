"""Sockets named in the kernel: a server's accepted connections placed without /proc, and every TCP
connection's local processes named on packet entries — real peers in network namespaces.

Root and BCC (python3-bpfcc) are needed; elsewhere these tests skip and say why.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from tests.helpers.ebpf import (
    Harness,
    cert_fixture,
    harness_fixture,
    listening,
    net_fixture,
    s_server,
    source_fixture,
)
from tests.helpers.nats import NatsServer
from tests.helpers.netns import NetPair
from tests.helpers.tcpdump import tcpdump_argv, watch
from tests.helpers.wait import wait_for, wait_for_async
from wiretide.capture.sources.ebpf import Chunk, Connection, EbpfSource, probe
from wiretide.capture.sources.ebpf.source import SocketOwner
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.common.bus import connect_with_retry, entries_subject
from wiretide.common.bus.entries import open_batch
from wiretide.common.bus.subjects import ENTRIES_STREAM
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.plaintext import PlaintextFlows
from wiretide.dissector.processes import ProcessTable
from wiretide.dissector.registry import default_registry
from wiretide.dissector.service import DissectorService, DissectorSettings
from wiretide.proto.v1 import packets_pb2

WHY_NOT = probe()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"eBPF unavailable: {WHY_NOT}")
TLS_PORT = 8453
HTTP_PORT = 8090
CALLS = 25


source = source_fixture()
harness = harness_fixture(sockets=True)
cert = cert_fixture()
net = net_fixture("10.93.0")


def _http_server(word: str, version: str, serve: str) -> str:
    """A Python http.server script answering GET with `word` and the path, speaking `version`, then
    `serve` (the lines that make and run the server from sys.argv)."""
    return textwrap.dedent(
        f"""
        import http.server, ssl, sys
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "{version}"
            def do_GET(self):
                body = b"{word} " + self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass
        """
    ) + textwrap.dedent(serve)


TLS_SERVER = _http_server(
    "short",
    "HTTP/1.0",
    """
    srv = http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
    """,
)


def test_a_server_answering_many_short_tls_calls_has_every_chunk_attributed(
    source: EbpfSource,
    harness: Harness,
    net: NetPair,
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server closes each connection as soon as it has answered (HTTP/1.0): its accepted sockets
    are gone before /proc could be read, so only names given in the kernel place its chunks."""
    if not source.kernel_sockets:
        pytest.skip("this kernel has no sock:sock_send_length/sock_recv_length tracepoints (< 6.3)")
    key, crt = cert
    server = net.popen(net.ns_b, [sys.executable, "-c", TLS_SERVER, str(TLS_PORT), str(crt), str(key)])
    try:
        wait_for("the TLS server listening", lambda: listening(net, TLS_PORT))
        unattributed = source.stats.drops.get("unattributed", 0)
        read_in_proc: list[int] = []
        read = source.conns._read

        def spy(pid: int, fd: int) -> Connection | None:
            read_in_proc.append(pid)
            return read(pid, fd)

        monkeypatch.setattr(source.conns, "_read", spy)
        url = f"https://{net.ip_b}:{TLS_PORT}/"
        curl = net.run(
            net.ns_a,
            [
                "curl",
                "-sk",
                "-w",
                "%{http_code}\n",
                *[a for i in range(CALLS) for a in ("-o", "/dev/null", f"{url}{i}")],
            ],
            capture_output=True,
            timeout=60,
        )
        assert curl.stdout.decode().split() == ["200"] * CALLS
        flows = PlaintextFlows(Pipeline(default_registry(), node="test"))
        entries: list[dict[str, Any]] = []

        def done() -> bool:
            chunks, _ = harness.take()
            mine = [c for c in chunks if c.pid == server.pid]  # the server's view alone: its chunks placed
            entries.extend(flows.feed(c.to_proto() for c in mine))
            return len({e["path"] for e in entries if e["protocol"] == "http"}) >= CALLS

        try:
            wait_for("an entry for every call", done)
        except AssertionError as exc:  # say what was missing and what the source counted
            seen = sorted({e["path"] for e in entries if e["protocol"] == "http"})
            raise AssertionError(f"{exc}; calls seen: {seen}; source drops: {source.stats.drops}") from None
    finally:
        server.kill()
        server.wait()
    calls = [e for e in entries if e["protocol"] == "http"]
    assert sorted(e["path"] for e in calls) == sorted(f"/{i}" for i in range(CALLS))
    for e in calls:
        assert e["dst"]["process"]["pid"] == server.pid  # the server's own chunks were placed
        assert (e["dst"]["ip"], e["dst"]["port"]) == (net.ip_b, TLS_PORT)
    assert source.stats.drops.get("unattributed", 0) == unattributed
    assert server.pid not in read_in_proc  # none of its sockets was looked up in /proc


HTTP_SERVER = _http_server(
    "plain",
    "HTTP/1.1",
    """
    http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
    """,
)


@dataclass(frozen=True, slots=True)
class PlainExchange:
    """Two curl calls to a Python http.server: the packets on the server's veth, the socket owners."""

    pcap: Path
    clients: list[tuple[str, int]]  # (path, curl's pid)
    owners: list[SocketOwner]
    server_pid: int


def plain_exchange(harness: Harness, net: NetPair, pcap: Path) -> PlainExchange:
    dump = watch(
        ["ip", "netns", "exec", net.ns_b, *tcpdump_argv(net.if_b, pcap, "tcp", "port", str(HTTP_PORT))]
    )
    server = net.popen(net.ns_b, [sys.executable, "-c", HTTP_SERVER, str(HTTP_PORT)])
    try:
        dump.wait_for(b"listening on")
        wait_for("http.server listening", lambda: listening(net, HTTP_PORT))
        clients = []
        for path in ("/first", "/second"):
            curl = net.popen(
                net.ns_a, ["curl", "-s", "-o", "/dev/null", f"http://{net.ip_b}:{HTTP_PORT}{path}"]
            )
            assert curl.wait(timeout=30) == 0
            clients.append((path, curl.pid))
        owners: list[SocketOwner] = []

        def both_ends_seen() -> bool:
            """Both ends of every connection: each curl's own, and the server's of that very
            connection (the server's owner of one connection says nothing of the other's)."""
            owners.extend(harness.take()[1])
            client_ports = {o.local_port for o in owners if o.pid in {pid for _, pid in clients}}
            served = {o.remote_port for o in owners if o.pid == server.pid}
            every_client = len(client_ports) == len(clients)
            return every_client and client_ports <= served

        wait_for("the owners of both ends", both_ends_seen)
        # tcpdump writes each packet as it reads it, but reads behind the traffic on a busy machine:
        # stopped now, it could leave the last answer out of the file.
        wait_for("both calls in the capture", lambda: _captured_paths(pcap) >= {"/first", "/second"})
    finally:
        server.kill()
        server.wait()
        dump.stop()
    return PlainExchange(pcap, clients, owners, server.pid)


def _captured_paths(pcap: Path) -> set[str]:
    """The HTTP calls whole in the capture so far (a record being written may cut the file short)."""
    pipe = Pipeline(default_registry(), node="test")
    entries: list[dict[str, Any]] = []
    try:
        for cols in read_batches(str(pcap), 4096):
            entries += pipe.feed(cols)
    except Exception:  # the last record still being written: what came before it counts
        pass
    entries += pipe.finish()
    return {e["path"] for e in entries if e["protocol"] == "http" and e.get("status") == 200}


def _assert_named(entries: list[dict[str, Any]], ex: PlainExchange) -> None:
    calls = {e["path"]: e for e in entries if e["protocol"] == "http"}
    assert set(calls) == {"/first", "/second"}
    for path, pid in ex.clients:
        e = calls[path]
        assert e["capture"]["source"] != "ebpf_tls"  # a packet entry
        assert (e["src"]["process"]["pid"], e["src"]["process"]["name"]) == (pid, "curl")
        assert e["dst"]["process"]["pid"] == ex.server_pid
        assert e["dst"]["process"]["name"] == Path(sys.executable).name[:15]


def test_plain_http_packet_entries_name_the_client_and_server_processes(
    source: EbpfSource, harness: Harness, net: NetPair, tmp_path: Path
) -> None:
    if not source.kernel_sockets:
        pytest.skip("this kernel has no sock:sock_send_length/sock_recv_length tracepoints (< 6.3)")
    ex = plain_exchange(harness, net, tmp_path / "plain.pcap")
    table = ProcessTable()
    table.learn(o.to_proto() for o in ex.owners)
    pipe = Pipeline(default_registry(), node="test")
    entries: list[dict[str, Any]] = []
    for cols in read_batches(str(ex.pcap), 4096):
        entries += pipe.feed(cols)
    entries += pipe.finish()
    table.name(entries)
    _assert_named(entries, ex)
    server_side = [o for o in ex.owners if o.pid == ex.server_pid]
    assert server_side and all(o.local_is_server and o.local_port == HTTP_PORT for o in server_side)


async def stored_entries(url: str, node: str, want: int) -> list[dict[str, Any]]:
    """The entries a node's subject carries on JetStream, until `want` came (or the wait ran out)."""
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe(entries_subject(node), durable="t", stream=ENTRIES_STREAM.name)
    out: list[dict[str, Any]] = []

    async def fetch() -> bool:
        try:
            msgs = await sub.fetch(10, timeout=0.5)
        except TimeoutError:  # nats' own TimeoutError, or a bare one when fetch runs out of time
            return len(out) >= want
        for m in msgs:
            batch = open_batch(m.data, m.subject)  # entries travel packed
            assert batch is not None
            out.extend(orjson.loads(e.json) for e in batch.entries)
            await m.ack()
        return len(out) >= want

    try:
        await wait_for_async("the entries on JetStream", fetch)
    finally:
        await nc.close()
    return out


async def test_the_dissector_service_names_processes_from_owners_sent_before_the_packets(
    source: EbpfSource, harness: Harness, net: NetPair, tmp_path: Path, nats_server: NatsServer
) -> None:
    """As the capture sends them: an eBPF batch of socket owners, then the packets, on one stream;
    the entries on JetStream name both processes and still say they came from packets."""
    if not source.kernel_sockets:
        pytest.skip("this kernel has no sock:sock_send_length/sock_recv_length tracepoints (< 6.3)")
    ex = await asyncio.to_thread(plain_exchange, harness, net, tmp_path / "plain.pcap")
    settings = DissectorSettings(node_name="n1", nats_url=nats_server.url, dissector_grpc="127.0.0.1:0")
    service = DissectorService(settings)
    bus = await connect_with_retry(nats_server.url, "dissector-test")
    await service.start(bus)
    try:
        owners = packets_pb2.PacketBatch(
            node="edge-1",
            source=packets_pb2.CAPTURE_SOURCE_EBPF_TLS,
            sockets=[o.to_proto() for o in ex.owners],
        )
        service.ingest(owners)
        for seq, cols in enumerate(read_batches(str(ex.pcap), 4096), start=1):
            service.ingest(cols.to_proto("edge-1", packets_pb2.CAPTURE_SOURCE_AF_PACKET, seq=seq))
        entries = await stored_entries(nats_server.url, "edge-1", want=2)
    finally:
        await service.stop()
        await bus.close()
    _assert_named(entries, ex)
    assert all(e["capture"]["source"] == "af_packet" for e in entries)


def test_a_tls_connection_seen_by_packets_and_ebpf_gives_only_its_decrypted_calls(
    harness: Harness, net: NetPair, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """curl ↔ openssl s_server, captured on the wire and read by eBPF: each call is one `http` entry
    carrying the handshake the packets showed, and the packets' `tls` entry of the connection is
    folded into them, as the dissector service orders them (handshake packets before plaintext)."""
    pcap = tmp_path / "tls.pcap"
    dump = watch(
        ["ip", "netns", "exec", net.ns_b, *tcpdump_argv(net.if_b, pcap, "tcp", "port", str(TLS_PORT))]
    )
    server = s_server(net, cert, TLS_PORT)
    paths = ("/one", "/two")
    chunks: list[Chunk] = []
    try:
        dump.wait_for(b"listening on")
        for path in paths:
            curl = net.popen(
                net.ns_a, ["curl", "-sk", "-o", "/dev/null", f"https://{net.ip_b}:{TLS_PORT}{path}"]
            )
            assert curl.wait(timeout=30) == 0

        def every_call_read() -> bool:
            chunks.extend(c for c in harness.take()[0] if TLS_PORT in (c.src_port, c.dst_port))
            sent = b"".join(c.data for c in chunks)
            return all(f"GET {p} ".encode() in sent for p in paths)

        wait_for("the calls' plaintext", every_call_read)
    finally:
        server.kill()
        server.wait()
        dump.stop()
    pipe = Pipeline(default_registry(), node="test")
    flows = PlaintextFlows(pipe)
    entries: list[dict[str, Any]] = []
    first = min(c.timestamp_ns for c in chunks)
    for cols in read_batches(str(pcap), 4096):
        entries += flows.fold(pipe.feed(cols), first)
    assert pipe.stats["plaintext_tls_folded"] == 0
    entries += flows.fold(flows.feed(c.to_proto() for c in chunks), first)
    entries += flows.finish()
    entries += flows.fold(pipe.finish(), first)
    assert [e["protocol"] for e in entries] == ["http", "http"]
    assert [e["path"] for e in entries] == list(paths)
    for e in entries:
        assert e["capture"]["source"] == "ebpf_tls"
        assert e["tls"]["decrypted"] is True
        assert e["tls"]["version"] is not None  # the handshake the packets showed
    assert pipe.stats["plaintext_tls_folded"] == len(paths)

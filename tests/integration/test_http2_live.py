"""Live HTTP/2 traffic between real peers in two network namespaces, captured by `wiretide capture` on
the veth and dissected offline: a grpcio server and client (all four call kinds, an error status, a
deadline exceeded), and hypercorn serving h2c to httpx (prior knowledge) and curl (`Upgrade: h2c`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import NetPair, veth_pair
from tests.unit.dissector.test_http2_support import classified, compile_echo, registry
from wiretide.capture.sources.pcapfile import read_batches
from wiretide.dissector.pipeline import Pipeline

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and AF_PACKET"),
]

VENV_BIN = Path(sys.executable).parent
WIRETIDE = str(VENV_BIN / "wiretide")
READY_TIMEOUT_S = 15.0
# Let the capture's ring retire its last block before it is stopped.
SETTLE_S = 1.2
GRPC_PORT = 50051
H2C_PORT = 8080
STREAMED = 5  # messages per streaming direction

SERVER = """
import sys, time
from concurrent import futures
import grpc
sys.path.insert(0, {gen!r})
import echo_pb2, echo_pb2_grpc

class Echo(echo_pb2_grpc.EchoServicer):
    def Unary(self, req, ctx):
        return echo_pb2.EchoReply(text=req.text * req.times, count=req.times)
    def ServerStream(self, req, ctx):
        for i in range({n}):
            yield echo_pb2.EchoReply(text=f"{{req.text}}-{{i}}", count=i)
    def ClientStream(self, it, ctx):
        texts = [r.text for r in it]
        return echo_pb2.EchoReply(text="+".join(texts), count=len(texts))
    def Bidi(self, it, ctx):
        for r in it:
            yield echo_pb2.EchoReply(text=r.text.upper(), count=1)
    def Fail(self, req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no item " + req.text)
    def Slow(self, req, ctx):
        time.sleep(1.5)
        return echo_pb2.EchoReply(text="late")

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
server.add_insecure_port({addr!r})
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""

CLIENT = """
import sys
import grpc
sys.path.insert(0, {gen!r})
import echo_pb2, echo_pb2_grpc

channel = grpc.insecure_channel({addr!r})
grpc.channel_ready_future(channel).result(timeout=10)
stub = echo_pb2_grpc.EchoStub(channel)
R = echo_pb2.EchoRequest
assert stub.Unary(R(text="ab", times=3), timeout=5).count == 3
assert len(list(stub.ServerStream(R(text="s"), timeout=5))) == {n}
assert stub.ClientStream(iter([R(text=str(i)) for i in range({n})]), timeout=5).count == {n}
assert len(list(stub.Bidi(iter([R(text=f"b{{i}}") for i in range({n})]), timeout=5))) == {n}
assert stub.Unary(R(text="zip" * 100, times=1), timeout=5, compression=grpc.Compression.Gzip).count == 1
try:
    stub.Fail(R(text="42"), timeout=5)
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND
try:
    stub.Slow(R(text="x"), timeout=0.3)
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
channel.close()
print("done", flush=True)
"""

ASGI_APP = """
import json

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"] == "/graphql":
        out = json.dumps({"data": None, "errors": [{"message": "no field nope"}]}).encode()
        ctype = b"application/json"
    else:
        out = (scope["path"] + " " + str(len(body))).encode()
        ctype = b"text/plain"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": out})
"""

HTTPX_CLIENT = """
import asyncio, json, httpx

async def main():
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        base = {base!r}
        rs = await asyncio.gather(*[client.get(f"{{base}}/item/{{i}}?n={{i}}") for i in range(20)])
        assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in rs)
        q = {{"query": "query Broken {{ nope {{ id }} }}", "operationName": "Broken"}}
        r = await client.post(f"{{base}}/graphql", json=q)
        assert r.status_code == 200
    print("done", flush=True)

asyncio.run(main())
"""


class Capture:
    """`wiretide capture` on the server's veth, writing pcapng; stopped by SIGINT."""

    def __init__(self, pair: NetPair, out: Path) -> None:
        self.out = out
        self.proc = pair.popen(
            pair.ns_b,
            [WIRETIDE, "capture", "-i", pair.if_b, "-w", str(out)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        assert self.proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"listening on" not in seen and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            seen += line
        assert b"listening on" in seen, seen

    def stop(self) -> None:
        time.sleep(SETTLE_S)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stderr is not None
            self.proc.stderr.close()


def started(pair: NetPair, ns: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return pair.popen(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)


def wait_line(proc: subprocess.Popen[bytes], needle: bytes) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if needle not in line:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"expected {needle!r}, got {line!r}: {err.decode()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def dissect(path: Path) -> list[dict[str, Any]]:
    pipe = Pipeline(registry())
    docs: list[dict[str, Any]] = []
    for cols in read_batches(str(path), 4096):
        docs.extend(pipe.feed(cols))
    docs.extend(pipe.finish())
    return [classified(d) for d in docs]


@pytest.fixture
def pair() -> Iterator[NetPair]:
    with veth_pair(subnet="10.78.0") as p:
        yield p


def test_live_grpc_calls_of_every_kind_become_grpc_entries(pair: NetPair, tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    compile_echo(gen)
    addr = f"{pair.ip_b}:{GRPC_PORT}"
    (tmp_path / "server.py").write_text(SERVER.format(gen=str(gen), addr=addr, n=STREAMED))
    (tmp_path / "client.py").write_text(CLIENT.format(gen=str(gen), addr=addr, n=STREAMED))
    cap = Capture(pair, tmp_path / "grpc.pcapng")
    server = started(pair, pair.ns_b, [sys.executable, str(tmp_path / "server.py")])
    try:
        wait_line(server, b"ready")
        client = pair.run(
            pair.ns_a, [sys.executable, str(tmp_path / "client.py")], capture_output=True, timeout=60
        )
        assert client.returncode == 0 and b"done" in client.stdout, client.stderr.decode()[-2000:]
    finally:
        cap.stop()
        stop(server)
    docs = [d for d in dissect(tmp_path / "grpc.pcapng") if d["protocol"] == "grpc"]
    by: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by.setdefault(d["method"], []).append(d)
    assert sorted(by) == ["Bidi", "ClientStream", "Fail", "ServerStream", "Slow", "Unary"]
    plain, zipped = sorted(by["Unary"], key=lambda d: d["request"]["messages"][0]["compressed"])
    assert plain["response"]["grpc_status"] == 0 and plain["request"]["service"] == "wiretide.test.Echo"
    assert plain["request"]["messages"][0]["fields"][0]["string"] == "ab"
    assert zipped["request"]["messages"][0]["compressed"] is True
    assert zipped["request"]["messages"][0]["fields"][0]["string"] == "zip" * 100
    counts = {m: (by[m][0]["request"]["message_count"], by[m][0]["response"]["message_count"]) for m in by}
    assert counts["ServerStream"] == (1, STREAMED)
    assert counts["ClientStream"] == (STREAMED, 1)
    assert counts["Bidi"] == (STREAMED, STREAMED)
    fail = by["Fail"][0]
    assert (fail["status"], fail["response"]["grpc_status"], fail["response"]["grpc_message"]) == (
        200,
        5,
        "no item 42",
    )
    slow = by["Slow"][0]
    assert 200 < slow["request"]["timeout_ms"] <= 400  # 0.3 s, as grpc-core rounds it onto the wire
    # The client gives up at its deadline: either it resets the stream or the status says so.
    assert (slow["error"] or {}).get("type") == "connection" or slow["response"]["grpc_status"] == 4
    assert all(d["version"] == "2" and d["stream"] is not None for d in docs)


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import hypercorn, httpx, h2"], capture_output=True).returncode
    != 0,
    reason="needs hypercorn, httpx and h2",
)
def test_live_h2c_prior_knowledge_and_upgrade_become_http2_entries(pair: NetPair, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(ASGI_APP)
    base = f"http://{pair.ip_b}:{H2C_PORT}"
    (tmp_path / "client.py").write_text(HTTPX_CLIENT.format(base=base))
    cap = Capture(pair, tmp_path / "h2c.pcapng")
    server = started(
        pair,
        pair.ns_b,
        [sys.executable, "-m", "hypercorn", "--bind", f"{pair.ip_b}:{H2C_PORT}", "app:app"],
        cwd=tmp_path,
    )
    try:
        for _ in range(100):
            probe = pair.run(pair.ns_a, ["curl", "-s", "-o", "/dev/null", "--max-time", "1", f"{base}/up"])
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        client = pair.run(
            pair.ns_a, [sys.executable, str(tmp_path / "client.py")], capture_output=True, timeout=60
        )
        assert client.returncode == 0, client.stderr.decode()[-2000:]
        up = pair.run(
            pair.ns_a,
            ["curl", "-s", "--http2", f"{base}/upgraded", "--next", "--http2", f"{base}/second"],
            capture_output=True,
        )
        assert up.returncode == 0
    finally:
        cap.stop()
        stop(server)
    docs = dissect(tmp_path / "h2c.pcapng")
    h2 = [d for d in docs if d["protocol"] in ("http2", "graphql")]
    items = sorted(d["path"] for d in h2 if (d["path"] or "").startswith("/item/"))
    assert items == sorted(f"/item/{i}" for i in range(20))
    for d in h2:
        if (d["path"] or "").startswith("/item/"):
            n = d["path"].rsplit("/", 1)[1]
            assert d["request"]["query"] == {"n": [n]}
            assert d["response"]["body"]["content"] == f"{d['path']} 0"
            assert d["status"] == 200 and d["version"] == "2"
    (gql,) = [d for d in docs if d["protocol"] == "graphql"]
    assert gql["request"]["operation_name"] == "Broken" and gql["request"]["root_fields"] == ["nope"]
    assert gql["error"] == {"type": "graphql", "message": "no field nope"}
    # `Upgrade: h2c`: the HTTP/1.1 request and 101, then the response on stream 1 as HTTP/2.
    upgrade = [d for d in docs if d["protocol"] == "http" and d["status"] == 101]
    assert [d["path"] for d in upgrade] == ["/upgraded"]
    answered = [d for d in h2 if d["stream"] == "1" and d["request"] is None]
    assert any(d["response"]["body"]["content"] == "/upgraded 0" for d in answered)
    assert any(
        d["response"].get("upgraded_from") == "http/1.1" and d["response"].get("upgrade_id") for d in answered
    )

"""Redaction end to end: secrets a real curl sends to a real server, captured by tcpdump, go through
`wiretide analyze` and come out nowhere — not in the entries, not in the HAR export, not in the OTLP
spans the tracer would export for them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from tests.helpers.wait import wait_for
from wiretide.tracer.export.otlp import encode_request
from wiretide.tracer.spans import SpanIds, spans_from_entry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump on loopback needs root"),
    pytest.mark.skipif(
        shutil.which("tcpdump") is None or shutil.which("curl") is None, reason="needs tcpdump, curl"
    ),
]

WIRETIDE = str(Path(sys.executable).parent / "wiretide")
SECRETS = {
    "authorization": "Zq9xAuthorizationSecret01",
    "cookie": "Zq9xCookieSecret02",
    "query": "Zq9xQuerySecret03",
    "json": "Zq9xJsonSecret04",
    "set-cookie": "Zq9xSetCookieSecret05",
    "reply": "Zq9xReplySecret06",
}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = orjson.dumps({"access_token": SECRETS["reply"], "ok": True})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", f"session={SECRETS['set-cookie']}; Path=/; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def capture_one_call(port: int, pcap: Path) -> None:
    """tcpdump on loopback while curl makes one call carrying every kind of secret."""
    dump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-U", "-n", "-w", str(pcap), f"tcp port {port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert dump.stderr is not None
    banner = b""
    while b"listening on" not in banner:  # tcpdump says so once its socket is open
        line = dump.stderr.readline()
        assert line, "tcpdump exited before listening"
        banner += line
    try:
        done = subprocess.run(
            [
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                "-H", f"Authorization: Bearer {SECRETS['authorization']}",
                "-b", f"session={SECRETS['cookie']}",
                "-H", "Content-Type: application/json",
                "--data", orjson.dumps({"user": "bob", "password": SECRETS["json"]}).decode(),
                f"http://127.0.0.1:{port}/login?access_token={SECRETS['query']}",
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )  # fmt: skip
        assert done.stdout == b"200"
        # tcpdump -U writes each packet as it comes: wait until the answer's is in the file.
        wait_for(
            "the response in the capture",
            lambda: pcap.exists() and SECRETS["reply"].encode() in pcap.read_bytes(),
        )
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
        dump.stderr.close()


def analyze(pcap: Path, fmt: str) -> bytes:
    done = subprocess.run(
        [WIRETIDE, "analyze", str(pcap), "--format", fmt, "--quiet"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def leaked(data: bytes) -> list[str]:
    return [kind for kind, secret in SECRETS.items() if secret.encode() in data]


def test_a_curl_call_s_secrets_appear_in_no_entry_no_har_and_no_span(server: int, tmp_path: Path) -> None:
    pcap = tmp_path / "call.pcap"
    capture_one_call(server, pcap)
    assert sorted(leaked(pcap.read_bytes())) == sorted(SECRETS)  # the capture holds them all

    lines = analyze(pcap, "jsonl")
    entries = [orjson.loads(line) for line in lines.splitlines()]
    (call,) = [e for e in entries if e["protocol"] == "http"]
    assert leaked(lines) == []
    assert call["request"]["headers"]["authorization"] == "Bearer [REDACTED]"
    assert set(call["redacted"]) >= {
        "request.headers.authorization",
        "request.cookies.session",
        "request.query.access_token",
        "request.body.$.password",
        "response.headers.set-cookie",
        "response.body.$.access_token",
    }

    assert leaked(analyze(pcap, "har")) == []

    spans = [span for e in entries for span in spans_from_entry(e, SpanIds(seed=1))]
    assert spans and leaked(encode_request(spans)) == []
    assert any(s.shared.get("url.query") == "access_token=[REDACTED]" for s in spans)

"""`wiretide query` as a user runs it against a gateway: KFL v1 spellings are translated with a warning
on stderr, a bad query fails before any request, and the table prints IPv6 endpoints as `[addr]:port`
with the `--time-format` the user asked for. The gateway here is a real HTTP server answering
`/api/entries` with a recorded answer's shape."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

WIRETIDE = [sys.executable, "-m", "wiretide.cli.main"]
TS_NS = 1_714_559_696_123_456_789  # 2024-05-01T10:34:56.123456789Z


def entry(src_ip: str, dst_ip: str) -> dict[str, object]:
    return {
        "id": "01HX0000000000000000000000",
        "timestamp": TS_NS,
        "elapsed_us": 1500,
        "protocol": "http",
        "src": {"ip": src_ip, "port": 51000},
        "dst": {"ip": dst_ip, "port": 8080},
        "method": "GET",
        "status": 500,
        "summary": "GET /api → 500",
    }


class Gateway(http.server.BaseHTTPRequestHandler):
    queries: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        Gateway.queries.append(parse_qs(url.query).get("q", [""])[0])
        body = orjson.dumps(
            {
                "entries": [entry("fd00::1", "fd00::2"), entry("10.0.0.1", "10.0.0.2")],
                "completeness": {"scanned": 2, "upstream_drops": {}},
                "next": None,
            }
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def query(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")} | {"TZ": "UTC"}
    return subprocess.run([*WIRETIDE, "query", *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_kfl_v1_query_is_sent_and_its_translation_reported_on_stderr(gateway: str) -> None:
    r = query("http and response.status == 500", "--url", gateway)
    assert r.returncode == 0, r.stderr
    assert Gateway.queries[-1] == "http and response.status == 500"
    assert "wiretide query: warning: KFL v1 'and' read as '&&'" in r.stderr
    assert "hint: write '&&'" in r.stderr and "warning" not in r.stdout


def test_a_bad_query_fails_with_the_caret_before_any_request(gateway: str) -> None:
    before = len(Gateway.queries)
    r = query("http && status_code >=", "--url", gateway)
    assert r.returncode == 2 and r.stdout == ""
    assert "^" in r.stderr and len(Gateway.queries) == before


def test_the_table_prints_ipv6_endpoints_in_brackets_and_the_chosen_time_format(gateway: str) -> None:
    rows = query("--url", gateway, "--time-format", "utc").stdout.splitlines()
    assert rows[0].startswith("TIME ")
    assert rows[1].startswith("2024-05-01T10:34:56.123456Z ")
    assert "[fd00::1]:51000" in rows[1] and "[fd00::2]:8080" in rows[1]
    assert "10.0.0.1:51000" in rows[2] and "[" not in rows[2]
    epoch = query("--url", gateway, "--time-format", "epoch").stdout.splitlines()
    assert epoch[1].startswith("1714559696.123456 ")
    day = query("--url", gateway).stdout.splitlines()
    assert day[1].startswith("10:34:56.123456 ")  # time of day in the local zone (TZ=UTC here)

"""`wiretide analyze` loads only what the run asks for: without --traces, nothing of the tracer, its
OTLP transports or the bus (their imports cost more than dissecting a small capture)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.unit.dissector.builders import Conversation, http_get, http_ok

PROBE = """
import sys
from wiretide.cli.main import main
code = main(["analyze", "--quiet", "--format", "jsonl", sys.argv[1]] + sys.argv[2:])
sys.stdout.flush()
heavy = sorted(m for m in ("wiretide.tracer.assemble", "nats", "aiohttp", "httpx") if m in sys.modules)
sys.stderr.write("LOADED " + ",".join(heavy) + "\\n")
raise SystemExit(code)
"""


def _capture(path: Path) -> None:
    import dpkt

    conv = Conversation().handshake().send(True, http_get("/x")).send(False, http_ok(b"ok")).close()
    with path.open("wb") as fh:
        w = dpkt.pcap.Writer(fh, nano=True)
        for ts, frame in conv.frames:
            w.writepkt(frame, ts=ts / 1e9)


def _run(path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    # Without WIRETIDE_* variables: with any, `wiretide` checks their names against every service's
    # settings first, which imports those services.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), *extra], capture_output=True, text=True, timeout=120, env=env
    )
    line = next(x for x in r.stderr.splitlines() if x.startswith("LOADED "))
    return r, [m for m in line[len("LOADED ") :].split(",") if m]


def test_a_plain_analyze_imports_no_tracer_nor_transport(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    _capture(path)
    r, loaded = _run(path)
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(x)["path"] for x in r.stdout.splitlines()] == ["/x"]
    assert loaded == []


def test_asking_for_traces_still_loads_the_tracer_and_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    _capture(path)
    out = tmp_path / "traces.json"
    r, loaded = _run(path, "--traces", str(out))
    assert r.returncode == 0, r.stderr
    assert "wiretide.tracer.assemble" in loaded
    assert out.exists()


def test_a_bad_traces_option_is_still_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    _capture(path)
    r, _ = _run(path, "--traces-protocol", "grpc")
    assert r.returncode == 2
    assert "--traces-protocol needs --traces-endpoint" in r.stderr

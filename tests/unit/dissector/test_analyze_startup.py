"""`wiretide analyze` of a capture loads only what that capture needs: the recording-bundle reader
and the HAR writer wait until a bundle or `--format har` asks for them (their imports are part of
every small run's fixed cost)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson

from .builders import Conversation, http_get, http_ok
from .test_analyze_cli import write_pcap

# Runs `wiretide analyze` in this process, then prints which of the modules in question it loaded.
_PROBE = """
import sys
from wiretide.cli.main import main
code = main(sys.argv[1:])
sys.stdout.flush()
loaded = [m for m in ("wiretide.gateway.recording.bundle", "wiretide.common.har") if m in sys.modules]
print("LOADED", *loaded, file=sys.stderr)
raise SystemExit(code)
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, "analyze", *args], capture_output=True, text=True, timeout=120
    )


def _loaded(stderr: str) -> list[str]:
    line = next(x for x in stderr.splitlines() if x.startswith("LOADED"))
    return line.split()[1:]


def _capture(tmp_path: Path) -> Path:
    conv = Conversation().handshake().send(True, http_get("/a")).send(False, http_ok(b"hi")).close()
    path = tmp_path / "one.pcap"
    write_pcap(path, conv.frames)
    return path


def test_a_capture_as_jsonl_loads_neither_the_bundle_reader_nor_the_har_writer(tmp_path: Path) -> None:
    r = _run("--quiet", str(_capture(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(line)["path"] for line in r.stdout.splitlines()] == ["/a"]
    assert _loaded(r.stderr) == []


def test_har_output_loads_the_har_writer_and_still_writes_the_call(tmp_path: Path) -> None:
    r = _run("--quiet", "--format", "har", str(_capture(tmp_path)))
    assert r.returncode == 0, r.stderr
    (entry,) = orjson.loads(r.stdout)["log"]["entries"]
    assert entry["request"]["url"].endswith("/a")
    assert _loaded(r.stderr) == ["wiretide.common.har"]


def test_a_gzip_file_is_still_asked_whether_it_is_a_bundle(tmp_path: Path) -> None:
    # Not a bundle (no .tar.gz name), but gzip: the bundle reader looks, says no, and the file is
    # then read as a capture, which it is not.
    path = tmp_path / "capture.pcap"
    path.write_bytes(gzip.compress(b"not a capture"))
    r = _run("--quiet", str(path))
    assert r.returncode != 0
    assert "wiretide.gateway.recording.bundle" in _loaded(r.stderr)

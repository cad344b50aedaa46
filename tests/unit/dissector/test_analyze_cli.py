"""`wiretide analyze` end to end as a user runs it: a real process, real capture files, stdout and stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.helpers.har import assert_valid_har
from tests.helpers.pcaps import needs_pcaps

from .builders import Conversation, http_get, http_ok
from .pcaps import PCAPS

WIRETIDE = [sys.executable, "-m", "wiretide.cli.main"]


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WIRETIDE, "analyze", *args], capture_output=True, text=True, timeout=120)


def write_pcap(path: Path, frames: list[tuple[int, bytes]]) -> None:
    import dpkt

    with path.open("wb") as fh:
        w = dpkt.pcap.Writer(fh, nano=True)
        for ts, frame in frames:
            w.writepkt(frame, ts=ts / 1e9)


@needs_pcaps
def test_jsonl_is_one_entry_per_line_and_the_summary_goes_to_stderr() -> None:
    r = analyze(str(PCAPS / "http1.1" / "zeek_pipelined-requests.pcap"))
    assert r.returncode == 0
    docs = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [d["path"] for d in docs][:2] == ["/style/enhanced.css", "/script/urchin.js"]
    assert all(d["protocol"] == "http" and d["status"] == 200 for d in docs) and len(docs) == 5
    assert "49 packets" in r.stderr and "http 5" in r.stderr


@needs_pcaps
def test_the_table_and_har_formats() -> None:
    table = analyze(str(PCAPS / "dns" / "zeek_dns-https.pcap"), "--format", "table")
    assert table.returncode == 0 and table.stdout.splitlines()[0].startswith("TIME")
    assert "HTTPS www.cloudflare.com" in table.stdout or "HTTPS" in table.stdout
    har = analyze(str(PCAPS / "http1.1" / "zeek_post.pcap"), "--format", "har")
    assert_valid_har(orjson.loads(har.stdout))
    log = orjson.loads(har.stdout)["log"]
    assert log["version"] == "1.2" and log["entries"][0]["request"]["method"] == "POST"
    assert log["entries"][0]["response"]["status"] == 200


@needs_pcaps
def test_two_jobs_give_the_same_entries_as_one() -> None:
    path = str(PCAPS / "dns" / "zeek_dns-edns-ecs.pcap")
    one = analyze(path)
    two = analyze(path, "--jobs", "2")
    assert two.returncode == 0

    def key(line: str) -> tuple[object, ...]:
        d = orjson.loads(line)
        return (d["timestamp"], d["flow_id"], d["protocol"], d["summary"])

    assert sorted(map(key, two.stdout.splitlines())) == sorted(map(key, one.stdout.splitlines()))
    assert len(one.stdout.splitlines()) == 70


@needs_pcaps
def test_a_filter_keeps_matching_entries_and_a_bad_one_is_a_clear_error() -> None:
    path = str(PCAPS / "dns" / "zeek_dns-edns-ecs.pcap")
    everything = [orjson.loads(line) for line in analyze(path).stdout.splitlines()]
    kept = analyze(path, "--filter", "dns && error == null")
    docs = [orjson.loads(line) for line in kept.stdout.splitlines()]
    assert len(docs) == sum(1 for d in everything if d["error"] is None) > 0
    assert all(d["error"] is None for d in docs)
    bad = analyze(path, "--filter", "dns &&")
    assert bad.returncode == 2 and "^" in bad.stderr and bad.stdout == ""


def test_a_file_written_from_built_traffic_round_trips(tmp_path: Path) -> None:
    conv = (
        Conversation(sport=3000)
        .handshake()
        .send(True, http_get("/built"))
        .send(False, http_ok(b"{}", "application/json"))
    )
    pcap = tmp_path / "built.pcap"
    write_pcap(pcap, conv.close().frames)
    (line,) = analyze(str(pcap), "--quiet").stdout.splitlines()
    doc = orjson.loads(line)
    assert doc["path"] == "/built" and doc["response"]["body"]["encoding"] == "json"


def test_missing_truncated_and_garbage_files_fail_clearly(tmp_path: Path) -> None:
    missing = analyze(str(tmp_path / "nope.pcap"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")
    r = analyze(str(junk))
    assert r.returncode == 1 and "not a pcap or pcapng capture" in r.stderr and "Traceback" not in r.stderr
    conv = Conversation().handshake().send(True, http_get()).send(False, http_ok()).close()
    cut = tmp_path / "cut.pcap"
    write_pcap(cut, conv.frames)
    cut.write_bytes(cut.read_bytes()[:-30])  # the last record is cut short
    r = analyze(str(cut))
    assert r.returncode == 1 and "cut short" in r.stderr and len(r.stdout.splitlines()) == 1

"""`wiretide analyze` reading captures as tshark does: `-r FILE`, `-r -` from a pipe, a capture cut short
(its intact part, tshark's message, exit 1), paths that are no capture (a precise error), KFL v1
warnings, IPv6 endpoints and `--time-format` in the table. A real process over real captures."""

from __future__ import annotations

import datetime as dt
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.pcaps import PCAPS, needs_pcaps

WIRETIDE = [sys.executable, "-m", "wiretide.cli.main"]
pytestmark = needs_pcaps


def analyze(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    return subprocess.run(
        [*WIRETIDE, "analyze", *args],
        input=None if stdin is None else stdin.decode("latin-1"),
        capture_output=True,
        text=True,
        encoding="latin-1" if stdin is not None else None,
        env=env,
        timeout=120,
    )


def calls(stdout: str) -> list[dict[str, Any]]:
    """The entries of a jsonl output without their ids (a fresh ULID per run)."""
    out = []
    for line in stdout.splitlines():
        doc = orjson.loads(line)
        doc.pop("id")
        out.append(doc)
    return out


def test_r_file_reads_what_the_positional_file_reads() -> None:
    path = str(PCAPS / "http1.1" / "zeek_pipelined-requests.pcap")
    positional, option = analyze(path, "--quiet"), analyze("-r", path, "--quiet")
    assert positional.returncode == option.returncode == 0
    assert calls(option.stdout) == calls(positional.stdout) and len(calls(option.stdout)) == 5


@pytest.mark.parametrize("name", ["http1.1/zeek_pipelined-requests.pcap", "http2/ndpi_http2.pcapng"])
def test_a_capture_piped_into_r_dash_gives_the_entries_of_the_file(name: str) -> None:
    path = PCAPS / name
    piped = subprocess.run(
        f"cat {path} | {sys.executable} -m wiretide.cli.main analyze -r - --quiet",
        shell=True,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")},
        timeout=120,
    )
    from_file = analyze(str(path), "--quiet")
    assert piped.returncode == 0, piped.stderr
    mine, theirs = calls(piped.stdout), calls(from_file.stdout)
    if path.suffix == ".pcap":  # a classic pcap names no interface: the file's name stands in for it
        assert {e["capture"]["interface"] for e in mine} == {"standard input"}
        for e in [*mine, *theirs]:
            e.pop("capture")
    assert mine == theirs and mine


def last_record_start(raw: bytes) -> int:
    """Offset of the last record (pcap) or block (pcapng) of a capture."""
    pcapng = raw[:4] == b"\x0a\x0d\x0d\x0a"
    off, last = (0 if pcapng else 24), 0
    while off < len(raw):
        last = off
        off += (
            struct.unpack_from("<I", raw, off + 4)[0]
            if pcapng
            else 16 + struct.unpack_from("<I", raw, off + 8)[0]
        )
    return last


@pytest.mark.parametrize("name", ["http1.1/zeek_get.pcap", "http2/ndpi_http2.pcapng"])
@pytest.mark.parametrize("via", ["file", "pipe"])
def test_a_capture_cut_mid_packet_prints_its_intact_entries_then_says_so_and_fails(
    tmp_path: Path, name: str, via: str
) -> None:
    raw = (PCAPS / name).read_bytes()
    start = last_record_start(raw)
    # The same file name in two folders: a classic pcap's interface is named after its file.
    (tmp_path / "cut").mkdir()
    (tmp_path / "intact").mkdir()
    cut = tmp_path / "cut" / Path(name).name
    cut.write_bytes(raw[: start + 20])  # 20 bytes into the last packet
    intact = tmp_path / "intact" / Path(name).name
    intact.write_bytes(raw[:start])
    if via == "pipe":
        expected = analyze("-r", "-", "--quiet", stdin=intact.read_bytes())
        r = analyze("-r", "-", stdin=cut.read_bytes())
    else:
        expected = analyze(str(intact), "--quiet")
        r = analyze("-r", str(cut))
    assert expected.returncode == 0 and calls(expected.stdout)
    assert r.returncode == 1
    assert calls(r.stdout) == calls(expected.stdout)
    where = "standard input" if via == "pipe" else str(cut)
    assert f"{where}: the capture appears to have been cut short in the middle of a packet" in r.stderr
    assert f"at byte offset {start}" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (None, 2, "is a directory, not a capture file"),
        (b"", 1, "empty file (0 bytes), not a pcap or pcapng capture"),
        (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1, "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", 1, "only 6 bytes, too short for a pcap file header"),
    ],
    ids=["directory", "empty", "http-text", "short-header"],
)
def test_a_path_that_is_no_capture_fails_naming_the_file_and_the_problem(
    tmp_path: Path, content: bytes | None, status: int, says: str
) -> None:
    path = tmp_path / "x.pcap"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    r = analyze(str(path))
    assert r.returncode == status
    assert f"wiretide analyze: {path}: {says}" in r.stderr
    assert "no such file" not in r.stderr and "warning" not in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == "" and "packets in" not in r.stderr  # no summary of nothing


def test_a_kfl_v1_filter_works_and_its_translation_is_reported_on_stderr() -> None:
    path = str(PCAPS / "http1.1" / "zeek_pipelined-requests.pcap")
    v1 = analyze(path, "--quiet", "--filter", "http and response.status == 200")
    cel = analyze(path, "--quiet", "--filter", "http && response.status == 200")
    assert v1.returncode == 0 and calls(v1.stdout) == calls(cel.stdout) and calls(v1.stdout)
    assert "wiretide analyze: warning: KFL v1 'and' read as '&&'" in v1.stderr
    assert "hint: write '&&'" in v1.stderr and "warning" not in cel.stderr


def table(path: Path, *args: str) -> list[str]:
    r = analyze(str(path), "--quiet", "--format", "table", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_ipv6_endpoints_are_printed_in_brackets_before_the_port() -> None:
    path = PCAPS / "dns" / "zeek_ipv6-fragmented-dns.pcap"
    entries = calls(analyze(str(path), "--quiet").stdout)
    rows = table(path)[1:]
    assert len(rows) == len(entries)
    for row, e in zip(rows, entries, strict=True):
        src, dst = e["src"], e["dst"]
        assert isinstance(src, dict) and isinstance(dst, dict)
        assert f"[{src['ip']}]:{src['port']}" in row and f"[{dst['ip']}]:{dst['port']}" in row


def test_time_format_shows_dates_epoch_and_relative_times_of_the_entries() -> None:
    path = PCAPS / "http1.1" / "zeek_pipelined-requests.pcap"
    stamps = [e["timestamp"] for e in calls(analyze(str(path), "--quiet").stdout)]
    assert all(isinstance(t, int) for t in stamps)
    ns = [int(str(t)) for t in stamps]

    def column(fmt: str) -> list[str]:
        lines = table(path, "--time-format", fmt)
        assert lines[0].startswith("TIME ")
        return [line.split(" ", 1)[0] for line in lines[1:]]

    as_us = [t // 1000 for t in ns]
    assert [int(c.replace(".", "")) for c in column("epoch")] == as_us
    utc = [dt.datetime.strptime(c, "%Y-%m-%dT%H:%M:%S.%f%z") for c in column("utc")]
    assert all(c.endswith("Z") for c in column("utc"))
    dated = [dt.datetime.fromisoformat(c) for c in column("date")]
    for when in (utc, dated):
        assert [int(w.timestamp()) * 1_000_000 + w.microsecond for w in when] == as_us
        assert all(w.tzinfo is not None for w in when)
    relative = column("relative")
    assert relative[0] == "0.000000"
    assert [round(float(r) * 1e6) for r in relative] == [t - as_us[0] for t in as_us]
    day = column("time")
    assert day == [w.astimezone().strftime("%H:%M:%S.%f") for w in utc]

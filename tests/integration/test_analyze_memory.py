"""`wiretide analyze` streams its output: on a capture of 100,000 HTTP calls, each on its own
connection, its peak memory is what it is on a capture of 5,000 — for JSON lines and for HAR alike
(holding every HAR entry until the end cost ~1 GB for 100k flows)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.dissector.builders import ACK, FIN, PSH, SYN, tcp_frame
from wiretide.common.packets import LINKTYPE_ETHERNET

SMALL, LARGE = 5_000, 100_000
# Peak RSS may grow this much from the small capture to the large one: HarStream's reorder window
# (16 MiB of serialized entries, filled only by the large one), allocator slack and counters — not
# entries: 100,000 HAR entries held until the end are ~1 GB (measured: 45 MB of growth for HAR).
GROWTH_MB = 96


def capture(path: Path, flows: int) -> Path:
    """`flows` connections, one GET each: handshake, request, response with FIN, FIN."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    record = struct.Struct("<IIII").pack
    t = 1_700_000_000 * 1_000_000
    for i in range(flows):
        client = f"10.{1 + i // 60_000}.{(i // 250) % 240}.{1 + i % 250}"
        cport = 1024 + i % 60_000
        req = f"GET /items/{i} HTTP/1.1\r\nHost: shop\r\nUser-Agent: t\r\n\r\n".encode()
        body = b'{"id": %d, "ok": true}' % i
        resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )
        c, s = 1000, 5000
        frames = [
            tcp_frame(client, cport, "10.99.0.2", 80, c, 0, SYN),
            tcp_frame("10.99.0.2", 80, client, cport, s, c + 1, SYN | ACK),
            tcp_frame(client, cport, "10.99.0.2", 80, c + 1, s + 1, PSH | ACK, req),
            tcp_frame("10.99.0.2", 80, client, cport, s + 1, c + 1 + len(req), PSH | ACK | FIN, resp),
            tcp_frame(client, cport, "10.99.0.2", 80, c + 1 + len(req), s + 2 + len(resp), FIN | ACK),
        ]
        for f in frames:
            t += 20
            out.append(record(t // 1_000_000, t % 1_000_000, len(f), len(f)) + f)
    path.write_bytes(b"".join(out))
    return path


def peak_rss_mb(path: Path, fmt: str) -> tuple[float, int]:
    """Peak RSS of one `wiretide analyze` run (its own process) and the bytes it wrote."""
    with (path.parent / f"out-{fmt}").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wiretide.cli.main", "analyze", str(path), "--format", fmt, "--quiet"],
            stdout=out,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        with proc.stderr:
            err = proc.stderr.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    assert proc.returncode == 0, err.decode()
    return usage.ru_maxrss / 1024, (path.parent / f"out-{fmt}").stat().st_size


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("flows")
    (d / "small").mkdir()
    (d / "large").mkdir()
    return capture(d / "small" / "small.pcap", SMALL), capture(d / "large" / "large.pcap", LARGE)


@pytest.mark.parametrize("fmt", ["har", "jsonl"])
def test_peak_memory_does_not_grow_with_the_number_of_entries_written(
    fmt: str, captures: tuple[Path, Path]
) -> None:
    small, large = captures
    base, small_out = peak_rss_mb(small, fmt)
    peak, large_out = peak_rss_mb(large, fmt)
    assert large_out > 15 * small_out  # every entry written: the output grew with the input
    assert peak - base <= GROWTH_MB, (
        f"{fmt}: peak RSS {base:.0f} MB for {SMALL:,} flows, {peak:.0f} MB for {LARGE:,}"
    )

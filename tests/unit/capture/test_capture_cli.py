"""`wiretide capture` without privileges: replaying files, writing pcapng, and clear failures."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.pcaps import PCAPS, needs_pcaps
from wiretide.capture.pcapng import PcapngWriter
from wiretide.capture.sources.pcapfile import read_batches, read_stream
from wiretide.cli.main import main
from wiretide.common.packets import LINKTYPE_ETHERNET, ColumnBuilder


def frames(path: Path) -> list[bytes]:
    return [c.data[o : o + n] for c in read_batches(path) for o, n, *_ in c.iter_packets()]


@needs_pcaps
def test_a_replayed_file_is_written_as_pcapng_with_the_same_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = PCAPS / "http1.1/zeek_get.pcap"
    out = tmp_path / "out.pcapng"
    assert main(["capture", "--pcap", str(src), "-w", str(out)]) == 0
    assert frames(out) == frames(src)
    assert f"{len(frames(src))} packets" in capsys.readouterr().err
    assert main(["capture", "--pcap", str(src), "-c", "3", "-w", str(out)]) == 0
    assert frames(out) == frames(src)[:3]
    if Path("/usr/bin/tshark").exists():
        listed = subprocess.run(["/usr/bin/tshark", "-r", str(out)], capture_output=True, check=True).stdout
        assert len(listed.splitlines()) == 3


@needs_pcaps
def test_a_corrupt_file_fails_naming_offset_and_packets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = (PCAPS / "http1.1/zeek_get.pcap").read_bytes()
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(raw[: len(raw) - 10])
    assert main(["capture", "--pcap", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "byte offset" in err and "after 13 packets" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bpf", "tcp port"], "bad filter"),
        (["--port", "0"], "port 0"),
        (["--cidr", "300.0.0.0/8"], "bad CIDR"),
        (["--snaplen", "10"], "snaplen"),
        (["-i", "any,eth0"], "cannot be mixed"),
        (["--fanout-mode", "sideways"], "fanout mode"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["capture", *argv]) == 2
    assert message in capsys.readouterr().err


WIRETIDE = [sys.executable, "-m", "wiretide.cli.main"]
TSHARK = Path("/usr/bin/tshark")


def env_without_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}


@needs_pcaps
@pytest.mark.parametrize("name", ["http1.1/zeek_get.pcap", "http2/ndpi_http2.pcapng"])
def test_w_dash_writes_only_pcapng_to_stdout_with_every_frame(name: str) -> None:
    src = PCAPS / name
    r = subprocess.run(
        [*WIRETIDE, "capture", "--pcap", str(src), "-w", "-"],
        capture_output=True,
        env=env_without_settings(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout[:4] == b"\x0a\x0d\x0d\x0a"  # a pcapng section header and nothing before it
    piped = [c.data[o : o + n] for c in read_stream(io.BytesIO(r.stdout)) for o, n, *_ in c.iter_packets()]
    assert piped == frames(src)  # and nothing after the last block
    assert f"{len(piped)} packets" in r.stderr.decode()


@needs_pcaps
@pytest.mark.skipif(not TSHARK.exists(), reason="tshark is not installed")
def test_w_dash_piped_into_tshark_r_dash_lists_every_packet() -> None:
    src = PCAPS / "http2" / "ndpi_http2.pcapng"
    with subprocess.Popen(
        [*WIRETIDE, "capture", "--pcap", str(src), "-w", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env_without_settings(),
    ) as capture:
        assert capture.stdout is not None
        listed = subprocess.run(
            [str(TSHARK), "-r", "-", "-T", "fields", "-e", "frame.len"],
            stdin=capture.stdout,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert capture.returncode == 0
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.split()) == len(frames(src))


def test_a_reader_that_goes_away_ends_w_dash_quietly(tmp_path: Path) -> None:
    # A replay far larger than a pipe buffer, read for 100 bytes by `head`.
    b = ColumnBuilder()
    i = b.interface("x", LINKTYPE_ETHERNET)
    for k in range(20_000):
        b.append(b"\x00" * 200, 200, 1_700_000_000_000_000_000 + k, i)
    big = tmp_path / "big.pcapng"
    with open(big, "wb") as fh:
        PcapngWriter(fh, "n").write(b.take())
    r = subprocess.run(
        f"{sys.executable} -m wiretide.cli.main capture --pcap {big} -w - | head -c 100 > /dev/null;"
        " echo status=${PIPESTATUS[0]} >&2",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env_without_settings(),
        timeout=120,
    )
    assert "status=0" in r.stderr
    assert (
        "Traceback" not in r.stderr and "Exception ignored" not in r.stderr and "Broken pipe" not in r.stderr
    )


def test_w_dash_refuses_to_write_binary_to_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        r = subprocess.run(
            [*WIRETIDE, "capture", "-i", "lo", "-w", "-"],
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            env=env_without_settings(),
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert r.returncode == 2 and "pipe it" in r.stderr

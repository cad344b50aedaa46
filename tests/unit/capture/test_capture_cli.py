"""`wiretide capture` without privileges: replaying files, writing pcapng, and clear failures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from wiretide.capture.sources.pcapfile import read_batches
from wiretide.cli.main import main

PCAPS = Path("/work/shared/pcaps")


def frames(path: Path) -> list[bytes]:
    return [c.data[o : o + n] for c in read_batches(path) for o, n, *_ in c.iter_packets()]


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

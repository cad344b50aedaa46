"""The repository works from any checkout: no file names a path on one machine, and the tests find the
shared captures relative to the repository (or through `WIRETIDE_TEST_PCAPS`), failing under CI when
they are missing instead of skipping."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import pcaps as pcaps_helper

ROOT = Path(__file__).resolve().parents[2]
# Home and workspace directories of one machine. Built from parts so this file does not match itself.
MACHINE_PATH = re.compile("(?<![\\w.~$-])/(?:" + "wo" + "rk/|home/\\w|Users/\\w|ro" + "ot/)")


def tracked_files() -> list[Path]:
    """Every file git tracks or would track (new files not yet committed included, ignored ones not)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def machine_paths(files: list[Path], root: Path = ROOT) -> list[str]:
    """`file:line: text` for every line naming an absolute machine path (binary files skipped)."""
    found = []
    for path in files:
        raw = path.read_bytes()
        if b"\0" in raw[:8192]:
            continue
        for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_the_scan_finds_machine_paths_and_leaves_relative_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("captures in /" + "work/shared/pcaps\nlogs in /ro" + "ot/.local\n")
    good = tmp_path / "good.md"
    good.write_text("captures in ../shared/pcaps, logs in ~/.local/share, /tmp/x, $HOME/.config\n")
    (tmp_path / "blob.bin").write_bytes(b"\0/" + b"work/x")
    assert machine_paths(sorted(tmp_path.iterdir()), tmp_path) == [
        "bad.md:1: captures in /" + "work/shared/pcaps",
        "bad.md:2: logs in /ro" + "ot/.local",
    ]


def test_no_file_in_the_repository_names_an_absolute_machine_path() -> None:
    files = tracked_files()
    assert len(files) > 100
    assert machine_paths(files) == []


def test_captures_are_found_next_to_the_repository_unless_overridden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(pcaps_helper.OVERRIDE_ENV, raising=False)
    assert pcaps_helper._pcaps_dir() == (ROOT.parent / "shared" / "pcaps").resolve()
    monkeypatch.setenv(pcaps_helper.OVERRIDE_ENV, str(tmp_path))
    assert pcaps_helper._pcaps_dir() == tmp_path.resolve()


def test_missing_captures_skip_locally_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pcaps_helper, "PCAPS", tmp_path / "absent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="shared captures not present"):
        pcaps_helper.require_pcaps()


def test_missing_captures_fail_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pcaps_helper, "PCAPS", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        pcaps_helper.require_pcaps()
    tmp_path.joinpath("absent").mkdir()
    with pytest.raises(pytest.fail.Exception, match=r"gone\.pcap"):
        pcaps_helper.require_pcaps(tmp_path / "absent" / "gone.pcap")
    pcaps_helper.require_pcaps()  # the directory alone is there now


def test_an_empty_capture_directory_still_collects_a_test_that_reports_it(tmp_path: Path) -> None:
    (placeholder,) = pcaps_helper.files_or_missing([])
    assert placeholder.parent == pcaps_helper.PCAPS and not placeholder.exists()
    assert pcaps_helper.files_or_missing([tmp_path]) == [tmp_path]

"""Where the tests find the shared captures: one place, relative to the repository, never a machine path.

The rule this module keeps: captures live in `../shared/pcaps` next to the repository (the layout of a
checkout beside its shared data), unless `WIRETIDE_TEST_PCAPS` names another directory. When they are
missing a test skips with the reason, except under `CI=true`, where a missing capture is a failure: a CI
run that silently skipped every capture test would report green over nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERRIDE_ENV = "WIRETIDE_TEST_PCAPS"
DEFAULT_PCAPS = REPO_ROOT.parent / "shared" / "pcaps"


def _pcaps_dir() -> Path:
    override = os.environ.get(OVERRIDE_ENV)
    return Path(override).expanduser().resolve() if override else DEFAULT_PCAPS.resolve()


PCAPS: Path = _pcaps_dir()


def pcap(relpath: str | Path) -> Path:
    """The capture at `relpath` under PCAPS (e.g. `pcap("http1.1/zeek_get.pcap")`)."""
    return PCAPS / relpath


def in_ci() -> bool:
    """True when running under CI (`CI=true`, as GitHub Actions, GitLab and most runners set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_reason(*paths: Path) -> str | None:
    """Why the captures cannot be used (None when PCAPS and every given path exist)."""
    if not PCAPS.is_dir():
        return f"shared captures not present: no directory {PCAPS} (set {OVERRIDE_ENV} to another)"
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        return f"shared captures not present: {', '.join(absent)}"
    return None


def require_pcaps(*paths: Path) -> None:
    """Skip the calling test when the captures are missing; fail instead under `CI=true`.

    Call it at the start of a test or fixture, with the capture paths the test reads (none: only the
    directory must exist).
    """
    reason = missing_reason(*paths)
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: missing captures fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


def files_or_missing(files: list[Path]) -> list[Path]:
    """`files` for `pytest.mark.parametrize`, or one placeholder when none were found.

    A parametrization over an empty glob collects no test at all, which passes silently; the placeholder
    makes the test run, and its `require_pcaps(path)` then skips (or fails under CI) with the reason.
    """
    return files or [PCAPS / "<no captures found>"]


@pytest.fixture
def pcaps_present() -> Path:
    """A fixture form of `require_pcaps()`: the captures directory, or skip/fail as above."""
    require_pcaps()
    return PCAPS


# Mark a module or test that reads the captures: `pytestmark = needs_pcaps`. Unlike a `skipif`, it fails
# under CI (the fixture is registered in tests/conftest.py).
needs_pcaps = pytest.mark.usefixtures("pcaps_present")

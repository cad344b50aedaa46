"""The `wiretide` command as a tshark/tcpdump user meets it: `--version`, usage errors on stderr with
exit 2 from every command, and a mistyped WIRETIDE_* setting named with the closest real one — by the
CLI and by a service starting on its own, through the one check in `wiretide.common.settings`."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.pcaps import PCAPS, needs_pcaps
from wiretide.cli.main import main
from wiretide.cli.supervisor import SupervisorError
from wiretide.cli.validate import validate_environment

WIRETIDE = [sys.executable, "-m", "wiretide.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any WIRETIDE_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    return env | extra


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `wiretide ARGV` in this process: (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_version_prints_the_installed_package_version() -> None:
    r = subprocess.run([*WIRETIDE, "--version"], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 0
    assert r.stdout == f"wiretide {importlib.metadata.version('wiretide')}\n"


SAMPLE = str(PCAPS / "http1.1" / "zeek_get.pcap")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "a command is required"),
        (["capturee"], "invalid choice"),
        (["analyze"], "give FILE or -r FILE"),
        (["analyze", SAMPLE, "-r", SAMPLE], "not both"),
        (["analyze", SAMPLE, "--format", "xml"], "invalid choice"),
        (["analyze", SAMPLE, "--time-format", "tomorrow"], "invalid choice"),
        (["analyze", SAMPLE, "--jobs", "0"], "--jobs must be at least 1"),
        (["analyze", "-r", "-", "--jobs", "2"], "standard input can be read only once"),
        (["analyze", SAMPLE, "--filter", "http &&"], "^"),
        (["analyze", SAMPLE, "--ports", "x=y"], "--ports"),
        (["capture", "--count", "-1"], "must be >= 0"),
        (["capture", "--bpf", "tcp port"], "bad filter"),
        (["capture", "--snaplen", "many"], "invalid int value"),
        (["query", "--limit", "0", "--url", "http://127.0.0.1:9"], "--limit must be at least 1"),
        (["query", "http &&", "--url", "http://127.0.0.1:9"], "^"),
        (["query", "--format", "csv"], "invalid choice"),
        (["status", "--jsn"], "unrecognized arguments"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_every_usage_error_goes_to_stderr_with_exit_status_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("WIRETIDE_")]:
        monkeypatch.delenv(key)
    code, out, err = cli(argv, capsys)
    assert code == 2, err
    assert out == ""
    assert says in err and "Traceback" not in err


def test_a_mistyped_setting_is_named_with_the_closest_real_one_by_the_cli(tmp_path: Path) -> None:
    r = subprocess.run(
        [*WIRETIDE, "status", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=clean_env(WIRETIDE_DATADIR="x"),
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert "unknown setting WIRETIDE_DATADIR (did you mean WIRETIDE_DATA_DIR?)" in r.stderr


def test_a_service_starting_on_its_own_gives_the_same_suggestion() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "wiretide.capture"],
        capture_output=True,
        text=True,
        env=clean_env(WIRETIDE_CAPTURE_INTERFACEZ="eth0"),
        timeout=120,
    )
    assert r.returncode == 2
    assert (
        "unknown setting WIRETIDE_CAPTURE_INTERFACEZ (did you mean WIRETIDE_CAPTURE_INTERFACES?)" in r.stderr
    )


def test_wiretide_up_checks_names_through_the_same_path_and_suggests_too() -> None:
    with pytest.raises(SupervisorError, match=r"did you mean WIRETIDE_GATEWAY_TOKEN\?"):
        validate_environment({"WIRETIDE_GATEWAY_TOKN": "s3cret"})
    with pytest.raises(SupervisorError, match="WIRETIDE_LOG_LEVEL"):
        validate_environment({"WIRETIDE_LOG_LEVEL": "LOUD"}, values=True)


@needs_pcaps
def test_variables_read_outside_the_settings_are_not_unknown(tmp_path: Path) -> None:
    """WIRETIDE_NATIVE=0 (pure-Python dissectors) must not stop the CLI or a service at start-up."""
    env = clean_env(WIRETIDE_NATIVE="0", WIRETIDE_TEST_PCAPS=str(PCAPS))
    r = subprocess.run(
        [*WIRETIDE, "analyze", SAMPLE, "--quiet"], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0 and "unknown setting" not in r.stderr
    assert len(r.stdout.splitlines()) == 1
    validate_environment({"WIRETIDE_NATIVE": "0", "WIRETIDE_NATIVE_DIR": str(tmp_path)})


def test_the_data_dir_setting_is_every_commands_default(tmp_path: Path) -> None:
    data_dir = tmp_path / "elsewhere"
    env = {**os.environ, "WIRETIDE_DATA_DIR": str(data_dir)}
    wiretide = Path(sys.executable).with_name("wiretide")
    out = subprocess.run([str(wiretide), "status"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert str(data_dir / "run.json") in out.stdout + out.stderr

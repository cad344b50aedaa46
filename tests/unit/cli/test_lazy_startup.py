"""`wiretide COMMAND` pays only for that command: it imports that command's module alone (not the TLS
certificate tooling, not the package metadata for --version), and the WIRETIDE_* name check imports
only the settings of the services whose variables are set — while every `--help`, `--version` and
every answer of the check stay what the whole tree and the full check give."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.dissector.builders import Conversation, http_get, http_ok
from wiretide.cli import main as cli_main
from wiretide.cli.main import COMMANDS, build_parser, parser_for
from wiretide.cli.supervisor import SupervisorError
from wiretide.cli.validate import ENV_PREFIX, problem_with_names, validate_environment
from wiretide.common import settings

ANALYZE_PROBE = """
import sys
from wiretide.cli.main import main
code = main(["analyze", "--quiet", "--format", "jsonl", sys.argv[1]])
sys.stdout.flush()
heavy = ("cryptography", "pydantic", "wiretide.common.settings", "wiretide.cli.certs",
         "wiretide.gateway.service", "wiretide.capture.service")
sys.stderr.write("LOADED " + ",".join(sorted(m for m in heavy if m in sys.modules)) + "\\n")
raise SystemExit(code)
"""

CHECK_PROBE = """
import os, sys
from wiretide.cli.main import check_environment
problem = check_environment(os.environ)
from wiretide.common.types import SERVICES
services = [s for s in SERVICES if f"wiretide.{s}.service" in sys.modules]
print("PROBLEM", problem)
print("SETTINGS", "wiretide.common.settings" in sys.modules)
print("SERVICES", ",".join(services))
"""


def clean_env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)} | extra


def _capture(path: Path) -> None:
    import dpkt

    conv = Conversation().handshake().send(True, http_get("/x")).send(False, http_ok(b"ok")).close()
    with path.open("wb") as fh:
        w = dpkt.pcap.Writer(fh, nano=True)
        for ts, frame in conv.frames:
            w.writepkt(frame, ts=ts / 1e9)


@pytest.mark.parametrize("native", [None, "0"], ids=["no WIRETIDE_ variable", "WIRETIDE_NATIVE=0"])
def test_analyze_imports_no_certificate_tooling_nor_settings(tmp_path: Path, native: str | None) -> None:
    path = tmp_path / "one.pcap"
    _capture(path)
    env = clean_env() if native is None else clean_env(WIRETIDE_NATIVE=native)
    r = subprocess.run(
        [sys.executable, "-c", ANALYZE_PROBE, str(path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1  # the one GET was dissected
    loaded = next(x for x in r.stderr.splitlines() if x.startswith("LOADED "))
    assert loaded == "LOADED "


def _check(**env: str) -> tuple[str, bool, list[str]]:
    r = subprocess.run(
        [sys.executable, "-c", CHECK_PROBE], capture_output=True, text=True, timeout=120, env=clean_env(**env)
    )
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    return lines["PROBLEM"], lines["SETTINGS"] == "True", [s for s in lines["SERVICES"].split(",") if s]


def test_the_name_check_imports_nothing_for_the_compiled_module_switch() -> None:
    assert _check(WIRETIDE_NATIVE="0", WIRETIDE_NATIVE_DIR="/nowhere") == ("None", False, [])


def test_the_name_check_imports_only_the_services_whose_variables_are_set() -> None:
    assert _check(WIRETIDE_DATA_DIR="/tmp/x") == ("None", True, [])
    assert _check(WIRETIDE_TRACES_OTLP_ENDPOINT="http://127.0.0.1:4318") == ("None", True, ["tracer"])
    problem, _, services = _check(WIRETIDE_CAPTURE_INTERFACEZ="eth0")
    assert (
        problem == "unknown setting WIRETIDE_CAPTURE_INTERFACEZ (did you mean WIRETIDE_CAPTURE_INTERFACES?)"
    )
    assert len(services) == 6  # a name nobody knows: every service is asked for the closest one


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"WIRETIDE_NATIVE": "0"},
        {"WIRETIDE_NATIVE": "0", "WIRETIDE_TEST_PCAPS": "/p"},
        {"WIRETIDE_DATA_DIR": "/d", "WIRETIDE_LOG_LEVEL": "LOUD"},  # names only: a bad value is not checked
        {"WIRETIDE_DATADIR": "/d"},
        {"WIRETIDE_GATEWAY_TOKN": "s3cret"},
        {"WIRETIDE_GATEWAY_TOKEN": "s3cret", "WIRETIDE_RECORDING_DIR": "/r"},
        {"WIRETIDE_TRACER_WINDOW_S": "2", "WIRETIDE_TRACES_OTLP_PROTOCOL": "grpc"},
        {"WIRETIDE_TRACER_WINDOW": "2"},
        {"WIRETIDE_CAPTURE_GRPC": "127.0.0.1:1", "WIRETIDE_NATIVE_DIR": "/n"},
        {"WIRETIDE_NOPE": "1", "WIRETIDE_NATIVE": "0"},
        {"WIRETIDE_NATIVEE": "0"},
    ],
    ids=lambda e: ",".join(e) or "empty",
)
def test_the_quick_name_check_answers_as_the_full_check(environ: dict[str, str]) -> None:
    try:
        validate_environment(environ, values=False)
        expected = None
    except SupervisorError as exc:
        expected = str(exc)
    assert problem_with_names(environ) == expected


def test_the_check_spells_the_settings_prefix_as_the_settings_do() -> None:
    assert ENV_PREFIX == settings.ENV_PREFIX
    from wiretide.common import native

    assert {native.ENV_SWITCH, native.ENV_DIR} <= set(settings.NOT_SETTINGS)


def _help(parser_argv: list[str], capsys: pytest.CaptureFixture[str], full: bool) -> str:
    parser = build_parser() if full else parser_for(parser_argv)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(parser_argv)
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_commands_help_is_the_same_from_its_own_parser_and_the_whole_tree(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lazy = _help([command, "--help"], capsys, full=False)
    assert lazy.startswith(f"usage: wiretide {command}")
    assert lazy == _help([command, "--help"], capsys, full=True)


def test_a_command_line_builds_only_its_commands_parser() -> None:
    parser = parser_for(["analyze", "x.pcap"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == ["analyze"]


def test_the_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["--help"], capsys, full=False)
    for command in COMMANDS:
        assert f"    {command} " in out or f"    {command}\n" in out, command
    assert "--version" in out and "show program's version number and exit" in out


def test_an_unknown_command_is_refused_with_the_whole_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["analyse"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'analyse'" in err and "'analyze'" in err and "'tls'" in err

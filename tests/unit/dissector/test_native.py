"""The compiled dissector modules: used only when their build matches the sources, identical output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.pcaps import require_pcaps
from tests.unit.dissector.pcaps import PCAPS
from wiretide.dissector import native


def _tree(tmp_path: Path) -> Path:
    """A copy of the compiled modules' sources to fingerprint."""
    src = tmp_path / "src"
    for module in native.MODULES:
        target = native.source_of(module, src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(native.source_of(module).read_bytes())
    return src


def test_a_build_is_used_only_while_its_manifest_matches_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(native.ENV_SWITCH, raising=False)
    src = _tree(tmp_path)
    build = tmp_path / "build"
    build.mkdir()
    assert native.usable(build, src) == "not built"
    (build / native.MANIFEST).write_text(json.dumps(native.fingerprint(src)))
    assert native.usable(build, src) is None
    # One edited source makes the whole build stale (the modules are compiled as one group).
    edited = native.source_of("wiretide.dissector.protocols.http1", src)
    edited.write_bytes(edited.read_bytes() + b"\n# edited\n")
    assert native.usable(build, src) == "stale (sources or interpreter changed since the build)"


def test_a_build_for_another_interpreter_or_a_broken_manifest_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(native.ENV_SWITCH, raising=False)
    src = _tree(tmp_path)
    build = tmp_path / "build"
    build.mkdir()
    other = native.fingerprint(src) | {"python": "3.11.0 (elsewhere)"}
    (build / native.MANIFEST).write_text(json.dumps(other))
    assert native.usable(build, src) is not None
    (build / native.MANIFEST).write_text("{not json")
    assert (native.usable(build, src) or "").startswith("unreadable manifest")


def test_the_switch_turns_a_fresh_build_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _tree(tmp_path)
    build = tmp_path / "build"
    build.mkdir()
    (build / native.MANIFEST).write_text(json.dumps(native.fingerprint(src)))
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.usable(build, src) == "WIRETIDE_NATIVE=0"


def _which_files(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import json, importlib; from wiretide.dissector import native; "
        "print(json.dumps({'status': native.STATUS, **{m: importlib.import_module(m).__file__ "
        "for m in native.MODULES}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def _skip_unless_built() -> None:
    saved = os.environ.pop(native.ENV_SWITCH, None)
    try:
        why = native.usable(native.build_dir())
    finally:
        if saved is not None:
            os.environ[native.ENV_SWITCH] = saved
    if why is not None:
        pytest.skip(f"no fresh compiled build ({why}): `make setup` builds it where gcc is installed")


def test_a_fresh_build_is_loaded_and_the_switch_falls_back_to_the_sources() -> None:
    _skip_unless_built()
    env = {k: v for k, v in os.environ.items() if k != native.ENV_SWITCH}
    compiled = _which_files(env)
    assert compiled.pop("status") == "compiled"
    assert all(path.endswith(".so") for path in compiled.values()), compiled
    pure = _which_files(env | {native.ENV_SWITCH: "0"})
    assert pure.pop("status") == "WIRETIDE_NATIVE=0"
    assert all(path.endswith(".py") for path in pure.values()), pure


def test_compiled_and_pure_modules_write_the_same_entries() -> None:
    _skip_unless_built()
    # Two captures of each protocol the compiled modules parse or hand on (HTTP/1 upgrades to both).
    files = [
        p
        for d in ("http1.1", "http1.0", "websocket", "dns", "tls", "http2")
        for p in sorted((PCAPS / d).glob("*.pcap*"), key=lambda f: f.stat().st_size)[-2:]
    ]
    if not files:
        require_pcaps(PCAPS / "http1.1")
    env = {k: v for k, v in os.environ.items() if k != native.ENV_SWITCH}
    compared = 0
    for path in files:
        outputs = []
        for switch in ("1", "0"):
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "wiretide.cli.main",
                    "analyze",
                    "--format",
                    "jsonl",
                    "--quiet",
                    str(path),
                ],
                env=env | {native.ENV_SWITCH: switch},
                capture_output=True,
                check=False,
            )
            text = run.stdout.decode()
            # Ids are random; entries refer to each other by id (WebSocket messages to their upgrade).
            for n, line in enumerate(text.splitlines()):
                text = text.replace(json.loads(line)["id"], f"entry-{n}")
            outputs.append((run.returncode, [json.loads(line) for line in text.splitlines()]))
        assert outputs[0] == outputs[1], path.name
        compared += len(outputs[0][1])
    assert compared > 100, "the captures compared gave almost no entries"

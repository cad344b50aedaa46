"""The registry's per-flow work: the candidate order (override → port hints → the rest by priority) is
the same whatever the client's ephemeral port, is worked out once per pair of port roles, follows a
dissector registered later; and the start-up scan for third-party dissectors reads the package
metadata machinery only when some installed distribution declares one."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wiretide.dissector.api import Presented, ProtocolSpec, Verdict
from wiretide.dissector.registry import (
    ENTRY_POINT_GROUP,
    Registry,
    _entry_points,
    _may_declare_group,
    default_registry,
)


def _spec(name: str, ports: tuple[int, ...], says: bytes = b"") -> ProtocolSpec:
    def probe(client: bytes, server: bytes) -> Verdict:
        return Verdict.YES if says and client.startswith(says) else Verdict.NO

    def present(req: object, resp: object) -> Presented:
        return Presented()

    return ProtocolSpec(
        name=name,
        transports=("tcp",),
        ports=ports,
        probe=probe,
        session=lambda config: None,  # type: ignore[arg-type,return-value]
        present=present,
    )


def _names(registry: Registry, sport: int, dport: int) -> tuple[list[str], int]:
    specs, hinted = registry.candidates("tcp", sport, dport)
    return [s.name for s in specs], hinted


def test_hints_of_the_server_port_lead_then_everyone_else_in_declared_order() -> None:
    reg = Registry([_spec("a", (1000,)), _spec("b", (80,)), _spec("c", (80, 2000)), _spec("d", ())])
    assert _names(reg, 51000, 80) == (["b", "c", "a", "d"], 2)
    assert _names(reg, 80, 51001) == (["b", "c", "a", "d"], 2)  # the server seen as the source
    assert _names(reg, 2000, 1000) == (["a", "c", "b", "d"], 2)  # destination's hints first
    assert _names(reg, 51000, 51001) == (["a", "b", "c", "d"], 0)


def test_an_override_leads_even_ahead_of_the_hints() -> None:
    reg = Registry([_spec("a", (80,)), _spec("b", ()), _spec("c", ())], overrides={80: "c", 9000: "b"})
    assert _names(reg, 51000, 80) == (["c", "a", "b"], 2)
    assert _names(reg, 9000, 80) == (["c", "b", "a"], 3)
    assert reg.forced(51000, 80) is reg.by_name["c"]
    assert reg.forced(51000, 51001) is None


@given(st.integers(1024, 65535), st.integers(1024, 65535))
def test_every_ephemeral_client_port_gets_the_same_order(p1: int, p2: int) -> None:
    reg = Registry([_spec("a", (1000,)), _spec("b", (80,)), _spec("c", ())])
    if p1 in (1000, 80) or p2 in (1000, 80):
        return
    assert _names(reg, p1, 80) == _names(reg, p2, 80) == (["b", "a", "c"], 1)
    assert len(reg._candidates) <= 4  # one key per port role, not one per flow


def test_the_candidate_list_handed_out_is_the_callers_to_change() -> None:
    reg = Registry([_spec("a", (80,)), _spec("b", ())])
    specs, _ = reg.candidates("tcp", 51000, 80)
    specs.clear()
    assert _names(reg, 51001, 80) == (["a", "b"], 1)


def test_a_dissector_added_later_takes_its_place_in_the_order() -> None:
    reg = Registry([_spec("a", ()), _spec("b", ())])
    assert _names(reg, 51000, 7000) == (["a", "b"], 0)
    reg.add(_spec("late", (7000,), says=b"LATE"))
    assert _names(reg, 51000, 7000) == (["late", "a", "b"], 1)
    spec, first_is_client, undecided = reg.detect("tcp", 51000, 7000, b"LATE hi", b"", True)
    assert spec is reg.by_name["late"] and first_is_client and not undecided


def test_detection_finds_a_protocol_off_its_port_and_in_the_reverse_direction() -> None:
    reg = Registry([_spec("a", (80,), says=b"AAA"), _spec("b", (90,), says=b"BBB")])
    assert reg.detect("tcp", 51000, 80, b"BBB x", b"", True)[0] is reg.by_name["b"]
    spec, first_is_client, _ = reg.detect("tcp", 51000, 80, b"reply", b"AAA", False)
    assert spec is reg.by_name["a"] and not first_is_client
    assert reg.detect("tcp", 51000, 80, b"zzz", b"", True) == (None, True, False)


def _dist(root: Path, name: str, entry_points: str | None) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points is not None:
        (info / "entry_points.txt").write_text(entry_points)


def test_the_plugin_scan_looks_for_the_group_in_each_distributions_entry_points(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _dist(site, "plain", None)
    _dist(site, "tool", "[console_scripts]\ntool = tool:main\n")
    (site / "lonely.egg-info").write_text("Metadata-Version: 1.0\n")  # an egg-info that is a file
    missing = str(tmp_path / "missing")
    assert not _may_declare_group([str(site), missing])
    _dist(site, "Other_Plugin", f"[console_scripts]\nx = y:z\n\n [ {ENTRY_POINT_GROUP} ] \nq = q:SPEC\n")
    assert _may_declare_group([missing, str(site)])


def test_a_zip_on_the_path_leaves_the_scan_to_the_package_metadata_machinery(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped-1.0.dist-info/entry_points.txt", f"[{ENTRY_POINT_GROUP}]\nz = z:SPEC\n")
    assert _may_declare_group([str(archive)])


def test_without_any_plugin_the_registry_does_not_load_the_package_metadata_machinery() -> None:
    code = (
        "import sys\n"
        "from wiretide.dissector.registry import default_registry\n"
        "reg = default_registry()\n"
        "print(len(reg.by_name), 'importlib.metadata' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert r.returncode == 0, r.stderr
    count, loaded = r.stdout.split()
    assert int(count) == len(default_registry().by_name) > 10
    assert loaded == "False"


def test_an_import_hook_that_names_distributions_is_still_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    class Finder:
        """A meta path hook that knows one distribution declaring a dissector."""

        @staticmethod
        def find_distributions(context: object = None) -> list[object]:
            return [Hooked()]

        @staticmethod
        def find_spec(*args: object) -> None:
            return None

    class Hooked(importlib.metadata.Distribution):
        def read_text(self, filename: str) -> str | None:
            if filename == "METADATA":
                return "Metadata-Version: 2.1\nName: hooked\nVersion: 1.0\n"
            if filename == "entry_points.txt":
                return f"[{ENTRY_POINT_GROUP}]\nhooked = wiretide.dissector.protocols.dns:SPEC\n"
            return None

        def locate_file(self, path: str | os.PathLike[str]) -> Path:
            return Path(path)

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert [ep.name for ep in _entry_points()] == ["hooked"]

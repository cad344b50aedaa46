"""The dissector's hot modules compiled with mypyc, used only when the build matches the sources.

`make setup` runs `services/dissector/build_native.py`, which compiles `MODULES` (the per-packet and
per-message path: flow table, TCP reassembly, pairing, HTTP/1, DNS, bodies, the entry builder) into
one extension in `build/native/` and writes a manifest of the SHA-256 of every compiled source and
the interpreter it was built for. At import, the dissector's packages search that directory first —
but only when every hash still matches and the interpreter is the same. An edited source, another
Python, a machine without a C compiler or `WIRETIDE_NATIVE=0` all mean the pure-Python modules run;
behaviour is identical either way (the same sources, the same tests), only the speed differs.

Rule: the compiled build is never trusted blindly — a stale build is ignored, not loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path
from typing import Final

# Compiled together into one extension (calls between them are direct C calls). Not `api`: it is the
# plugin contract, and interpreted code (protocol plugins, tests) may subclass its classes, which a
# compiled class forbids. No module here may define a class that interpreted code subclasses.
MODULES: Final = (
    "wiretide.dissector.matching",
    "wiretide.dissector.pipeline",
    "wiretide.dissector.flows.defrag",
    "wiretide.dissector.flows.table",
    "wiretide.dissector.flows.tcp",
    "wiretide.dissector.protocols._body",
    "wiretide.dissector.protocols.dns",
    "wiretide.dissector.protocols.graphql",
    "wiretide.dissector.protocols.http1",
    "wiretide.dissector.protocols.http_overlays",
)
GROUP: Final = "wiretide.dissector._compiled"
MANIFEST: Final = "native.json"
# Where the build lives: WIRETIDE_NATIVE_DIR, else build/native at the root of a source checkout.
ENV_DIR: Final = "WIRETIDE_NATIVE_DIR"
ENV_SWITCH: Final = "WIRETIDE_NATIVE"

_SRC_ROOT: Final = Path(__file__).resolve().parents[2]  # .../services/dissector/src


def source_of(module: str, src_root: Path = _SRC_ROOT) -> Path:
    return src_root.joinpath(*module.split(".")).with_suffix(".py")


def fingerprint(src_root: Path = _SRC_ROOT) -> dict[str, object]:
    """What a build must match: the interpreter and the hash of each compiled source."""
    return {
        "python": sys.version,
        "ext_suffix": _ext_suffix(),
        "sources": {m: hashlib.sha256(source_of(m, src_root).read_bytes()).hexdigest() for m in MODULES},
    }


def _ext_suffix() -> str:
    import sysconfig

    return str(sysconfig.get_config_var("EXT_SUFFIX") or "")


def build_dir() -> Path:
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured)
    return _SRC_ROOT.parents[2] / "build" / "native"  # <checkout>/build/native


def usable(directory: Path, src_root: Path = _SRC_ROOT) -> str | None:
    """None when the build in `directory` matches these sources; otherwise why it is not used."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV_SWITCH}=0"
    manifest = directory / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())
    except FileNotFoundError:
        return "not built"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    try:
        current = fingerprint(src_root)
    except OSError as exc:  # an installed wheel without its sources beside it
        return f"sources unreadable: {exc}"
    if recorded != current:
        return "stale (sources or interpreter changed since the build)"
    return None


def _decide() -> tuple[Path | None, str]:
    directory = build_dir()
    why = usable(directory)
    if why is not None:
        return None, why
    return directory, "compiled"


_DIR, STATUS = _decide()
ACTIVE: Final = _DIR is not None


def extend(package: str, path: MutableSequence[str]) -> None:
    """Put the compiled modules of `package` ahead of its sources (a package `__init__` calls this)."""
    if _DIR is None:
        return
    parts = package.split(".")
    candidate = _DIR.joinpath(*parts)
    if candidate.is_dir() and str(candidate) not in path:
        path.insert(0, str(candidate))

"""The tracer's hot modules compiled with mypyc, used only when the build matches the sources.

`make setup` runs `services/tracer/build_native.py`, which compiles `MODULES` (the per-entry path:
span description, assembly, the service map and RED metrics, OTLP encoding) into one extension in
`build/native/tracer/`. When that build is used, and when the pure-Python modules run instead, is
`wiretide.common.native`'s rule, the same for every service; `WIRETIDE_NATIVE=0` forces the pure ones.

Rule: the compiled build is never trusted blindly — a stale build is ignored, not loaded.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from pathlib import Path
from typing import Final

from wiretide.common import native as _common
from wiretide.common.native import NativeModules

# Compiled together into one extension (calls between them are direct C calls). No module here may
# define a class that interpreted code subclasses (a compiled class forbids it).
MODULES: Final = (
    "wiretide.tracer.names",
    "wiretide.tracer.spans",
    "wiretide.tracer.propagation",
    "wiretide.tracer.delays",
    "wiretide.tracer.partition",
    "wiretide.tracer.assemble",
    "wiretide.tracer.servicemap",
    "wiretide.tracer.store",
    "wiretide.tracer.engine",
    "wiretide.tracer.export.otlp",
)
NATIVE: Final = NativeModules("tracer", MODULES, Path(__file__).resolve().parents[2])

_DIR, STATUS = NATIVE.decide()
ACTIVE: Final = _DIR is not None


def extend(package: str, path: MutableSequence[str]) -> None:
    """Put the compiled modules of `package` ahead of its sources (a package `__init__` calls this)."""
    _common.extend(_DIR, package, path)

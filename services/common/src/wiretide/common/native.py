"""A service's hot modules compiled with mypyc, and the one rule for when that build is used.

A service lists its hot modules in a `NativeModules` (its own `native.py`); its build script calls
`build_main`, which compiles them into one extension under `build/native/<service>/` with a manifest
of the SHA-256 of every compiled source and the interpreter it was built for. At import, the
service's packages search that directory first (`extend`, called from each package's `__init__`) —
but only when every hash still matches and the interpreter is the same. An edited source, another
Python, a machine without a C compiler or `WIRETIDE_NATIVE=0` all mean the pure-Python modules run;
behaviour is identical either way (the same sources, the same tests), only the speed differs.

Rule: a compiled build is never trusted blindly — a stale build is ignored, not loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MANIFEST: Final = "native.json"
# Where the builds live (one directory per service below it): WIRETIDE_NATIVE_DIR, else build/native
# at the root of a source checkout.
ENV_DIR: Final = "WIRETIDE_NATIVE_DIR"
ENV_SWITCH: Final = "WIRETIDE_NATIVE"
_OFF: Final = ("0", "false", "no", "off")


def switched_off() -> str | None:
    """Why compiled modules are not wanted at all (`WIRETIDE_NATIVE=0`), else None."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in _OFF:
        return f"{ENV_SWITCH}=0"
    return None


def _ext_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or "")


@dataclass(frozen=True, slots=True)
class NativeModules:
    """One service's compiled group: `modules` (dotted names under `src_root`) built together, so
    that calls between them are direct C calls. No module listed may define a class that interpreted
    code subclasses (a compiled class forbids it)."""

    service: str  # "dissector": the package is wiretide.<service>
    modules: tuple[str, ...]
    src_root: Path  # <checkout>/services/<service>/src

    @property
    def group(self) -> str:
        return f"wiretide.{self.service}._compiled"

    def source_of(self, module: str, src_root: Path | None = None) -> Path:
        return (src_root or self.src_root).joinpath(*module.split(".")).with_suffix(".py")

    def fingerprint(self, src_root: Path | None = None) -> dict[str, object]:
        """What a build must match: the interpreter and the hash of each compiled source."""
        return {
            "python": sys.version,
            "ext_suffix": _ext_suffix(),
            "sources": {
                m: hashlib.sha256(self.source_of(m, src_root).read_bytes()).hexdigest() for m in self.modules
            },
        }

    def build_dir(self) -> Path:
        configured = os.environ.get(ENV_DIR)
        root = Path(configured) if configured else self.src_root.parents[2] / "build" / "native"
        return root / self.service

    def usable(self, directory: Path, src_root: Path | None = None) -> str | None:
        """None when the build in `directory` matches these sources; otherwise why it is not used."""
        off = switched_off()
        if off is not None:
            return off
        try:
            recorded = json.loads((directory / MANIFEST).read_text())
        except FileNotFoundError:
            return "not built"
        except (OSError, ValueError) as exc:
            return f"unreadable manifest: {exc}"
        try:
            current = self.fingerprint(src_root)
        except OSError as exc:  # an installed wheel without its sources beside it
            return f"sources unreadable: {exc}"
        if recorded != current:
            return "stale (sources or interpreter changed since the build)"
        return None

    def decide(self) -> tuple[Path | None, str]:
        """The directory whose build to load (None: the pure-Python modules run) and why: "compiled",
        or the reason the build is not used. A service decides once, at import."""
        directory = self.build_dir()
        why = self.usable(directory)
        return (None, why) if why is not None else (directory, "compiled")


def extend(directory: Path | None, package: str, path: MutableSequence[str]) -> None:
    """Put the compiled modules of `package` from `directory` (the decided build, or None) ahead of
    its sources; a package `__init__` calls this through its service's `native` module."""
    if directory is None:
        return
    candidate = directory.joinpath(*package.split("."))
    if candidate.is_dir() and str(candidate) not in path:
        path.insert(0, str(candidate))


def build_main(native: NativeModules, argv: Sequence[str] | None = None) -> int:
    """The build script of one service: compile `native.modules` unless the build is fresh.

    Without a C compiler, Python headers or mypyc it says so and returns 0 (the pure-Python modules
    run); with them, a failed build returns 1. mypy reads its settings from the checkout's
    pyproject.toml, so the build runs from the checkout's root."""
    import argparse  # the build's own imports: every service imports this module at start-up
    import shutil
    import tempfile
    import time

    what = f"native {native.service} modules"
    ap = argparse.ArgumentParser(description=f"Compile the {native.service}'s hot modules with mypyc.")
    ap.add_argument("--out", type=Path, default=native.build_dir())
    ap.add_argument("--force", action="store_true", help="rebuild even when the build is fresh")
    args = ap.parse_args(argv)
    out: Path = args.out
    os.environ.pop(ENV_SWITCH, None)
    if not args.force and native.usable(out) is None:
        print(f"{what}: up to date in {out}")
        return 0
    try:
        import mypyc.build  # noqa: F401
        import setuptools  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        print(f"{what}: not built ({exc}); the pure-Python modules will run")
        return 0
    if shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None:
        print(f"{what}: not built (no C compiler); the pure-Python modules will run")
        return 0
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        print(f"{what}: not built (no {headers}); the pure-Python modules will run")
        return 0
    started = time.monotonic()
    root = native.src_root.parents[2]
    fingerprint = native.fingerprint()
    paths = [str(native.source_of(m).relative_to(root)) for m in native.modules]
    os.chdir(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"native-{native.service}-", dir=out.parent))
    log = staging / "build.log"
    saved = os.dup(1)
    try:
        # The compiler's command lines go to a log, shown only when the build fails.
        with log.open("w") as fh:
            sys.stdout.flush()
            os.dup2(fh.fileno(), 1)
            try:
                _compile(native, paths, staging)
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
        lib = staging / "lib"
        (lib / MANIFEST).write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(lib), str(out))
    except BaseException as exc:  # the tools are there, so this is a defect to fix, not to hide
        if log.exists():
            sys.stderr.write(log.read_text()[-20000:])
        print(f"{what}: build failed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    finally:
        os.close(saved)
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{what}: {len(paths)} compiled into {out} in {time.monotonic() - started:.0f}s")
    return 0


def _compile(native: NativeModules, paths: list[str], staging: Path) -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    extensions = mypycify(paths, opt_level="3", group_name=native.group, target_dir=str(staging / "c"))
    dist = Distribution({"name": f"wiretide-{native.service}-native", "ext_modules": extensions})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(staging / "lib")
    cmd.build_temp = str(staging / "tmp")
    cmd.ensure_finalized()
    cmd.run()

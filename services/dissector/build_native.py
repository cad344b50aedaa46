"""Compile the dissector's hot modules with mypyc into build/native/ (run by `make setup`).

    .venv/bin/python services/dissector/build_native.py [--force] [--out DIR]

Skips the work when the manifest in the output directory already matches the sources. Without a C
compiler or Python headers it says so and exits 0: the dissector then runs its pure-Python modules
(see `wiretide.dissector.native`). With them, a failed build exits 1. mypy reads its settings from the
repository root's pyproject.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "services" / "dissector" / "src"
sys.path.insert(0, str(SRC))

from wiretide.dissector import native  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "native")
    ap.add_argument("--force", action="store_true", help="rebuild even when the build is fresh")
    args = ap.parse_args()
    out: Path = args.out
    os.environ.pop(native.ENV_SWITCH, None)
    if not args.force and native.usable(out, SRC) is None:
        print(f"native dissector modules: up to date in {out}")
        return 0
    try:
        import mypyc.build  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as exc:
        print(f"native dissector modules: not built ({exc}); the pure-Python modules will run")
        return 0
    if shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None:
        print("native dissector modules: not built (no C compiler); the pure-Python modules will run")
        return 0
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        print(f"native dissector modules: not built (no {headers}); the pure-Python modules will run")
        return 0
    started = time.monotonic()
    fingerprint = native.fingerprint(SRC)
    paths = [str(native.source_of(m, SRC).relative_to(ROOT)) for m in native.MODULES]
    os.chdir(ROOT)
    staging = Path(tempfile.mkdtemp(prefix="native-", dir=out.parent if out.parent.exists() else None))
    log = staging / "build.log"
    saved = os.dup(1)
    try:
        # The compiler's command lines go to a log, shown only when the build fails.
        with log.open("w") as fh:
            sys.stdout.flush()
            os.dup2(fh.fileno(), 1)
            try:
                _build(paths, staging)
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
        lib = staging / "lib"
        (lib / native.MANIFEST).write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(lib), str(out))
    except BaseException as exc:  # the tools are there, so this is a defect to fix, not to hide
        if log.exists():
            sys.stderr.write(log.read_text()[-20000:])
        print(f"native dissector modules: build failed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    finally:
        os.close(saved)
        shutil.rmtree(staging, ignore_errors=True)
    print(f"native dissector modules: {len(paths)} compiled into {out} in {time.monotonic() - started:.0f}s")
    return 0


def _build(paths: list[str], staging: Path) -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    extensions = mypycify(paths, opt_level="3", group_name=native.GROUP, target_dir=str(staging / "c"))
    dist = Distribution({"name": "wiretide-dissector-native", "ext_modules": extensions})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(staging / "lib")  # type: ignore[attr-defined]
    cmd.build_temp = str(staging / "tmp")  # type: ignore[attr-defined]
    cmd.ensure_finalized()
    cmd.run()


if __name__ == "__main__":
    raise SystemExit(main())

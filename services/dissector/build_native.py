"""Compile the dissector's hot modules with mypyc into build/native/dissector/ (run by `make setup`).

    .venv/bin/python services/dissector/build_native.py [--force] [--out DIR]

Skips the work when the manifest in the output directory already matches the sources; without a C
compiler or Python headers it says so and exits 0 (the pure-Python modules run). The build itself,
the same for every service, is `wiretide.common.native.build_main`.
"""

from __future__ import annotations

from wiretide.common.native import build_main
from wiretide.dissector.native import NATIVE

if __name__ == "__main__":
    raise SystemExit(build_main(NATIVE))

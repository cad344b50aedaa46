"""The compiled tracer modules: loaded only while their build matches the sources, and they export
exactly what the pure-Python modules export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wiretide.tracer import native


def _run(code: str, switch: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "WIRETIDE_NATIVE"}
    if switch is not None:
        env["WIRETIDE_NATIVE"] = switch
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout


def _skip_unless_built() -> None:
    saved = os.environ.pop("WIRETIDE_NATIVE", None)
    try:
        why = native.NATIVE.usable(native.NATIVE.build_dir())
    finally:
        if saved is not None:
            os.environ["WIRETIDE_NATIVE"] = saved
    if why is not None:
        pytest.skip(f"no fresh compiled build ({why}): `make setup` builds it where gcc is installed")


def test_a_fresh_build_is_loaded_and_the_switch_falls_back_to_the_sources() -> None:
    _skip_unless_built()
    code = (
        "import json, importlib; from wiretide.tracer import native; "
        "print(json.dumps({'status': native.STATUS, **{m: importlib.import_module(m).__file__ "
        "for m in native.MODULES}}))"
    )
    compiled = json.loads(_run(code, None))
    assert compiled.pop("status") == "compiled"
    assert all(path.endswith(".so") for path in compiled.values()), compiled
    pure = json.loads(_run(code, "0"))
    assert pure.pop("status") == "WIRETIDE_NATIVE=0"
    assert all(path.endswith(".py") for path in pure.values()), pure


# Synthetic chains with propagated and timing links, through the engine (service map and store on),
# encoded for export: the OTLP bytes and the RED series, which a compiled module must not change.
_EXPORT = """
import hashlib, sys
sys.path.insert(0, {root!r})
from prometheus_client import REGISTRY
from tests.unit.tracer.chains import build
from wiretide.tracer.assemble import Assembler
from wiretide.tracer.engine import Engine
from wiretide.tracer.export.otlp import Encoder
from wiretide.tracer.spans import SpanIds
engine = Engine()
engine.assembler = Assembler(ids=SpanIds(seed=7))
digest = hashlib.sha256()
for propagate in (True, False):
    entries = build(300, 4, seed=3, pods=2, propagate=propagate).entries
    for n, entry in enumerate(entries):  # entry ids are random ULIDs: numbered instead
        entry["id"] = str(n) + ("p" if propagate else "t")
    encoder = Encoder()
    for i in range(0, len(entries), 100):
        digest.update(encoder.request(engine.ingest(entries[i : i + 100])))
    digest.update(encoder.request(engine.flush()))
red = sorted(
    (s.name, sorted(s.labels.items()), s.value)
    for f in REGISTRY.collect() if f.name.startswith("wiretide_tracer_edge")
    for s in f.samples if not s.name.endswith("_created")
)
digest.update(repr(red).encode())
print(digest.hexdigest())
"""


def test_compiled_and_pure_modules_export_the_same_spans_and_metrics() -> None:
    _skip_unless_built()
    root = str(native.NATIVE.src_root.parents[2])
    code = _EXPORT.format(root=root)
    assert _run(code, None) == _run(code, "0")

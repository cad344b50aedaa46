"""`make fuzz`: every harness of `fuzz/harnesses.py` under atheris (libFuzzer), one process each.

    .venv/bin/python fuzz/run.py [--runs 1000000] [--only http1,kfl] [--timeout 5] [--rss-mb 2048]

Each harness runs `--runs` inputs with a per-input time cap (`--timeout` seconds: an input slower
than that is a hang) and a memory cap (`--rss-mb`: above it is an out-of-memory failure). A failing
input is copied into `fuzz/corpus/<harness>/` — the regression corpus that the normal test suite
replays (`tests/unit/dissector/test_fuzz_corpus.py`) — and the harness starts again for the inputs
left. The pure-Python modules run (WIRETIDE_NATIVE=0): compiled ones cannot be instrumented for
coverage. Prints one line per harness — inputs, crashes, hangs, out-of-memory, peak RSS — and exits
non-zero when anything failed.

Rule: this is the one driver; a harness never knows whether atheris or a test replays it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
CORPUS: Final = ROOT / "fuzz" / "corpus"
# Restarts after failures per harness before it is given up (each failure is one kept input).
MAX_RESTARTS: Final = 20
# Longest input libFuzzer builds: a few TCP segments' worth, enough for every framing layer.
MAX_LEN: Final = 16_384
_DONE = re.compile(rb"Done (\d+) runs")


def child(name: str, args: list[str]) -> None:
    """Inside the fuzzing process: instrument Wiretide's modules, then hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["wiretide"]):
        import wiretide.common.kfl
        import wiretide.dissector.pipeline
        import wiretide.dissector.protocols
        import wiretide.dissector.protocols.graphql
        import wiretide.dissector.protocols.grpc
        import wiretide.dissector.protocols.hpack
        import wiretide.dissector.protocols.protobuf
        import wiretide.dissector.registry  # noqa: F401

    sys.path.insert(0, str(ROOT))
    from fuzz.harnesses import HARNESSES

    harness = HARNESSES[name]
    atheris.Setup([sys.argv[0], *args], harness)
    atheris.Fuzz()


def fuzz_one(name: str, runs: int, timeout: int, rss_mb: int, work: Path) -> dict[str, object]:
    """Run one harness for `runs` inputs (restarting after each failure); what happened."""
    done = crashes = hangs = ooms = 0
    peak_kib = 0
    cpu = 0.0
    for _ in range(MAX_RESTARTS + 1):
        left = runs - done
        if left <= 0:
            break
        artifacts = work / name
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.mkdir(parents=True)
        argv = [
            sys.executable,
            __file__,
            "--child",
            name,
            f"-runs={left}",
            f"-timeout={timeout}",
            f"-rss_limit_mb={rss_mb}",
            f"-max_len={MAX_LEN}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
        ]
        seeds = CORPUS / name
        if seeds.is_dir():
            argv.append(str(_copy(seeds, work / f"{name}-seeds")))
        env = dict(os.environ, WIRETIDE_NATIVE="0")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, _, usage = os.wait4(proc.pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
        peak_kib = max(peak_kib, usage.ru_maxrss)
        found = _DONE.search(err)
        if found:
            done += int(found.group(1))
        failures = sorted(artifacts.iterdir())
        if not failures:
            if not found:  # neither finished nor failed on an input: report and stop
                sys.stderr.write(err.decode(errors="replace")[-2000:])
                break
            continue
        for path in failures:
            kind = path.name.split("-", 1)[0]
            crashes += kind == "crash"
            hangs += kind in ("timeout", "slow")
            ooms += kind == "oom"
            keep = CORPUS / name
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)
        done += 1  # the failing input ran too
    return {
        "harness": name,
        "inputs": done,
        "crashes": crashes,
        "hangs": hangs,
        "oom": ooms,
        "peak_rss_mb": peak_kib / 1024,
        "cpu_s": cpu,
    }


def _copy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    sys.path.insert(0, str(ROOT))
    from fuzz.harnesses import HARNESSES

    ap = argparse.ArgumentParser(description="Fuzz every dissector and the KFL parser with atheris.")
    ap.add_argument("--runs", type=int, default=1_000_000, help="inputs per harness (default 1,000,000)")
    ap.add_argument("--only", default="", help="comma-separated harness names (default: all)")
    ap.add_argument("--timeout", type=int, default=5, help="seconds one input may take before it is a hang")
    ap.add_argument("--rss-mb", type=int, default=2048, help="memory cap of a fuzzing process, MB")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(HARNESSES)
    unknown = [n for n in names if n not in HARNESSES]
    if unknown:
        ap.error(f"no harness named {', '.join(unknown)}; there are {', '.join(HARNESSES)}")
    head = ("harness", "inputs", "crashes", "hangs", "oom", "peak RSS MB", "CPU s")
    print(f"{head[0]:<10} {head[1]:>10} {head[2]:>8} {head[3]:>6} {head[4]:>4} {head[5]:>12} {head[6]:>8}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="wiretide-fuzz-") as tmp:
        for name in names:
            r = fuzz_one(name, args.runs, args.timeout, args.rss_mb, Path(tmp))
            failed |= bool(r["crashes"] or r["hangs"] or r["oom"]) or r["inputs"] < args.runs
            print(
                f"{name:<10} {r['inputs']:>10,} {r['crashes']:>8} {r['hangs']:>6} {r['oom']:>4} "
                f"{r['peak_rss_mb']:>12.0f} {r['cpu_s']:>8.0f}",
                flush=True,
            )
    if failed:
        print(f"failing inputs kept in {CORPUS.relative_to(ROOT)}/<harness>/ (replayed by the test suite)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

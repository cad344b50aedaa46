"""Every input the fuzzers ever failed on (`fuzz/corpus/<harness>/`) runs cleanly through its harness.

`make fuzz` keeps each crashing, hanging or memory-hungry input there; once the bug is fixed the file
stays, and this test replays it with the same harness — the regression test of that finding.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.harnesses import HARNESSES, chunks

CORPUS = Path(__file__).resolve().parents[3] / "fuzz" / "corpus"
KEPT = sorted(p for p in CORPUS.glob("*/*") if p.is_file() and p.parent.name in HARNESSES)


@pytest.mark.parametrize("path", KEPT, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_kept_fuzzing_input_no_longer_fails(path: Path) -> None:
    HARNESSES[path.parent.name](path.read_bytes())


def test_every_corpus_folder_names_a_harness() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()} if CORPUS.is_dir() else set()
    assert folders <= set(HARNESSES)


def test_an_input_is_cut_into_chunks_by_its_control_bytes() -> None:
    assert list(chunks(b"\x80a\x00b\x01" + b"x" * 33)) == [(True, b"a"), (False, b"b"), (False, b"x" * 33)]

"""The collector helper: frozen start-up objects, spaced passes, cycles still collected."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest

from wiretide.common.collector import MALLOC_ENV, THRESHOLDS, collect_rarely, keep_heap


@pytest.fixture
def restore_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_collector")
def test_start_up_objects_are_frozen_and_passes_spaced() -> None:
    gc.unfreeze()
    collect_rarely()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 1000  # the modules loaded so far
    collect_rarely((5000, 10, 10))
    assert gc.get_threshold() == (5000, 10, 10)


@pytest.mark.usefixtures("restore_collector")
def test_cycles_made_after_start_up_are_still_collected() -> None:
    collect_rarely()
    gc.collect()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    for _ in range(50_000):  # 100,000 container allocations in cycles: past the gen0 threshold
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    assert gc.collect() < 2 * THRESHOLDS[0]  # most were collected on the way, not left for this call
    assert sum(isinstance(o, Node) for o in gc.get_objects()) == 0


HEAP_PROBE = """
import sys
from wiretide.common.collector import keep_heap

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

if sys.argv[1] == "keep":
    assert keep_heap()
base = rss()
blob = [bytes(1_000) for _ in range(20_000)]  # 20 MB from the C heap (beyond pymalloc's 512 bytes)
grown = rss() - base
del blob
print(grown, rss() - base)
"""


def _heap_after_freeing(mode: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    out = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_c_heap_is_kept_after_a_batch_is_freed_not_handed_back_and_faulted_in_again() -> None:
    grown, left = _heap_after_freeing("default")
    assert grown > 15_000_000 and left < grown // 4  # glibc alone hands the freed top back
    grown, left = _heap_after_freeing("keep")
    assert grown > 15_000_000 and left > grown * 3 // 4  # kept for the next batch


def test_a_heap_the_environment_tunes_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert keep_heap() is False

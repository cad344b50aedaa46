"""The collector helper: frozen start-up objects, spaced passes, cycles still collected."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from wiretide.common.collector import THRESHOLDS, collect_rarely


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

"""The cyclic garbage collector, spaced for processes that allocate per packet or per entry.

Rule: every object a dissected exchange or a stored batch allocates is freed by reference counting
when it is done with; the cyclic collector only finds the rare cycle. With CPython's default gen0
threshold of 700 it ran every few exchanges and walked every young object each time (~5% of the
dissector's CPU; a third of the store writer's decode time, whose batches hold millions of objects).
"""

from __future__ import annotations

import gc
from typing import Final

# (allocations between gen0 passes, gen0 passes per gen1 pass, gen1 passes per gen2 pass): cycles
# still go within 100,000 allocations, a few MB at most.
THRESHOLDS: Final = (100_000, 20, 100)


def collect_rarely(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Move everything loaded so far (modules, settings, tables built at start) out of the collector's
    reach and space its passes. Called once a process has started."""
    gc.freeze()
    gc.set_threshold(*thresholds)

"""The cyclic garbage collector, spaced for processes that allocate per packet or per entry; and the
C heap, kept instead of handed back to the kernel after every batch.

Rule: every object a dissected exchange or a stored batch allocates is freed by reference counting
when it is done with; the cyclic collector only finds the rare cycle. With CPython's default gen0
threshold of 700 it ran every few exchanges and walked every young object each time (~5% of the
dissector's CPU; a third of the store writer's decode time, whose batches hold millions of objects).

glibc returns the top of its heap to the kernel as soon as 128 KiB of it is free, and grows it again
page by page: a process that builds and frees a batch's worth of objects many times a second pays a
page fault per page each time (`wiretide analyze`: 0.14 s of system time in 1.1 s of CPU on 200,000
packets). `keep_heap` lets up to 32 MiB of free heap stay and grows it 16 MiB at a time.
"""

from __future__ import annotations

import ctypes
import gc
import os
from typing import Final

# (allocations between gen0 passes, gen0 passes per gen1 pass, gen1 passes per gen2 pass): cycles
# still go within 100,000 allocations, a few MB at most.
THRESHOLDS: Final = (100_000, 20, 100)


# glibc's mallopt parameters (malloc.h) and the values `keep_heap` gives them.
M_TRIM_THRESHOLD: Final = -1
M_TOP_PAD: Final = -2
TRIM_THRESHOLD: Final = 32 << 20
TOP_PAD: Final = 16 << 20
# Set in the environment, these say the user tunes glibc's heap: `keep_heap` then leaves it alone.
MALLOC_ENV: Final = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def keep_heap() -> bool:
    """Keep up to `TRIM_THRESHOLD` of free C heap and grow it `TOP_PAD` at a time (glibc's mallopt);
    False where there is no glibc mallopt (musl has none that acts) or the environment tunes it."""
    if any(name in os.environ for name in MALLOC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_TOP_PAD, TOP_PAD))


def collect_rarely(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Move everything loaded so far (modules, settings, tables built at start) out of the collector's
    reach and space its passes, and keep the C heap (`keep_heap`). Called once a process has started."""
    gc.freeze()
    gc.set_threshold(*thresholds)
    keep_heap()

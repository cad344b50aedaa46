"""A small filesystem to fill: a tmpfs mounted for one test (or one chaos scenario), and a ballast
file that takes its last free byte. Root only; always unmounted afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

# Write sizes used to take the space: large first, then down to single bytes, so nothing is left.
CHUNKS = (1 << 20, 4096, 1)


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "wt-fill", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of the filesystem holding `directory` (unbuffered writes:
    nothing is left to flush, and fail, on close)."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in CHUNKS:
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    return ballast

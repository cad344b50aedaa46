"""Where Wiretide keeps its state by default. Imported by every CLI command, so it stays dependency-free."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/wiretide`, or `~/.local/share/wiretide`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wiretide"

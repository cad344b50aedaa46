"""Where Wiretide keeps its state by default. Imported by every CLI command, so it stays dependency-free."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`$WIRETIDE_DATA_DIR` (the setting, so the CLI and the services agree), else
    `$XDG_DATA_HOME/wiretide`, else `~/.local/share/wiretide`."""
    configured = os.environ.get("WIRETIDE_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wiretide"

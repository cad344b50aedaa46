"""The agent templates shipped with Wiretide: six JavaScript files, package data beside this module.

Rule: each template's first comment line is its summary; each runs in the replay harness over the
shared captures without a `test.fail` (the tests hold them to it), so a template is a working start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    path: Path
    summary: str

    @property
    def source(self) -> str:
        return self.path.read_text(encoding="utf-8")


def _template(path: Path) -> Template:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    return Template(path.stem, path, first.removeprefix("//").strip())


# In the order the issue lists them.
NAMES: Final = (
    "alert-5xx-webhook",
    "latency-slo-burn",
    "dns-nxdomain-spike",
    "status-histogram",
    "redact-sensitive",
    "health-check",
)
TEMPLATES: Final = tuple(_template(HERE / f"{name}.js") for name in NAMES)

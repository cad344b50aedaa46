"""Which interfaces to capture: an explicit list, `any`, or `auto` (pod-facing and physical ones).

Rule: selection is a pure function of what /sys/class/net shows at the moment it is asked, so a
periodic re-scan picks up interfaces that appeared (a pod started) and releases vanished ones.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SYS_NET: Final = Path("/sys/class/net")
# Names CNIs give to the host side of pod links and to their bridges/tunnels.
POD_PATTERNS: Final = (
    "veth*",
    "cni*",
    "cali*",
    "cilium*",
    "lxc*",
    "flannel*",
    "vxlan*",
    "weave*",
    "kube-*",
    "docker*",
    "br-*",
    "eni*",
    "gke*",
    "azv*",
    "tunl*",
)
PHYSICAL_PATTERNS: Final = ("eth*", "en*", "wl*", "bond*")
LOOPBACK: Final = "lo"


@dataclass(frozen=True, slots=True)
class Selection:
    """What the user asked for: `auto`, `any`, or an explicit list (globs allowed)."""

    mode: str  # "auto" | "any" | "list"
    names: tuple[str, ...] = ()
    include_loopback: bool = False

    @classmethod
    def parse(cls, text: str, include_loopback: bool = False) -> Selection:
        items = [p.strip() for p in text.split(",") if p.strip()]
        if not items or items == ["auto"]:
            return cls("auto", (), include_loopback)
        if items == ["any"]:
            return cls("any", (), include_loopback)
        if "auto" in items or "any" in items:
            raise ValueError(f"'auto' and 'any' cannot be mixed with interface names: {text!r}")
        return cls("list", tuple(items), include_loopback)


def present(sys_net: Path = SYS_NET) -> list[str]:
    try:
        return sorted(p.name for p in sys_net.iterdir())
    except OSError:
        return []


def _is_pod_facing_or_physical(name: str, sys_net: Path) -> bool:
    base = sys_net / name
    if (base / "device").exists() or (base / "bridge").exists():
        return True
    return any(fnmatch.fnmatchcase(name, p) for p in (*POD_PATTERNS, *PHYSICAL_PATTERNS))


def select(
    selection: Selection, available: Iterable[str] | None = None, sys_net: Path = SYS_NET
) -> list[str]:
    """Interface names to capture now (`["any"]` for any)."""
    names = list(present(sys_net) if available is None else available)
    if selection.mode == "any":
        return ["any"]
    if selection.mode == "list":
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in selection.names)]
        return sorted(set(chosen))
    chosen = [n for n in names if n != LOOPBACK and _is_pod_facing_or_physical(n, sys_net)]
    if selection.include_loopback and LOOPBACK in names:
        chosen.append(LOOPBACK)
    return sorted(set(chosen))


def missing(selection: Selection, available: Iterable[str]) -> list[str]:
    """Explicitly named interfaces (not globs) that do not exist now."""
    names = set(available)
    return (
        [n for n in selection.names if not any(c in n for c in "*?[") and n not in names]
        if selection.mode == "list"
        else []
    )

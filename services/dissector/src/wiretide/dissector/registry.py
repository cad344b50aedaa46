"""The protocol registry: built-ins in their declared order, then `wiretide.dissectors` entry points.

A dissector whose `protocol` has no row in the protocol table (`wiretide.common.protocols`) is kept,
with a warning: its entries read as a generic transport protocol until the table has its row.

Rule: detection order is explicit override → port hint → content heuristics (the probes) on the first
bytes of both directions; ports are only hints — a probe that says NO on a hinted port is not trusted
over one that says YES, so HTTP on 18080 and TLS on 80 are both found. Detection runs once per new
flow, so the candidate order is worked out once per pair of port roles and kept (a port with no hint
and no override, such as a client's ephemeral port, counts as "no port").
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from wiretide.common.protocols import PROTOCOLS
from wiretide.dissector.api import ProtocolSpec, Verdict

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP: Final = "wiretide.dissectors"
# The section header of ENTRY_POINT_GROUP in a distribution's entry_points.txt (an INI file).
_GROUP_SECTION: Final = re.compile(
    rb"^\s*\[\s*" + re.escape(ENTRY_POINT_GROUP.encode()) + rb"\s*\]", re.MULTILINE
)
# Stands for a port with neither a hint nor an override in the candidate cache's keys.
_NO_PORT: Final = -1


class Registry:
    """Specs by name and by (transport, port); `detect` picks one for a flow's first bytes. Specs join
    through the constructor or `add`; overrides are given to the constructor (the candidate order
    kept per port roles is worked out from both)."""

    __slots__ = ("_candidates", "_order", "by_name", "overrides", "ports")

    def __init__(self, specs: Iterable[ProtocolSpec], overrides: Mapping[int, str] | None = None) -> None:
        self.by_name: dict[str, ProtocolSpec] = {}
        self.ports: dict[tuple[str, int], list[ProtocolSpec]] = {}
        self._order: dict[str, list[ProtocolSpec]] = {"tcp": [], "udp": [], "sctp": []}
        # (transport, dport, sport) with unremarkable ports as _NO_PORT -> candidates(); bounded by the
        # number of hinted/overridden ports squared, since every other port shares one key.
        self._candidates: dict[tuple[str, int, int], tuple[tuple[ProtocolSpec, ...], int]] = {}
        for spec in specs:
            self.add(spec)
        self.overrides: dict[int, str] = {}
        for port, name in (overrides or {}).items():
            if name not in self.by_name:
                raise ValueError(f"port override {port}={name}: no dissector named {name!r}")
            self.overrides[port] = name

    def add(self, spec: ProtocolSpec) -> None:
        if spec.name in self.by_name:
            raise ValueError(f"dissector {spec.name!r} registered twice")
        self._candidates.clear()
        self.by_name[spec.name] = spec
        missing = [p for p in spec.protocols if p not in PROTOCOLS]
        if missing:  # its entries still flow; consumers read them as a generic transport row
            log.warning(
                "dissector produces a protocol the protocol table has no row for",
                extra={"dissector": spec.name, "protocols": ",".join(missing)},
            )
        if not spec.detect:
            return
        for transport in spec.transports:
            self._order[transport].append(spec)
            for port in spec.ports:
                self.ports.setdefault((transport, port), []).append(spec)

    def candidates(self, transport: str, sport: int, dport: int) -> tuple[list[ProtocolSpec], int]:
        """Specs to probe, in order — override, port hints, then every other one by priority — and how
        many of them lead because of the ports."""
        specs, hinted = self._ordered(transport, sport, dport)
        return list(specs), hinted

    def _ordered(self, transport: str, sport: int, dport: int) -> tuple[tuple[ProtocolSpec, ...], int]:
        """`candidates`, kept per (transport, port roles): the same tuple for every flow to a server port."""
        key = (transport, self._role(transport, dport), self._role(transport, sport))
        found = self._candidates.get(key)
        if found is None:
            found = self._candidates[key] = self._work_out(transport, sport, dport)
        return found

    def _role(self, transport: str, port: int) -> int:
        """The port itself when it steers detection (an override or a hint), else _NO_PORT."""
        return port if port in self.overrides or (transport, port) in self.ports else _NO_PORT

    def _work_out(self, transport: str, sport: int, dport: int) -> tuple[tuple[ProtocolSpec, ...], int]:
        # Specs are told apart by name (unique here), not by `==`: a dataclass compares every field.
        out: list[ProtocolSpec] = []
        taken: set[str] = set()
        for port in (dport, sport):
            name = self.overrides.get(port)
            if name is not None and name not in taken:
                taken.add(name)
                out.append(self.by_name[name])
        for port in (dport, sport):
            for spec in self.ports.get((transport, port), ()):
                if spec.name not in taken:
                    taken.add(spec.name)
                    out.append(spec)
        hinted = len(out)
        out.extend(spec for spec in self._order.get(transport, ()) if spec.name not in taken)
        return tuple(out), hinted

    def forced(self, sport: int, dport: int) -> ProtocolSpec | None:
        """An explicit override pins a flow without asking the probes."""
        name = self.overrides.get(dport) or self.overrides.get(sport)
        return self.by_name[name] if name else None

    def detect(
        self, transport: str, sport: int, dport: int, first: bytes, second: bytes, oriented: bool
    ) -> tuple[ProtocolSpec | None, bool, bool]:
        """(spec, first_is_client, undecided) for the first bytes of each side.

        `oriented`: the caller knows `first` is the client (it saw the SYN). Otherwise both
        orientations are probed and the one that matches tells which side is the client. A port-hinted
        protocol that needs more bytes makes everyone wait; an unhinted one only keeps the flow
        undecided if nobody else says YES.
        """
        undecided = False
        specs, hinted = self._ordered(transport, sport, dport)
        for i, spec in enumerate(specs):
            verdict = _safe_probe(spec, first, second)
            if verdict == Verdict.YES:
                return spec, True, False
            if not oriented:
                swapped = _safe_probe(spec, second, first)
                if swapped == Verdict.YES:
                    return spec, False, False
                verdict = max(verdict, swapped)
            if verdict == Verdict.MAYBE:
                undecided = True
                if i < hinted:
                    break
        return None, True, undecided


def _safe_probe(spec: ProtocolSpec, client: bytes, server: bytes) -> Verdict:
    try:
        return spec.probe(client, server)
    except Exception:  # a third-party probe must not take the flow table down
        return Verdict.NO


def load_entry_points() -> list[ProtocolSpec]:
    """Third-party specs: each `wiretide.dissectors` entry point names a ProtocolSpec object."""
    specs: list[ProtocolSpec] = []
    for ep in _entry_points():
        try:
            spec = ep.load()
        except Exception as exc:
            log.warning(
                "cannot load dissector entry point", extra={"entry_point": ep.name, "error": str(exc)}
            )
            continue
        if isinstance(spec, ProtocolSpec):
            specs.append(spec)
        else:
            log.warning("entry point is not a ProtocolSpec", extra={"entry_point": ep.name})
    return specs


def _entry_points() -> list[EntryPoint]:
    """The group's entry points, as importlib.metadata finds them; importlib.metadata (which costs more
    to import than a small capture costs to dissect) is asked only when a distribution on sys.path
    may declare the group, or when sys.path holds something other than plain directories, or when an
    import hook other than the standard path finder can name distributions."""
    from importlib.machinery import PathFinder

    custom = any(hasattr(f, "find_distributions") and f is not PathFinder for f in sys.meta_path)
    if not custom and not _may_declare_group(sys.path):
        return []
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def _may_declare_group(paths: Iterable[str]) -> bool:
    """Whether any `*.dist-info`/`*.egg-info` in these directories has an entry_points.txt naming the
    group — or whether an entry is no directory we can read (a zip, a custom finder's path): then
    only importlib.metadata knows."""
    for path in paths:
        try:
            with os.scandir(path or ".") as it:
                names = [e.name for e in it if e.name.lower().endswith((".dist-info", ".egg-info"))]
        except FileNotFoundError:
            continue
        except OSError:  # a zip archive or an unreadable directory
            return True
        for name in names:
            try:
                with open(os.path.join(path or ".", name, "entry_points.txt"), "rb") as fh:
                    if _GROUP_SECTION.search(fh.read()):
                        return True
            except OSError:  # none (most distributions), or an egg-info that is a file
                continue
    return False


def default_registry(overrides: Mapping[int, str] | None = None, plugins: bool = True) -> Registry:
    from wiretide.dissector.protocols import BUILTINS

    specs = list(BUILTINS)
    if plugins:
        names = {s.name for s in specs}
        for spec in load_entry_points():
            if spec.name in names:  # a built-in or an earlier plugin keeps the name
                log.warning("dissector entry point ignored: name taken", extra={"dissector": spec.name})
                continue
            names.add(spec.name)
            specs.append(spec)
    return Registry(specs, overrides)


def parse_overrides(text: str) -> dict[int, str]:
    """`"8443=http,5300=dns"` → {8443: "http", 5300: "dns"}; raises ValueError naming the bad part."""
    out: dict[int, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        port_text, sep, name = part.partition("=")
        text = port_text.strip()
        port = int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None  # ASCII only
        if not sep or port is None or not 0 < port < 65536 or not name.strip():
            raise ValueError(f"port override must look like PORT=PROTOCOL, got {part!r}")
        out[port] = name.strip()
    return out

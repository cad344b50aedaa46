"""cgroup id (what eBPF's bpf_get_current_cgroup_id reports) → the container that cgroup belongs to.

A cgroup's id is the inode of its directory in the cgroup v2 hierarchy (found under the root given,
or its `unified` directory on a hybrid host). This node's
hierarchy is walked once into a table {inode: container id} and answered from memory; an id the
table does not hold triggers a new walk, at most once per `rescan_s`, so a new container is named
within that interval and an unknown id never costs a syscall per event.

Rule: lookups are dictionary probes; the only I/O is the rate-limited walk, bounded in directories.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Final

from wiretide.common import containers

ROOT: Final = "/sys/fs/cgroup"
# A new container's first events wait at most this long for their container id.
RESCAN_S: Final = 2.0
# Directories one walk takes in: a node runs at most a few hundred pods with a handful of cgroups
# each; a walk stops here rather than grow without bound on a pathological hierarchy.
MAX_DIRECTORIES: Final = 65536


def unified_root(base: str = ROOT) -> str:
    """Where the cgroup v2 hierarchy is mounted: `base` itself (a unified host), or `base`/unified
    (a hybrid host: v1 controllers beside the v2 tree that eBPF's cgroup ids come from)."""
    for path in (base, os.path.join(base, "unified")):
        if os.path.exists(os.path.join(path, "cgroup.controllers")):
            return path
    return base


class ContainerIds:
    """Container ids of one node's cgroups, by cgroup id."""

    def __init__(
        self,
        root: str = ROOT,
        rescan_s: float = RESCAN_S,
        max_directories: int = MAX_DIRECTORIES,
        clock: Callable[[], float] = time.monotonic,
        on_truncated: Callable[[], None] | None = None,
    ) -> None:
        self.root = unified_root(root)
        self.rescan_s = rescan_s
        self.max_directories = max_directories
        self._clock = clock
        self._on_truncated = on_truncated  # a walk stopped at max_directories (counted by the caller)
        self._by_inode: dict[int, str] = {}
        self._scanned_at: float | None = None
        self.scans = 0
        self.unknown = 0  # lookups of an id no walk found (a cgroup gone, or not yet walked)
        self.truncated = False  # the last walk stopped at max_directories

    def __len__(self) -> int:
        return len(self._by_inode)

    def get(self, cgroup_id: int) -> str:
        """The container id of `cgroup_id`, or "" (a host process, or a cgroup not found)."""
        found = self._by_inode.get(cgroup_id)
        if found is not None:
            return found
        now = self._clock()
        if self._scanned_at is None or now - self._scanned_at >= self.rescan_s:
            self._scanned_at = now
            self._by_inode = self.walk()
            found = self._by_inode.get(cgroup_id)
            if found is not None:
                return found
        self.unknown += 1
        return ""

    def walk(self) -> dict[int, str]:
        """{inode: container id or ""} of every directory under the root (a directory inside a
        container's own directory belongs to that container)."""
        self.scans += 1
        self.truncated = False
        out: dict[int, str] = {}
        try:
            out[os.stat(self.root).st_ino] = ""
        except OSError:
            return out
        pending: list[tuple[str, str]] = [(self.root, "")]
        while pending:
            path, inherited = pending.pop()
            try:
                with os.scandir(path) as it:
                    for entry in it:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        if len(out) >= self.max_directories:
                            self.truncated = True
                            if self._on_truncated is not None:
                                self._on_truncated()
                            return out
                        cid = containers.from_directory(entry.name) or inherited
                        out[entry.inode()] = cid
                        pending.append((entry.path, cid))
            except OSError:
                continue  # a cgroup removed while walking
        return out

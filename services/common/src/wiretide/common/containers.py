"""Container ids as container runtimes write them: in cgroup paths, and in a pod's container statuses.

Rule: one spelling everywhere — a container id is the runtime's bare id, 64 lowercase hex digits,
without the runtime's prefix or suffix; anything that does not parse as one is "" (not a container).
"""

from __future__ import annotations

import re
from typing import Final

# The cgroup directory of one container, as each runtime's cgroup driver names it:
#   systemd driver: cri-containerd-<id>.scope (containerd), crio-<id>.scope (CRI-O),
#                   docker-<id>.scope (Docker), libpod-<id>.scope (Podman)
#   cgroupfs driver: a bare <id> (…/kubepods/burstable/pod<uid>/<id>, /docker/<id>)
# CRI-O's monitor lives in crio-conmon-<id>.scope: it is not the container and is refused.
_DIRECTORY: Final = re.compile(r"(?:(?:cri-containerd|crio|docker|libpod)-)?([0-9a-f]{64})(?:\.scope)?")
# A pod status's containerID: "<runtime>://<id>" (containerd://, cri-o://, docker://).
_STATUS: Final = re.compile(r"[a-z][a-z0-9+.-]*://([0-9a-f]{64})")
# The key of a "container" identity in the identity table (never an address, see resolver.proto).
KEY_PREFIX: Final = "container:"


def from_directory(name: str) -> str:
    """The container id a single cgroup directory name stands for, or ""."""
    match = _DIRECTORY.fullmatch(name)
    return match.group(1) if match else ""


def from_cgroup_path(path: str) -> str:
    """The container a cgroup path belongs to: its innermost container directory (a process in a
    sub-cgroup of a container, e.g. a container's own systemd, is in that container), or ""."""
    for name in reversed(path.split("/")):
        cid = from_directory(name)
        if cid:
            return cid
    return ""


def from_proc_cgroup(text: str) -> str:
    """The container of a process from its /proc/<pid>/cgroup ("hierarchy:controllers:path" lines;
    the cgroup v2 line "0::/path" is preferred over the v1 ones)."""
    found = ""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        _, _, path = rest.partition(":")
        cid = from_cgroup_path(path)
        if cid and (hierarchy == "0" or not found):
            found = cid
    return found


def from_status(container_id: object) -> str:
    """The bare id of a pod status's `containerID` ("containerd://<id>"), or ""."""
    if not isinstance(container_id, str):
        return ""
    match = _STATUS.fullmatch(container_id)
    return match.group(1) if match else ""


def key(container_id: str) -> str:
    """The identity-table key of a container (see `KEY_PREFIX`)."""
    return KEY_PREFIX + container_id

"""cgroup ids (directory inodes) → container ids, from a cgroup tree walked at most once per interval."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from wiretide.capture.sources.ebpf.cgroups import ContainerIds

CID = "ab" * 32
CRIO = "cd" * 32
BARE = "ef" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tree(root: Path) -> dict[str, int]:
    """A node's cgroup hierarchy in miniature; returns each directory's inode by a short name."""
    dirs = {
        "root": root,
        "pod": root / "kubepods.slice" / "kubepods-burstable.slice" / "kubepods-burstable-pod1.slice",
        "containerd": root
        / "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
        / f"cri-containerd-{CID}.scope",
        "nested": root
        / "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
        / f"cri-containerd-{CID}.scope/init.scope",
        "crio": root / "kubepods.slice" / f"crio-{CRIO}.scope",
        "conmon": root / "kubepods.slice" / f"crio-conmon-{CRIO}.scope",
        "bare": root / "kubepods" / "besteffort" / "pod2" / BARE,
        "host": root / "system.slice" / "sshd.service",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.procs").write_text("")  # files are not cgroups
    (dirs["host"] / "memory.max").write_text("max\n")
    return {name: os.stat(d).st_ino for name, d in dirs.items()}


def test_each_cgroup_is_named_by_the_container_its_directory_belongs_to(tmp_path: Path) -> None:
    ino = tree(tmp_path)
    ids = ContainerIds(str(tmp_path), clock=Clock())
    assert ids.get(ino["containerd"]) == CID
    assert ids.get(ino["nested"]) == CID  # a process in a container's sub-cgroup
    assert ids.get(ino["crio"]) == CRIO
    assert ids.get(ino["bare"]) == BARE
    for host in ("root", "pod", "conmon", "host"):
        assert ids.get(ino[host]) == "", host
    assert ids.scans == 1  # one walk answered all of them, host cgroups included
    assert ids.unknown == 0


def test_an_unknown_id_rescans_at_most_once_per_interval(tmp_path: Path) -> None:
    ino = tree(tmp_path)
    clock = Clock()
    ids = ContainerIds(str(tmp_path), rescan_s=2.0, clock=clock)
    assert ids.get(ino["containerd"]) == CID
    late = tmp_path / "kubepods.slice" / f"crio-{'12' * 32}.scope"
    late.mkdir()
    new = os.stat(late).st_ino
    for _ in range(1000):  # a burst of events from the new container within the interval
        assert ids.get(new) == ""
    assert ids.scans == 1
    assert ids.unknown == 1000
    clock.now += 2.0
    assert ids.get(new) == "12" * 32
    assert ids.scans == 2
    assert ids.get(new) == "12" * 32 and ids.scans == 2  # answered from memory from then on


def test_a_removed_container_is_forgotten_at_the_next_walk(tmp_path: Path) -> None:
    ino = tree(tmp_path)
    clock = Clock()
    ids = ContainerIds(str(tmp_path), rescan_s=1.0, clock=clock)
    assert ids.get(ino["crio"]) == CRIO
    (tmp_path / "kubepods.slice" / f"crio-{CRIO}.scope").rmdir()
    clock.now += 5
    assert ids.get(12345678) == ""  # an id nobody has: triggers the walk
    assert ino["crio"] not in ids.walk()
    assert ids.get(ino["containerd"]) == CID


def test_a_walk_is_bounded_in_directories(tmp_path: Path) -> None:
    tree(tmp_path)
    for i in range(50):
        (tmp_path / "many" / f"d{i}").mkdir(parents=True)
    counted: list[int] = []
    ids = ContainerIds(
        str(tmp_path), max_directories=20, clock=Clock(), on_truncated=lambda: counted.append(1)
    )
    ids.get(1)
    assert len(ids) == 20
    assert ids.truncated and counted == [1]  # the source counts it as ebpf_cgroup_truncated


def test_a_missing_hierarchy_names_nothing_and_does_not_raise(tmp_path: Path) -> None:
    clock = Clock()
    ids = ContainerIds(str(tmp_path / "absent"), clock=clock)
    assert ids.get(1) == ""
    clock.now += 10
    assert ids.get(1) == ""
    assert ids.scans == 2 and len(ids) == 0


def test_a_directory_that_cannot_be_read_is_skipped_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ino = tree(tmp_path)
    gone = str(tmp_path / "system.slice")  # as if removed between being listed and being read
    real = os.scandir

    def scandir(path: str) -> Any:
        if path == gone:
            raise FileNotFoundError(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ids = ContainerIds(str(tmp_path), clock=Clock())
    assert ids.get(ino["containerd"]) == CID
    assert ino["host"] not in ids.walk()


def test_a_hybrid_host_s_unified_tree_is_the_one_walked(tmp_path: Path) -> None:
    (tmp_path / "memory" / f"docker-{CID}.scope").mkdir(parents=True)  # a v1 controller's tree
    unified = tmp_path / "unified"
    ino = tree(unified)
    (unified / "cgroup.controllers").write_text("")
    ids = ContainerIds(str(tmp_path), clock=Clock())
    assert ids.root == str(unified)
    assert ids.get(ino["containerd"]) == CID
    assert os.stat(tmp_path / "memory" / f"docker-{CID}.scope").st_ino not in ids.walk()

"""Container ids read from cgroup paths and pod statuses, as each container runtime writes them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wiretide.common import containers

CID = "3f" * 32
OTHER = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "path",
    [
        # containerd, systemd cgroup driver (kubelet's default on systemd hosts)
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-{CID}.scope",
        # CRI-O
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice/crio-{CID}.scope",
        # Docker (systemd driver) and Podman
        f"/system.slice/docker-{CID}.scope",
        f"/machine.slice/libpod-{CID}.scope",
        # cgroupfs driver: the bare id under the pod's directory, or under /docker
        f"/kubepods/burstable/pod6f0e7f4c-1b9a-4e8e-9b1e-0c6a1d2e3f40/{CID}",
        f"/docker/{CID}",
        # a sub-cgroup inside the container (its own init or systemd) is still the container
        f"/kubepods.slice/cri-containerd-{CID}.scope/init.scope",
        f"/kubepods/besteffort/pod1/{CID}/",
    ],
)
def test_every_runtime_s_container_directory_gives_the_bare_id(path: str) -> None:
    assert containers.from_cgroup_path(path) == CID


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/user.slice/user-1000.slice/session-3.scope",
        "/system.slice/containerd.service",
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice",
        f"/kubepods.slice/crio-conmon-{CID}.scope",  # CRI-O's monitor, not the container
        f"/system.slice/docker-{CID[:-1]}.scope",  # 63 digits
        f"/system.slice/docker-{CID}0.scope",  # 65 digits
        f"/system.slice/docker-{CID.upper()}.scope",  # runtimes write lowercase
        f"/system.slice/docker-{CID}.scope.bak",
        f"/system.slice/something-{CID}.scope",  # not a runtime's prefix
        f"/x/{CID[:32]}/{CID[32:]}",
        "/kubepods/burstable/pod1/" + "g" * 64,
    ],
)
def test_paths_that_are_not_a_container_give_nothing(path: str) -> None:
    assert containers.from_cgroup_path(path) == ""


def test_the_innermost_container_of_a_nested_path_wins() -> None:
    assert containers.from_cgroup_path(f"/docker/{OTHER}/docker-{CID}.scope") == CID


def test_proc_cgroup_text_prefers_the_unified_hierarchy() -> None:
    text = f"12:cpu,cpuacct:/docker/{OTHER}\n0::/kubepods/pod1/{CID}\n"
    assert containers.from_proc_cgroup(text) == CID
    assert containers.from_proc_cgroup(f"12:cpu,cpuacct:/docker/{OTHER}\n0::/\n") == OTHER
    assert containers.from_proc_cgroup("0::/user.slice\n") == ""
    assert containers.from_proc_cgroup("garbage without colons\n\n") == ""


@pytest.mark.parametrize("runtime", ["containerd", "cri-o", "docker"])
def test_pod_status_container_ids_lose_their_runtime_scheme(runtime: str) -> None:
    assert containers.from_status(f"{runtime}://{CID}") == CID


@pytest.mark.parametrize(
    "value", [None, 7, "", CID, f"containerd://{CID[:10]}", f"containerd://{CID}/x", f"://{CID}", ["x"]]
)
def test_pod_status_values_that_are_not_a_runtime_id_give_nothing(value: object) -> None:
    assert containers.from_status(value) == ""


def test_a_container_s_table_key_is_never_an_address() -> None:
    assert containers.key(CID) == "container:" + CID


@given(st.text())
def test_any_text_parses_to_an_id_or_nothing_and_never_raises(text: str) -> None:
    for found in (
        containers.from_cgroup_path(text),
        containers.from_proc_cgroup(text),
        containers.from_status(text),
        containers.from_directory(text),
    ):
        assert found == "" or (len(found) == 64 and set(found) <= set("0123456789abcdef"))

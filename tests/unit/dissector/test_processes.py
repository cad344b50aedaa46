"""Socket owners (eBPF) name the local processes of packet entries: each end by its own socket only."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wiretide.dissector.processes import ProcessTable
from wiretide.proto.v1 import packets_pb2

CLIENT = (bytes([10, 93, 0, 1]), 40000)
SERVER = (bytes([10, 93, 0, 2]), 8090)


def owner(
    local: tuple[bytes, int], remote: tuple[bytes, int], pid: int, comm: str
) -> packets_pb2.SocketOwner:
    return packets_pb2.SocketOwner(
        local_ip=local[0], local_port=local[1], remote_ip=remote[0], remote_port=remote[1],
        pid=pid, comm=comm, cgroup_id=7, local_is_server=local == SERVER,
    )  # fmt: skip


def entry(
    src: tuple[str, int] = ("10.93.0.1", 40000), dst: tuple[str, int] = ("10.93.0.2", 8090)
) -> dict[str, Any]:
    return {"protocol": "http", "src": {"ip": src[0], "port": src[1]}, "dst": {"ip": dst[0], "port": dst[1]}}


def test_both_ends_of_a_call_are_named_by_the_processes_owning_their_sockets() -> None:
    t = ProcessTable()
    t.learn([owner(CLIENT, SERVER, 11, "curl"), owner(SERVER, CLIENT, 22, "python")])
    e = entry()
    t.name([e])
    assert e["src"]["process"] == {"pid": 11, "name": "curl", "cgroup_id": 7, "container_id": None}
    assert e["dst"]["process"] == {"pid": 22, "name": "python", "cgroup_id": 7, "container_id": None}


def test_an_end_whose_socket_is_not_local_stays_unnamed() -> None:
    t = ProcessTable()
    t.learn([owner(CLIENT, SERVER, 11, "curl")])  # the server is on another node
    e = entry()
    t.name([e])
    assert e["src"]["process"]["pid"] == 11
    assert "process" not in e["dst"]


def test_the_same_port_on_another_connection_is_not_taken_for_the_socket() -> None:
    t = ProcessTable()
    t.learn([owner(SERVER, CLIENT, 22, "python")])
    e = entry(src=("10.93.0.9", 40000))  # another client of the same server port
    t.name([e])
    assert "process" not in e["src"] and "process" not in e["dst"]


def test_a_process_already_named_by_plaintext_is_kept() -> None:
    t = ProcessTable()
    t.learn([owner(CLIENT, SERVER, 11, "curl")])
    e = entry()
    e["src"]["process"] = {"pid": 99, "name": "hooked", "cgroup_id": 0}
    t.name([e])
    assert e["src"]["process"]["pid"] == 99


def test_the_table_is_bounded_and_counts_what_it_forgets() -> None:
    t = ProcessTable(max_sockets=2)
    t.learn([owner((CLIENT[0], 40000 + i), SERVER, i, "c") for i in range(5)])
    assert len(t) == 2 and t.evicted == 3
    e = entry(src=("10.93.0.1", 40004))
    t.name([e])
    assert e["src"]["process"]["pid"] == 4  # the newest are kept


def test_an_owner_with_a_malformed_address_is_counted_and_skipped() -> None:
    t = ProcessTable()
    t.learn([owner((b"\x01\x02", 1), SERVER, 1, "x")])
    assert len(t) == 0 and t.bad == 1


OWNERS = st.builds(
    packets_pb2.SocketOwner,
    local_ip=st.binary(max_size=20),
    local_port=st.integers(0, 65535),
    remote_ip=st.binary(max_size=20),
    pid=st.integers(0, 2**32 - 1),
    comm=st.text(max_size=20),
)
VALUES = st.one_of(st.none(), st.integers(), st.dictionaries(st.text(max_size=4), st.integers()))
DOCS = st.dictionaries(st.sampled_from(["src", "dst", "protocol"]), VALUES)


@given(st.lists(OWNERS), st.lists(DOCS))
def test_random_owners_and_entries_never_raise(
    owners: list[packets_pb2.SocketOwner], docs: list[dict[str, Any]]
) -> None:
    t = ProcessTable(max_sockets=8)
    t.learn(owners)
    t.name([*docs, entry()])


def test_the_container_the_capture_node_read_for_a_socket_owner_names_the_process_s_container() -> None:
    t = ProcessTable()
    boxed = owner(SERVER, CLIENT, 22, "python")
    boxed.container_id = "c0" * 32
    t.learn([owner(CLIENT, SERVER, 11, "curl"), boxed])
    e = entry()
    t.name([e])
    assert e["src"]["process"]["container_id"] is None  # a host process
    assert e["dst"]["process"]["container_id"] == "c0" * 32

"""SCTP socket owners read from procfs: a fake /proc holding /proc/net/sctp/{assocs,eps} in the
kernel's own format (net/sctp/proc.c: `sctp_assocs_seq_show`, `sctp_eps_seq_show`), and processes
whose fds are `socket:[inode]` links, with their comm and cgroup. No live SCTP stack is used: the
kernels here have none.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.pcaps import PCAPS, require_pcaps
from wiretide.capture.sources.ebpf import EbpfSource
from wiretide.capture.sources.ebpf.sctp import SctpOwners, parse_assoc_line, parse_eps_line
from wiretide.capture.sources.ebpf.source import SocketOwner

ASSOCS_HEADER = (
    " ASSOC     SOCK   STY SST ST HBKT ASSOC-ID TX_QUEUE RX_QUEUE UID INODE LPORT RPORT LADDRS <-> RADDRS "
    "HBINT INS OUTS MAXRT T1X T2X RTXC wmema wmemq sndbuf rcvbuf\n"
)
EPS_HEADER = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n"
HOST_NS = "net:[4026531840]"
POD_NS = "net:[4026532411]"
CONTAINER = "ab" * 32


def dump(addresses: list[str]) -> str:
    """Addresses as `seq_dump_addr` prints them: `%pI4 ` / `%pI6 ` (all eight groups, four digits
    each), a `*` before the primary (given here with a leading `*`)."""
    out = ""
    for a in addresses:
        star, bare = ("*", a[1:]) if a.startswith("*") else ("", a)
        ip = ipaddress.ip_address(bare)
        text = str(ip) if ip.version == 4 else ":".join(ip.exploded.split(":"))
        out += f"{star}{text} "
    return out


def assoc_line(inode: int, lport: int, rport: int, local: list[str], remote: list[str], sst: int = 1) -> str:
    """One line as sctp_assocs_seq_show prints it (kernel 4.x–6.x)."""
    head = "%8s %8s %-3d %-3d %-2d %-4d %4d %8d %8d %7u %5d %-5d %5d " % (  # noqa: UP031 (the kernel's)
        "ffff9e5b0c2a1000", "ffff9e5b1d4e8000", 2, sst, 3, 0, 7, 0, 0, 0, inode, lport, rport,
    )  # fmt: skip
    tail = "\t%8d %5d %5d %4d %4d %4d %8d %8d %8d %8d %8d" % (  # noqa: UP031
        30000, 10, 10, 10, 0, 0, 0, 1, 0, 212992, 212992,
    )  # fmt: skip
    return head + " " + dump(local) + "<-> " + dump(remote) + tail + "\n"


def eps_line(inode: int, lport: int, local: list[str], sst: int = 10) -> str:
    """One line as sctp_eps_seq_show prints it."""
    head = "%8s %8s %-3d %-3d %-4d %-5d %5u %5d " % (  # noqa: UP031
        "ffff9e5b0c2a2000", "ffff9e5b1d4e9000", 2, sst, 40, lport, 0, inode,
    )  # fmt: skip
    return head + dump(local) + "\n"


@dataclass
class FakeProc:
    """A /proc tree: the reader's own net/sctp, and processes with their namespace, fds and cgroup."""

    root: Path
    tables: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # ns → (assocs, eps)

    def table(self, ns: str, assocs: Sequence[str], eps: Sequence[str] = ()) -> None:
        self.tables[ns] = (list(assocs), list(eps))
        self.write()

    def write(self) -> None:
        for ns, (assocs, eps) in self.tables.items():
            for d in self._dirs_of(ns):
                d.mkdir(parents=True, exist_ok=True)
                (d / "assocs").write_text(ASSOCS_HEADER + "".join(assocs))
                (d / "eps").write_text(EPS_HEADER + "".join(eps))

    def _dirs_of(self, ns: str) -> Iterator[Path]:
        if ns == HOST_NS:
            yield self.root / "net" / "sctp"
        for pid_dir in self.root.iterdir():
            if pid_dir.name.isdigit() and os.readlink(pid_dir / "ns" / "net") == ns:
                yield pid_dir / "net" / "sctp"

    def process(
        self, pid: int, comm: str, sockets: list[int], ns: str = HOST_NS, cgroup: str = "0::/user.slice\n"
    ) -> None:
        base = self.root / str(pid)
        (base / "fd").mkdir(parents=True)
        (base / "ns").mkdir()
        os.symlink(ns, base / "ns" / "net")
        (base / "comm").write_text(comm + "\n")
        (base / "cgroup").write_text(cgroup)
        os.symlink("/dev/null", base / "fd" / "0")
        os.symlink("pipe:[555]", base / "fd" / "1")
        for fd, inode in enumerate(sockets, start=3):
            os.symlink(f"socket:[{inode}]", base / "fd" / str(fd))
        self.write()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    root = tmp_path / "proc"
    root.mkdir()
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "cgroup" / "cgroup.controllers").write_text("")
    return FakeProc(root)


def owners_of(proc: FakeProc, **kw: Any) -> tuple[SctpOwners, list[SocketOwner]]:
    table = SctpOwners(proc.root, str(proc.root.parent / "cgroup"), **kw)
    return table, table.scan(timestamp_ns=1)


def ends(owners: list[SocketOwner]) -> set[tuple[str, int, str, int, int, bool]]:
    return {
        (str(ipaddress.ip_address(o.local_ip)), o.local_port, str(ipaddress.ip_address(o.remote_ip)),
         o.remote_port, o.pid, o.local_is_server)
        for o in owners
    }  # fmt: skip


# -- the format ---------------------------------------------------------------------------------


def test_lines_in_the_kernel_s_format_are_read_column_by_column() -> None:
    line = assoc_line(94012, 3868, 47000, ["*172.16.0.2", "10.9.9.2"], ["*172.16.0.1"])
    (assoc, cut) = parse_assoc_line(line) or (None, 0)
    assert assoc is not None and cut == 0
    assert (assoc.inode, assoc.local_port, assoc.remote_port) == (94012, 3868, 47000)
    assert assoc.local == (bytes([172, 16, 0, 2]), bytes([10, 9, 9, 2])) and assoc.remote == (
        bytes([172, 16, 0, 1]),
    )
    assert parse_eps_line(eps_line(10345, 3868, ["10.205.8.71"])) == (3868, True)
    assert parse_eps_line(eps_line(10346, 40000, ["10.205.8.71"], sst=7)) == (40000, False)


def test_a_line_as_an_older_kernel_printed_it_is_read_too() -> None:
    # A RHEL 5 kernel's line (no tab before the counters), as shown by its `cat /proc/net/sctp/assocs`.
    line = "f153f2a0 f5fa1400 2 10 4 18020 82 0 256 0 94012 3018 3449 *192.168.0.21 <-> *192.168.0.100 30000 100 10 10 0 0 0\n"  # noqa: E501
    (assoc, _) = parse_assoc_line(line) or (None, 0)
    assert assoc is not None
    assert (assoc.inode, assoc.local_port, assoc.remote_port) == (94012, 3018, 3449)
    assert assoc.remote == (bytes([192, 168, 0, 100]),)


def test_the_primary_address_comes_first_and_ipv6_is_read_in_the_kernel_s_long_form() -> None:
    line = assoc_line(7, 36412, 3868, ["fd00::1", "*fd00::2"], ["fd00::9", "*10.0.0.1"])
    (assoc, _) = parse_assoc_line(line) or (None, 0)
    assert assoc is not None
    assert "fd00:0000:0000:0000:0000:0000:0000:0002" in line
    assert assoc.local == (ipaddress.ip_address("fd00::2").packed, ipaddress.ip_address("fd00::1").packed)
    assert assoc.remote[0] == bytes([10, 0, 0, 1])


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_any_line_parses_or_is_refused_never_raises(line: str) -> None:
    parse_assoc_line(line)
    parse_eps_line(line)


# -- owners ---------------------------------------------------------------------------------------


def test_no_sctp_in_the_kernel_gives_nothing_and_counts_nothing(proc: FakeProc) -> None:
    proc.process(100, "app", [5000])
    table, owners = owners_of(proc)
    assert owners == [] and table.counts == {} and table.scans == 0 and table.walks == 0


def test_a_multihomed_client_association_gives_one_owner_per_address_pair(proc: FakeProc) -> None:
    proc.process(100, "diameter-c", [5000], cgroup=f"0::/kubepods/pod1/cri-containerd-{CONTAINER}.scope\n")
    (proc.root.parent / "cgroup" / "kubepods" / "pod1" / f"cri-containerd-{CONTAINER}.scope").mkdir(
        parents=True
    )
    proc.table(
        HOST_NS,
        [
            assoc_line(
                5000, 47000, 3868, ["*172.16.0.1", "10.9.9.1", "127.0.0.1"], ["*172.16.0.2", "10.9.9.2"]
            )
        ],
    )
    table, owners = owners_of(proc)
    assert ends(owners) == {
        (local, 47000, remote, 3868, 100, False)
        for local in ("172.16.0.1", "10.9.9.1")
        for remote in ("172.16.0.2", "10.9.9.2")
    }  # loopback pairs with no other address: no packet carries them
    o = owners[0]
    assert (o.protocol, o.comm, o.container_id, o.timestamp_ns) == (132, "diameter-c", CONTAINER, 1)
    cgroup_dir = proc.root.parent / "cgroup" / "kubepods" / "pod1" / f"cri-containerd-{CONTAINER}.scope"
    assert o.cgroup_id == cgroup_dir.stat().st_ino
    assert table.scan() == []  # each owner goes out once
    assert table.walks == 1  # and /proc/*/fd is walked only for a socket not seen before


def test_a_listening_server_in_a_pod_namespace_is_named_with_its_ipv6_associations(proc: FakeProc) -> None:
    proc.process(100, "host-app", [1])
    proc.process(200, "mme", [6000, 6001], ns=POD_NS)
    proc.table(HOST_NS, [])
    proc.table(
        POD_NS,
        [assoc_line(6001, 36412, 40000, ["*fd00::2"], ["*fd00::9", "fd01::9"])],
        [eps_line(6000, 36412, ["fd00::2"])],
    )
    _, owners = owners_of(proc)
    assert ends(owners) == {
        ("fd00::2", 36412, "fd00::9", 40000, 200, True),
        ("fd00::2", 36412, "fd01::9", 40000, 200, True),
    }


def test_a_one_to_many_socket_names_each_of_its_associations(proc: FakeProc) -> None:
    proc.process(300, "sigtran", [7000])
    proc.table(
        HOST_NS,
        [
            assoc_line(7000, 2905, 2905, ["*10.0.0.1"], ["*10.0.0.7"]),
            assoc_line(7000, 2905, 2906, ["*10.0.0.1"], ["*10.0.0.8"]),
        ],
        [eps_line(7000, 2905, ["10.0.0.1"])],
    )
    _, owners = owners_of(proc)
    assert ends(owners) == {
        ("10.0.0.1", 2905, "10.0.0.7", 2905, 300, True),
        ("10.0.0.1", 2905, "10.0.0.8", 2906, 300, True),
    }


def test_a_new_path_of_a_known_association_is_reported_and_a_closed_one_forgotten(proc: FakeProc) -> None:
    proc.process(100, "app", [5000])
    proc.table(HOST_NS, [assoc_line(5000, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2"])])
    table, first = owners_of(proc)
    assert len(first) == 1
    proc.table(HOST_NS, [assoc_line(5000, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2", "10.0.1.2"])])
    assert ends(table.scan()) == {("10.0.0.1", 47000, "10.0.1.2", 3868, 100, False)}
    proc.table(HOST_NS, [])
    assert table.scan() == [] and table._processes == {} and table._reported == set()


def test_a_process_that_exits_mid_scan_is_skipped_and_its_socket_looked_for_again(proc: FakeProc) -> None:
    proc.process(100, "short", [5000])
    proc.process(101, "other", [5001])
    proc.table(
        HOST_NS,
        [
            assoc_line(5000, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2"]),
            assoc_line(5001, 47001, 3868, ["*10.0.0.1"], ["*10.0.0.2"]),
        ],
    )
    # Gone between the listing of /proc and the walk of its fds: the directory is there, its fds not.
    for link in (proc.root / "100" / "fd").iterdir():
        link.unlink()
    (proc.root / "100" / "fd").rmdir()
    table, owners = owners_of(proc)
    assert ends(owners) == {("10.0.0.1", 47001, "10.0.0.2", 3868, 101, False)}
    assert table.gone == 1 and "sctp_unnamed" not in table.counts  # looked for again next scan
    table.scan()
    table.scan()
    assert table.counts["sctp_unnamed"] == 1  # then counted once, and no longer looked for
    walks = table.walks
    table.scan()
    assert table.walks == walks


def test_garbage_lines_are_counted_not_raised(proc: FakeProc) -> None:
    proc.process(100, "app", [5000])
    proc.table(
        HOST_NS,
        [
            "garbage\n",
            "ffff 1 2 3 4 5 6 7 8 9 notanumber 47000 3868  10.0.0.1 <-> 10.0.0.2\n",
            assoc_line(5000, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2"]),
            assoc_line(5000, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2"]).replace("<->", "<>"),
            "\0\xff" * 50 + "\n",
        ],
        ["x y\n", eps_line(5000, 1, ["10.0.0.1"], sst=7)],
    )
    table, owners = owners_of(proc)
    assert len(owners) == 1
    assert table.counts["sctp_garbage"] == 5


def test_a_huge_table_is_read_up_to_its_bound(proc: FakeProc) -> None:
    proc.process(100, "app", [5000])
    line = assoc_line(5000, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2"])
    proc.table(HOST_NS, [line.replace(" 3868 ", f" {p} ", 1) for p in range(1, 5001)])
    drops: dict[str, int] = {}
    table, owners = owners_of(
        proc, max_lines=1000, drop=lambda r, n: drops.__setitem__(r, drops.get(r, 0) + n)
    )
    assert len(owners) == 1000 and drops == {"sctp_lines_cut": 1} == table.counts


def test_addresses_beyond_the_bound_are_cut_and_counted(proc: FakeProc) -> None:
    proc.process(100, "app", [5000])
    many = [f"10.0.{i}.1" for i in range(40)]
    proc.table(HOST_NS, [assoc_line(5000, 47000, 3868, many, ["*10.1.0.2"])])
    table, owners = owners_of(proc)
    assert len(owners) == 16 and table.counts["sctp_addresses_cut"] == 24


def test_a_socket_no_process_holds_is_counted_unnamed(proc: FakeProc) -> None:
    proc.process(100, "app", [1])
    proc.table(HOST_NS, [assoc_line(0, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2"])])  # a kernel socket
    table, owners = owners_of(proc)
    assert owners == [] and table.counts == {"sctp_unnamed": 1}


# -- the eBPF source -----------------------------------------------------------------------------


def test_the_source_queues_sctp_owners_with_the_kernel_side_s(proc: FakeProc) -> None:
    proc.process(100, "app", [5000])
    proc.table(HOST_NS, [assoc_line(5000, 47000, 3868, ["*10.0.0.1"], ["*10.0.0.2"]), "junk\n"])
    source = EbpfSource(proc=proc.root, cgroup_root=str(proc.root.parent / "cgroup"))
    source._scan_sctp()
    (owner,) = source.take_sockets()
    assert (owner.protocol, owner.pid, owner.local_port) == (132, 100, 47000)
    assert source.stats.sockets == 1 and source.stats.drops == {"sctp_garbage": 1}


# -- to the dissector ---------------------------------------------------------------------------

ENDPOINTS = [f"10.1.0.{i}:50052" for i in range(1, 5)]


def test_an_sctp_owner_goes_to_the_dissector_of_its_sctp_packets() -> None:
    from types import SimpleNamespace

    from wiretide.capture.service import CaptureService
    from wiretide.capture.shard import HashRing
    from wiretide.common.packets import flow_hash

    ring = HashRing.of(ENDPOINTS)
    local, remote = bytes([172, 16, 0, 1]), bytes([172, 16, 0, 2])
    # A port whose SCTP and TCP hashes land on different dissectors: a TCP-hashed owner would miss.
    port = next(
        p
        for p in range(47000, 48000)
        if ring.owner(flow_hash(local, p, remote, 3868, 132))
        != ring.owner(flow_hash(local, p, remote, 3868, 6))
    )
    offered: dict[str, list[Any]] = {}
    pool = SimpleNamespace(offer_plaintext=lambda ep, _c, protos: offered.setdefault(ep, []).extend(protos))
    me = SimpleNamespace(sharder=SimpleNamespace(ring=ring), pool=pool)
    owner = SocketOwner(local, port, remote, 3868, False, 7, "diameter-c", 1, 2, protocol=132)
    CaptureService._on_sockets(me, [owner])  # type: ignore[arg-type]
    assert list(offered) == [ring.owner(flow_hash(remote, 3868, local, port, 132))]


def test_entries_of_a_captured_sctp_association_name_the_processes_read_from_procfs(proc: FakeProc) -> None:
    """arkime_diameter_synthetic.pcap: Diameter S6a over SCTP 172.16.0.1:47000 → 172.16.0.2:3868 and
    accounting 192.168.50.1:48000 → 192.168.50.2:3868. This node holds the first association's client
    (multihomed) and the second's server; the dissected entries name those ends, and only those."""
    from tests.unit.dissector.pcaps import read_columns
    from wiretide.dissector.pipeline import Pipeline
    from wiretide.dissector.processes import ProcessTable
    from wiretide.dissector.registry import default_registry

    path = PCAPS / "diameter" / "arkime_diameter_synthetic.pcap"
    require_pcaps(path)
    proc.process(100, "hss-client", [5000])
    proc.process(200, "diameterd", [6000, 6001], ns=POD_NS)
    proc.table(
        HOST_NS, [assoc_line(5000, 47000, 3868, ["*172.16.0.1", "10.9.9.1"], ["*172.16.0.2", "10.9.9.2"])]
    )
    proc.table(
        POD_NS,
        [assoc_line(6001, 3868, 48000, ["*192.168.50.2"], ["*192.168.50.1"])],
        [eps_line(6000, 3868, ["192.168.50.2"])],
    )
    _, owners = owners_of(proc)
    table = ProcessTable()
    table.learn(o.to_proto() for o in owners)
    pipeline = Pipeline(default_registry())
    entries = pipeline.feed(read_columns(path)) + pipeline.finish()
    table.name(entries)
    sctp = [e for e in entries if e.get("transport") == "sctp"]
    named = {
        (e["protocol"], e["src"]["port"], (e["src"].get("process") or {}).get("name"),
         (e["dst"].get("process") or {}).get("name"))
        for e in sctp
    }  # fmt: skip
    assert named == {
        ("diameter", 47000, "hss-client", None),
        ("sctp", 47000, "hss-client", None),
        ("diameter", 48000, None, "diameterd"),
        ("sctp", 48000, None, "diameterd"),
    }
    tcp = [e for e in entries if e.get("transport") == "tcp"]
    assert tcp and not any(e["src"].get("process") or e["dst"].get("process") for e in tcp)

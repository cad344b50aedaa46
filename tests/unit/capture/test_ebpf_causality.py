"""The causality probe's user side: kernel events decoded into edges (client end first, dual-stack
sockets as IPv4), malformed ones refused; the program's tables bounded; edges published as the
tracer reads them; a probe that cannot start is a reason, never a crash."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.nats import nats_binary
from tests.helpers.wait import wait_for_async
from wiretide.capture.edges import edge_batch
from wiretide.capture.sources.ebpf import EbpfUnavailable
from wiretide.capture.sources.ebpf.causality import (
    _EDGE,
    EDGE_SIZE,
    CausalEdge,
    CausalityFeed,
    CausalityProbe,
    Endpoints,
    _Conn,
    _Edge,
    decode_edge,
    is_go_executable,
    program_text,
)
from wiretide.common.bus.causality import read_causality
from wiretide.common.bus.subjects import causality_subject


def conn(local: bytes, lport: int, remote: bytes, rport: int, family: int) -> _Conn:
    c = _Conn()
    c.local[: len(local)] = list(local)
    c.remote[: len(remote)] = list(remote)
    c.lport, c.rport, c.family = lport, rport, family
    return c


def event(out: _Conn, inb: _Conn, ts_out: int = 2_000, ts_in: int = 1_000) -> bytes:
    e = _Edge()
    e.ts_out, e.ts_in, e.pid, e.tid = ts_out, ts_in, 41, 42
    e.out, e.inb = out, inb
    e.comm[:6] = list(b"python")
    return bytes(e)


def test_an_event_becomes_an_edge_with_each_connection_named_client_end_first() -> None:
    out = conn(bytes([10, 0, 1, 1]), 50001, bytes([10, 0, 2, 1]), 9090, 2)  # we connected
    inb = conn(bytes([10, 0, 1, 1]), 8080, bytes([10, 0, 0, 9]), 40001, 2)  # we accepted
    edge = decode_edge(event(out, inb), boot_offset_ns=10**18)
    assert edge == CausalEdge(
        Endpoints("10.0.1.1", 50001, "10.0.2.1", 9090),
        10**18 + 2_000,
        Endpoints("10.0.0.9", 40001, "10.0.1.1", 8080),
        10**18 + 1_000,
        41,
        42,
        "python",
    )


def test_a_dual_stack_socket_carrying_ipv4_is_named_as_ipv4_and_real_ipv6_stays_ipv6() -> None:
    mapped = b"\0" * 10 + b"\xff\xff"
    v6 = bytes.fromhex("fd000000000000000000000000000001")
    out = conn(v6, 50001, v6[:-1] + b"\x02", 9090, 10)
    inb = conn(mapped + bytes([127, 0, 0, 1]), 8080, mapped + bytes([127, 0, 0, 1]), 40001, 10)
    edge = decode_edge(event(out, inb), 0)
    assert edge is not None
    assert edge.inbound == Endpoints("127.0.0.1", 40001, "127.0.0.1", 8080)
    assert edge.outbound == Endpoints("fd00::1", 50001, "fd00::2", 9090)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x01" * (EDGE_SIZE - 1), event(_Conn(), _Conn()), bytes(EDGE_SIZE)],
    ids=["empty", "short", "no-family", "zeros"],
)
def test_malformed_events_are_refused_not_raised(raw: bytes) -> None:
    assert decode_edge(raw, 0) is None


def test_the_event_layout_matches_the_kernel_struct() -> None:
    # struct edge_t: two u64, two u32, two conn_t (16+16+2+2+2+2+4+4 = 48 bytes), comm[16].
    assert ctypes.sizeof(_Conn) == 48 and EDGE_SIZE == 8 + 8 + 4 + 4 + 48 + 48 + 16 == _EDGE.size


def test_every_kernel_table_is_a_bounded_lru_hash() -> None:
    text = program_text()
    tables = [line for line in text.splitlines() if line.startswith("BPF_TABLE(")]
    assert len(tables) == 9
    assert all(line.startswith('BPF_TABLE("lru_hash"') for line in tables)
    assert "__MAX" not in text
    assert "kprobe" not in text.lower()  # tracepoints only


def test_edges_are_published_as_the_tracer_reads_them() -> None:
    edges = [
        CausalEdge(
            Endpoints("10.0.1.1", 50001, "10.0.2.1", 9090),
            5,
            Endpoints("::1", 40001, "::1", 8080),
            4,
            1,
            2,
            "py",
        )
    ]
    data = edge_batch("node-a", 3, edges).SerializeToString()
    got = read_causality(data, causality_subject("node-a"))
    assert got.node == "node-a" and not got.invalid and not got.refused
    (e,) = got.edges
    assert e.outbound.client_ip == bytes([10, 0, 1, 1]) and e.outbound.server_port == 9090
    assert e.inbound.server_ip == b"\0" * 15 + b"\x01" and (e.outbound_ns, e.inbound_ns) == (5, 4)


class NoBcc(CausalityProbe):
    def start(self) -> None:
        raise EbpfUnavailable("BCC is not importable")


async def test_a_probe_that_cannot_start_leaves_its_reason_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = CausalityFeed(lambda edges: None, asyncio.get_running_loop(), NoBcc)
    with caplog.at_level(logging.WARNING):
        feed.start()
        await wait_for_async("the reason", lambda: feed.error)
    feed.close()
    assert feed.error == "BCC is not importable" and not feed.running
    assert "eBPF causality source unavailable: BCC is not importable" in caplog.text


def test_edges_of_go_programs_are_dropped_and_counted(tmp_path: Path) -> None:
    """Goroutines move between threads: a Go program's edges are not trusted (timing links them)."""
    assert is_go_executable(nats_binary()) and not is_go_executable(os.path.realpath(sys.executable))
    assert not is_go_executable(str(tmp_path / "gone"))
    proc = tmp_path / "proc"
    for pid, exe in ((41, nats_binary()), (51, os.path.realpath(sys.executable))):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "exe").symlink_to(exe)
    probe = CausalityProbe(proc=str(proc))
    out = conn(bytes([10, 0, 1, 1]), 50001, bytes([10, 0, 2, 1]), 9090, 2)
    inb = conn(bytes([10, 0, 1, 1]), 8080, bytes([10, 0, 0, 9]), 40001, 2)
    for pid in (41, 51, 41):
        raw = bytearray(event(out, inb))
        raw[16:20] = pid.to_bytes(4, "little")  # the event's pid
        buf = (ctypes.c_ubyte * len(raw)).from_buffer(raw)
        probe._on_event(0, ctypes.addressof(buf), len(raw))
    assert [e.pid for e in probe._out] == [51]
    assert probe.stats.drops == {"go": 2} and probe.stats.edges == 1


async def test_the_probe_loads_only_after_the_other_source_compiled_its_program() -> None:
    """BCC compiling two programs at once crashes the process: the feed waits for `after()`."""
    done = False
    started: list[bool] = []

    class Recorded(NoBcc):
        def start(self) -> None:
            started.append(done)
            raise EbpfUnavailable("stop here")

    asked: list[bool] = []

    def after() -> bool:
        asked.append(done)
        return done

    feed = CausalityFeed(lambda edges: None, asyncio.get_running_loop(), Recorded, after=after)
    feed.start()
    await wait_for_async("the feed asking a few times", lambda: len(asked) >= 3)
    assert started == []  # while the other source compiles
    done = True
    await wait_for_async("the probe started", lambda: feed.error)
    feed.close()
    assert started == [True]

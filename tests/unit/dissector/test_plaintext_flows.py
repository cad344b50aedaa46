"""Plaintext chunks (eBPF) → entries: ordered per direction by offset, a repeat ignored, a gap a gap."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.plaintext import PlaintextFlows
from wiretide.dissector.registry import default_registry
from wiretide.proto.v1 import packets_pb2

CLIENT = (bytes([10, 91, 0, 1]), 40000)
SERVER = (bytes([10, 91, 0, 2]), 8443)
CURL_PID = 4242
REQUEST = b"GET /one HTTP/1.1\r\nHost: example\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def chunk(
    from_client: bool, offset: int, data: bytes, ts: int = 1_000_000_000, *, closed: bool = False
) -> packets_pb2.PlaintextChunk:
    """What curl's hooks report: its writes (requests) and its reads (responses)."""
    (src, sport), (dst, dport) = (CLIENT, SERVER) if from_client else (SERVER, CLIENT)
    return packets_pb2.PlaintextChunk(
        src_ip=src,
        src_port=sport,
        dst_ip=dst,
        dst_port=dport,
        from_client=from_client,
        offset=offset,
        data=data,
        timestamp_ns=ts + offset,
        pid=CURL_PID,
        tid=CURL_PID,
        comm="curl",
        library="openssl 3",
        local_is_sender=from_client,
        closed=closed,
    )


def flows() -> PlaintextFlows:
    return PlaintextFlows(Pipeline(default_registry(), node="test"))


def http(entries: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [(e["method"], e["path"], e["status"]) for e in entries if e["protocol"] == "http"]


def test_one_call_comes_out_decrypted_with_the_calling_process() -> None:
    f = flows()
    out = f.feed([chunk(True, 0, REQUEST), chunk(False, 0, RESPONSE)])
    out += f.finish()
    assert http(out) == [("GET", "/one", 200)]
    (entry,) = out
    assert entry["capture"]["source"] == "ebpf_tls"
    assert entry["tls"]["decrypted"] is True and entry["tls"]["library"] == "openssl 3"
    assert entry["src"]["process"] == {"pid": CURL_PID, "name": "curl", "cgroup_id": 0, "container_id": None}


def test_the_hooked_process_s_container_comes_with_its_chunks() -> None:
    f = flows()
    request, response = chunk(True, 0, REQUEST), chunk(False, 0, RESPONSE)
    request.container_id = response.container_id = "c0" * 32
    out = [*f.feed([request, response]), *f.finish()]
    (entry,) = out
    assert entry["src"]["process"]["container_id"] == "c0" * 32


def test_a_repeated_chunk_is_ignored_and_an_overlapping_one_adds_only_its_new_bytes() -> None:
    f = flows()
    half = len(REQUEST) // 2
    out = f.feed(
        [
            chunk(True, 0, REQUEST[:half]),
            chunk(True, 0, REQUEST[:half]),  # the same bytes again
            chunk(True, half - 3, REQUEST[half - 3 :]),  # overlaps the first by 3 bytes
            chunk(False, 0, RESPONSE),
            chunk(False, 0, RESPONSE[:10]),  # a stale repeat after the response
        ]
    )
    out += f.finish()
    assert http(out) == [("GET", "/one", 200)]
    assert f.pipeline.stats["plaintext_repeats"] == 2


def test_a_gap_in_the_requests_loses_that_call_but_not_the_next_one() -> None:
    second = REQUEST.replace(b"/one", b"/two")
    f = flows()
    lost = len(REQUEST)  # the first request's chunk never arrived (a full perf buffer)
    out = f.feed(
        [
            chunk(True, lost, second),
            chunk(False, 0, RESPONSE),
            chunk(False, len(RESPONSE), RESPONSE),
        ]
    )
    out += f.finish()
    calls = http(out)
    assert ("GET", "/two", 200) in calls
    assert ("GET", "/one", 200) not in calls


def test_a_close_from_the_hooked_process_ends_the_flow_and_its_unanswered_call() -> None:
    f = flows()
    out = f.feed([chunk(True, 0, REQUEST), chunk(True, 0, b"", closed=True)])
    assert [(e["path"], e["status"]) for e in out] == [("/one", None)]
    assert not f.flows
    assert f.finish() == []


def test_a_flow_silent_past_the_tcp_idle_time_is_closed_by_flush_idle() -> None:
    f = flows()
    assert f.feed([chunk(True, 0, REQUEST, ts=0)]) == []
    assert f.flush_idle(1) == []  # not idle yet
    idle = f.pipeline.limits.tcp_idle_ns
    (entry,) = f.flush_idle(idle + len(REQUEST) + 1)
    assert (entry["path"], entry["status"]) == ("/one", None)
    assert not f.flows


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(REQUEST) - 1), unique=True, max_size=6))
def test_any_chunking_of_the_same_bytes_gives_the_same_entries(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(REQUEST)]
    pieces = [chunk(True, a, REQUEST[a:b]) for a, b in itertools.pairwise(bounds)]
    f = flows()
    out = f.feed([*pieces, chunk(False, 0, RESPONSE)]) + f.finish()
    assert http(out) == [("GET", "/one", 200)]

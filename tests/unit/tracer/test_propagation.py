"""Trace context on the wire: every format parsed, every malformed or spoofed header ignored and counted."""

from __future__ import annotations

import base64

import pytest
from prometheus_client import REGISTRY

from wiretide.tracer.propagation import (
    Invalid,
    extract,
    parse_b3_single,
    parse_grpc_trace_bin,
    parse_request_id,
    parse_traceparent,
    parse_uber,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def invalid(header: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "wiretide_tracer_invalid_trace_headers_total", {"header": header, "reason": reason}
    )
    return value or 0.0


def test_a_w3c_traceparent_gives_the_applications_trace_and_caller_span() -> None:
    ctx = extract({"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "rojo=00f067aa0ba902b7"})
    assert ctx is not None
    assert (ctx.trace_id.hex(), ctx.parent_id.hex(), ctx.source) == (TRACE, SPAN, "traceparent")
    assert ctx.sampled and ctx.tracestate == "rojo=00f067aa0ba902b7"


@pytest.mark.parametrize(("flags", "sampled"), [("00", False), ("01", True), ("02", False), ("03", True)])
def test_a_traceparent_is_sampled_by_flag_bit_0_and_counted_once(flags: str, sampled: bool) -> None:
    def counted() -> float:
        value = REGISTRY.get_sample_value(
            "wiretide_tracer_propagated_contexts_total", {"header": "traceparent"}
        )
        return value or 0.0

    before = counted()
    ctx = extract({"traceparent": f" 00-{TRACE}-{SPAN}-{flags}\t", "tracestate": " a=1 "})
    assert ctx is not None and ctx.sampled is sampled and ctx.tracestate == "a=1"
    assert (ctx.trace_id.hex(), ctx.parent_id.hex()) == (TRACE, SPAN)
    assert counted() == before + 1


def test_a_future_traceparent_version_may_carry_more_fields() -> None:
    ctx = parse_traceparent(f"cc-{TRACE}-{SPAN}-00-what-the-future-holds")
    assert ctx.trace_id.hex() == TRACE and not ctx.sampled


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"00-{TRACE[:-1]}-{SPAN}-01", "trace_id_length"),
        (f"00-{TRACE}0-{SPAN}-01", "trace_id_length"),
        (f"00-{'g' * 32}-{SPAN}-01", "trace_id_not_hex"),
        (f"00-{TRACE.upper()}-{SPAN}-01", "trace_id_not_hex"),
        (f"00-{'0' * 32}-{SPAN}-01", "trace_id_zero"),
        (f"00-{TRACE}-{'0' * 16}-01", "span_id_zero"),
        (f"00-{TRACE}-{SPAN[:-2]}-01", "span_id_length"),
        (f"ff-{TRACE}-{SPAN}-01", "version"),
        (f"00-{TRACE}-{SPAN}-01-extra", "fields"),
        (f"00-{TRACE}-{SPAN}-1", "flags"),
        ("garbage", "fields"),
    ],
)
def test_a_malformed_traceparent_is_ignored_and_counted(value: str, reason: str) -> None:
    before = invalid("traceparent", reason)
    assert extract({"traceparent": value}) is None
    assert invalid("traceparent", reason) == before + 1


def test_a_spoofed_traceparent_falls_back_to_a_valid_weaker_header() -> None:
    ctx = extract({"traceparent": f"00-{'0' * 32}-{SPAN}-01", "b3": f"{TRACE}-{SPAN}-1"})
    assert ctx is not None and ctx.source == "b3" and ctx.trace_id.hex() == TRACE


def test_b3_single_and_multi_and_64_bit_trace_ids_are_left_padded() -> None:
    single = parse_b3_single(f"{TRACE[16:]}-{SPAN}-1-{SPAN}")
    assert single is not None and single.trace_id.hex() == "0" * 16 + TRACE[16:]
    assert parse_b3_single("1") is None  # sampling-only: no context, not an error
    multi = extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "0"})
    assert multi is not None and multi.source == "x-b3" and not multi.sampled
    with pytest.raises(Invalid):
        parse_b3_single(f"{TRACE}-{SPAN}-x")


def test_jaeger_uber_trace_id_accepts_short_ids_and_url_encoded_colons() -> None:
    ctx = parse_uber("abc%3A1f%3A0%3A1")
    assert ctx.trace_id.hex() == "0" * 29 + "abc" and ctx.parent_id.hex() == "0" * 14 + "1f"
    for bad in ("0:1f:0:1", "abc:0:0:1", "abc:1f:0", f"{'a' * 33}:1f:0:1", "xyz:1f:0:1"):
        with pytest.raises(Invalid):
            parse_uber(bad)


def test_grpc_trace_bin_metadata_is_decoded() -> None:
    raw = b"\x00\x00" + bytes.fromhex(TRACE) + b"\x01" + bytes.fromhex(SPAN) + b"\x02\x01"
    ctx = parse_grpc_trace_bin(base64.b64encode(raw).decode())
    assert (ctx.trace_id.hex(), ctx.parent_id.hex(), ctx.sampled) == (TRACE, SPAN, True)
    zero = b"\x00\x00" + bytes(16) + b"\x01" + bytes.fromhex(SPAN)
    for bad in ("!!!", base64.b64encode(b"\x01" + raw[1:]).decode(), base64.b64encode(zero).decode()):
        with pytest.raises(Invalid):
            parse_grpc_trace_bin(bad)


def test_x_request_id_names_a_trace_but_no_parent() -> None:
    a, b = parse_request_id("req-42"), parse_request_id("req-42")
    assert a.trace_id == b.trace_id and a.parent_id == b"" and any(a.trace_id)
    assert parse_request_id("req-43").trace_id != a.trace_id
    with pytest.raises(Invalid):
        parse_request_id("x" * 500)
    with pytest.raises(Invalid):
        parse_request_id("bad\nid")


def test_oversized_and_non_string_header_values_are_refused_before_parsing() -> None:
    before = invalid("traceparent", "too_long")
    assert extract({"traceparent": "0" * 5000}) is None
    assert invalid("traceparent", "too_long") == before + 1
    assert extract({"traceparent": 12}) is None
    assert extract({}) is None

"""The per-entry path's own bookkeeping: contexts counted per batch, workloads compared by every field,
the delay model's running statistics equal to sorting the gaps afresh."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from prometheus_client import REGISTRY

from wiretide.tracer.assemble import Assembler
from wiretide.tracer.delays import (
    MAD_TO_SIGMA,
    MAX_SAMPLES,
    MIN_SAMPLES,
    MIN_SPREAD_FRACTION,
    MIN_SPREAD_MS,
    REFRESH_EVERY,
    Gaps,
    _centre,
)
from wiretide.tracer.propagation import Context, count_contexts, extract
from wiretide.tracer.spans import Workload

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _contexts(header: str) -> float:
    value = REGISTRY.get_sample_value("wiretide_tracer_propagated_contexts_total", {"header": header})
    return value or 0.0


def test_contexts_counted_into_a_batch_reach_the_metric_when_handed_over() -> None:
    counts: dict[str, int] = {}
    before = _contexts("traceparent")
    assert extract({"traceparent": TRACEPARENT}, counts) is not None
    assert extract({"b3": "4bf92f3577b34da6-00f067aa0ba902b7-1"}, counts) is not None
    assert counts == {"traceparent": 1, "b3": 1} and _contexts("traceparent") == before
    count_contexts(counts)
    assert counts == {} and _contexts("traceparent") == before + 1


def test_the_assembler_counts_each_context_it_finds_once_per_drain() -> None:
    entry = {
        "id": "e1", "protocol": "http", "method": "GET", "path": "/", "status": 200,
        "timestamp": 1_000_000_000, "elapsed_us": 10,
        "src": {"ip": "10.0.0.1", "port": 40000}, "dst": {"ip": "10.0.0.2", "port": 80},
        "request": {"headers": {"traceparent": TRACEPARENT}},
    }  # fmt: skip
    before = _contexts("traceparent")
    assembler = Assembler()
    spans = assembler.add(entry)
    assert spans[0].context is not None and spans[0].context.source == "traceparent"
    assembler.flush()
    assembler.drain()
    assert _contexts("traceparent") == before + 1
    assembler.drain()
    assert _contexts("traceparent") == before + 1


def test_a_context_is_frozen_and_compares_by_value() -> None:
    ctx = Context(b"\1" * 16, b"\2" * 8, "traceparent")
    assert ctx == Context(b"\1" * 16, b"\2" * 8, "traceparent", True, "")
    assert hash(ctx) == hash(Context(b"\1" * 16, b"\2" * 8, "traceparent"))
    assert ctx != Context(b"\1" * 16, b"\2" * 8, "traceparent", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.source = "b3"  # type: ignore[misc]


_BASE = Workload("api", "shop", "api-0", "node-a", "Deployment", "api", 7, "python", "c1", True, False, "")
_OTHER_VALUES: dict[str, Any] = {
    "service_name": "web", "namespace": "other", "pod": "api-1", "node": "node-b",
    "workload_kind": "StatefulSet", "workload_name": "web", "pid": 8, "process_name": "java",
    "container_id": "c2", "known": False, "learned": True, "address": "10.0.0.9",
}  # fmt: skip


def test_workloads_are_equal_exactly_when_every_field_is() -> None:
    assert {f.name for f in dataclasses.fields(Workload)} == set(_OTHER_VALUES)
    same = dataclasses.replace(_BASE)
    assert same is not _BASE and same == _BASE and hash(same) == hash(_BASE)
    assert (same != _BASE) is False  # the inverse of the written-out `__eq__`
    for name, value in _OTHER_VALUES.items():
        other = dataclasses.replace(_BASE, **{name: value})
        assert other != _BASE and (other == _BASE) is False, name
    assert _BASE != ("api", "shop") and {_BASE: 1}[same] == 1


def _centre_by_sorting(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2]
    deviations = sorted(abs(v - mid) for v in ordered)
    mad = deviations[len(deviations) // 2] * MAD_TO_SIGMA
    return mid, max(mad, MIN_SPREAD_MS, abs(mid) * MIN_SPREAD_FRACTION)


@pytest.mark.parametrize("seed", range(6))
def test_the_median_and_spread_equal_those_of_the_gaps_sorted_afresh(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(300):
        n = rnd.randint(1, MAX_SAMPLES)
        small, wide = float(rnd.randint(-3, 3)), rnd.randint(-2_000, 9_000_000) / 1e6
        values = [rnd.choice((small, wide, float(rnd.randint(-3, 3)))) for _ in range(n)]
        assert _centre(values) == _centre_by_sorting(values)
    gaps = Gaps()
    before: list[float] = []
    after: list[float] = []
    for i in range(3 * MAX_SAMPLES):
        b, a = rnd.randint(0, 9_000_000) / 1e6, float(rnd.randint(0, 4))
        gaps.add(b, a)
        before, after = [*before, b][-MAX_SAMPLES:], [*after, a][-MAX_SAMPLES:]
        if i + 1 == MIN_SAMPLES or (i + 1 > MIN_SAMPLES and (i + 1 - MIN_SAMPLES) % REFRESH_EVERY == 0):
            assert (gaps.before_mid, gaps.before_spread) == _centre_by_sorting(before)
            assert (gaps.after_mid, gaps.after_spread) == _centre_by_sorting(after)

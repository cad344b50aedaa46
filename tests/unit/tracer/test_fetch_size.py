"""The tracer decodes at most about `FETCH_BYTES` of EntryBatches at once, however large they are."""

from __future__ import annotations

from wiretide.tracer.service import FETCH_BATCH, FETCH_BYTES, FetchSize


def test_the_first_fetch_asks_for_one_message() -> None:
    assert FetchSize().messages == 1


def test_a_burst_of_large_batches_is_fetched_a_few_at_a_time() -> None:
    size = FetchSize()
    burst = [512 << 10] * FETCH_BATCH  # 64 batches of 256 entries of ~2 KB: 32 MiB in one fetch
    size.seen(burst)
    assert size.messages * (512 << 10) <= FETCH_BYTES
    assert size.messages >= 1


def test_a_message_larger_than_the_budget_is_still_fetched_alone() -> None:
    size = FetchSize()
    size.seen([FETCH_BYTES * 3])
    assert size.messages == 1


def test_small_batches_are_fetched_up_to_the_message_cap() -> None:
    size = FetchSize()
    size.seen([300, 500])
    assert size.messages == FETCH_BATCH


def test_an_empty_fetch_keeps_the_size_asked_for() -> None:
    size = FetchSize()
    size.seen([1 << 20] * 2)
    before = size.messages
    size.seen([])
    assert size.messages == before

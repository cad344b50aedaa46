"""Cron with seconds: the next firing time of real schedules, and strings that do not parse are errors
naming the field."""

from __future__ import annotations

import datetime as dt

import pytest

from wiretide.agents.cron import CronError, parse_cron

T0 = dt.datetime(2024, 2, 28, 23, 59, 58, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("* * * * * *", T0, dt.datetime(2024, 2, 28, 23, 59, 59, tzinfo=dt.UTC)),
        ("*/10 * * * * *", T0, dt.datetime(2024, 2, 29, 0, 0, 0, tzinfo=dt.UTC)),
        ("0 0 12 * * mon-fri", T0, dt.datetime(2024, 2, 29, 12, 0, 0, tzinfo=dt.UTC)),
        ("30 15 10 1 mar *", T0, dt.datetime(2024, 3, 1, 10, 15, 30, tzinfo=dt.UTC)),
        ("0 0 0 29 feb *", T0, dt.datetime(2024, 2, 29, 0, 0, 0, tzinfo=dt.UTC)),
        ("0 0 0 * * 7", T0, dt.datetime(2024, 3, 3, 0, 0, 0, tzinfo=dt.UTC)),
        ("5 * * * *", T0, dt.datetime(2024, 2, 29, 0, 5, 0, tzinfo=dt.UTC)),
        ("0 0 0 1 * sun", T0, dt.datetime(2024, 3, 1, 0, 0, 0, tzinfo=dt.UTC)),
    ],
)
def test_the_next_run_is_the_first_matching_second_after(
    text: str, after: dt.datetime, expected: dt.datetime
) -> None:
    assert parse_cron(text).next_after(after) == expected


def test_a_date_that_never_comes_never_fires() -> None:
    assert parse_cron("0 0 0 30 feb *").next_after(T0) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has 0 fields"),
        ("* * * *", "has 4 fields"),
        ("61 * * * * *", "second: 61 is outside 0-59"),
        ("* * 24 * * *", "hour: 24 is outside 0-23"),
        ("* * * 0 * *", "day of month: 0 is outside 1-31"),
        ("* * * * foo *", "month: 'foo' is not a number or a name"),
        ("*/0 * * * * *", "second: step '0' must be a positive number"),
        ("* 30-10 * * * *", "minute: range '30-10' runs backwards"),
        ("* 1,,2 * * * *", "minute: empty item"),
    ],
)
def test_a_string_that_does_not_parse_names_the_field(text: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(text)

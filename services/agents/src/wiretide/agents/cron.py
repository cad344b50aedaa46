"""Cron expressions with seconds, for `jobs.schedule(tag, cron, fn)`.

Six fields, `second minute hour day-of-month month day-of-week`, each `*`, a number, a range `a-b`,
a list `a,b`, a step `*/n` or `a-b/n`; month and weekday names (`jan`, `mon`) are accepted, and
weekday 7 is Sunday as 0 is. As in Vixie cron, when both day fields are restricted a day matches
if either does. Five fields (no seconds) are accepted too and mean second 0.

Rule: a string that does not parse is a `CronError` naming the field and the problem, never a
schedule that silently never fires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final


class CronError(ValueError):
    """A cron string that does not parse; the message names the field."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names for low, low+1, ... (months from 1, weekdays from 0)


FIELDS: Final = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field(
        "month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    ),
    _Field("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
# How far ahead `next_after` looks before it says a schedule never fires (Feb 30 never comes).
SEARCH_YEARS: Final = 5
MAX_TEXT: Final = 256  # a cron string longer than this is refused, not parsed


@dataclass(frozen=True, slots=True)
class Cron:
    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month is `*`
    any_weekday: bool  # day-of-week is `*`

    def _day_matches(self, day: dt.date) -> bool:
        weekday = (day.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday in self.weekdays
        if self.any_weekday:
            return day.day in self.days
        return day.day in self.days or weekday in self.weekdays

    def next_after(self, when: dt.datetime) -> dt.datetime | None:
        """The first firing time strictly after `when` (same timezone), or None if it never fires."""
        t = when.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit = when + dt.timedelta(days=366 * SEARCH_YEARS)
        secs, mins, hours = sorted(self.seconds), sorted(self.minutes), sorted(self.hours)
        while t <= limit:
            if t.month not in self.months or not self._day_matches(t.date()):
                t = (t + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if t.hour not in self.hours:
                later = [h for h in hours if h > t.hour]
                if not later:
                    t = (t + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0)
                    continue
                t = t.replace(hour=later[0], minute=0, second=0)
            if t.minute not in self.minutes:
                later = [m for m in mins if m > t.minute]
                if not later:
                    t = (t + dt.timedelta(hours=1)).replace(minute=0, second=0)
                    continue
                t = t.replace(minute=later[0], second=0)
            if t.second not in self.seconds:
                later = [s for s in secs if s > t.second]
                if not later:
                    t = (t + dt.timedelta(minutes=1)).replace(second=0)
                    continue
                t = t.replace(second=later[0])
            return t
        return None


def _value(text: str, field: _Field) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.low
    if not text.isdigit():
        raise CronError(f"{field.name}: {text!r} is not a number" + (" or a name" if field.names else ""))
    value = int(text)
    if not field.low <= value <= field.high:
        raise CronError(f"{field.name}: {value} is outside {field.low}-{field.high}")
    return value


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field.name}: empty item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field.name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):  # Quartz spells "any day" as ?
            low, high = field.low, field.high
        elif "-" in base:
            a, _, b = base.partition("-")
            low, high = _value(a, field), _value(b, field)
            if low > high:
                raise CronError(f"{field.name}: range {base!r} runs backwards")
        else:
            low = _value(base, field)
            high = field.high if slash else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> Cron:
    """Parse six fields (or five, without seconds); raise CronError naming what is wrong."""
    if not isinstance(text, str):
        raise CronError(f"a cron string is text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise CronError(f"cron string longer than {MAX_TEXT} characters")
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise CronError(
            f"{text!r} has {len(parts)} fields; expected 6: second minute hour day-of-month month day-of-week"
        )
    sets = [_parse_field(p, f) for p, f in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[5])
    return Cron(
        text=text,
        seconds=sets[0],
        minutes=sets[1],
        hours=sets[2],
        days=sets[3],
        months=sets[4],
        weekdays=weekdays,
        any_day=parts[3] == "*" or parts[3] == "?",
        any_weekday=parts[5] == "*" or parts[5] == "?",
    )

"""KFL's runtime values and the operators on them, with CEL's error rule.

Rule: a missing field, a type mismatch, an overflow or a division by zero yields the single
`ERROR` value instead of raising; operators propagate it, `&&`/`||` absorb it when the other side
decides, and a filter whose result is not `true` does not match.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from wiretide.common.kfl.errors import KflError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
NS_PER_US: Final = 1_000
MAX_REGEX_LENGTH: Final = 1_024  # characters; a filter's regex is a pattern, not a program


class _Error:
    """The one error value (CEL's `error`, and what a missing field reads as)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ERROR"


ERROR: Final[_Error] = _Error()


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A point in time, ns since the Unix epoch (UTC)."""

    ns: int

    def __str__(self) -> str:
        seconds, frac = divmod(self.ns, 1_000_000_000)
        base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{base}.{frac:09d}Z" if frac else f"{base}Z"


@dataclass(frozen=True, slots=True)
class Duration:
    """A signed span of time in ns."""

    ns: int

    def __str__(self) -> str:
        return f"{self.ns / 1e9:g}s"


def is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def kind_of(value: object) -> str:
    """The CEL type name of a runtime value."""
    kinds = {
        bool: "bool", int: "int", float: "double", str: "string", bytes: "bytes", type(None): "null_type",
        list: "list", dict: "map", Timestamp: "timestamp", Duration: "duration",
    }  # fmt: skip
    return kinds.get(type(value), "error" if value is ERROR else "dyn")


def _as_duration_ns(value: object) -> int | None:
    """Durations compare with durations, and with ints read as microseconds (KFL2's elapsed_time unit)."""
    if type(value) is Duration:
        return value.ns
    if type(value) is int:
        return value * NS_PER_US
    return None


def deep_equal(a: object, b: object) -> bool:
    """Equality inside lists and maps: values of different types are simply unequal."""
    result = equal(a, b)
    return result is True


def equal(a: object, b: object) -> object:
    """CEL `==`: True/False for values of one type (int and double compare by value), ERROR across types."""
    if a is ERROR or b is ERROR:
        return ERROR
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list:
            assert isinstance(a, list) and isinstance(b, list)
            return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            assert isinstance(a, dict) and isinstance(b, dict)
            return a.keys() == b.keys() and all(deep_equal(v, b[k]) for k, v in a.items())
        return a == b
    if is_number(a) and is_number(b):
        return a == b
    if a is None or b is None:
        return False
    if ta is Duration or tb is Duration:
        da, db = _as_duration_ns(a), _as_duration_ns(b)
        return ERROR if da is None or db is None else da == db
    return ERROR


_ORDERED: Final = frozenset({bool, str, bytes})


def compare(a: Any, b: Any) -> int | _Error:
    """CEL ordering: -1/0/1 for two values of one ordered type (numbers across int/double), else ERROR."""
    ta, tb = type(a), type(b)
    if ta is _Error or tb is _Error:
        return ERROR
    if (ta is tb and ta in _ORDERED) or (is_number(a) and is_number(b)):
        return int(a > b) - int(a < b)
    if ta is Timestamp and tb is Timestamp:
        return int(a.ns > b.ns) - int(a.ns < b.ns)
    if ta is Duration or tb is Duration:
        da, db = _as_duration_ns(a), _as_duration_ns(b)
        if da is None or db is None:
            return ERROR
        return int(da > db) - int(da < db)
    return ERROR


def _int_result(value: int) -> int | _Error:
    return value if INT64_MIN <= value <= INT64_MAX else ERROR


def add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return _int_result(a + b)
    if is_number(a) and is_number(b) and (ta is float or tb is float):
        return float(a) + float(b)
    if ta is tb and ta in (str, bytes, list):
        return a + b
    if ta is Timestamp and tb is Duration:
        return Timestamp(a.ns + b.ns)
    if ta is Duration and tb is Timestamp:
        return Timestamp(a.ns + b.ns)
    if ta is Duration and tb is Duration:
        return Duration(a.ns + b.ns)
    return ERROR


def subtract(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return _int_result(a - b)
    if is_number(a) and is_number(b) and (ta is float or tb is float):
        return float(a) - float(b)
    if ta is Timestamp and tb is Duration:
        return Timestamp(a.ns - b.ns)
    if ta is Timestamp and tb is Timestamp:
        return Duration(a.ns - b.ns)
    if ta is Duration and tb is Duration:
        return Duration(a.ns - b.ns)
    return ERROR


def multiply(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return _int_result(a * b)
    if is_number(a) and is_number(b):
        return float(a) * float(b)
    return ERROR


def divide(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        if b == 0:
            return ERROR
        quotient = abs(a) // abs(b)  # CEL truncates toward zero
        return _int_result(quotient if (a < 0) == (b < 0) else -quotient)
    if is_number(a) and is_number(b):
        if b == 0:
            return ERROR
        return float(a) / float(b)
    return ERROR


def modulo(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        if b == 0:
            return ERROR
        remainder = abs(a) % abs(b)  # the sign follows the dividend, as in CEL and C
        return remainder if a >= 0 else -remainder
    return ERROR


def negate(a: Any) -> Any:
    if type(a) is int:
        return _int_result(-a)
    if type(a) is float:
        return -a
    if type(a) is Duration:
        return Duration(-a.ns)
    return ERROR


_DURATION_UNITS: Final = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000,
                          "ms": 1_000_000, "us": 1_000, "µs": 1_000, "ns": 1}  # fmt: skip
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_TIMESTAMP_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_duration(text: str) -> Duration | None:
    """Go/CEL duration syntax: an optional sign and number-unit pairs, e.g. "250ms", "1h30m", "-1.5s"."""
    body = text
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return Duration(0)
    if not body:
        return None
    total = 0
    at = 0
    for part in _DURATION_PART.finditer(body):
        if part.start() != at:
            return None
        number, unit = part.group(1), part.group(2)
        whole, _, frac = number.partition(".")
        scale = _DURATION_UNITS[unit]
        total += int(whole or "0") * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
        at = part.end()
    if at != len(body):
        return None
    total *= sign
    return Duration(total) if INT64_MIN <= total <= INT64_MAX else None


def parse_timestamp(text: str) -> Timestamp | None:
    """RFC 3339, e.g. "2026-03-14T22:00:00Z" or "2026-03-14T22:00:00.123+01:00"."""
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError:
        return None
    offset = 0
    if zone not in ("Z", "z"):
        offset = (int(zone[1:3]) * 60 + int(zone[4:6])) * 60 * (1 if zone[0] == "+" else -1)
    seconds = int(moment.timestamp()) - offset
    return Timestamp(seconds * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0))


def compile_regex(pattern: str, pos: int) -> re.Pattern[str]:
    """Compile a user regex once, refusing what could take exponential time on hostile input."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise KflError(f"regex is longer than {MAX_REGEX_LENGTH} characters", pos, "shorten the pattern")
    if _NESTED_QUANTIFIER.search(pattern) or _BACKREFERENCE.search(pattern):
        hint = "patterns like (a+)+ or \\1 can take exponential time; simplify the pattern"
        raise KflError("regex uses a nested quantifier or a back-reference", pos, hint)
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise KflError(
            f"invalid regex: {exc.msg}", pos, 'regexes follow RE2 syntax, e.g. "^/api/v[0-9]+/"'
        ) from None


# A quantified group that itself contains a quantifier: (a+)+, (a*)*, (x|y+){2,} … the shapes behind
# catastrophic backtracking. Conservative: some harmless patterns are refused too, with a clear hint.
_NESTED_QUANTIFIER: Final = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d*,\d*\})")
_BACKREFERENCE: Final = re.compile(r"\\[1-9]|\(\?P=")


def to_string(value: Any) -> Any:
    """CEL `string(x)`."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return repr(value)
    if type(value) is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return ERROR
    if type(value) is Timestamp or type(value) is Duration:
        return str(value)
    return ERROR


def to_int(value: Any) -> Any:
    """CEL `int(x)`."""
    if type(value) is int:
        return value
    if type(value) is float:
        if math.isnan(value) or not INT64_MIN <= value <= INT64_MAX:
            return ERROR
        return int(value)
    if type(value) is str:
        try:
            return _int_result(int(value, 10))
        except ValueError:
            return ERROR
    if type(value) is Timestamp:
        return value.ns // 1_000_000_000
    return ERROR


def to_double(value: Any) -> Any:
    """CEL `double(x)`."""
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    if type(value) is str:
        try:
            return float(value)
        except ValueError:
            return ERROR
    return ERROR

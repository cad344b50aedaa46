"""Header maps: HTTP field names are case-insensitive (RFC 9110 §5.1), so KFL looks them up that way.

Rule: entries keep header names as they were stored (the dissector writes HTTP/2's lower case and
folds HTTP/1's); a lookup below one of `CASELESS_MAPS` ignores case — the lower-case key first, then
the first key, in document order, that equals it ignoring case. Every back end reads this one rule:
the Python predicate applies it, and SQL and MongoDB leave such lookups to that predicate.
"""

from __future__ import annotations

from typing import Any, Final

from wiretide.common.kfl.ast import PathKey

# Maps from header names to values (trailers are header fields too: RFC 9110 §6.5).
CASELESS_MAPS: Final = frozenset(
    {("request", "headers"), ("response", "headers"), ("request", "trailers"), ("response", "trailers")}
)
MAP_DEPTH: Final = 2  # every caseless map sits two keys below the entry


def caseless_key(path: tuple[PathKey, ...]) -> tuple[PathKey, ...] | None:
    """`path` with its header name lower-cased when it reads below a header map, else None."""
    if len(path) <= MAP_DEPTH or path[:MAP_DEPTH] not in CASELESS_MAPS:
        return None
    name = path[MAP_DEPTH]
    if type(name) is not str:
        return None
    return (*path[:MAP_DEPTH], name.lower(), *path[MAP_DEPTH + 1 :])


def is_header_map(path: tuple[PathKey, ...]) -> bool:
    return path in CASELESS_MAPS


def lookup(headers: dict[Any, Any], lower: str) -> Any:
    """The value of header `lower` (a lower-case name) in `headers`, or None."""
    value = headers.get(lower)
    if value is not None:
        return value
    for name, found in headers.items():
        if found is not None and type(name) is str and name.lower() == lower:
            return found
    return None


def contains(headers: dict[Any, Any], name: str) -> bool:
    """`name in request.headers`, ignoring case."""
    lower = name.lower()
    return lower in headers or any(type(key) is str and key.lower() == lower for key in headers)

"""A KFL query, parsed and checked once, and the Python predicate compiled from it.

Rule: `parse_query` is the single entry point from text to a checked tree — every compiler (the
Python predicate here, SQL, MongoDB) starts from a `Query`, so all three read the same tree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wiretide.common.kfl.ast import Node
from wiretide.common.kfl.check import check
from wiretide.common.kfl.errors import KflError, Problem
from wiretide.common.kfl.evaluate import Compiler, fold_constant
from wiretide.common.kfl.parser import parse

Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Query:
    """A checked query: its text, its tree, and the warnings about the spellings it translated (KFL v1,
    Wireshark, shorthands), each with the KFL spelling in its hint."""

    text: str
    tree: Node
    locals_count: int
    warnings: tuple[Problem, ...]


def parse_query(text: str, *, now_ns: int | None = None, require_bool: bool = True) -> Query:
    """Parse and check; raises KflError. `now()` is read once, here (or taken from `now_ns`).
    A filter must be true or false; `require_bool=False` accepts any expression (for tools and tests)."""
    tree, warnings = parse(text)
    try:
        checked = check(tree, fold_constant, now_ns, require_bool=require_bool)
    except RecursionError:  # defence in depth: the parser bounds nesting well below the stack limit
        raise KflError("query nests too deeply", 0, "simplify the filter") from None
    if checked.warnings:  # the parser's translations and the checker's, in the order of the text
        unique = {(w.position, w.message): w for w in (*warnings, *checked.warnings)}
        warnings = sorted(unique.values(), key=lambda w: w.position)
    return Query(text, checked.node, checked.locals_count, tuple(warnings))


def as_query(query: str | Query, now_ns: int | None = None) -> Query:
    return query if isinstance(query, Query) else parse_query(query, now_ns=now_ns)


def compile_value(
    query: str | Query, *, now_ns: int | None = None, require_bool: bool = True
) -> Callable[[dict[str, Any]], Any]:
    """The raw evaluator: the KFL value of the query for an entry (True, False, ERROR, ...). Never raises
    on an entry made of JSON values; tests use it to see errors the predicate would swallow."""
    q = query if isinstance(query, Query) else parse_query(query, now_ns=now_ns, require_bool=require_bool)
    return Compiler(q.locals_count).build(q.tree)


def compile_predicate(query: str | Query, *, now_ns: int | None = None) -> Predicate:
    """A function entry -> bool for live streams and agents: True exactly when the query is true.
    Safe to call from several threads; it never raises."""
    q = as_query(query, now_ns)
    evaluate = compile_value(q)

    def predicate(entry: dict[str, Any]) -> bool:
        if type(entry) is not dict:
            return False
        try:
            return evaluate(entry) is True
        except (RecursionError, MemoryError, TypeError, ValueError, OverflowError):
            return False  # a pathological document (nested beyond the stack, non-JSON values) never matches

    if q.locals_count == 0:
        return predicate
    lock = threading.Lock()  # comprehension variables live in one frame per compiled query

    def serialised(entry: dict[str, Any]) -> bool:
        with lock:
            return predicate(entry)

    return serialised


def validate(text: str) -> list[Problem]:
    """Every problem with a query: at most one error (parsing stops there) and any number of warnings."""
    try:
        query = parse_query(text)
    except KflError as exc:
        return [exc.to_problem()]
    return list(query.warnings)

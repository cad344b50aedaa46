"""The MongoDB compiler: a KFL query becomes a filter document over the entry's own paths.

Rule: the filter never drops an entry the query accepts; whatever it cannot decide exactly is left
to the residual predicate, and `exact` is True only when there is no residual. MongoDB looks inside arrays,
so every leaf refuses arrays where the Entry has a scalar, and paths that hold lists in the Entry
(DNS questions, query values, bodies) are only ever used as a superset. A header name matches
ignoring case (headers.py), which a MongoDB path cannot: a header test narrows to entries that have
that header map and leaves the rest to the residual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from wiretide.common.kfl.ast import Binary, Call, Field, Literal, Logical, Node, PathKey, Unary
from wiretide.common.kfl.check import IS_NULL
from wiretide.common.kfl.headers import MAP_DEPTH
from wiretide.common.kfl.pushdown import (
    NEGATE,
    as_comparison,
    as_membership,
    as_string_test,
    conjuncts,
    homogeneous,
    residual,
    scalar_kind,
    stored_value,
    target_of,
)
from wiretide.common.kfl.query import Predicate, Query, as_query
from wiretide.common.kfl.variables import MAP_PATHS, TLS_FLAG, VARIABLES, dotted_path, is_scalar_path

Filter = dict[str, Any]

MATCH_ALL: Final[Filter] = {}
MATCH_NONE: Final[Filter] = {"$nor": [{}]}
_OPS: Final = {"==": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_TYPES: Final = {"string": "string", "number": "number", "integer": ["int", "long"]}
# A list where the entry has a scalar: MongoDB would match its elements, KFL reads it as a type mismatch.
_NOT_ARRAY: Final[Filter] = {"$not": {"$type": "array"}}
# End of string, read alike by PCRE (MongoDB) and Python ("$" also matches before a final newline).
_END: Final = r"(?![\s\S])"


@dataclass(frozen=True, slots=True)
class MongoPlan:
    """`collection.find(filter)` selects a superset of the matching entries; apply `residual` (when not
    None) to each returned document to get exactly the matches."""

    filter: Filter
    residual: Predicate | None = None
    exact: bool = True


@dataclass(frozen=True, slots=True)
class _Pair:
    t: Filter
    f: Filter
    exact: bool


_UNKNOWN: Final = _Pair(MATCH_ALL, MATCH_ALL, exact=False)


def _join(word: str, filters: list[Filter], unit: Filter, zero: Filter) -> Filter:
    kept: list[Filter] = []
    for item in filters:
        if item == zero:
            return zero
        if item != unit and item not in kept:
            kept.append(item)
    if not kept:
        return unit
    return kept[0] if len(kept) == 1 else {word: kept}


def _and(*filters: Filter) -> Filter:
    return _join("$and", list(filters), MATCH_ALL, MATCH_NONE)


def _or(*filters: Filter) -> Filter:
    return _join("$or", list(filters), MATCH_NONE, MATCH_ALL)


def _mongo_path(path: tuple[PathKey, ...]) -> str | None:
    """A dotted MongoDB path, or None when a key cannot be spelled as one."""
    if not path or any(
        type(k) is not str or not k or "." in k or k.startswith("$") or k.isdigit() for k in path
    ):
        return None
    return ".".join(str(k) for k in path)


class _MongoCompiler:
    def pair(self, node: Node) -> _Pair:
        if isinstance(node, Literal):
            if node.value is True:
                return _Pair(MATCH_ALL, MATCH_NONE, exact=True)
            if node.value is False:
                return _Pair(MATCH_NONE, MATCH_ALL, exact=True)
            return _Pair(MATCH_NONE, MATCH_NONE, exact=True)
        if isinstance(node, Logical):
            pairs = [self.pair(o) for o in node.operands]
            exact = all(p.exact for p in pairs)
            if node.op == "&&":
                return _Pair(_and(*(p.t for p in pairs)), _or(*(p.f for p in pairs)), exact)
            return _Pair(_or(*(p.t for p in pairs)), _and(*(p.f for p in pairs)), exact)
        if isinstance(node, Unary) and node.op == "!":
            inner = self.pair(node.operand)
            return _Pair(inner.f, inner.t, inner.exact)
        if isinstance(node, Field):
            return self.flag(node)
        if (comparison := as_comparison(node)) is not None:
            return self.compare(comparison.field, comparison.op, comparison.value)
        if (membership := as_membership(node)) is not None:
            return self.member(*membership)
        if (test := as_string_test(node)) is not None:
            return self.string_test(*test)
        if (listed := _listed(node)) is not None:
            return listed
        if isinstance(node, Call) and node.function in (IS_NULL, "has") and isinstance(node.args[0], Field):
            return self.presence(node.args[0], present=node.function == "has")
        return _UNKNOWN

    @staticmethod
    def flag(node: Field) -> _Pair:
        variable = VARIABLES.get(node.variable) if node.variable else None
        if variable is None or variable.flag is None:
            return _UNKNOWN
        protocols = sorted(variable.flag)
        if variable.name == TLS_FLAG:
            either = [{"protocol": {"$in": protocols}}, {"tls": {"$type": "object"}}]
            return _Pair({"$or": either}, {"$nor": either}, exact=True)
        return _Pair({"protocol": {"$in": protocols}}, {"protocol": {"$nin": protocols}}, exact=True)

    @staticmethod
    def locate(field: Field) -> tuple[str, str | None, Filter, bool] | None:
        """(path, convert, protocol guard, exact) for a field the document holds directly."""
        target = target_of(field)
        if target is None:
            return None
        path = _mongo_path(target.path)
        if path is None:
            return None
        guard = MATCH_ALL if target.protocols is None else {"protocol": {"$in": sorted(target.protocols)}}
        return path, target.convert, guard, is_scalar_path(target.path)

    def compare(self, field: Field, op: str, value: Any) -> _Pair:
        found = self.locate(field)
        if found is None:
            return _caseless(field, when_true=True, when_false=True)
        path, convert, guard, scalar = found
        stored = stored_value(value, convert)
        kind = scalar_kind(stored)
        if kind is None:
            return _UNKNOWN
        typed = _TYPES["integer" if convert else kind]

        def leaf(operator: str) -> Filter:
            condition: dict[str, Any] = {_OPS[operator]: stored, **_NOT_ARRAY}
            if operator == "!=" or convert:
                condition["$type"] = typed  # $ne alone also matches a missing field or another type
            return _and(guard, {path: condition})

        return _Pair(leaf(op), leaf(NEGATE[op]) if scalar else MATCH_ALL, exact=scalar)

    def member(self, field: Field, values: list[Any]) -> _Pair:
        found = self.locate(field)
        if found is None:
            return _caseless(field, when_true=True, when_false=True)
        path, convert, guard, scalar = found
        same = homogeneous(values, convert)
        if same is None:
            return _Pair(MATCH_NONE, MATCH_ALL, exact=False) if not values else _UNKNOWN
        stored, kind = same
        typed = _TYPES["integer" if convert else kind]
        inside: dict[str, Any] = {"$in": stored, **_NOT_ARRAY}
        if convert:
            inside["$type"] = typed
        t = _and(guard, {path: inside})
        f = _and(guard, {path: {"$nin": stored, "$type": typed, **_NOT_ARRAY}})
        return _Pair(t, f if scalar else MATCH_ALL, exact=scalar)

    def string_test(self, field: Field, function: str, needle: str) -> _Pair:
        found = self.locate(field)
        if found is None or found[1] is not None:
            return _caseless(field, when_true=True, when_false=True)
        path, _, guard, scalar = found
        escaped = re.escape(needle)
        pattern = {"contains": escaped, "startsWith": r"\A" + escaped, "endsWith": escaped + _END}[function]
        t = _and(guard, {path: {"$regex": pattern, **_NOT_ARRAY}})
        f = _and(guard, {path: {"$type": "string", "$not": {"$regex": pattern}}}, {path: _NOT_ARRAY})
        return _Pair(t, f if scalar else MATCH_ALL, exact=scalar)

    def presence(self, field: Field, *, present: bool) -> _Pair:
        found = self.locate(field)
        if found is None or found[2] != MATCH_ALL:
            return _caseless(field, when_true=present, when_false=not present)
        path, _, _, scalar = found
        if not (scalar or dotted_path(field.path) in MAP_PATHS):
            return _UNKNOWN
        there, absent = {path: {"$ne": None}}, {path: {"$eq": None}}
        return _Pair(there, absent, exact=True) if present else _Pair(absent, there, exact=True)


def _caseless(field: Field, *, when_true: bool, when_false: bool) -> _Pair:
    """A test below a header map: where it needs a value, the entry must hold that map (a superset)."""
    if not field.caseless:
        return _UNKNOWN
    holder = {dotted_path(field.path[:MAP_DEPTH]): {"$type": "object"}}
    return _Pair(holder if when_true else MATCH_ALL, holder if when_false else MATCH_ALL, exact=False)


# List variables whose members sit at these document paths (MongoDB looks into the arrays on the way).
_LIST_PATHS: Final = {
    "dns_questions": ("request.questions.name",),
    "dns_question_types": ("request.questions.type",),
    "dns_answers": ("response.answers.data",),
    "namespaces": tuple(
        f"{side}.{where}namespace" for side in ("src", "dst") for where in ("", "pod.", "service.")
    ),
    "pods": ("src.pod.name", "dst.pod.name"),
    "services": ("src.service.name", "dst.service.name"),
}


def _listed(node: Node) -> _Pair | None:
    """`"x" in dns_questions` and friends: a superset (any array element, any end), never exact."""
    if not (isinstance(node, Binary) and node.op == "in" and isinstance(node.right, Field)):
        return None
    paths = _LIST_PATHS.get(node.right.variable or "")
    if paths is None or not isinstance(node.left, Literal) or type(node.left.value) is not str:
        return None
    return _Pair(_or(*({path: {"$eq": node.left.value}} for path in paths)), MATCH_ALL, exact=False)


def compile_mongo(query: str | Query, *, now_ns: int | None = None) -> MongoPlan:
    """A MongoDB filter over the entry document; the rest becomes the residual. Raises KflError."""
    q = as_query(query, now_ns)
    compiler = _MongoCompiler()
    filters: list[Filter] = []
    leftovers: list[Node] = []
    for part in conjuncts(q.tree):
        pair = compiler.pair(part)
        filters.append(pair.t)
        if not pair.exact:
            leftovers.append(part)
    return MongoPlan(_and(*filters), residual(q, leftovers), exact=not leftovers)

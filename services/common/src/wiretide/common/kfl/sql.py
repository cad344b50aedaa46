"""The SQLite compiler: a KFL query becomes a WHERE clause over the store's indexed columns.

Rule: the WHERE clause never drops an entry the query accepts; whatever it cannot decide exactly
is left to the residual predicate, and `exact` is True only when there is no residual.

Column contract (what the store must write): each mapped column holds the value the entry has at
that variable's document path when it is a str, int (not bool) or float, and NULL otherwise —
timestamps as int ns, `elapsed_time` as the int µs of `elapsed_us` — compared with SQLite's BINARY
collation. Declare the columns without a type affinity (or write only values of the declared type):
affinity would turn the text "500" into the integer 500, which KFL does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from wiretide.common.kfl.ast import Call, Field, Literal, Logical, Node, Unary
from wiretide.common.kfl.check import IS_NULL
from wiretide.common.kfl.errors import KflError
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
from wiretide.common.kfl.variables import TLS_FLAG, VARIABLES

_SQL_OPS: Final = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_GUARDS: Final = {
    "string": "typeof({c}) = 'text'",
    "number": "typeof({c}) IN ('integer', 'real')",
    "integer": "typeof({c}) = 'integer'",
}
_INT64: Final = (-(2**63), 2**63 - 1)
_MAX_CODE_POINT: Final = 0x10FFFF


@dataclass(frozen=True, slots=True)
class SqlPlan:
    """`WHERE {where}` with `params` bound in order selects a superset of the matching entries;
    apply `residual` (when not None) to each decoded entry to get exactly the matches."""

    where: str
    params: list[Any] = field(default_factory=list)
    residual: Predicate | None = None
    exact: bool = True


@dataclass(frozen=True, slots=True)
class _Frag:
    sql: str
    params: tuple[Any, ...] = ()


TRUE: Final = _Frag("1")
FALSE: Final = _Frag("0")


@dataclass(frozen=True, slots=True)
class _Pair:
    """`t` holds whenever the node is true, `f` whenever it is false; exact when they hold only then."""

    t: _Frag
    f: _Frag
    exact: bool


_UNKNOWN: Final = _Pair(TRUE, TRUE, exact=False)


def _join(word: str, frags: list[_Frag], unit: _Frag, zero: _Frag) -> _Frag:
    kept: list[_Frag] = []
    for frag in frags:
        if frag == zero:
            return zero
        if frag != unit and frag not in kept:
            kept.append(frag)
    if not kept:
        return unit
    if len(kept) == 1:
        return kept[0]
    return _Frag("(" + f" {word} ".join(f.sql for f in kept) + ")", tuple(p for f in kept for p in f.params))


def _and(*frags: _Frag) -> _Frag:
    return _join("AND", list(frags), TRUE, FALSE)


def _or(*frags: _Frag) -> _Frag:
    return _join("OR", list(frags), FALSE, TRUE)


def _quote(name: str) -> str:
    if not name or "\x00" in name:
        raise KflError(f"invalid column name {name!r}", 0, "column names come from the store's mapping")
    return '"' + name.replace('"', '""') + '"'


def _fits(value: Any) -> bool:
    return type(value) is not int or _INT64[0] <= value <= _INT64[1]


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates do not exist in UTF-8 text
        if code <= _MAX_CODE_POINT:
            return "".join(chars) + chr(code)
    return None


class _SqlCompiler:
    __slots__ = ("columns",)

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = {key: _quote(name) for key, name in columns.items()}

    def column(self, field: Field) -> tuple[str, str | None, _Frag] | None:
        """(column, convert, protocol guard) for a field the store indexes."""
        target = target_of(field)
        if target is None:
            return None
        column = next((self.columns[k] for k in target.keys if k in self.columns), None)
        if column is None:
            return None
        guard = TRUE
        if target.protocols is not None:
            protocol = self.columns.get("protocol")
            if protocol is None:
                return None
            guard = self.protocol_in(protocol, target.protocols)
        return column, target.convert, guard

    @staticmethod
    def protocol_in(column: str, protocols: frozenset[str]) -> _Frag:
        values = tuple(sorted(protocols))
        return _Frag(f"{column} IN ({', '.join('?' * len(values))})", values)

    def pair(self, node: Node) -> _Pair:
        if isinstance(node, Literal):
            if node.value is True:
                return _Pair(TRUE, FALSE, exact=True)
            if node.value is False:
                return _Pair(FALSE, TRUE, exact=True)
            return _Pair(FALSE, FALSE, exact=True)
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
        if isinstance(node, Call) and node.function == IS_NULL:
            return _UNKNOWN  # a wrong-typed value is NULL in its column but not null in the entry
        return _UNKNOWN

    def flag(self, node: Field) -> _Pair:
        variable = VARIABLES.get(node.variable) if node.variable else None
        protocol = self.columns.get("protocol")
        if variable is None or variable.flag is None or protocol is None:
            return _UNKNOWN
        inside = self.protocol_in(protocol, variable.flag)
        outside = _Frag(f"({protocol} IS NULL OR {protocol} NOT IN ({', '.join('?' * len(variable.flag))}))",
                        inside.params)  # fmt: skip
        if variable.name == TLS_FLAG:  # also true for any entry with a `tls` object, which no column shows
            return _Pair(TRUE, outside, exact=False)
        return _Pair(inside, outside, exact=True)

    def compare(self, field: Field, op: str, value: Any) -> _Pair:
        found = self.column(field)
        if found is None:
            return _UNKNOWN
        column, convert, guard = found
        stored = stored_value(value, convert)
        kind = scalar_kind(stored)
        if kind is None or not _fits(stored):
            return _UNKNOWN
        typed = _GUARDS["integer" if convert else kind].format(c=column)
        t = _and(guard, _Frag(f"({typed} AND {column} {_SQL_OPS[op]} ?)", (stored,)))
        f = _and(guard, _Frag(f"({typed} AND {column} {_SQL_OPS[NEGATE[op]]} ?)", (stored,)))
        return _Pair(t, f, exact=True)

    def member(self, field: Field, values: list[Any]) -> _Pair:
        found = self.column(field)
        if found is None:
            return _UNKNOWN
        column, convert, guard = found
        same = homogeneous(values, convert)
        if same is None or not all(_fits(x) for x in same[0]):
            return _Pair(FALSE, TRUE, exact=False) if not values else _UNKNOWN
        stored, kind = same
        typed = _GUARDS["integer" if convert else kind].format(c=column)
        marks = ", ".join("?" * len(stored))
        t = _and(guard, _Frag(f"({typed} AND {column} IN ({marks}))", tuple(stored)))
        f = _and(guard, _Frag(f"({typed} AND {column} NOT IN ({marks}))", tuple(stored)))
        return _Pair(t, f, exact=True)

    def string_test(self, field: Field, function: str, needle: str) -> _Pair:
        found = self.column(field)
        if found is None or found[1] is not None:
            return _UNKNOWN
        column, _, guard = found
        typed = _GUARDS["string"].format(c=column)
        if function == "contains":
            if "\x00" in needle:
                return _UNKNOWN
            t = _Frag(f"({typed} AND instr({column}, ?) > 0)", (needle,))
            f = _Frag(f"({typed} AND instr({column}, ?) = 0)", (needle,))
            return _Pair(_and(guard, t), _and(guard, f), exact=True)
        if function == "startsWith":
            # A range: BINARY collation orders UTF-8 bytes, i.e. code points, and an index serves it.
            upper = _successor(needle)
            if upper is None:
                t = _Frag(f"({typed} AND {column} >= ?)", (needle,))
                f = _Frag(f"({typed} AND {column} < ?)", (needle,))
            else:
                t = _Frag(f"({typed} AND {column} >= ? AND {column} < ?)", (needle, upper))
                f = _Frag(f"({typed} AND ({column} < ? OR {column} >= ?))", (needle, upper))
            return _Pair(_and(guard, t), _and(guard, f), exact=True)
        if not needle:
            return _Pair(_and(guard, _Frag(typed)), FALSE, exact=True)
        if "\x00" in needle:
            return _UNKNOWN
        # SQLite's substr() stops counting at a NUL, so values holding one are left to the residual.
        nul = f"instr({column}, char(0)) > 0"
        t = _Frag(f"({typed} AND ({nul} OR substr({column}, ?) = ?))", (-len(needle), needle))
        f = _Frag(f"({typed} AND ({nul} OR substr({column}, ?) <> ?))", (-len(needle), needle))
        return _Pair(_and(guard, t), _and(guard, f), exact=False)


def compile_sql(query: str | Query, columns: Mapping[str, str], *, now_ns: int | None = None) -> SqlPlan:
    """Push what the indexed `columns` (KFL variable or document path -> column name) can decide
    into a WHERE clause; the rest becomes the residual. Raises KflError for a bad query."""
    q = as_query(query, now_ns)
    compiler = _SqlCompiler(columns)
    wheres: list[_Frag] = []
    leftovers: list[Node] = []
    for part in conjuncts(q.tree):
        pair = compiler.pair(part)
        wheres.append(pair.t)
        if not pair.exact:
            leftovers.append(part)
    where = _and(*wheres)
    return SqlPlan(where.sql, list(where.params), residual(q, leftovers), exact=not leftovers)

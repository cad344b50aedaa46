"""What the SQL and MongoDB compilers share: the leaf shapes a store can evaluate, and the residual.

Rule: a compiler translates each sub-expression into two conditions — one that holds whenever the
sub-expression is `true`, one whenever it is `false` (never for ERROR) — exactly where it can and
as a superset where it cannot; what is not exact is re-checked in Python by the residual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from wiretide.common.kfl.ast import Binary, Call, Field, Literal, Logical, Node, PathKey
from wiretide.common.kfl.query import Predicate, Query, compile_predicate
from wiretide.common.kfl.values import Duration, Timestamp, is_number
from wiretide.common.kfl.variables import ALIASES, VARIABLES, Variable, dotted_path

FLIP: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
NEGATE: Final = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
STRING_TESTS: Final = frozenset({"contains", "startsWith", "endsWith"})

# A document path that a simple variable reads, so `status == 500` pushes down like `status_code == 500`.
_VARIABLE_FOR_PATH: Final = {
    dotted_path(v.path): v.name
    for v in VARIABLES.values()
    if v.path and v.compute is None and v.convert is None and v.protocols is None and v.name not in ALIASES
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a field lives for a store: its keys (for a column mapping), its document path, and how
    its values are stored (`convert`), plus the protocols it is defined for."""

    keys: tuple[str, ...]
    path: tuple[PathKey, ...]
    convert: str | None
    protocols: frozenset[str] | None


def target_of(field: Field) -> Target | None:
    """A field a store can read directly, or None (computed variables, flags, header names: a store
    matches keys exactly, a header name ignoring case)."""
    if field.caseless:
        return None
    variable: Variable | None = VARIABLES.get(field.variable) if field.variable else None
    if variable is None:
        alias = _VARIABLE_FOR_PATH.get(field.key)
        keys = (field.key,) if alias is None else (alias, field.key)
        return Target(keys, field.path, None, None)
    if variable.compute is not None or variable.flag is not None:
        return None
    name = ALIASES.get(variable.name, variable.name)
    keys = (name, variable.name)
    return Target(tuple(dict.fromkeys(keys)), variable.path, variable.convert, variable.protocols)


@dataclass(frozen=True, slots=True)
class Comparison:
    field: Field
    op: str
    value: Any


def as_comparison(node: Node) -> Comparison | None:
    """`field op constant` or `constant op field` (op flipped), else None."""
    if not isinstance(node, Binary) or node.op not in FLIP:
        return None
    if isinstance(node.left, Field) and isinstance(node.right, Literal):
        return Comparison(node.left, node.op, node.right.value)
    if isinstance(node.right, Field) and isinstance(node.left, Literal):
        return Comparison(node.right, FLIP[node.op], node.left.value)
    return None


def as_membership(node: Node) -> tuple[Field, list[Any]] | None:
    if (isinstance(node, Binary) and node.op == "in" and isinstance(node.left, Field)
            and isinstance(node.right, Literal) and type(node.right.value) is list):  # fmt: skip
        return node.left, node.right.value
    return None


def as_string_test(node: Node) -> tuple[Field, str, str] | None:
    if not (isinstance(node, Call) and node.function in STRING_TESTS and isinstance(node.target, Field)):
        return None
    if len(node.args) == 1 and isinstance(node.args[0], Literal) and type(node.args[0].value) is str:
        return node.target, node.function, node.args[0].value
    return None


def stored_value(value: Any, convert: str | None) -> Any:
    """The constant as the store holds it (timestamps as int ns, durations as int µs), or None when
    no stored value can ever compare equal to it the way KFL does."""
    if convert == "timestamp":
        return value.ns if type(value) is Timestamp else None
    if convert == "duration_us":
        if type(value) is Duration:
            return value.ns // 1_000 if value.ns % 1_000 == 0 else None
        return value if type(value) is int else None
    if type(value) in (Timestamp, Duration):
        return None
    if type(value) is float and math.isnan(value):  # NaN equals nothing, orders against nothing
        return None
    return value


def scalar_kind(value: Any) -> str | None:
    """ "string" or "number" for a constant a store compares like KFL does; None otherwise."""
    if type(value) is str:
        return "string"
    if is_number(value):
        return "number"
    return None


def homogeneous(values: list[Any], convert: str | None) -> tuple[list[Any], str] | None:
    stored = [stored_value(x, convert) for x in values]
    kinds = {scalar_kind(x) for x in stored}
    if not stored or len(kinds) != 1 or None in kinds:
        return None
    return stored, kinds.pop()  # type: ignore[return-value]


def conjuncts(tree: Node) -> list[Node]:
    return list(tree.operands) if isinstance(tree, Logical) and tree.op == "&&" else [tree]


def residual(query: Query, parts: list[Node]) -> Predicate | None:
    """The predicate over the conjuncts a store could not decide exactly."""
    if not parts:
        return None
    tree = parts[0] if len(parts) == 1 else Logical("&&", tuple(parts), parts[0].pos)
    return compile_predicate(Query(query.text, tree, query.locals_count, query.warnings))

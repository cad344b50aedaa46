"""The KFL syntax tree: what the parser produces and every compiler consumes.

Rule: nodes are immutable values that carry the character offset they came from, so any later
stage can point at the part of the query it objects to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from wiretide.common.kfl.values import Duration, Timestamp

PathKey = str | int  # a map key (str) or a list index (int) on the way into the entry document


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant; `raw` marks an r"..." string (a regex in KFL v1 comparisons)."""

    value: Any
    pos: int
    raw: bool = False


@dataclass(frozen=True, slots=True)
class Ident:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Select:
    """`operand.field`."""

    operand: Node
    field: str
    pos: int


@dataclass(frozen=True, slots=True)
class Index:
    """`operand[index]`."""

    operand: Node
    index: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    """`function(args)` or, with a target, `target.function(args)`."""

    function: str
    target: Node | None
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "!" or "-"
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # == != < <= > >= in + - * / %
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Logical:
    """A flattened chain of `&&` or `||` (n-ary keeps long filters shallow)."""

    op: str  # "&&" or "||"
    operands: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Conditional:
    cond: Node
    then: Node
    otherwise: Node
    pos: int


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class MapLit:
    entries: tuple[tuple[Node, Node], ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Field:
    """A resolved reference into the entry (only the checker creates these).

    `key` names it for pushdown (a KFL variable such as "status_code", or a dotted document path
    such as "src.namespace"); `path` is where it lives in the entry document (empty when computed);
    `variable` is the KFL variable name when there is one. `caseless` marks a lookup below a header
    map (headers.py): its name in `path` is lower-cased and matched ignoring case.
    """

    key: str
    path: tuple[PathKey, ...]
    variable: str | None
    pos: int
    caseless: bool = False


@dataclass(frozen=True, slots=True)
class Local:
    """The variable of a comprehension macro (`list.exists(x, ...)`); `slot` numbers it in its query."""

    name: str
    slot: int
    pos: int


@dataclass(frozen=True, slots=True)
class Comprehension:
    """`target.exists(x, body)` and friends: exists, all, exists_one, filter, map."""

    macro: str
    target: Node
    variable: Local
    body: Node
    pos: int


def render(node: Node) -> str:
    """An unchecked tree written back as CEL text, for hints that show the canonical spelling."""
    if isinstance(node, Literal):
        value = node.value
        if type(value) is str:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if type(value) is bool:
            return "true" if value else "false"
        if value is None:
            return "null"
        if type(value) is Duration:
            return f'duration("{_go_duration(value.ns)}")'
        if type(value) is Timestamp:
            return f'timestamp("{value}")'
        return repr(value)
    if isinstance(node, Ident):
        return node.name.lstrip("@")  # checker-made loop variables start with '@', which no query can spell
    if isinstance(node, Select):
        return f"{_wrap(node.operand, _LOOSE)}.{node.field}"
    if isinstance(node, Index):
        return f"{_wrap(node.operand, _LOOSE)}[{render(node.index)}]"
    if isinstance(node, Call):
        args = ", ".join(render(arg) for arg in node.args)
        return (
            f"{_wrap(node.target, _LOOSE)}.{node.function}({args})"
            if node.target
            else f"{node.function}({args})"
        )
    if isinstance(node, Unary):
        return f"{node.op}{_wrap(node.operand, _LOOSE)}"
    if isinstance(node, Binary):
        return f"{_wrap(node.left, _COMPARISONS)} {node.op} {_wrap(node.right, _COMPARISONS)}"
    if isinstance(node, Logical):
        return f" {node.op} ".join(_wrap(o, (Logical, Conditional)) for o in node.operands)
    if isinstance(node, ListLit):
        return "[" + ", ".join(render(item) for item in node.items) + "]"
    return "…"


_LOOSE: Final = (Binary, Logical, Conditional, Unary)  # bind looser than member access
_COMPARISONS: Final = (Binary, Logical, Conditional)


def _wrap(node: Node | None, looser: tuple[type, ...]) -> str:
    if node is None:
        return ""
    text = render(node)
    return f"({text})" if isinstance(node, looser) else text


def _go_duration(ns: int) -> str:
    """Exact Go duration text in the largest whole unit: 50ms, 1500ms, 2m, 90m."""
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
                       ("ms", 1_000_000), ("us", 1_000), ("ns", 1)):  # fmt: skip
        if ns % size == 0:
            return f"{ns // size}{unit}"
    raise AssertionError("unreachable: every int is a whole number of ns")


Node = (
    Literal
    | Ident
    | Select
    | Index
    | Call
    | Unary
    | Binary
    | Logical
    | Conditional
    | ListLit
    | MapLit
    | Field
    | Local
    | Comprehension
)

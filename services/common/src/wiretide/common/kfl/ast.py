"""The KFL syntax tree: what the parser produces and every compiler consumes.

Rule: nodes are immutable values that carry the character offset they came from, so any later
stage can point at the part of the query it objects to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    `variable` is the KFL variable name when there is one.
    """

    key: str
    path: tuple[PathKey, ...]
    variable: str | None
    pos: int


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

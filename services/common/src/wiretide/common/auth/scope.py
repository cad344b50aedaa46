"""Namespace scopes: which entries a principal may see, as one rule applied three ways.

Rule: an entry is in a scope when at least one of its two ends (`src.namespace`, `dst.namespace`) is
one of the scope's namespaces — so a viewer scoped to `shop` never receives an entry whose both ends
are outside `shop`. The same rule is a KFL clause (pushed into the store's query, so limits and
counts are right) and a Python check (live streams, and a second look at every stored answer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from wiretide.common.kfl import parse_query

EVERY_NAMESPACE: Final = "*"  # in a token's namespaces: no restriction
_ENDS: Final = ("src", "dst")


@dataclass(frozen=True, slots=True)
class NamespaceScope:
    """`namespaces` None: every namespace; otherwise exactly these (possibly none at all)."""

    namespaces: frozenset[str] | None

    @classmethod
    def of(cls, names: Iterable[str] | None) -> NamespaceScope:
        """From a token's or claim's list; '*' anywhere (or None) means every namespace."""
        if names is None:
            return ALL_NAMESPACES
        cleaned = frozenset(n.strip() for n in names if n.strip())
        return ALL_NAMESPACES if EVERY_NAMESPACE in cleaned else cls(cleaned)

    @property
    def unrestricted(self) -> bool:
        return self.namespaces is None

    def to_list(self) -> list[str] | None:
        return None if self.namespaces is None else sorted(self.namespaces)

    def allows(self, entry: dict[str, Any]) -> bool:
        """True when one end of `entry` is in this scope."""
        if self.namespaces is None:
            return True
        for side in _ENDS:
            end = entry.get(side)
            if type(end) is dict and end.get("namespace") in self.namespaces:
                return True
        return False

    def kfl(self) -> str | None:
        """This scope as a KFL clause (None when unrestricted); `false` for the empty scope."""
        if self.namespaces is None:
            return None
        if not self.namespaces:
            return "false"
        names = orjson.dumps(sorted(self.namespaces)).decode()  # a JSON string list is a CEL list
        return f"src.namespace in {names} || dst.namespace in {names}"

    def restrict(self, query: str) -> str:
        """`query` narrowed to this scope, as KFL text the store (and the tracer) can push down.

        The user's text sits alone on its lines inside parentheses: a `//` comment ends at the
        newline, and the user's query has already parsed on its own (so its brackets balance and
        its strings close), which leaves the scope clause outside anything the user wrote.
        `check_restricted` verifies that shape on the parsed tree."""
        clause = self.kfl()
        if clause is None:
            return query
        if not query.strip():
            return clause
        return f"(\n{query}\n) && ({clause})"

    def predicate(self, inner: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
        """`inner`, and in this scope (the live stream's filter)."""
        if self.namespaces is None:
            return inner
        allows = self.allows
        return lambda entry: allows(entry) and inner(entry)


ALL_NAMESPACES: Final = NamespaceScope(None)
NO_NAMESPACES: Final = NamespaceScope(frozenset())


def check_restricted(scope: NamespaceScope, query: str) -> None:
    """Raise ValueError unless `scope.restrict(query)` parses as the user's query AND the scope clause
    (the defence behind `restrict`'s argument; the user's query must already be valid)."""
    clause = scope.kfl()
    if clause is None or not query.strip():
        return
    tree = parse_query(scope.restrict(query)).tree
    expected = parse_query(clause).tree
    operands = getattr(tree, "operands", ())
    if getattr(tree, "op", None) != "&&" or not operands or _shape(operands[-1]) != _shape(expected):
        raise ValueError("the query cannot be combined with the namespace scope")


def _shape(node: Any) -> Any:
    """A tree without source positions, for comparing two parses of the same clause."""
    fields = getattr(node, "__dataclass_fields__", None)
    if fields is None:
        if isinstance(node, tuple):
            return tuple(_shape(n) for n in node)
        return node
    return (type(node).__name__, *(_shape(getattr(node, f)) for f in fields if f != "pos"))

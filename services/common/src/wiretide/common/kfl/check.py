"""The KFL checker: binds names to variables or document paths, checks types, folds constants.

Rule: after checking, every name in the tree is a `Field` or a `Local`, every constant
sub-expression is a `Literal`, and every mistake a reader could spot without an entry (an unknown
name, a wrong argument, comparing an int with a string) has been reported with its position. A
name from elsewhere (a Wireshark display-filter field, a KFL v1 helper) is either translated with a
warning that shows the KFL spelling, or refused with an error that names the replacement.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from wiretide.common.kfl.ast import (
    Binary,
    Call,
    Comprehension,
    Conditional,
    Field,
    Ident,
    Index,
    ListLit,
    Literal,
    Local,
    Logical,
    MapLit,
    Node,
    PathKey,
    Select,
    Unary,
    render,
)
from wiretide.common.kfl.errors import KflError, Problem
from wiretide.common.kfl.headers import caseless_key
from wiretide.common.kfl.values import (
    ERROR,
    INT64_MAX,
    INT64_MIN,
    Duration,
    Timestamp,
    compile_regex,
    kind_of,
    parse_duration,
    parse_timestamp,
)
from wiretide.common.kfl.variables import ENTRY_FIELDS, VARIABLES, Kind, Variable, doc_kind
from wiretide.common.kfl.wireshark import DISPLAY_FIELDS, PROTOCOLS, DisplayField, spell

IS_NULL: Final = "@is_null"  # internal function: `x == null` reads as "x is missing or null"

# name -> (number of arguments, result type)
GLOBAL_FUNCTIONS: Final[dict[str, tuple[int, Kind]]] = {
    "size": (1, "int"), "has": (1, "bool"), "timestamp": (1, "timestamp"), "duration": (1, "duration"),
    "now": (0, "timestamp"), "map_get": (3, "dyn"), "string": (1, "string"), "int": (1, "int"),
    "double": (1, "double"), "matches": (2, "bool"), "contains": (2, "bool"), "startsWith": (2, "bool"),
    "endsWith": (2, "bool"),
}  # fmt: skip
METHODS: Final[dict[str, tuple[int, Kind]]] = {
    "contains": (1, "bool"), "startsWith": (1, "bool"), "endsWith": (1, "bool"), "matches": (1, "bool"),
    "size": (0, "int"), "lowerAscii": (0, "string"), "upperAscii": (0, "string"),
}  # fmt: skip
MACROS: Final[dict[str, Kind]] = {"exists": "bool", "all": "bool", "exists_one": "bool", "filter": "list",
                                  "map": "list"}  # fmt: skip
_STRING_METHODS: Final = frozenset(
    {"contains", "startsWith", "endsWith", "matches", "lowerAscii", "upperAscii"}
)
_NUMERIC: Final = frozenset({"int", "double"})
_ORDERED: Final = frozenset({"int", "double", "string", "bytes", "bool", "timestamp", "duration"})
MAX_COMPREHENSION_VARIABLES: Final = 16  # nested macros in one query; more is a query nobody can read

# Functions users bring from KFL v1, SQL or Python: (why it is not KFL, what to write instead).
_LIMIT: Final = (
    "a filter selects entries; how many come back is not part of it",
    "remove it and pass the limit beside the filter: GET /api/entries?q=…&limit=5, "
    "or wiretide query --limit 5",
)
_DATETIME: Final = ("KFL reads times with timestamp()", 'write timestamp("2026-03-14T22:00:00Z") (RFC 3339)')
REPLACED_FUNCTIONS: Final[dict[str, tuple[str, str]]] = {
    "limit": _LIMIT, "rlimit": _LIMIT, "top": _LIMIT, "head": _LIMIT,
    "leftOff": ("a filter selects entries; paging is not part of it",
                "use the API's before/after cursors (the `next` of an answer)"),
    "datetime": _DATETIME, "date": _DATETIME, "time": _DATETIME,
    "len": ("KFL measures with size()", "write size(x)"),
    "length": ("KFL measures with size()", "write size(x)"),
    "lower": ("KFL changes case with a method", "write x.lowerAscii()"),
    "upper": ("KFL changes case with a method", "write x.upperAscii()"),
    "ago": ("KFL subtracts from now()", 'write now() - duration("5m")'),
}  # fmt: skip
# Formats a datetime("...") argument may use (KFL v1 took JavaScript's en-US toLocaleString).
_DATETIME_FORMATS: Final = ("%m/%d/%Y, %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y", "%Y-%m-%d %H:%M:%S",
                            "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")  # fmt: skip
_FLIP: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ITEM: Final = "@item"  # the loop variable of a translated list test; no query can spell '@'
_TESTS: Final = frozenset({"contains", "startsWith", "endsWith", "matches"})
NS_PER_S: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Checked:
    """A checked tree: its result type, how many comprehension variables it uses, and the warnings
    about names it translated."""

    node: Node
    kind: Kind
    locals_count: int
    warnings: tuple[Problem, ...] = ()


Folder = Callable[[Node], Any]  # evaluates a constant tree (provided by the evaluator)


def check(tree: Node, folder: Folder, now_ns: int | None = None, *, require_bool: bool = True) -> Checked:
    checker = _Checker(folder, time.time_ns() if now_ns is None else now_ns)
    node, kind = checker.condition(tree)
    if require_bool and kind not in ("bool", "dyn"):
        raise KflError(f"a filter must be true or false, but this is {_a(kind)}", _pos(tree),
                       'compare it with something, e.g. status_code >= 500 or path == "/login"')  # fmt: skip
    return Checked(node, kind, checker.slots, tuple(checker.warnings))


def _record_outside(node: Call) -> KflError:
    """`record("name")` is replaced by a recording's selection before checking, where recordings are
    known (the gateway's queries, `wiretide analyze --filter` of a bundle); reaching here, it is misspelt
    or used elsewhere."""
    arg = node.args[0] if len(node.args) == 1 else None
    if not isinstance(arg, Literal) or not isinstance(arg.value, str):
        return KflError("record takes one string: the recording's name", node.pos, 'write record("errors")')
    return KflError(
        'record("name") selects a recording\'s entries only where recordings are known',
        node.pos,
        "use it in a query to Wiretide (UI, REST, WebSocket, wiretide query) or in "
        "wiretide analyze --filter of a recording bundle",
    )


def _pos(node: Node) -> int:
    return node.pos


def _a(kind: Kind) -> str:
    """The type name with its article: "an int", "a string"."""
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


_ALL_NAMES: Final = sorted({*VARIABLES, *ENTRY_FIELDS})
_DISPLAY_ROOTS: Final = frozenset(name.partition(".")[0] for name in DISPLAY_FIELDS)


class _Checker:
    __slots__ = ("folder", "now_ns", "scope", "slots", "warnings")

    def __init__(self, folder: Folder, now_ns: int) -> None:
        self.folder = folder
        self.now_ns = now_ns
        self.scope: dict[str, Local] = {}
        self.slots = 0
        self.warnings: list[Problem] = []

    def condition(self, node: Node) -> tuple[Node, Kind]:
        """Bind a node that must be true or false; a bare display-filter field asks for presence."""
        found = self.display(node)
        if found is None:
            return self.bind(node)
        spec, pos = found
        fields = [self.spelled(path, pos) for path in spec.fields]
        test: Node
        if spec.listed:
            test = Binary(">", Call("size", None, (fields[0],), pos), Literal(0, pos), pos)
        else:
            test = _any([Call("has", None, (field,), pos) for field in fields], pos)
        return self.bind(self.translated(spec, test, pos))

    def bind(self, node: Node) -> tuple[Node, Kind]:
        bound, kind = self._bind(node)
        if not isinstance(bound, Literal) and _is_constant(bound):
            value = self.folder(bound)
            if value is not ERROR:
                return Literal(value, bound.pos), kind_of(value)
        return bound, kind

    def _bind(self, node: Node) -> tuple[Node, Kind]:
        if isinstance(node, Literal):
            return node, kind_of(node.value)
        if isinstance(node, Ident | Select | Index):
            resolved = self.resolve(node)
            if resolved is not None:
                return resolved
        if isinstance(node, Ident):
            raise self.unknown(node.name, node.pos)
        if isinstance(node, Select):
            operand, kind = self.bind(node.operand)
            if kind not in ("map", "dyn"):
                raise KflError(
                    f"{_a(kind)} has no field {node.field!r}",
                    node.pos,
                    "only maps and entry objects have fields",
                )
            return Select(operand, node.field, node.pos), "dyn"
        if isinstance(node, Index):
            operand, kind = self.bind(node.operand)
            index, _ = self.bind(node.index)
            if kind not in ("map", "list", "dyn"):
                raise KflError(f"{_a(kind)} cannot be indexed", node.pos, "only lists and maps take [...]")
            return Index(operand, index, node.pos), "dyn"
        if isinstance(node, Unary):
            operand, kind = self.condition(node.operand) if node.op == "!" else self.bind(node.operand)
            if node.op == "!" and kind not in ("bool", "dyn"):
                raise KflError(
                    f"'!' needs true or false, not {_a(kind)}", node.pos, "negate a comparison instead"
                )
            if node.op == "-" and kind not in ("int", "double", "duration", "dyn"):
                raise KflError(
                    f"'-' needs a number, not {_a(kind)}", node.pos, "negate numbers and durations only"
                )
            return Unary(node.op, operand, node.pos), ("bool" if node.op == "!" else kind)
        if isinstance(node, Logical):
            operands = []
            for operand in node.operands:
                bound, kind = self.condition(operand)
                if kind not in ("bool", "dyn"):
                    message = f"'{node.op}' needs true or false on each side, not {_a(kind)}"
                    raise KflError(message, operand.pos, "compare the value, e.g. status_code == 200")
                operands.append(bound)
            return Logical(node.op, tuple(operands), node.pos), "bool"
        if isinstance(node, Conditional):
            cond, ckind = self.condition(node.cond)
            if ckind not in ("bool", "dyn"):
                raise KflError(
                    f"the condition before '?' must be true or false, not {_a(ckind)}",
                    node.pos,
                    "compare it first",
                )
            then, tkind = self.bind(node.then)
            otherwise, okind = self.bind(node.otherwise)
            return Conditional(cond, then, otherwise, node.pos), (tkind if tkind == okind else "dyn")
        if isinstance(node, ListLit):
            return ListLit(tuple(self.bind(item)[0] for item in node.items), node.pos), "list"
        if isinstance(node, MapLit):
            entries = []
            for key, value in node.entries:
                bkey, kkind = self.bind(key)
                if kkind not in ("string", "int", "bool", "dyn"):
                    raise KflError(
                        f"a map key must be a string, int or bool, not {_a(kkind)}", key.pos, 'e.g. {"a": 1}'
                    )
                entries.append((bkey, self.bind(value)[0]))
            return MapLit(tuple(entries), node.pos), "map"
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Call):
            return self.call(node)
        raise KflError(
            "this expression cannot be used here", node.pos, "rewrite this part of the filter"
        )  # Field/Local/Comprehension re-bound

    # --- names ---------------------------------------------------------------------------------
    def unknown(self, name: str, pos: int) -> KflError:
        hint = _suggest(name, [*_ALL_NAMES, *self.scope])
        return KflError(f"unknown variable {name!r}", pos, hint or "see docs/kfl.md for the variables")

    def resolve(self, node: Node) -> tuple[Node, Kind] | None:
        """A chain of names, fields and constant indexes starting at a name: a variable or a document path."""
        chain: list[PathKey] = []
        cur = node
        while True:
            if isinstance(cur, Select):
                chain.append(cur.field)
                cur = cur.operand
            elif (
                isinstance(cur, Index)
                and isinstance(cur.index, Literal)
                and type(cur.index.value) in (str, int)
            ):
                chain.append(cur.index.value)
                cur = cur.operand
            else:
                break
        if not isinstance(cur, Ident):
            return None
        chain.append(cur.name)
        chain.reverse()
        if cur.name in self.scope:
            if len(chain) > 1:
                return None  # a member of a comprehension variable: bound generically
            return self.scope[cur.name], "dyn"
        names = 0  # how many leading links are plain names (may spell a dotted variable)
        for link in chain:
            if type(link) is not str:
                break
            names += 1
        for k in range(names, 0, -1):
            dotted = ".".join(str(link) for link in chain[:k])
            variable = VARIABLES.get(dotted)
            if variable is None or (variable.flag is not None and k < len(chain)):
                continue
            return self.from_variable(variable, tuple(chain[k:]), node.pos)
        if names == len(chain) > 1 and (spec := DISPLAY_FIELDS.get(".".join(map(str, chain)))) is not None:
            return self.display_value(spec, cur.pos)
        if cur.name in ENTRY_FIELDS:
            return _document(tuple(chain), node.pos)
        if names > 1 and cur.name in PROTOCOLS:
            dotted = ".".join(str(link) for link in chain[:names])
            close = _suggest(dotted, list(DISPLAY_FIELDS))
            hint = close or "see docs/kfl.md#wireshark-display-filters for the fields KFL reads"
            raise KflError(f"Wireshark field {dotted!r} has no Wiretide equivalent", cur.pos, hint)
        return None

    # --- Wireshark display-filter fields ---------------------------------------------------------
    def display(self, node: Node | None) -> tuple[DisplayField, int] | None:
        """The display-filter field a name chain spells (`ip.src`) and where the chain starts, unless
        a loop variable takes the name."""
        if not isinstance(node, Select):
            return None
        names: list[str] = []
        cur: Node = node
        while isinstance(cur, Select):
            names.append(cur.field)
            cur = cur.operand
        if not isinstance(cur, Ident) or cur.name not in _DISPLAY_ROOTS or cur.name in self.scope:
            return None
        names.append(cur.name)
        names.reverse()
        spec = DISPLAY_FIELDS.get(".".join(names))
        return None if spec is None else (spec, cur.pos)

    @staticmethod
    def spelled(path: tuple[PathKey, ...], pos: int) -> Node:
        """The unbound tree of a KFL spelling: ("request", "headers", "x-id") -> request.headers["x-id"]."""
        node: Node = Ident(str(path[0]), pos)
        for key in path[1:]:
            if type(key) is str and key.isidentifier():
                node = Select(node, key, pos)
            else:
                node = Index(node, Literal(key, pos), pos)
        return node

    def translated(self, spec: DisplayField, test: Node, pos: int) -> Node:
        """`test` under the protocol or transport the field exists in, and the warning that shows it."""
        guard: Node | None = None
        if spec.flag is not None:
            guard = Ident(spec.flag, pos)
        elif spec.transport is not None:
            guard = Binary("==", Ident("transport", pos), Literal(spec.transport, pos), pos)
        result = test if guard is None else Logical("&&", (guard, test), pos)
        self.warn_display(spec, pos, render(result))
        return result

    def warn_display(self, spec: DisplayField, pos: int, canonical: str) -> None:
        note = f" ({spec.note})" if spec.note else ""
        message = f"Wireshark field {spec.name!r} read as {spec.spelling()}{note}"
        self.warnings.append(Problem(message, pos, f"write {canonical}", "warning"))

    def display_value(self, spec: DisplayField, pos: int) -> tuple[Node, Kind]:
        """A display-filter field used as a value (not compared, not tested): one field only."""
        if len(spec.fields) > 1 or spec.listed:
            raise KflError(f"{spec.name} stands for {spec.spelling()}: compare it with a value", pos,
                           f'e.g. {spec.name} == "…", or name one: {spell(spec.fields[0])}')  # fmt: skip
        field = self.spelled(spec.fields[0], pos)
        self.warn_display(spec, pos, spec.spelling())
        return self.bind(field)

    def display_comparison(
        self, node: Binary, found: tuple[DisplayField, int], on_left: bool
    ) -> tuple[Node, Kind]:
        """`ip.addr == X` -> `src.ip == X || dst.ip == X`, under the field's protocol or transport."""
        spec, pos = found
        other = _seconds(spec, node.right if on_left else node.left)
        fields = [self.spelled(path, pos) for path in spec.fields]
        test: Node
        if node.op == "in" and not on_left:  # `"example.com" in dns.qry.name`
            if not spec.listed:
                raise KflError(f"{spec.name} is not a list", pos, f"write {spec.name} == {render(other)}")
            test = Binary("in", other, fields[0], pos)
        else:
            op = node.op if on_left else _FLIP[node.op]
            if spec.listed and op in ("==", "!="):
                test = Binary("in", other, fields[0], pos)
                test = test if op == "==" else Unary("!", test, pos)
            elif spec.listed:
                item = Ident(_ITEM, pos)
                test = Call("exists", fields[0], (item, Binary(op, item, other, pos)), pos)
            elif op == "!=" and len(fields) > 1:  # Wireshark's != is "no end equals" (since 3.6)
                test = Unary("!", _any([Binary("==", f, other, pos) for f in fields], pos), pos)
            else:
                test = _any([Binary(op, f, other, pos) for f in fields], pos)
        return self.bind(self.translated(spec, test, pos))

    def display_test(self, node: Call, found: tuple[DisplayField, int]) -> tuple[Node, Kind]:
        """`http.host.contains("x")`, `dns.qry.name.endsWith(".local")`: any of the fields passes."""
        spec, pos = found
        fields = [self.spelled(path, pos) for path in spec.fields]
        test: Node
        if spec.listed:
            item = Ident(_ITEM, pos)
            test = Call("exists", fields[0], (item, Call(node.function, item, node.args, pos)), pos)
        else:
            test = _any([Call(node.function, f, node.args, pos) for f in fields], pos)
        return self.bind(self.translated(spec, test, pos))

    def from_variable(self, variable: Variable, rest: tuple[PathKey, ...], pos: int) -> tuple[Node, Kind]:
        field = Field(variable.name, variable.path, variable.name, pos)
        if not rest:
            return field, variable.kind
        if variable.kind not in ("map", "list", "dyn"):
            raise KflError(
                f"{variable.name} is {_a(variable.kind)} and has no field {rest[0]!r}",
                pos,
                "see docs/kfl.md for its type",
            )
        if (
            variable.path
            and variable.compute is None
            and variable.convert is None
            and variable.protocols is None
        ):
            return _document(variable.path + rest, pos)
        if variable.kind not in ("map", "list", "dyn"):
            raise KflError(
                f"{variable.name} is {_a(variable.kind)} and has no field {rest[0]!r}",
                pos,
                "see docs/kfl.md for its type",
            )
        node: Node = field
        for link in rest:
            node = Select(node, link, pos) if type(link) is str else Index(node, Literal(link, pos), pos)
        return node, "dyn"

    # --- operators -----------------------------------------------------------------------------
    def binary(self, node: Binary) -> tuple[Node, Kind]:
        op = node.op
        if op in _FLIP or op == "in":
            if (found := self.display(node.left)) is not None:
                return self.display_comparison(node, found, on_left=True)
            if (found := self.display(node.right)) is not None:
                return self.display_comparison(node, found, on_left=False)
        if op in ("==", "!=") and (_is_null(node.left) or _is_null(node.right)):
            other = node.right if _is_null(node.left) else node.left
            bound = _as_document(self.bind(other)[0])
            test: Node = Call(IS_NULL, None, (bound,), node.pos)
            return (test if op == "==" else Unary("!", test, node.pos)), "bool"
        left, lkind = self.bind(node.left)
        right, rkind = self.bind(node.right)
        if op in ("==", "!="):
            if not _comparable(lkind, rkind):
                raise KflError(f"cannot compare {_a(lkind)} with {_a(rkind)}", node.pos,
                               _compare_hint(lkind, rkind, left, right))  # fmt: skip
            return Binary(op, left, right, node.pos), "bool"
        if op in ("<", "<=", ">", ">="):
            if not (_comparable(lkind, rkind) and {lkind, rkind} <= _ORDERED | {"dyn"}):
                raise KflError(f"cannot order {_a(lkind)} against {_a(rkind)}", node.pos,
                               _compare_hint(lkind, rkind, left, right))  # fmt: skip
            return Binary(op, left, right, node.pos), "bool"
        if op == "in":
            if rkind not in ("list", "map", "dyn"):
                raise KflError(f"'in' needs a list or a map on its right, not {_a(rkind)}", node.right.pos,
                               'e.g. method in ["GET", "HEAD"], or path.contains("x") for text')  # fmt: skip
            return Binary(op, left, right, node.pos), "bool"
        return Binary(op, left, right, node.pos), _arithmetic_kind(op, lkind, rkind, node.pos)

    def call(self, node: Call) -> tuple[Node, Kind]:
        name = node.function
        if node.target is not None and name in MACROS:
            return self.macro(node)
        if node.target is None and name == "has":
            return self.has(node)
        if name in _TESTS and (found := self.display(node.target)) is not None:
            return self.display_test(node, found)
        table = GLOBAL_FUNCTIONS if node.target is None else METHODS
        if name not in table and name in REPLACED_FUNCTIONS:
            why, instead = REPLACED_FUNCTIONS[name]
            if REPLACED_FUNCTIONS[name] is _DATETIME and (moment := _datetime_argument(node)) is not None:
                instead = f'write timestamp("{moment}")'
            raise KflError(f"{name}() is not a KFL function: {why}", node.pos, instead)
        if name == "record" and node.target is None:
            raise _record_outside(node)
        if name not in table:
            other = METHODS if node.target is None else GLOBAL_FUNCTIONS
            if name in other:
                how = f"call it on a value: x.{name}(...)" if node.target is None else f"call it as {name}(x)"
                raise KflError(
                    f"{name} is not a {'function' if node.target is None else 'method'}", node.pos, how
                )
            known = sorted({*GLOBAL_FUNCTIONS, *METHODS, *MACROS, "has"})
            raise KflError(f"unknown function {name!r}", node.pos, _suggest(name, known) or "see docs/kfl.md")
        arity, result = table[name]
        if len(node.args) != arity:
            raise KflError(
                f"{name} takes {arity} argument{'s' if arity != 1 else ''}, got {len(node.args)}",
                node.pos,
                f"see docs/kfl.md for {name}()",
            )
        if name == "now":
            return Literal(Timestamp(self.now_ns), node.pos), "timestamp"
        args = [self.bind(arg) for arg in node.args]
        target: tuple[Node, Kind] | None = None
        if node.target is not None:
            target = self.bind(node.target)
        receiver_kind = target[1] if target else (args[0][1] if args else "dyn")
        if name in _STRING_METHODS or (
            node.target is None and name in ("matches", "contains", "startsWith", "endsWith")
        ):
            string_args = ([target] if target else []) + args
            for (_, kind), source in zip(
                string_args, ([node.target] if node.target else []) + list(node.args), strict=True
            ):
                if kind not in ("string", "dyn"):
                    raise KflError(f"{name} works on strings, not on {_a(kind)}", source.pos,
                                   f"convert first: string(x).{name}(...)")  # fmt: skip
        if name == "size" and receiver_kind not in ("string", "bytes", "list", "map", "dyn"):
            raise KflError(
                f"size() needs a string, bytes, list or map, not {_a(receiver_kind)}",
                node.pos,
                "e.g. size(path) > 100",
            )
        if name == "matches":
            pattern = args[-1][0]
            if isinstance(pattern, Literal) and isinstance(pattern.value, str):
                compile_regex(pattern.value, pattern.pos)
        if name in ("timestamp", "duration"):
            self.check_time_literal(name, args[0][0])
        bound_args = tuple(arg for arg, _ in args)
        if name in ("contains", "startsWith", "endsWith", "matches") and node.target is None:
            return Call(name, bound_args[0], bound_args[1:], node.pos), result
        return Call(name, target[0] if target else None, bound_args, node.pos), result

    def check_time_literal(self, name: str, arg: Node) -> None:
        if not isinstance(arg, Literal) or not isinstance(arg.value, str):
            return
        if name == "timestamp" and parse_timestamp(arg.value) is None:
            raise KflError(
                f"not a timestamp: {arg.value!r}", arg.pos, 'use RFC 3339, e.g. "2026-03-14T22:00:00Z"'
            )
        if name == "duration" and parse_duration(arg.value) is None:
            raise KflError(f"not a duration: {arg.value!r}", arg.pos, 'e.g. "250ms", "5m", "1h30m"')

    def has(self, node: Call) -> tuple[Node, Kind]:
        if len(node.args) != 1 or not isinstance(node.args[0], Select | Ident | Index):
            raise KflError("has() takes one field", node.pos, "e.g. has(request.headers.authorization)")
        bound = _as_document(self.bind(node.args[0])[0])
        if (
            isinstance(bound, Field)
            and bound.variable is not None
            and VARIABLES[bound.variable].flag is not None
        ):
            raise KflError(
                f"{bound.variable} is always defined", node.args[0].pos, f"use {bound.variable} itself"
            )
        return Call("has", None, (bound,), node.pos), "bool"

    def macro(self, node: Call) -> tuple[Node, Kind]:
        assert node.target is not None
        if len(node.args) != 2 or not isinstance(node.args[0], Ident):
            raise KflError(f"{node.function} takes a variable name and an expression", node.pos,
                           f'e.g. dns_answers.{node.function}(a, a.startsWith("10."))')  # fmt: skip
        target, kind = self.bind(node.target)
        if kind not in ("list", "map", "dyn"):
            raise KflError(
                f"{node.function} needs a list or map, not {_a(kind)}", node.pos, "e.g. dns_answers"
            )
        name = node.args[0].name
        if name in VARIABLES or name in ENTRY_FIELDS:
            raise KflError(
                f"{name!r} already names a variable", node.args[0].pos, "pick another loop variable name"
            )
        if self.slots >= MAX_COMPREHENSION_VARIABLES:
            raise KflError("too many nested comprehensions", node.pos, "simplify the query")
        local = Local(name, self.slots, node.args[0].pos)
        self.slots += 1
        saved = self.scope.get(name)
        self.scope[name] = local
        body, body_kind = self.bind(node.args[1])
        if saved is None:
            del self.scope[name]
        else:
            self.scope[name] = saved
        if node.function != "map" and body_kind not in ("bool", "dyn"):
            raise KflError(
                f"{node.function} needs a condition, not {_a(body_kind)}",
                node.args[1].pos,
                'e.g. a.endsWith(".local")',
            )
        return Comprehension(node.function, target, local, body, node.pos), MACROS[node.function]


def _as_document(node: Node) -> Node:
    """Presence tests read the document: `has(tls)` asks for the `tls` object, not the `tls` flag."""
    if isinstance(node, Field) and node.variable in ENTRY_FIELDS and not node.path:
        return Field(node.variable, (node.variable,), None, node.pos)
    variable = VARIABLES.get(node.variable or "") if isinstance(node, Field) else None
    if isinstance(node, Field) and variable and variable.convert and variable.protocols is None:
        # `timestamp == null` asks whether the entry has one, whatever its type
        return Field(".".join(str(k) for k in variable.path), variable.path, None, node.pos)
    return node


def _document(path: tuple[PathKey, ...], pos: int) -> tuple[Node, Kind]:
    """A path into the entry document; a header name below a header map is matched ignoring case."""
    folded = caseless_key(path)
    if folded is None:
        return Field(".".join(str(link) for link in path), path, None, pos), doc_kind(path)
    return Field(".".join(str(link) for link in folded), folded, None, pos, caseless=True), doc_kind(folded)


def _any(tests: list[Node], pos: int) -> Node:
    return tests[0] if len(tests) == 1 else Logical("||", tuple(tests), pos)


def _seconds(spec: DisplayField, other: Node) -> Node:
    """Wireshark writes times as seconds (`frame.time_delta > 0.5`): a bare number becomes the KFL value."""
    if spec.seconds is None or not isinstance(other, Literal) or type(other.value) not in (int, float):
        return other
    ns = round(other.value * NS_PER_S)
    if not INT64_MIN <= ns <= INT64_MAX:
        raise KflError("time out of range", other.pos, "times are 64-bit nanoseconds")
    return Literal(Duration(ns) if spec.seconds == "duration" else Timestamp(ns), other.pos)


def _datetime_argument(node: Call) -> str | None:
    """The RFC 3339 spelling of a datetime("...") argument, read as UTC, when it is a date we know."""
    if len(node.args) != 1 or not isinstance(node.args[0], Literal) or type(node.args[0].value) is not str:
        return None
    for layout in _DATETIME_FORMATS:
        try:
            moment = datetime.strptime(node.args[0].value.strip(), layout).replace(tzinfo=UTC)
        except ValueError:
            continue
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _is_null(node: Node) -> bool:
    return isinstance(node, Literal) and node.value is None


def _comparable(a: Kind, b: Kind) -> bool:
    if "dyn" in (a, b) or a == b:
        return True
    if a in _NUMERIC and b in _NUMERIC:
        return True
    return {a, b} == {"duration", "int"}  # an int compared with a duration counts microseconds


def _compare_hint(a: Kind, b: Kind, left: Node, right: Node) -> str:
    if {a, b} == {"duration", "string"}:
        text = next((n.value for n in (left, right) if isinstance(n, Literal) and type(n.value) is str), "")
        if parse_duration(text) is not None:
            return f'write duration("{text}")'
    if {a, b} == {"int", "string"}:
        return "drop the quotes around the number, e.g. status_code == 500"
    if "timestamp" in (a, b):
        return 'compare with timestamp("2026-03-14T22:00:00Z") or now() - duration("5m")'
    if "duration" in (a, b):
        return 'compare with duration("250ms")'
    return "both sides must have the same type"


def _arithmetic_kind(op: str, a: Kind, b: Kind, pos: int) -> Kind:
    if "dyn" in (a, b):
        return "dyn"
    if a in _NUMERIC and b in _NUMERIC:
        return "double" if "double" in (a, b) else a
    if op == "+" and a == b and a in ("string", "bytes", "list"):
        return a
    if op in ("+", "-") and {a, b} == {"timestamp", "duration"} and not (op == "-" and a == "duration"):
        return "timestamp"
    if op in ("+", "-") and a == b == "duration":
        return "duration"
    if op == "-" and a == b == "timestamp":
        return "duration"
    raise KflError(f"'{op}' does not apply to {_a(a)} and {_a(b)}", pos, "both sides need compatible types")


def _is_constant(node: Node) -> bool:
    """No field, no loop variable anywhere below."""
    if isinstance(node, Literal):
        return True
    if isinstance(node, Field | Local | Ident | Comprehension):
        return False
    if isinstance(node, Select):
        return _is_constant(node.operand)
    if isinstance(node, Index):
        return _is_constant(node.operand) and _is_constant(node.index)
    if isinstance(node, Call):
        return (node.target is None or _is_constant(node.target)) and all(_is_constant(a) for a in node.args)
    if isinstance(node, Unary):
        return _is_constant(node.operand)
    if isinstance(node, Binary):
        return _is_constant(node.left) and _is_constant(node.right)
    if isinstance(node, Logical):
        return all(_is_constant(o) for o in node.operands)
    if isinstance(node, Conditional):
        return _is_constant(node.cond) and _is_constant(node.then) and _is_constant(node.otherwise)
    if isinstance(node, ListLit):
        return all(_is_constant(i) for i in node.items)
    return all(_is_constant(k) and _is_constant(v) for k, v in node.entries)

"""The Python compiler: a checked KFL tree becomes a tree of closures, built once, run per entry.

Rule: evaluation never raises on any entry — a missing field or a type mismatch is the `ERROR`
value (values.py), and a filter matches only when its result is exactly `True`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from wiretide.common.kfl import headers
from wiretide.common.kfl import values as v
from wiretide.common.kfl.ast import (
    Binary,
    Call,
    Comprehension,
    Conditional,
    Field,
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
)
from wiretide.common.kfl.check import IS_NULL
from wiretide.common.kfl.errors import KflError
from wiretide.common.kfl.values import ERROR
from wiretide.common.kfl.variables import TLS_FLAG, VARIABLES, convert, fetch

Entry = dict[str, Any]
Fn = Callable[[Entry], Any]
MAX_REGEX_CACHE: Final = 256  # distinct run-time patterns (from fields) kept compiled per filter

_ORDER: Final[dict[str, Callable[[int], bool]]] = {
    "<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0,
}  # fmt: skip
_ARITHMETIC: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": v.add, "-": v.subtract, "*": v.multiply, "/": v.divide, "%": v.modulo,
}  # fmt: skip


class Compiler:
    """Builds closures; `frame` holds the current value of each comprehension variable."""

    __slots__ = ("frame", "regexes")

    def __init__(self, locals_count: int) -> None:
        self.frame: list[Any] = [None] * locals_count
        self.regexes: dict[str, re.Pattern[str] | None] = {}

    def build(self, node: Node) -> Fn:
        if isinstance(node, Literal):
            value = node.value
            return lambda e: value
        if isinstance(node, Field):
            return field_getter(node)
        if isinstance(node, Local):
            frame, slot = self.frame, node.slot
            return lambda e: frame[slot]
        if isinstance(node, Logical):
            return self.logical(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Select):
            return self.select(node)
        if isinstance(node, Index):
            return self.index(node)
        if isinstance(node, Conditional):
            return self.conditional(node)
        if isinstance(node, ListLit):
            return self.list_literal(node)
        if isinstance(node, MapLit):
            return self.map_literal(node)
        if isinstance(node, Comprehension):
            return self.comprehension(node)
        raise KflError("unresolved name", node.pos, "this is a bug in the checker")

    # --- logic ---------------------------------------------------------------------------------
    def logical(self, node: Logical) -> Fn:
        fns = tuple(self.build(o) for o in node.operands)
        stop = node.op != "&&"  # the value that decides: False for &&, True for ||
        if len(fns) == 2:
            first, second = fns

            def pair(e: Entry) -> Any:
                a = first(e)
                if a is stop:
                    return stop
                b = second(e)
                if b is stop:
                    return stop
                return (not stop) if (a is not stop and type(a) is bool and type(b) is bool) else ERROR

            return pair

        def chain(e: Entry) -> Any:
            failed = False
            for fn in fns:
                value = fn(e)
                if value is stop:
                    return stop
                if type(value) is not bool:
                    failed = True
            return ERROR if failed else (not stop)

        return chain

    def unary(self, node: Unary) -> Fn:
        fn = self.build(node.operand)
        if node.op == "!":

            def negate(e: Entry) -> Any:
                value = fn(e)
                return (not value) if type(value) is bool else ERROR

            return negate
        return lambda e: v.negate(fn(e))

    def conditional(self, node: Conditional) -> Fn:
        cond, then, otherwise = self.build(node.cond), self.build(node.then), self.build(node.otherwise)

        def choose(e: Entry) -> Any:
            c = cond(e)
            if c is True:
                return then(e)
            if c is False:
                return otherwise(e)
            return ERROR

        return choose

    # --- comparisons and arithmetic --------------------------------------------------------------
    def binary(self, node: Binary) -> Fn:
        op = node.op
        left = self.build(node.left)
        if isinstance(node.right, Literal) and op in ("==", "!=", "<", "<=", ">", ">="):
            return _compare_constant(op, left, node.right.value)
        right = self.build(node.right)
        if op == "==":
            return lambda e: v.equal(left(e), right(e))
        if op == "!=":

            def differ(e: Entry) -> Any:
                same = v.equal(left(e), right(e))
                return ERROR if same is ERROR else not same

            return differ
        if op in _ORDER:
            test = _ORDER[op]

            def order(e: Entry) -> Any:
                c = v.compare(left(e), right(e))
                return ERROR if c is ERROR else test(c)  # type: ignore[arg-type]

            return order
        if op == "in":
            if _is_header_map(node.right):
                return lambda e: _header_in(left(e), right(e))
            return lambda e: contains(left(e), right(e))
        arithmetic = _ARITHMETIC[op]

        def compute(e: Entry) -> Any:
            a, b = left(e), right(e)
            return ERROR if a is ERROR or b is ERROR else arithmetic(a, b)

        return compute

    # --- access --------------------------------------------------------------------------------
    def select(self, node: Select) -> Fn:
        operand, name = self.build(node.operand), node.field

        def member(e: Entry) -> Any:
            value = operand(e)
            if type(value) is not dict:
                return ERROR
            result = value.get(name)
            return ERROR if result is None else result

        return member

    def index(self, node: Index) -> Fn:
        operand, key = self.build(node.operand), self.build(node.index)
        if _is_header_map(node.operand):  # request.headers[name] with a computed name

            def header(e: Entry) -> Any:
                container, k = operand(e), key(e)
                if type(container) is not dict or type(k) is not str:
                    return ERROR
                found = headers.lookup(container, k.lower())
                return ERROR if found is None else found

            return header

        def item(e: Entry) -> Any:
            container, k = operand(e), key(e)
            if type(container) is dict and type(k) in (str, int, bool):
                result = container.get(k)
            elif type(container) is list and type(k) is int and 0 <= k < len(container):
                result = container[k]
            else:
                return ERROR
            return ERROR if result is None else result

        return item

    def list_literal(self, node: ListLit) -> Fn:
        items = tuple(self.build(i) for i in node.items)

        def make(e: Entry) -> Any:
            result = [fn(e) for fn in items]
            return ERROR if any(x is ERROR for x in result) else result

        return make

    def map_literal(self, node: MapLit) -> Fn:
        pairs = tuple((self.build(k), self.build(val)) for k, val in node.entries)

        def make(e: Entry) -> Any:
            result: dict[Any, Any] = {}
            for kf, vf in pairs:
                key, value = kf(e), vf(e)
                if type(key) not in (str, int, bool) or value is ERROR or key in result:
                    return ERROR
                result[key] = value
            return result

        return make

    # --- functions -----------------------------------------------------------------------------
    def call(self, node: Call) -> Fn:
        name = node.function
        args = tuple(self.build(a) for a in node.args)
        target = self.build(node.target) if node.target is not None else None
        if name == IS_NULL:
            (arg,) = args
            return lambda e: (x := arg(e)) is ERROR or x is None
        if name == "has":
            (arg,) = args
            return lambda e: arg(e) is not ERROR
        if target is not None and name in ("contains", "startsWith", "endsWith"):
            return _string_test(name, target, node.args[0], args[0])
        if name == "matches":
            assert target is not None
            return self.matches(target, node.args[0], args[0])
        if name == "size":
            subject = target if target is not None else args[0]
            return lambda e: len(x) if type(x := subject(e)) in (str, bytes, list, dict) else ERROR
        if name in ("lowerAscii", "upperAscii"):
            assert target is not None
            table = str.maketrans(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if name == "lowerAscii" else "abcdefghijklmnopqrstuvwxyz",
                "abcdefghijklmnopqrstuvwxyz" if name == "lowerAscii" else "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            )
            fn = target
            return lambda e: x.translate(table) if type(x := fn(e)) is str else ERROR
        if name == "map_get":
            container, key, default = args
            caseless = _is_header_map(node.args[0])

            def map_get(e: Entry) -> Any:
                m, k = container(e), key(e)
                if type(m) is dict and type(k) in (str, int, bool):
                    found = headers.lookup(m, k.lower()) if caseless and type(k) is str else m.get(k)
                    if found is not None:
                        return found
                return default(e)

            return map_get
        (arg,) = args
        conversions: dict[str, Callable[[Any], Any]] = {
            "timestamp": _to_timestamp, "duration": _to_duration, "string": v.to_string, "int": v.to_int,
            "double": v.to_double,
        }  # fmt: skip
        conversion = conversions[name]
        return lambda e: ERROR if (x := arg(e)) is ERROR else conversion(x)

    def matches(self, target: Fn, pattern_node: Node, pattern: Fn) -> Fn:
        if isinstance(pattern_node, Literal) and isinstance(pattern_node.value, str):
            search = v.compile_regex(pattern_node.value, pattern_node.pos).search
            return lambda e: (search(x) is not None) if type(x := target(e)) is str else ERROR
        cache = self.regexes

        def dynamic(e: Entry) -> Any:
            text, source = target(e), pattern(e)
            if type(text) is not str or type(source) is not str:
                return ERROR
            compiled = cache.get(source, ERROR)
            if compiled is ERROR:
                try:
                    compiled = v.compile_regex(source, 0)
                except KflError:
                    compiled = None
                if len(cache) >= MAX_REGEX_CACHE:
                    cache.clear()
                cache[source] = compiled
            if compiled is None:
                return ERROR
            return compiled.search(text) is not None  # type: ignore[union-attr]

        return dynamic

    def comprehension(self, node: Comprehension) -> Fn:
        target, body = self.build(node.target), self.build(node.body)
        frame, slot, macro = self.frame, node.variable.slot, node.macro

        def run(e: Entry) -> Any:
            items = target(e)
            if type(items) is dict:
                items = list(items)
            elif type(items) is not list:
                return ERROR
            saved = frame[slot]
            try:
                results = []
                for item in items:
                    frame[slot] = item
                    results.append(body(e))
            finally:
                frame[slot] = saved
            return _fold(macro, items, results)

        return run


def _fold(macro: str, items: list[Any], results: list[Any]) -> Any:
    if macro == "map":
        return ERROR if any(r is ERROR for r in results) else results
    if macro == "filter":
        if any(type(r) is not bool for r in results):
            return ERROR
        return [item for item, keep in zip(items, results, strict=True) if keep]
    if macro == "exists":
        if any(r is True for r in results):
            return True
        return ERROR if any(type(r) is not bool for r in results) else False
    if macro == "all":
        if any(r is False for r in results):
            return False
        return ERROR if any(type(r) is not bool for r in results) else True
    if any(type(r) is not bool for r in results):  # exists_one
        return ERROR
    return sum(1 for r in results if r is True) == 1


def contains(item: Any, container: Any) -> Any:
    """CEL `in`: list membership (an `||` of equalities), or a map key."""
    if item is ERROR or container is ERROR:
        return ERROR
    if type(container) is dict:
        return type(item) in (str, int, bool) and item in container
    if type(container) is not list:
        return ERROR
    failed = False
    for element in container:
        same = v.equal(item, element)
        if same is True:
            return True
        if same is ERROR:
            failed = True
    return ERROR if failed else False


def _is_header_map(node: Node) -> bool:
    return isinstance(node, Field) and node.variable is None and headers.is_header_map(node.path)


def _header_in(name: Any, container: Any) -> Any:
    if name is ERROR or type(container) is not dict:
        return ERROR
    return type(name) is str and headers.contains(container, name)


def _to_timestamp(x: Any) -> Any:
    if type(x) is str:
        parsed = v.parse_timestamp(x)
        return ERROR if parsed is None else parsed
    if type(x) is int:
        return v.Timestamp(x * 1_000_000_000)
    return x if type(x) is v.Timestamp else ERROR


def _to_duration(x: Any) -> Any:
    if type(x) is str:
        parsed = v.parse_duration(x)
        return ERROR if parsed is None else parsed
    return x if type(x) is v.Duration else ERROR


def _string_test(name: str, target: Fn, arg_node: Node, arg: Fn) -> Fn:
    if isinstance(arg_node, Literal) and type(arg_node.value) is str:
        needle = arg_node.value
        if name == "contains":
            return lambda e: (needle in x) if type(x := target(e)) is str else ERROR
        if name == "startsWith":
            return lambda e: x.startswith(needle) if type(x := target(e)) is str else ERROR
        return lambda e: x.endswith(needle) if type(x := target(e)) is str else ERROR
    method = {"contains": str.__contains__, "startsWith": str.startswith, "endsWith": str.endswith}[name]

    def test(e: Entry) -> Any:
        x, y = target(e), arg(e)
        return method(x, y) if type(x) is str and type(y) is str else ERROR

    return test


def _compare_constant(op: str, left: Fn, constant: Any) -> Fn:
    """`field op literal`, the shape of most filters: a fast path for same-type values."""
    kind = type(constant)
    if kind is str or (kind is int and op in ("==", "!=")):
        fast: tuple[type, ...] = (str,) if kind is str else (int, float)
        if op == "==":
            return lambda e: (x == constant) if type(x := left(e)) in fast else v.equal(x, constant)
        if op == "!=":

            def differ(e: Entry) -> Any:
                x = left(e)
                if type(x) in fast:
                    return x != constant
                same = v.equal(x, constant)
                return ERROR if same is ERROR else not same

            return differ
    if kind is int and op in _ORDER:
        test = _ORDER[op]

        def order(e: Entry) -> Any:
            x = left(e)
            if type(x) is int or type(x) is float:
                return test((x > constant) - (x < constant))
            return _slow(op, x, constant)

        return order
    return lambda e: _slow(op, left(e), constant)


def _slow(op: str, x: Any, constant: Any) -> Any:
    if op == "==":
        return v.equal(x, constant)
    if op == "!=":
        same = v.equal(x, constant)
        return ERROR if same is ERROR else not same
    c = v.compare(x, constant)
    return ERROR if c is ERROR else _ORDER[op](c)  # type: ignore[arg-type]


def field_getter(node: Field) -> Fn:
    variable = VARIABLES.get(node.variable) if node.variable else None
    if variable is not None and variable.flag is not None:
        protocols = variable.flag
        if variable.name == TLS_FLAG:
            return lambda e: (
                (type(p := e.get("protocol")) is str and p in protocols) or type(e.get("tls")) is dict
            )
        return lambda e: type(p := e.get("protocol")) is str and p in protocols
    if variable is not None and variable.compute is not None:
        return variable.compute
    if node.caseless:
        return header_getter(node.path)
    getter = path_getter(node.path)
    if variable is None:
        return getter
    how, guard = variable.convert, variable.protocols
    if how is not None:
        plain = getter
        getter = lambda e: convert(plain(e), how)  # noqa: E731
    if guard is not None:
        unguarded = getter
        return lambda e: unguarded(e) if type(p := e.get("protocol")) is str and p in guard else ERROR
    return getter


def path_getter(path: tuple[PathKey, ...]) -> Fn:
    if len(path) == 1 and isinstance(path[0], str):
        key = path[0]
        return lambda e: ERROR if (x := e.get(key)) is None else x
    if len(path) == 2 and isinstance(path[0], str) and isinstance(path[1], str):
        k1, k2 = path[0], path[1]

        def two(e: Entry) -> Any:
            a = e.get(k1)
            if type(a) is not dict:
                return ERROR
            x = a.get(k2)
            return ERROR if x is None else x

        return two
    return lambda e: fetch(e, path)


def header_getter(path: tuple[PathKey, ...]) -> Fn:
    """The value below a header map, its name (lower-case in `path`) matched ignoring case."""
    table = path_getter(path[: headers.MAP_DEPTH])
    name, rest = path[headers.MAP_DEPTH], path[headers.MAP_DEPTH + 1 :]
    assert type(name) is str

    def header(e: Entry) -> Any:
        m = table(e)
        if type(m) is not dict:
            return ERROR
        found = m.get(name)
        if found is None:
            found = headers.lookup(m, name)
            if found is None:
                return ERROR
        return fetch(found, rest) if rest else found

    return header


def fold_constant(node: Node) -> Any:
    """Evaluate a tree with no fields (the checker's constant folder)."""
    try:
        return Compiler(0).build(node)({})
    except KflError:
        return ERROR

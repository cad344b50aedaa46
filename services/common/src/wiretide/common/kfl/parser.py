"""The KFL parser: tokens in, a syntax tree out, KFL v1 spellings translated on the way.

Rule: the grammar is CEL's (precedence climbing, left-associative operators); each foreign
spelling it accepts — KFL v1 (`and`, `or`, `not`, a single `=`, `x == r"regex"`), duration literals
(`50ms`), bare IP addresses, regex operators (`=~`, `!~`, Wireshark's `~`, `matches`, `contains`) —
becomes the CEL form plus a warning that shows it, and every limit (query length, nesting depth)
is a `KflError`, never a crash.
"""

from __future__ import annotations

from typing import Final

from wiretide.common.kfl.ast import (
    Binary,
    Call,
    Conditional,
    Ident,
    Index,
    ListLit,
    Literal,
    Logical,
    MapLit,
    Node,
    Select,
    Unary,
)
from wiretide.common.kfl.errors import KflError, Problem
from wiretide.common.kfl.lexer import RESERVED, Token, tokenize

MAX_QUERY_LENGTH: Final = 16_384  # characters; far above any hand-written filter, small enough to parse in ms
MAX_DEPTH: Final = 64  # nesting of the tree; keeps every recursive compiler far from Python's stack limit
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_RELATIONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "=~", "!~", "~"})
_V1_WORDS: Final = {"and": "&&", "or": "||", "not": "!"}
# Infix words of Wireshark display filters, read as the CEL method of the same name.
_INFIX_WORDS: Final = frozenset({"in", "matches", "contains"})
# Regex operators -> (CEL method, negated, pattern prefix). Wireshark's `matches`/`~` ignore case.
_REGEX_OPERATORS: Final = {
    "=~": ("matches", False, ""), "!~": ("matches", True, ""), "~": ("matches", False, "(?i)"),
    "matches": ("matches", False, "(?i)"), "contains": ("contains", False, ""),
}  # fmt: skip
_UNIT_WORDS: Final = frozenset({"h", "m", "s", "ms", "us", "ns"})


class _Parser:
    __slots__ = ("depth", "i", "text", "tokens", "warnings")

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.warnings: list[Problem] = []

    # --- token helpers -------------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at_op(self, *ops: str) -> str | None:
        """The operator at the cursor if it is one of `ops` (v1 words count as their CEL operator)."""
        token = self.peek()
        if token.kind == "op" and token.value in ops:
            return str(token.value)
        if token.kind == "ident" and token.value in _V1_WORDS and _V1_WORDS[str(token.value)] in ops:
            op = _V1_WORDS[str(token.value)]
            self.warn(token, f"KFL v1 '{token.value}' read as '{op}'", f"write '{op}'")
            return op
        if token.kind == "op" and token.value == "=" and "==" in ops:
            self.warn(token, "KFL v1 '=' read as '=='", "write '=='")
            return "=="
        return None

    def warn(self, token: Token, message: str, hint: str) -> None:
        self.warnings.append(Problem(message=message, position=token.pos, hint=hint, severity="warning"))

    def expect(self, op: str, what: str) -> Token:
        token = self.peek()
        if token.kind == "op" and token.value == op:
            return self.advance()
        raise KflError(f"expected '{op}' {what}, found {_describe(token)}", token.pos, _hint_for(token, op))

    def enter(self, token: Token) -> None:
        """One level deeper: parentheses, calls, and each link of an operator chain (a chain of
        left-associative operators nests the tree as deeply as parentheses do)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            hint = "split the filter, remove parentheses, or use `x in [a, b, c]` for long chains"
            raise KflError(f"query nests deeper than {MAX_DEPTH} levels", token.pos, hint)

    # --- grammar -------------------------------------------------------------------------------
    def parse(self) -> Node:
        if self.peek().kind == "end":
            return Literal(True, 0)  # the empty filter matches everything
        node = self.expr()
        token = self.peek()
        if token.kind != "end":
            hint = "join conditions with && or ||"
            before = self.tokens[self.i - 1]
            if token.kind == "ident" and token.value in _UNIT_WORDS and before.kind in ("int", "double"):
                hint = f'write duration("{self.text[before.pos : before.end]}{token.value}")'
            raise KflError(f"unexpected {_describe(token)} after a complete expression", token.pos, hint)
        return node

    def expr(self) -> Node:
        start = self.peek()
        self.enter(start)
        cond = self.logical("||")
        if self.at_op("?"):
            self.advance()
            then = self.logical("||")
            self.expect(":", "in a conditional (cond ? a : b)")
            otherwise = self.expr()
            cond = Conditional(cond, then, otherwise, start.pos)
        self.depth -= 1
        return cond

    def logical(self, op: str) -> Node:
        start = self.peek()
        first = self.logical("&&") if op == "||" else self.relation()
        operands = [first]
        while self.at_op(op):
            self.advance()
            operands.append(self.logical("&&") if op == "||" else self.relation())
        return first if len(operands) == 1 else Logical(op, tuple(operands), start.pos)

    def relation(self) -> Node:
        start = self.peek().pos
        left = self.addition()
        length = 0
        while True:
            token = self.peek()
            op = self.at_op(*_RELATIONS) or (
                str(token.value) if token.kind == "ident" and token.value in _INFIX_WORDS else None
            )
            if op is None:
                self.depth -= length
                return left
            self.advance()
            length += 1
            self.enter(token)
            right = self.addition()
            if op in _REGEX_OPERATORS:
                left = self.regex_operator(op, left, right, token, start)
            else:
                left = _relation(op, left, right, token.pos, self)

    def regex_operator(self, op: str, left: Node, right: Node, token: Token, start: int) -> Node:
        """`x =~ "re"` -> `x.matches("re")`; Wireshark's `x ~ "re"`/`x matches "re"` ignore case."""
        method, negated, prefix = _REGEX_OPERATORS[op]
        if prefix and isinstance(right, Literal) and isinstance(right.value, str):
            right = Literal(prefix + right.value, right.pos)
        subject = self.text[start : token.pos].strip()
        if not isinstance(left, Ident | Select | Index | Call):
            subject = f"({subject})"
        argument = _source(right, self.text[token.end : self.tokens[self.i - 1].end].strip())
        canonical = f"{'!' if negated else ''}{subject}.{method}({argument})"
        self.warn(token, f"'{op}' read as .{method}()", f"write {canonical}")
        call: Node = Call(method, left, (right,), token.pos)
        return Unary("!", call, token.pos) if negated else call

    def addition(self) -> Node:
        left = self.multiplication()
        length = 0
        while op := self.at_op("+", "-"):
            token = self.advance()
            length += 1
            self.enter(token)
            left = Binary(op, left, self.multiplication(), token.pos)
        self.depth -= length
        return left

    def multiplication(self) -> Node:
        left = self.unary()
        length = 0
        while op := self.at_op("*", "/", "%"):
            token = self.advance()
            length += 1
            self.enter(token)
            left = Binary(op, left, self.unary(), token.pos)
        self.depth -= length
        return left

    def unary(self) -> Node:
        token = self.peek()
        if op := self.at_op("!", "-"):
            self.advance()
            number = self.peek()
            if op == "-" and number.kind == "int" and isinstance(number.value, int):
                self.advance()  # a negative literal; only with its sign does -2**63 fit in 64 bits
                return Literal(-number.value, token.pos)
            self.enter(token)
            operand = self.unary()
            self.depth -= 1
            if (
                op == "-"
                and isinstance(operand, Literal)
                and type(operand.value) in (int, float)
                and not operand.raw
            ):
                value = -operand.value
                if isinstance(value, int) and value < _INT64_MIN:
                    raise KflError("integer out of range", token.pos, "integers are 64-bit signed")
                return Literal(value, token.pos)
            return Unary(op, operand, token.pos)
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        length = 0
        while True:
            token = self.peek()
            if self.at_op("."):
                self.advance()
                length += 1
                self.enter(token)
                name = self.peek()
                if name.kind != "ident":
                    found = _describe(name)
                    hint = 'e.g. path.startsWith("/api") or src.pod.name'
                    raise KflError(
                        f"expected a field or method name after '.', found {found}", name.pos, hint
                    )
                self.advance()
                if self.at_op("("):
                    args = self.arguments()
                    node = Call(str(name.value), node, args, name.pos)
                else:
                    node = Select(node, str(name.value), name.pos)
            elif self.at_op("["):
                self.advance()
                length += 1
                self.enter(token)
                index = self.expr()
                self.expect("]", "to close the index")
                node = Index(node, index, token.pos)
            else:
                self.depth -= length
                return node

    def arguments(self) -> tuple[Node, ...]:
        open_token = self.expect("(", "to start the arguments")
        self.enter(open_token)
        args: list[Node] = []
        if not self.at_op(")"):
            args.append(self.expr())
            while self.at_op(","):
                self.advance()
                args.append(self.expr())
        self.expect(")", "to close the arguments")
        self.depth -= 1
        return tuple(args)

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "duration":
            self.advance()
            written = self.text[token.pos : token.end]
            self.warn(token, f'{written} read as duration("{written}")', f'write duration("{written}")')
            return Literal(token.value, token.pos)
        if token.kind == "address":
            self.advance()
            self.warn(token, f"address {self.text[token.pos : token.end]} read as a string",
                      f'write "{token.value}"')  # fmt: skip
            return Literal(token.value, token.pos)
        if token.kind in ("int", "double", "string", "bytes"):
            self.advance()
            if token.kind == "int" and isinstance(token.value, int) and token.value > _INT64_MAX:
                raise KflError("integer out of range", token.pos, "integers are 64-bit signed")
            return Literal(token.value, token.pos, raw=token.raw)
        if token.kind == "uint":
            self.advance()
            return Literal(token.value, token.pos)
        if token.kind == "ident":
            name = str(token.value)
            if name in RESERVED:
                raise KflError(
                    f"'{name}' is a reserved word", token.pos, "rename it or quote it as a map key"
                )
            if name in ("in", "and", "or"):
                raise KflError(
                    f"expected a value, found '{name}'", token.pos, "an operator needs a value on each side"
                )
            self.advance()
            if name == "true":
                return Literal(True, token.pos)
            if name == "false":
                return Literal(False, token.pos)
            if name == "null":
                return Literal(None, token.pos)
            if self.at_op("("):
                return Call(name, None, self.arguments(), token.pos)
            return Ident(name, token.pos)
        if self.at_op("("):
            self.advance()
            self.enter(token)
            node = self.expr()
            self.depth -= 1
            self.expect(")", "to close the parenthesis")
            return node
        if self.at_op("["):
            self.advance()
            self.enter(token)
            items: list[Node] = []
            while not self.at_op("]"):
                items.append(self.expr())
                if not self.at_op(","):
                    break
                self.advance()
            self.expect("]", "to close the list")
            self.depth -= 1
            return ListLit(tuple(items), token.pos)
        if self.at_op("{"):
            self.advance()
            self.enter(token)
            entries: list[tuple[Node, Node]] = []
            while not self.at_op("}"):
                key = self.expr()
                self.expect(":", "between a map key and its value")
                entries.append((key, self.expr()))
                if not self.at_op(","):
                    break
                self.advance()
            self.expect("}", "to close the map")
            self.depth -= 1
            return MapLit(tuple(entries), token.pos)
        if self.at_op("."):
            raise KflError("a name cannot start with '.'", token.pos, "remove the leading dot")
        raise KflError(f"expected a value, found {_describe(token)}", token.pos, _hint_for(token, None))


def _relation(op: str, left: Node, right: Node, pos: int, parser: _Parser) -> Node:
    """KFL v1: `x == r"re"` means x matches the whole regex; CEL raw strings elsewhere stay strings."""
    if op in ("==", "!=") and isinstance(right, Literal) and right.raw and isinstance(right.value, str):
        parser.warnings.append(Problem(
            message='KFL v1 regex comparison read as a full match',
            position=right.pos,
            hint=f'write string(x).matches("^(?:{right.value})$")',
            severity="warning",
        ))  # fmt: skip
        anchored = Literal(f"^(?:{right.value})$", right.pos)
        match: Node = Call("matches", Call("string", None, (left,), pos), (anchored,), pos)
        return match if op == "==" else Unary("!", match, pos)
    return Binary(op, left, right, pos)


def _source(node: Node, written: str) -> str:
    """How the warning spells an operand: the literal in CEL syntax, else the text as written."""
    if isinstance(node, Literal) and isinstance(node.value, str):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return written


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "the end of the query"
    if token.kind == "op":
        return f"'{token.value}'"
    if token.kind == "ident":
        return f"'{token.value}'"
    return f"{token.kind} literal"


def _hint_for(token: Token, wanted: str | None) -> str:
    if token.kind == "end":
        return f"the query ends too early; add '{wanted}'" if wanted else "the query ends too early"
    if token.kind == "op" and token.value in ("&&", "||", "==", "!=", "<", ">", "<=", ">="):
        return "an operator needs a value on each side"
    return "check the operators and parentheses around this point"


def parse(text: str) -> tuple[Node, list[Problem]]:
    """Parse a query into its tree and the warnings about KFL v1 spellings it translated."""
    if not isinstance(text, str):
        raise KflError("a query is text", 0, "pass the filter as a string")
    if len(text) > MAX_QUERY_LENGTH:
        raise KflError(f"query is longer than {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH,
                       "shorten it, e.g. with `x in [a, b, c]` instead of a chain of ||")  # fmt: skip
    parser = _Parser(text)
    node = parser.parse()
    unique = {(w.position, w.message): w for w in parser.warnings}
    return node, list(unique.values())

"""The KFL tokenizer: query text in, tokens with their character offsets out.

Rule: it accepts CEL's lexical grammar plus the KFL v1 words `and`, `or`, `not` and a single `=`,
and rejects anything else with a `KflError` pointing at the first character it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from wiretide.common.kfl.errors import KflError

TokenKind = Literal["int", "uint", "double", "string", "bytes", "ident", "op", "end"]

# CEL reserves these words; using one as a name is an error rather than a surprise later.
RESERVED: Final = frozenset(
    {
        "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
        "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip

# Longest first, so that "==" wins over "=".
OPERATORS: Final = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "?", ":", ".", ",", "[", "]",
                    "(", ")", "{", "}", "+", "-", "*", "/", "%", "=", "&", "|")  # fmt: skip

_SIMPLE_ESCAPES: Final = {
    "\\": "\\", '"': '"', "'": "'", "`": "`", "?": "?",
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
}  # fmt: skip
_DIGITS: Final = frozenset("0123456789")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_MAX_UNICODE: Final = 0x10FFFF
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    value: object  # the decoded literal, the identifier, or the operator text
    pos: int
    end: int
    raw: bool = False  # an r"..." string


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n\f\v":
            i += 1
            continue
        if text.startswith("//", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
            continue
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            token = _number(text, i)
        elif ch.isalpha() or ch == "_":
            token = _word_or_string(text, i)
        elif ch in "\"'":
            token = _string(text, i, i, raw=False, as_bytes=False)
        else:
            token = _operator(text, i)
        tokens.append(token)
        i = token.end
    tokens.append(Token("end", None, n, n))
    return tokens


def _operator(text: str, i: int) -> Token:
    for op in OPERATORS:
        if text.startswith(op, i):
            if op in ("&", "|"):
                raise KflError(
                    f"'{op}' is not an operator",
                    i,
                    f"write '{op}{op}' for a logical {'and' if op == '&' else 'or'}",
                )
            return Token("op", op, i, i + len(op))
    char = text[i]
    raise KflError(f"unexpected character {char!r}", i, 'strings go in double quotes, e.g. "/api"')


def _word_or_string(text: str, i: int) -> Token:
    j = i
    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
        j += 1
    word = text[i:j]
    if j < len(text) and text[j] in "\"'" and word.lower() in ("r", "b", "rb", "br"):
        lower = word.lower()
        return _string(text, i, j, raw="r" in lower, as_bytes="b" in lower)
    if not word.isascii():
        raise KflError(f"identifier {word!r} is not ASCII", i, "names are letters, digits and '_'")
    return Token("ident", word, i, j)


def _number(text: str, i: int) -> Token:
    n = len(text)
    if text.startswith(("0x", "0X"), i):
        j = i + 2
        while j < n and text[j] in _HEX_DIGITS:
            j += 1
        if j == i + 2:
            raise KflError("a hexadecimal number needs digits after 0x", i, "e.g. 0x1F")
        value = int(text[i + 2 : j], 16)
        return _int_token(text, i, j, value)
    j = i
    while j < n and text[j] in _DIGITS:
        j += 1
    is_double = False
    if j < n and text[j] == "." and j + 1 < n and text[j + 1] in _DIGITS:
        is_double = True
        j += 1
        while j < n and text[j] in _DIGITS:
            j += 1
    if j < n and text[j] in "eE":
        k = j + 1
        if k < n and text[k] in "+-":
            k += 1
        if k < n and text[k] in _DIGITS:
            is_double = True
            j = k
            while j < n and text[j] in _DIGITS:
                j += 1
    if j < n and (text[j].isalpha() or text[j] == "_") and text[j] not in "uU":
        raise KflError(
            f"a number cannot run into letters: {text[i : j + 1]!r}",
            i,
            "put a space or an operator between them",
        )
    if is_double:
        return Token("double", float(text[i:j]), i, j)
    return _int_token(text, i, j, int(text[i:j]))


def _int_token(text: str, i: int, j: int, value: int) -> Token:
    if j < len(text) and text[j] in "uU":
        if value > _UINT64_MAX:
            raise KflError("unsigned integer out of range", i, "the largest is 18446744073709551615")
        return Token("uint", value, i, j + 1)
    if value > _INT64_MAX + 1:  # the +1 lets "-9223372036854775808" through; the parser checks the sign
        raise KflError("integer out of range", i, "integers are 64-bit signed")
    return Token("int", value, i, j)


def _string(text: str, start: int, quote_at: int, *, raw: bool, as_bytes: bool) -> Token:
    n = len(text)
    quote = text[quote_at]
    triple = text.startswith(quote * 3, quote_at)
    delimiter = quote * 3 if triple else quote
    i = quote_at + len(delimiter)
    chars: list[str] = []
    byte_values: list[int] = []  # \x and octal escapes in bytes literals are raw bytes

    def emit(s: str) -> None:
        if as_bytes:
            byte_values.extend(s.encode("utf-8"))
        else:
            chars.append(s)

    while True:
        if i >= n:
            raise KflError("string is not closed", start, f"end it with {delimiter}")
        if text.startswith(delimiter, i):
            i += len(delimiter)
            break
        ch = text[i]
        if ch == "\n" and not triple:
            raise KflError(
                "string is not closed before the end of the line", start, f"end it with {delimiter}"
            )
        if ch != "\\" or raw:
            emit(ch)
            i += 1
            continue
        if i + 1 >= n:
            raise KflError("string is not closed", start, f"end it with {delimiter}")
        esc = text[i + 1]
        if esc in _SIMPLE_ESCAPES:
            emit(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc in "xXuU":
            width = {"x": 2, "X": 2, "u": 4, "U": 8}[esc]
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in _HEX_DIGITS for d in digits):
                raise KflError(f"bad escape \\{esc}: needs {width} hex digits", i, "e.g. \\x41 or \\u00e9")
            code = int(digits, 16)
            if esc in "xX" and as_bytes:
                byte_values.append(code)
            elif code > _MAX_UNICODE or 0xD800 <= code <= 0xDFFF:
                raise KflError(
                    "escape is not a valid Unicode code point", i, "use a code point outside the surrogates"
                )
            else:
                emit(chr(code))
            i += 2 + width
        elif esc in "0123":
            digits = text[i + 1 : i + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                raise KflError("bad octal escape: needs 3 octal digits", i, "e.g. \\101")
            code = int(digits, 8)
            if as_bytes:
                byte_values.append(code)
            else:
                emit(chr(code))
            i += 4
        else:
            raise KflError(f"unknown escape \\{esc}", i, 'use \\\\ for a backslash, or a raw string r"..."')
    if as_bytes:
        return Token("bytes", bytes(byte_values), start, i)
    return Token("string", "".join(chars), start, i, raw=raw)

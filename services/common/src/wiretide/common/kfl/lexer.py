"""The KFL tokenizer: query text in, tokens with their character offsets out.

Rule: it accepts CEL's lexical grammar plus the KFL v1 words `and`, `or`, `not` and a single `=`,
the shorthands users bring from elsewhere (duration literals `50ms`, bare IP addresses, `=~`, `!~`,
`~`) as tokens of their own that the parser translates with a warning, and rejects anything else
with a `KflError` pointing at the first character it cannot read.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal

from wiretide.common.kfl.errors import KflError
from wiretide.common.kfl.values import parse_duration

TokenKind = Literal["int", "uint", "double", "string", "bytes", "ident", "op", "end", "duration", "address"]

# CEL reserves these words; using one as a name is an error rather than a surprise later.
RESERVED: Final = frozenset(
    {
        "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
        "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip

# Longest first, so that "==" wins over "=". "=~", "!~" and "~" are regex matches in Perl, Ruby and
# Wireshark; CEL has no such operators, so reading them costs no valid query anything.
OPERATORS: Final = ("==", "!=", "=~", "!~", "<=", ">=", "&&", "||", "<", ">", "!", "?", ":", ".", ",", "[",
                    "]", "(", ")", "{", "}", "+", "-", "*", "/", "%", "=", "&", "|", "~")  # fmt: skip
# The operators by their first character, longest first: one lookup per operator token.
_BY_FIRST: Final[dict[str, tuple[str, ...]]] = {
    first: tuple(op for op in OPERATORS if op[0] == first)
    for first in dict.fromkeys(op[0] for op in OPERATORS)
}

_SIMPLE_ESCAPES: Final = {
    "\\": "\\", '"': '"', "'": "'", "`": "`", "?": "?",
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
}  # fmt: skip
_DIGITS: Final = frozenset("0123456789")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_MAX_UNICODE: Final = 0x10FFFF
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
# `50ms`, `1.5s`, `1h30m`: Go/CEL duration text written without duration("..."); CEL has no such
# literal, so a number running into a unit was an error before and is a translation now.
_DURATION: Final = re.compile(r"(?:(?:\d+(?:\.\d+)?)(?:ns|us|µs|ms|s|m|h))+")
_IPV4: Final = re.compile(r"\d+(?:\.\d+){3}")
_IPV6: Final = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_PREFIX: Final = re.compile(r"/\d+")
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.µ")
_OCTET_BITS: Final = 8


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
    if text.startswith("::", i) and (address := _ipv6(text, i)) is not None:
        return address
    for op in _BY_FIRST.get(text[i], ()):
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
    if j < len(text) and text[j] == ":" and (address := _ipv6(text, i)) is not None:
        return address
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
    if j < n and text[j] in ".:" and (address := _address(text, i)) is not None:
        return address
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
    if j < n and (text[j].isalpha() or text[j] == "_") and (duration := _duration(text, i)) is not None:
        return duration
    if j < n and (text[j].isalpha() or text[j] == "_") and text[j] not in "uU":
        raise KflError(
            f"a number cannot run into letters: {text[i : j + 1]!r}",
            i,
            "put a space or an operator between them",
        )
    if is_double:
        return Token("double", float(text[i:j]), i, j)
    return _int_token(text, i, j, int(text[i:j]))


def _duration(text: str, i: int) -> Token | None:
    """`50ms` and friends as a duration token, or None when the letters are not a unit."""
    match = _DURATION.match(text, i)
    if match is None or (match.end() < len(text) and text[match.end()] in _NAME_CHARS):
        return None
    value = parse_duration(match.group())
    if value is None:
        raise KflError("duration out of range", i, "durations are 64-bit nanoseconds")
    return Token("duration", value, i, match.end())


def _address(text: str, i: int) -> Token | None:
    """A bare IPv4 (`10.0.1.104`) or IPv6 (`2001:db8::1`) address as an address token, or None."""
    match = _IPV4.match(text, i)
    if match is None or (match.end() < len(text) and text[match.end()] in _NAME_CHARS):
        return _ipv6(text, i)
    try:
        value = str(ipaddress.IPv4Address(match.group()))
    except ValueError:
        raise KflError(f"not an IPv4 address: {match.group()!r}", i, 'e.g. ip.src == "10.0.1.104"') from None
    _refuse_prefix(text, match.end(), value)
    return Token("address", value, i, match.end())


def _ipv6(text: str, i: int) -> Token | None:
    match = _IPV6.match(text, i)
    if match is None or match.group().count(":") < 2:  # one colon is a map entry or `c ? a:b`
        return None
    end = match.end()
    if end < len(text) and text[end] in _NAME_CHARS:
        return None
    try:
        value = str(ipaddress.IPv6Address(match.group()))
    except ValueError:
        return None
    _refuse_prefix(text, end, value)
    return Token("address", value, i, end)


def _refuse_prefix(text: str, at: int, address: str) -> None:
    """`10.0.0.0/8` is Wireshark's subnet match; KFL has none yet, so say what to write instead."""
    prefix = _PREFIX.match(text, at)
    if prefix is None:
        return
    bits = int(prefix.group()[1:])
    octets = address.split(".")
    hint = "compare the address with a string test, e.g. src.ip.startsWith(...)"
    if len(octets) == 4 and bits in (8, 16, 24):
        head = ".".join(octets[: bits // _OCTET_BITS]) + "."
        hint = f'for this subnet write src.ip.startsWith("{head}") (or dst.ip)'
    raise KflError(f"subnet matches ({address}{prefix.group()}) are not supported", at, hint)


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

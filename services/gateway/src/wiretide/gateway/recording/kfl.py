"""`record("name")` in a KFL filter: the entries of a recording, as KFL the store can run.

Rule: the call is replaced by the recording's selection (its runs' time windows, its filter, its
namespaces and nodes), so the query compiles, pushes down and streams like any other; while checking
what the user wrote, the call stands as `true` padded to its own length, so every position the
checker reports is a position in the user's text.
"""

from __future__ import annotations

from collections.abc import Callable

from wiretide.common.kfl import KflError
from wiretide.common.kfl.lexer import tokenize

FUNCTION = "record"


def record_calls(text: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of every `record("name")` in `text`; none when it does not tokenize."""
    if FUNCTION not in text:
        return []
    try:
        tokens = tokenize(text)
    except KflError:
        return []
    out = []
    for i, tok in enumerate(tokens[:-3]):
        if tok.kind != "ident" or tok.value != FUNCTION:
            continue
        if i and tokens[i - 1].kind == "op" and tokens[i - 1].value == ".":
            continue  # x.record(...) is something else
        paren, arg, close = tokens[i + 1 : i + 4]
        if (
            (paren.kind, paren.value) == ("op", "(")
            and arg.kind == "string"
            and (close.kind, close.value)
            == (
                "op",
                ")",
            )
        ):
            out.append((tok.pos, close.end, str(arg.value)))
    return out


def placeholder(text: str) -> str:
    """`text` with each record("name") as `true` of the same length (for checking what the user wrote)."""
    for start, end, _name in reversed(record_calls(text)):
        text = text[:start] + "true".ljust(end - start) + text[end:]
    return text


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """`text` with each record("name") replaced by `lookup(name)`; KflError for an unknown recording."""
    for start, end, name in reversed(record_calls(text)):
        selection = lookup(name)
        if selection is None:
            raise KflError(f"no recording named {name!r}", start, "wiretide record list shows them")
        text = text[:start] + f"(\n{selection}\n)" + text[end:]
    return text

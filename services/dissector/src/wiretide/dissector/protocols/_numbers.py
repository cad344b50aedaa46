"""Numbers read from the wire: ASCII digits only, and never more of them than the field allows.

Rule: every decimal a protocol parses from text goes through `decimal`. `str.isdigit()` accepts
digits that `int()` refuses ("²") or reads ("٣", "３") and any length, so a value beyond 64 bits would
reach an Entry that JSON encoders refuse; here such text is simply not a number.
"""

from __future__ import annotations


def decimal(text: str, max_digits: int, exact: bool = False) -> int | None:
    """The value of `text` when it is 1..max_digits ASCII digits (exactly max_digits if `exact`)."""
    n = len(text)
    if not n or n > max_digits or (exact and n != max_digits):
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text)

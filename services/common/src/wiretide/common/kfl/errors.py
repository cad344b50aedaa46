"""KFL's one error type and the problems `validate` reports.

Rule: every failure to understand a query is a `KflError` carrying the character offset of the
problem and a hint; nothing else escapes the parser, the checker or the compilers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


class KflError(ValueError):
    """A query KFL cannot accept: what is wrong, where (0-based character offset), how to fix it."""

    def __init__(self, message: str, position: int, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.position = max(0, position)
        self.hint = hint

    def render(self, text: str) -> str:
        """The message, the query line that holds the problem, and a caret under the offending character."""
        return render_caret(text, self.position, self.message, self.hint)

    def to_problem(self) -> Problem:
        return Problem(message=self.message, position=self.position, hint=self.hint, severity="error")

    def __str__(self) -> str:
        text = f"{self.message} (at offset {self.position})"
        return f"{text}; {self.hint}" if self.hint else text


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of `validate`: an error makes the query unusable, a warning does not."""

    message: str
    position: int
    hint: str
    severity: Severity

    def render(self, text: str) -> str:
        """The finding as a CLI prints it: severity and message, the query line, a caret, the hint."""
        return render_caret(text, self.position, self.message, self.hint, self.severity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "position": self.position,
            "hint": self.hint,
            "severity": self.severity,
        }


def render_caret(text: str, position: int, message: str, hint: str = "", severity: Severity = "error") -> str:
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    if line_end < 0:
        line_end = len(text)
    line_no = text.count("\n", 0, line_start) + 1
    column = position - line_start
    lines = [
        f"{severity}: {message}",
        f"  {line_no} | {text[line_start:line_end]}",
        "    | " + " " * column + "^",
    ]
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)

"""The seam for kernel-observed causality (eBPF): which inbound request a process was serving, on the
same thread or connection, when it made an outbound call.

Rule: a causality source answers only what it saw; it never guesses. When it has no answer the
assembler falls back to timing. No implementation ships yet — eBPF capture supplies one later.
"""

from __future__ import annotations

from typing import Any, Protocol


class CausalitySource(Protocol):
    """Answers, for an outbound call's entry, the id of the inbound entry that caused it."""

    def cause_of(self, entry: dict[str, Any]) -> str | None:
        """The entry id of the inbound request being served when this outbound call was made, or None."""
        ...


class NoCausality:
    """The default: no kernel view, every answer is "unknown"."""

    def cause_of(self, entry: dict[str, Any]) -> str | None:
        return None

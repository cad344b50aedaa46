"""Agents written and refined with the LLM: a description (or an agent and what to change) in, a
JavaScript source out, drafted against the agents' scripting reference; `api/agents.py` then runs it
over recent traffic in the agents service's replay harness and shows the result.

Rule: the model only proposes — this module never stores anything; what the model is shown is
bounded (the reference, the sample entries, an earlier attempt) and what it answers is taken only
from a fenced code block (or an answer that is code and nothing else): an answer without code is a
`NoCode` the user can retry, never something saved. A proposed change is shown as a unified diff
against the revision it was based on.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from wiretide.common.llm import LlmClient, Message, data_json

MAX_DESCRIPTION_CHARS: Final = 4_000
MAX_SOURCE_CHARS: Final = 64 * 1024  # an agent shown to the model (the agents service takes 256 KiB)
MAX_REFERENCE_CHARS: Final = 24_000  # docs/agents.md is ~10 KB; a bigger one is cut, never dropped
MAX_SAMPLE_ENTRIES: Final = 3  # entries shown to the model so it sees the field names
MAX_SAMPLE_BYTES: Final = 6 * 1024
MAX_ERROR_CHARS: Final = 1_000  # an earlier attempt's error, handed back to the model
MAX_EXPLANATION_CHARS: Final = 2_000

SYSTEM_PROMPT: Final = """\
You write Wiretide network agents: small JavaScript (ES2020, QuickJS) programs that Wiretide runs on \
every captured API call. Use only the hooks and helpers of the reference below; hooks are global \
functions; there is no require/import, no fetch, no timers (use jobs.schedule); settings come from `env`.
Answer with ONE fenced ```javascript code block holding the whole agent, then at most three sentences \
saying what it does. Every kfl.match query must be a string literal (or env.NAME).

Reference:
{reference}"""

_FENCE: Final = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_CODE_LANGS: Final = frozenset({"", "js", "javascript", "ecmascript", "es", "es6", "jsx"})
_CODE_START: Final = re.compile(r"^(//|/\*|function\b|var\b|let\b|const\b|\"use strict\"|'use strict')")


class DraftError(ValueError):
    """A request the drafting refuses before asking the model (the message is for the user)."""


class NoCode(ValueError):
    """The model answered without an agent; `answer` is what it said instead."""

    def __init__(self, answer: str) -> None:
        super().__init__("the model answered without any JavaScript code; try again or rephrase")
        self.answer = answer[:MAX_EXPLANATION_CHARS]


@dataclass(frozen=True, slots=True)
class Draft:
    source: str
    explanation: str  # what the model said beside the code


@dataclass(frozen=True, slots=True)
class Attempt:
    """An earlier attempt and what went wrong with it, handed back so the model can correct it."""

    source: str
    error: str

    @classmethod
    def parse(cls, raw: Any) -> Attempt | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("source"), str):
            raise DraftError('previous must be {"source": "...", "error": "..."}')
        error = raw.get("error") or ""
        if not isinstance(error, str):
            raise DraftError("previous.error must be text")
        return cls(raw["source"][:MAX_SOURCE_CHARS], error[:MAX_ERROR_CHARS])


def check_text(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DraftError(f'say what the agent should do: {{"{what}": "{example}"}}')
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise DraftError(f"the {what} is longer than {MAX_DESCRIPTION_CHARS} characters")
    return value.strip()


def extract(answer: str) -> Draft:
    """The agent in the model's answer: the longest JavaScript fenced block, or the whole answer when
    it is code and nothing else; the rest of the answer is the explanation."""
    blocks = [(m, m.group(2)) for m in _FENCE.finditer(answer) if m.group(1).lower() in _CODE_LANGS]
    blocks = [(m, code) for m, code in blocks if code.strip()]
    if blocks:
        match, code = max(blocks, key=lambda b: len(b[1]))
        rest = "\n\n".join(p.strip() for p in (answer[: match.start()], answer[match.end() :]) if p.strip())
        return Draft(_ending(code), rest[:MAX_EXPLANATION_CHARS])
    text = answer.strip()
    if text and _CODE_START.match(text) and "```" not in text:
        return Draft(_ending(text), "")
    raise NoCode(answer)


def _ending(code: str) -> str:
    return code.strip("\n") + "\n"


def _system(reference: str) -> str:
    if len(reference) > MAX_REFERENCE_CHARS:
        reference = reference[:MAX_REFERENCE_CHARS] + "\n… [reference cut]"
    return SYSTEM_PROMPT.format(reference=reference)


def _sample(entries: Sequence[dict[str, Any]]) -> str:
    if not entries:
        return "No traffic is stored yet; write the agent from the reference alone."
    shown = data_json(list(entries[:MAX_SAMPLE_ENTRIES]), MAX_SAMPLE_BYTES)
    return f"Recent entries it will run on (a sample, JSON):\n{shown}"


def _retry(previous: Attempt | None) -> list[Message]:
    if previous is None:
        return []
    return [
        {"role": "assistant", "content": f"```javascript\n{previous.source}```"},
        {
            "role": "user",
            "content": f"That agent failed when it was tried: {previous.error or 'it did not work'}. "
            "Answer with the whole corrected agent.",
        },
    ]


async def draft(
    llm: LlmClient,
    reference: str,
    description: str,
    sample: Sequence[dict[str, Any]],
    previous: Attempt | None = None,
) -> Draft:
    """A new agent for `description` (LlmError, LlmDisabled, NoCode)."""
    messages: list[Message] = [
        {"role": "system", "content": _system(reference)},
        {"role": "user", "content": f"Write an agent that does this: {description}\n\n{_sample(sample)}"},
        *_retry(previous),
    ]
    reply = await llm.chat(messages)
    return extract(reply.text)


async def improve(
    llm: LlmClient,
    reference: str,
    name: str,
    source: str,
    instruction: str,
    sample: Sequence[dict[str, Any]],
    previous: Attempt | None = None,
) -> Draft:
    """A new version of agent `name` changed as `instruction` says (LlmError, LlmDisabled, NoCode)."""
    if len(source) > MAX_SOURCE_CHARS:
        raise DraftError(f"agent {name!r} is longer than {MAX_SOURCE_CHARS // 1024} KiB: too long to revise")
    messages: list[Message] = [
        {"role": "system", "content": _system(reference)},
        {
            "role": "user",
            "content": f"This is the agent {name!r}:\n```javascript\n{source}```\n\n"
            f"Change it: {instruction}\nKeep everything else as it is. Answer with the whole new agent."
            f"\n\n{_sample(sample)}",
        },
        *_retry(previous),
    ]
    reply = await llm.chat(messages)
    return extract(reply.text)


def unified_diff(old: str, new: str, name: str, revision: int) -> str:
    """The change from the stored `old` (at `revision`) to the proposed `new`, as `diff -u` prints it."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{name} (revision {revision})",
        tofile=f"{name} (proposed)",
    )
    no_newline = "\n\\ No newline at end of file\n"
    return "".join(line if line.endswith("\n") else line + no_newline for line in lines)

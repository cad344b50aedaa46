"""The agent console: a question in, the LLM answers by calling the tools (tools.py) over the data the
caller may see, and the answer streams back with links to the entries it cites.

Rule: a conversation is bounded — turns, tool calls, the question and the history it carries — and
always ends with one `done` or one `error` event: a model that calls tools forever is stopped (its last
turn is asked without tools), an unknown tool or malformed arguments come back to the model as a tool
error it can correct, and an endpoint that fails ends the conversation with the endpoint's message.
Only entries a tool actually returned are linked; ids the model cites that no tool returned are
listed as unverified, never linked.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from wiretide.common.auth import Principal
from wiretide.common.llm import LlmClient, LlmDisabled, LlmError, Message
from wiretide.gateway.tools import Tools

MAX_TURNS: Final = 8  # model calls per question; the last one is offered no tools
MAX_TOOL_CALLS: Final = 24  # tool runs per question, across turns
MAX_QUESTION_CHARS: Final = 4_000
MAX_HISTORY_MESSAGES: Final = 20  # earlier exchanges a follow-up question may carry
MAX_HISTORY_CHARS: Final = 8_000  # per earlier message
MAX_EVENT_ARGUMENT_CHARS: Final = 500  # tool arguments echoed to the user
ENTRY_LINK: Final = "/#entry={id}"  # the UI opens the entry's detail pane for this fragment

SYSTEM_PROMPT: Final = """\
You are the console of Wiretide, which captures every API call (an "entry") crossing a Kubernetes \
cluster: HTTP, gRPC, DNS, Kafka, Redis and more, with both ends named by their Kubernetes identity, \
stitched into traces and a service map.
Answer the user's question from the data, using the tools; never invent entries, numbers or names.
- Filters are KFL (CEL with Kubeshark's names): http && status_code >= 500, \
dst.namespace == "shop", grpc && grpc_status != 0, path.startsWith("/api"), \
elapsed_time > duration("250ms"), timestamp > now() - duration("5m").
- Start broad (stats, service_map), then narrow (query_entries), then look closely (get_entry, get_trace).
- Cite every entry you rely on as [entry:ID] with its exact id.
- Tool answers carry "completeness": say so when an answer was cut, capped or did not scan everything.
- Be brief: the cause, the evidence, what to check next."""

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
_CITATION: Final = re.compile(r"\[entry:\s*([A-Za-z0-9_-]{1,64})\s*\]")


class ConsoleError(ValueError):
    """A question the console refuses before asking anything (the message is for the user)."""


@dataclass(frozen=True, slots=True)
class Citation:
    id: str
    url: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "url": self.url}


def history_messages(raw: Any) -> list[Message]:
    """Earlier exchanges sent by the client: user and assistant text only (no system prompt, no tool
    results a client could forge), the newest MAX_HISTORY_MESSAGES, each cut to MAX_HISTORY_CHARS."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConsoleError('history must be a list of {"role": "user"|"assistant", "content": "..."}')
    out: list[Message] = []
    for item in raw[-MAX_HISTORY_MESSAGES:]:
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            raise ConsoleError('history items are {"role": "user"|"assistant", "content": "..."}')
        content = item.get("content")
        if not isinstance(content, str):
            raise ConsoleError("history content must be text")
        out.append({"role": item["role"], "content": content[:MAX_HISTORY_CHARS]})
    return out


def check_question(question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ConsoleError('ask a question: {"question": "why are checkout calls failing?"}')
    if len(question) > MAX_QUESTION_CHARS:
        raise ConsoleError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
    return question.strip()


def citations(answer: str, seen: Sequence[str]) -> tuple[list[Citation], list[str]]:
    """Entries the answer cites: those a tool returned (linked, in order of first mention) and those
    no tool returned (unverified). A bare id a tool returned counts as cited too."""
    known = set(seen)
    linked: list[str] = []
    unverified: list[str] = []
    for match in _CITATION.finditer(answer):
        ident = match.group(1)
        target = linked if ident in known else unverified
        if ident not in target:
            target.append(ident)
    for ident in seen:
        if ident not in linked and ident in answer:
            linked.append(ident)
    return [Citation(i, ENTRY_LINK.format(id=i)) for i in linked], unverified


@dataclass
class Conversation:
    """One question's run: the messages so far and what the tools returned."""

    llm: LlmClient
    tools: Tools
    principal: Principal
    emit: Emit
    messages: list[Message] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # entry ids tool answers showed, first seen first
    tool_calls: int = 0
    tool_errors: int = 0

    async def _text(self, piece: str) -> None:
        await self.emit("text", {"text": piece})

    async def _run_tools(self, calls: Sequence[Any]) -> None:
        for call in calls:
            args = (
                call.arguments
                if len(call.arguments) <= MAX_EVENT_ARGUMENT_CHARS
                else call.arguments[:MAX_EVENT_ARGUMENT_CHARS] + "…"
            )
            await self.emit("tool", {"name": call.name[:80], "arguments": args})
            cited: tuple[str, ...] = ()
            if self.tool_calls >= MAX_TOOL_CALLS:
                spent = f"the tool budget of this question ({MAX_TOOL_CALLS} calls) is spent; answer now"
                ok, result_text = False, orjson.dumps({"error": spent}).decode()
            else:
                self.tool_calls += 1
                result = await self.tools.call(call.name, call.arguments, self.principal)
                ok, result_text, cited = result.ok, result.text(), result.cited
            if not ok:
                self.tool_errors += 1
            for ident in cited:
                if ident not in self.seen:
                    self.seen.append(ident)
            await self.emit(
                "tool_result",
                {"name": call.name[:80], "ok": ok, "cited": list(cited), "bytes": len(result_text)},
            )
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": result_text})

    async def run(self, question: str, history: list[Message]) -> dict[str, Any]:
        self.messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            *history,
            {"role": "user", "content": question},
        ]
        specs = [s.openai() for s in self.tools.specs]
        answer = ""
        stopped: str | None = None
        truncated = False
        turns = 0
        for turn in range(MAX_TURNS):
            last = turn == MAX_TURNS - 1
            if last:
                self.messages.append(
                    {"role": "system", "content": "The tool budget is spent: answer now with what you have."}
                )
            turns += 1
            reply = await self.llm.chat(self.messages, () if last else specs, on_text=self._text)
            truncated = truncated or reply.truncated
            self.messages.append(reply.message())
            answer = reply.text
            if not reply.tool_calls:
                break
            if last:
                stopped = f"the model still asked for tools after {MAX_TURNS} turns; stopped"
                break
            await self._run_tools(reply.tool_calls)
            await self.emit("turn", {"turn": turns})
        linked, unverified = citations(answer, self.seen)
        return {
            "answer": answer,
            "citations": [c.to_dict() for c in linked],
            "unverified_citations": unverified,
            "turns": turns,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "stopped": stopped,
            "answer_truncated": truncated,
        }


async def converse(
    llm: LlmClient,
    tools: Tools,
    principal: Principal,
    question: str,
    history: list[Message],
    emit: Emit,
) -> None:
    """Run one question to its end, emitting text/tool/tool_result/turn events and then exactly one
    `done` (the answer, its citations, how it ended) or `error` event."""
    conversation = Conversation(llm, tools, principal, emit)
    try:
        done = await conversation.run(question, history)
    except (LlmError, LlmDisabled) as exc:
        await emit("error", {"error": str(exc), "tool_calls": conversation.tool_calls})
        return
    await emit("done", done)


def describe(llm: LlmClient, tools: Tools) -> Mapping[str, Any]:
    """What `GET /api/console` answers: whether the LLM is on, the tools, the bounds."""
    return {
        "llm": llm.describe(),
        "tools": [s.to_dict() for s in tools.specs],
        "limits": {
            "max_turns": MAX_TURNS,
            "max_tool_calls": MAX_TOOL_CALLS,
            "max_question_chars": MAX_QUESTION_CHARS,
            "max_history_messages": MAX_HISTORY_MESSAGES,
        },
    }

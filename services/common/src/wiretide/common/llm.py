"""The optional LLM: one client for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
Ollama, llama.cpp server), shared by the gateway's console and drafting and by agents' `llm` helpers.

Rule: the LLM is off unless `WIRETIDE_LLM_BASE_URL` is set. Off, every call raises `LlmDisabled` with
one plain sentence and no byte leaves the process. On, every failure of the endpoint — an HTTP error,
a refused connection, a timeout, an answer that is not a chat completion — is an `LlmError` whose
message is for the user; nothing else escapes. What is sent and what is kept of an answer is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from wiretide.common.settings import CommonSettings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

DISABLED: Final = (
    "the LLM is disabled: set WIRETIDE_LLM_BASE_URL and WIRETIDE_LLM_MODEL to an OpenAI-compatible "
    "endpoint to enable it (while they are unset nothing is sent outside the cluster)"
)
# An answer longer than this is cut (and says so): a runaway model cannot fill the caller's memory.
MAX_ANSWER_CHARS: Final = 64 * 1024
# Tool calls one answer may carry; more are dropped (a model asking for 500 lookups at once is looping).
MAX_TOOL_CALLS: Final = 16
# The data handed to `ask` is JSON cut to this many bytes: prompts cost money and context.
MAX_DATA_BYTES: Final = 32 * 1024
# Retries are the caller's decision (the console has a turn budget); the client never retries on its own.
MAX_RETRIES: Final = 0

Message = dict[str, Any]  # an OpenAI chat message: {"role": ..., "content": ..., ...}
OnText = Callable[[str], Awaitable[None]]


class LlmDisabled(RuntimeError):
    """No LLM is configured; the message says how to configure one."""

    def __init__(self) -> None:
        super().__init__(DISABLED)


class LlmError(RuntimeError):
    """The LLM endpoint failed; the message is for the user."""


@dataclass(frozen=True, slots=True)
class LlmConfig:
    base_url: str
    model: str
    api_key: str
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> LlmConfig | None:
        """The configured endpoint, or None when the LLM is off."""
        if not settings.llm_base_url:
            return None
        return cls(settings.llm_base_url, settings.llm_model, settings.llm_api_key, settings.llm_timeout_s)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for; `arguments` is the model's raw JSON text."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    truncated: bool = False

    def message(self) -> Message:
        """The assistant message to append to the conversation before the tool results."""
        doc: Message = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            doc["tool_calls"] = [c.message() for c in self.tool_calls]
        return doc


def data_json(data: Any, limit: int = MAX_DATA_BYTES) -> str:
    """`data` as JSON for a prompt, cut to `limit` bytes with a marker saying so."""
    try:
        text = json.dumps(data, default=str, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        text = json.dumps(f"<data not serialisable: {exc}>")
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore") + f"… [cut: {len(raw)} bytes, first {limit} shown]"


class _Accumulator:
    """Tool calls arrive in pieces when streamed (by index); text arrives in deltas."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.chars = 0
        self.truncated = False
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.finish = ""

    def add_text(self, piece: str) -> str:
        room = MAX_ANSWER_CHARS - self.chars
        if room <= 0:
            self.truncated = True
            return ""
        if len(piece) > room:
            piece, self.truncated = piece[:room], True
        self.text.append(piece)
        self.chars += len(piece)
        return piece

    def add_call(self, index: int, ident: str | None, name: str | None, arguments: str | None) -> None:
        if index not in self.calls:
            if len(self.calls) >= MAX_TOOL_CALLS:
                self.truncated = True
                return
            self.calls[index] = ["", "", ""]
        slot = self.calls[index]
        if ident:
            slot[0] = ident
        if name:
            slot[1] += name
        if arguments and len(slot[2]) < MAX_ANSWER_CHARS:
            slot[2] += arguments

    def reply(self) -> Reply:
        calls = tuple(
            ToolCall(ident or f"call_{i}", name, args)
            for i, (ident, name, args) in sorted(self.calls.items())
        )
        return Reply("".join(self.text), calls, self.finish or "stop", self.truncated)


class LlmClient:
    """Chat completions with optional tools, streamed or not. Build one per process and close it."""

    def __init__(self, config: LlmConfig | None) -> None:
        self.config = config
        self._client: AsyncOpenAI | None = None

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> LlmClient:
        return cls(LlmConfig.from_settings(settings))

    @property
    def enabled(self) -> bool:
        return self.config is not None

    def describe(self) -> dict[str, Any]:
        """What the UI and `/api/console` say about the LLM (never the key)."""
        if self.config is None:
            return {"enabled": False, "message": DISABLED}
        return {"enabled": True, "model": self.config.model, "base_url": self.config.base_url}

    def _openai(self) -> AsyncOpenAI:
        if self.config is None:
            raise LlmDisabled
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.config.base_url,
                # Local servers (Ollama, llama.cpp) take any key; the client insists on one.
                api_key=self.config.api_key or "none",
                timeout=self.config.timeout_s,
                max_retries=MAX_RETRIES,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] = (),
        on_text: OnText | None = None,
    ) -> Reply:
        """One model turn. With `on_text` the answer is streamed and each text delta handed to it as it
        arrives; either way the whole reply (text and tool calls) is returned."""
        import openai

        client = self._openai()
        assert self.config is not None
        kwargs: dict[str, Any] = {"model": self.config.model, "messages": list(messages)}
        if tools:
            kwargs["tools"] = list(tools)
        acc = _Accumulator()
        try:
            if on_text is None:
                completion = await client.chat.completions.create(**kwargs)
                self._take_completion(completion, acc)
            else:
                stream = await client.chat.completions.create(**kwargs, stream=True)
                chunks = 0
                try:
                    async for chunk in stream:
                        chunks += 1
                        piece = self._take_chunk(chunk, acc)
                        if piece:
                            await on_text(piece)
                finally:
                    await stream.close()
                if not chunks:  # a body that holds no event at all (an HTML page, a JSON error)
                    raise LlmError("the LLM answered something that is not a chat completion stream")
        except openai.APITimeoutError:
            raise LlmError(f"the LLM did not answer within {self.config.timeout_s:g} s") from None
        except openai.APIStatusError as exc:
            raise LlmError(f"the LLM endpoint answered HTTP {exc.status_code}: {_brief(exc)}") from None
        except openai.APIConnectionError as exc:
            raise LlmError(f"cannot reach the LLM at {self.config.base_url}: {exc}") from None
        except openai.OpenAIError as exc:
            raise LlmError(f"the LLM endpoint failed: {exc}") from None
        except (LlmError, LlmDisabled):
            raise
        except Exception as exc:  # an answer that is not a chat completion (malformed JSON, wrong shape)
            raise LlmError(
                f"the LLM answered something that is not a chat completion: {exc!r}"[:500]
            ) from None
        return acc.reply()

    @staticmethod
    def _take_completion(completion: Any, acc: _Accumulator) -> None:
        choices = getattr(completion, "choices", None)
        if not choices:
            raise LlmError("the LLM answered without any choice")
        choice = choices[0]
        message = choice.message
        if message.content:
            acc.add_text(str(message.content))
        for i, call in enumerate(message.tool_calls or ()):
            function = getattr(call, "function", None)
            if function is None:
                continue
            acc.add_call(i, call.id, function.name, function.arguments)
        acc.finish = str(choice.finish_reason or "")

    @staticmethod
    def _take_chunk(chunk: Any, acc: _Accumulator) -> str:
        piece = ""
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    piece += acc.add_text(str(delta.content))
                for call in delta.tool_calls or ():
                    function = call.function
                    acc.add_call(
                        call.index,
                        call.id,
                        function.name if function else None,
                        function.arguments if function else None,
                    )
            if choice.finish_reason:
                acc.finish = str(choice.finish_reason)
        return piece

    async def ask(self, prompt: str, data: Any = None, system: str = "") -> str:
        """One question about some data, no tools: the answer's text."""
        messages: list[Message] = []
        if system:
            messages.append({"role": "system", "content": system})
        content = prompt if data is None else f"{prompt}\n\nData (JSON):\n{data_json(data)}"
        messages.append({"role": "user", "content": content})
        reply = await self.chat(messages)
        return reply.text


def _brief(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(err)[:300]
    return str(getattr(exc, "message", exc))[:300]

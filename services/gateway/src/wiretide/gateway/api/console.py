"""REST for the agent console and the tools: `GET /api/console` (is the LLM on, which tools, which
bounds), `POST /api/console` (a question; the answer streams back as server-sent events), `GET
/api/tools` and `POST /api/tools/{name}` (one tool call, as MCP clients and `wiretide mcp` make them).

Rule: handlers translate HTTP to the console and the tools and back, as the caller's Principal; with
the LLM off, `POST /api/console` is a 503 that says so plainly and nothing is sent anywhere. Once a
stream has started it always ends with one `done` or `error` event.

Events (`event: NAME`, `data: JSON`): `text` {text} — a piece of the answer as the model writes it;
`tool` {name, arguments}; `tool_result` {name, ok, cited, bytes}; `turn` {turn}; then `done` {answer,
citations: [{id, url}], unverified_citations, turns, tool_calls, tool_errors, stopped,
answer_truncated} or `error` {error}.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from wiretide.common.auth import principal_of
from wiretide.common.llm import LlmClient
from wiretide.common.settings import CommonSettings
from wiretide.gateway.console import ConsoleError, check_question, converse, describe, history_messages
from wiretide.gateway.query import QueryService
from wiretide.gateway.tools import GrpcUpstreams, Tools, Upstreams

MAX_BODY_BYTES: Final = 256 * 1024  # a question with its history; tool arguments are far smaller
MAX_PENDING_EVENTS: Final = 256  # events queued for a slow client before the console waits for it


class _Auth(Protocol):
    def call_metadata(self) -> tuple[tuple[str, str], ...]: ...


class _Gateway(Protocol):
    @property
    def settings(self) -> CommonSettings: ...

    @property
    def queries(self) -> QueryService: ...

    @property
    def auth(self) -> _Auth: ...


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type="application/json"
    )


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ConsoleError(f"body larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConsoleError("body must be JSON") from None


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def tools_for(gw: _Gateway, upstreams: Upstreams | None = None) -> Tools:
    """The tool set as this gateway serves it (its store, its tracer and agents service)."""
    return Tools(gw.queries, upstreams or GrpcUpstreams(gw.settings, gw.auth.call_metadata))


def routes(gw: _Gateway) -> list[Route]:
    async def console_info(request: Request) -> Response:
        principal_of(request.scope)
        llm = LlmClient.from_settings(gw.settings)
        return _json(describe(llm, tools_for(gw)))

    async def ask(request: Request) -> Response:
        principal = principal_of(request.scope)
        llm = LlmClient.from_settings(gw.settings)
        if not llm.enabled:
            return _json({"error": llm.describe()["message"], "llm": llm.describe()}, 503)
        try:
            body = await _body(request)
            if not isinstance(body, dict):
                raise ConsoleError('body must be a JSON object: {"question": "..."}')
            question = check_question(body.get("question"))
            history = history_messages(body.get("history"))
        except ConsoleError as exc:
            return _json({"error": str(exc)}, 400)
        tools = tools_for(gw)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_PENDING_EVENTS)

        async def emit(event: str, data: dict[str, Any]) -> None:
            await queue.put(sse(event, data))

        async def run() -> None:
            try:
                await converse(llm, tools, principal, question, history, emit)
            except Exception as exc:  # the stream must end with an event, whatever failed
                await queue.put(sse("error", {"error": f"the console failed: {exc}"[:500]}))
            finally:
                await llm.aclose()
                await queue.put(None)

        async def events() -> AsyncIterator[bytes]:
            task = asyncio.create_task(run(), name="console")
            try:
                while (item := await queue.get()) is not None:
                    yield item
            finally:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def list_tools(request: Request) -> Response:
        principal_of(request.scope)
        return _json({"tools": [s.to_dict() for s in tools_for(gw).specs]})

    async def call_tool(request: Request) -> Response:
        principal = principal_of(request.scope)
        try:
            arguments = await _body(request)
        except ConsoleError as exc:
            return _json({"error": str(exc)}, 400)
        if not isinstance(arguments, dict):
            return _json({"error": "the body is the tool's arguments, a JSON object"}, 400)
        result = await tools_for(gw).call(request.path_params["name"], arguments, principal)
        return _json(
            {"name": result.name, "ok": result.ok, "result": result.content, "cited": list(result.cited)}
        )

    return [
        Route("/api/console", console_info, methods=["GET"]),
        Route("/api/console", ask, methods=["POST"]),
        Route("/api/tools", list_tools, methods=["GET"]),
        Route("/api/tools/{name}", call_tool, methods=["POST"]),
    ]

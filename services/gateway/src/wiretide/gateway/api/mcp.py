"""The tools over the Model Context Protocol: streamable HTTP at `/mcp` on the gateway's API port
(behind the same authentication as the rest of the API), and the server `wiretide mcp` runs on stdio.

Rule: one MCP server shape, fed by two callables (list the tools, call one); the HTTP endpoint binds
them to the gateway's `Tools` and the request's Principal, the stdio command to the REST tool routes
of a running gateway. The HTTP endpoint is stateless (every POST stands alone, JSON answers), so it
holds no sessions and needs nothing started or stopped with the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from wiretide.common.auth import principal_of
from wiretide.common.auth.http import refuse
from wiretide.common.auth.principal import PermissionDenied
from wiretide.gateway.tools import ToolSpec

SERVER_NAME: Final = "wiretide"
INSTRUCTIONS: Final = (
    "Wiretide's data: every API call captured in the cluster (entries), their stats, the service map, "
    "traces and the network agents. Filters are KFL, e.g. http && status_code >= 500. Answers say how "
    "complete they are."
)
# The endpoint's own Host/Origin checks are off: the gateway's browser guard checks every request first.
NO_TRANSPORT_CHECKS: Final = TransportSecuritySettings(enable_dns_rebinding_protection=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One tool call's answer as the MCP server returns it."""

    ok: bool
    content: dict[str, Any]


ListTools = Callable[[], Awaitable[Sequence[ToolSpec]]]
CallTool = Callable[[str, dict[str, Any]], Awaitable[Outcome]]


def _text(content: dict[str, Any]) -> str:
    import orjson

    return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS).decode()


def build_server(list_tools: ListTools, call_tool: CallTool, version: str = "") -> Server[Any]:
    """An MCP server whose tools are what `list_tools` says and whose calls `call_tool` answers.
    A tool's error (bad argument, unknown tool, unreachable service) is a result with `isError`, so
    the client's model can read it and correct itself."""

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        specs = await list_tools()
        return types.ListToolsResult(
            tools=[
                types.Tool(name=s.name, description=s.description, input_schema=s.parameters) for s in specs
            ]
        )

    async def on_call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        outcome = await call_tool(params.name, dict(params.arguments or {}))
        return types.CallToolResult(
            content=[types.TextContent(text=_text(outcome.content))],
            structured_content=outcome.content,
            is_error=not outcome.ok,
        )

    return Server(
        SERVER_NAME,
        version=version,
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


class McpEndpoint:
    """ASGI app for `/mcp`: a stateless streamable-HTTP MCP server per request, bound to the caller."""

    def __init__(self, server_for: Callable[[Scope], Server[Any]]) -> None:
        self.server_for = server_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            server = self.server_for(scope)
        except PermissionDenied as exc:
            await refuse(scope, send, 403, f"forbidden: {exc}")
            return
        manager = StreamableHTTPSessionManager(
            app=server, json_response=True, stateless=True, security_settings=NO_TRANSPORT_CHECKS
        )
        async with manager.run():
            await manager.handle_request(scope, receive, send)


def routes(tools_for_request: Callable[[Scope], Any]) -> list[Route]:
    """`/mcp` over the gateway's tools. `tools_for_request(scope)` gives the `Tools` to use; the caller's
    Principal is the one the authentication middleware put on the request."""

    def server_for(scope: Scope) -> Server[Any]:
        principal = principal_of(scope)
        tools = tools_for_request(scope)

        async def list_tools() -> Sequence[ToolSpec]:
            return tuple(tools.specs)

        async def call_tool(name: str, arguments: dict[str, Any]) -> Outcome:
            result = await tools.call(name, arguments, principal)
            return Outcome(result.ok, result.content)

        return build_server(list_tools, call_tool)

    return [Route("/mcp", McpEndpoint(server_for), methods=["GET", "POST", "DELETE"])]

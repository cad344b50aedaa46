"""The OpenAPI document names every HTTP route of the agents, console, tools and MCP modules, with the
methods they answer (a route added without its documentation fails here)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from wiretide.gateway.api import agents, console, mcp
from wiretide.gateway.api.openapi import document


def test_every_agents_console_tools_and_mcp_route_is_in_the_openapi_document() -> None:
    gw: Any = object()  # the modules read the gateway only when a request comes
    routes = [*agents.routes(gw), *console.routes(gw), *mcp.routes(lambda scope: None)]
    answered: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Route):  # the log WebSocket is described in the logs route's summary
            answered.setdefault(route.path, set()).update(set(route.methods or ()) - {"HEAD"})
    answered["/mcp"] = {"POST"}  # GET (the server's event stream) and DELETE (end a session) are MCP's
    paths = document()["paths"]
    for path, methods in answered.items():
        assert path in paths, path
        assert {m.upper() for m in paths[path] if m != "parameters"} == methods, path

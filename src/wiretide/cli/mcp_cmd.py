"""`wiretide mcp`: the console's tools as an MCP server on stdio, for MCP clients that start a command
(Claude Desktop, IDEs, agents). Its tools are the gateway's, called over the gateway's REST tool routes
as the token's principal, so authorization, namespace scoping and redaction are the API's own.

Rule: stdout is the MCP channel and carries nothing else; every message for a person goes to stderr.
A gateway that cannot be reached at start is exit 1 with the reason, before any MCP traffic.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from wiretide.common.paths import default_data_dir

TOOL_TIMEOUT_S: Final = 60.0  # one tool call through the gateway (a stats scan can take seconds)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mcp", help="serve the console's tools over MCP on stdio (for MCP clients)")
    p.add_argument("--url", help="gateway URL (default: the local instance of --data-dir)")
    p.add_argument("--token", default="", help="bearer token (or WIRETIDE_GATEWAY_TOKEN)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())


def run(args: argparse.Namespace) -> int:
    import anyio

    from wiretide.cli.ask_cmd import gateway_url

    base = gateway_url(args.url, args.data_dir)
    if base is None:
        print(
            f"wiretide mcp: no running Wiretide found ({args.data_dir / 'run.json'}); start one with "
            "`wiretide up` or pass --url",
            file=sys.stderr,
        )
        return 1
    token = args.token or os.environ.get("WIRETIDE_GATEWAY_TOKEN", "")
    return anyio.run(serve, base, token)


async def serve(base: str, token: str) -> int:
    import httpx
    from mcp.server.stdio import stdio_server

    from wiretide.gateway.api.mcp import Outcome, build_server
    from wiretide.gateway.tools import ToolSpec

    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=TOOL_TIMEOUT_S) as client:
        try:
            resp = await client.get("/api/tools")
        except httpx.HTTPError as exc:
            print(f"wiretide mcp: the gateway at {base} does not answer: {exc}", file=sys.stderr)
            return 1
        if resp.status_code != 200:
            print(
                f"wiretide mcp: the gateway refused: HTTP {resp.status_code} {resp.text[:300]}",
                file=sys.stderr,
            )
            return 1
        specs = tuple(
            ToolSpec(t["name"], t.get("description", ""), t["input_schema"]) for t in resp.json()["tools"]
        )

        async def list_tools() -> tuple[ToolSpec, ...]:
            return specs

        async def call_tool(name: str, arguments: dict[str, Any]) -> Outcome:
            try:
                r = await client.post(f"/api/tools/{quote(name, safe='')}", json=arguments)
            except httpx.HTTPError as exc:
                return Outcome(False, {"error": f"the gateway at {base} does not answer: {exc}"})
            try:
                doc = r.json()
            except ValueError:
                doc = {"error": r.text[:500]}
            if r.status_code != 200 or not isinstance(doc, dict):
                return Outcome(False, {"error": str(doc.get("error") if isinstance(doc, dict) else doc)})
            return Outcome(bool(doc.get("ok")), doc.get("result") or {})

        server = build_server(list_tools, call_tool)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    return 0

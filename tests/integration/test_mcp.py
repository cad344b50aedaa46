"""The console's tools over the Model Context Protocol, as the `mcp` SDK's own client sees them: the
streamable-HTTP endpoint `/mcp` on the gateway's API port (behind the API's authentication) and
`wiretide mcp` on stdio (which reaches the running gateway found through its data dir).

What an MCP client receives is what the token's principal may see through the API, bounded; a bad
argument or an unknown tool is a tool result marked as an error, not a protocol failure.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.helpers.nats import NatsServer
from tests.integration.test_console import ADMIN, DOCS, SHOP, TOOL_NAMES, VIEWER, gateway
from wiretide.gateway.tools import MAX_ENTRIES

BY_ID = {d["id"]: d for d in DOCS}


@asynccontextmanager
async def http_client(base: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=60.0) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        yield client


def structured(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None
    assert orjson.loads(result.content[0].text) == result.structured_content
    return dict(result.structured_content)


async def test_an_mcp_client_over_http_lists_the_tools_and_queries_within_its_scope(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with gateway(nats_server, tmp_path, None) as base:
        async with http_client(base, ADMIN) as admin:
            listed = await admin.list_tools()
            everything = structured(await admin.call_tool("stats", {"group_by": "protocol"}))
        async with http_client(base, VIEWER) as viewer:
            rows = structured(await viewer.call_tool("query_entries", {"limit": 1000}))
            outside = next(d for d in DOCS if not SHOP.allows(d))
            hidden = await viewer.call_tool("get_entry", {"id": outside["id"]})
    assert [t.name for t in listed.tools] == TOOL_NAMES
    query_tool = next(t for t in listed.tools if t.name == "query_entries")
    assert query_tool.input_schema["properties"]["limit"]["maximum"] == MAX_ENTRIES
    assert everything["total"] == len(DOCS)
    assert len(rows["entries"]) == MAX_ENTRIES and rows["completeness"]["limit_capped"] is True
    assert all(SHOP.allows(BY_ID[e["id"]]) for e in rows["entries"])
    assert hidden.is_error and "no entry" in structured(hidden)["error"]


async def test_bad_arguments_and_unknown_tools_are_error_results_over_mcp(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with gateway(nats_server, tmp_path, None) as base, http_client(base, ADMIN) as client:
        unknown = await client.call_tool("format_disk", {})
        bad = await client.call_tool("query_entries", {"kfl": "status_code >>= 5"})
        ok = await client.call_tool("query_entries", {"kfl": "dns", "limit": 2})
    assert unknown.is_error and "unknown tool" in structured(unknown)["error"]
    assert bad.is_error and "invalid query" in structured(bad)["error"]
    assert not ok.is_error and [e["protocol"] for e in structured(ok)["entries"]] == ["dns", "dns"]


async def test_the_mcp_endpoint_is_behind_the_api_s_authentication(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with gateway(nats_server, tmp_path, None) as base, httpx.AsyncClient() as client:
        anonymous = await client.post(f"{base}/mcp", json=hello, headers=headers)
        wrong = await client.post(
            f"{base}/mcp", json=hello, headers={**headers, "authorization": "Bearer " + "z" * 30}
        )
        foreign = await client.post(
            f"{base}/mcp",
            json=hello,
            headers={**headers, "authorization": f"Bearer {ADMIN}", "origin": "https://evil.example"},
        )
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert foreign.status_code == 403


async def test_wiretide_mcp_serves_the_same_tools_on_stdio(nats_server: NatsServer, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "wiretide.cli", "mcp", "--data-dir", str(tmp_path)],
        env={"WIRETIDE_GATEWAY_TOKEN": VIEWER},
    )
    async with gateway(nats_server, tmp_path, None):
        with (tmp_path / "mcp-stderr.log").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                listed = await client.list_tools()
                rows = structured(await client.call_tool("query_entries", {"kfl": "http", "limit": 10}))
                unknown = await client.call_tool("nope", {})
    assert [t.name for t in listed.tools] == TOOL_NAMES
    assert len(rows["entries"]) == 10
    assert all(SHOP.allows(BY_ID[e["id"]]) for e in rows["entries"]), rows["entries"]
    assert unknown.is_error and "unknown tool" in structured(unknown)["error"]


async def test_wiretide_mcp_without_a_running_gateway_says_so_on_stderr_and_exits(tmp_path: Path) -> None:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wiretide.cli", "mcp", "--data-dir", str(tmp_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out) == (1, b"")
    assert b"no running Wiretide" in err

"""Agents through the gateway's REST API and the CLI, with a real gateway, agents service and
nats-server: an editor puts, lists, reads, disables and deletes; a viewer reads but may not change;
a syntax error is a 400 naming the line and column; onItemQueried marks come back for stored
entries; the log is readable over REST and streamed over the WebSocket."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import websockets

from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_agents_service import publish
from tests.integration.test_gateway_api import make_gateway
from wiretide.agents.service import AgentsService, AgentsSettings
from wiretide.cli.supervisor import free_port

EDITOR = "editor-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
SOURCE = """var n = 0;
function onItemCaptured(entry) { n++; if (n % 50 === 0) console.log("seen", n); }
function onItemQueried(entry) { entry.status >= 500 ? test.fail(entry, "5xx") : test.pass(entry); }
"""


def tokens_file(tmp: Path) -> Path:
    path = tmp / "tokens.json"
    doc = {
        "tokens": [
            {"token": EDITOR, "subject": "ed", "role": "editor", "namespaces": ["*"]},
            {"token": VIEWER, "subject": "vi", "role": "viewer", "namespaces": ["*"]},
        ]
    }
    path.write_bytes(orjson.dumps(doc))
    return path


async def test_agents_over_rest_and_the_cli_with_roles(nats_server: NatsServer, tmp_path: Path) -> None:
    agents_addr = f"127.0.0.1:{free_port()}"
    tokens = str(tokens_file(tmp_path))
    gw = make_gateway(
        nats_server.url, tmp_path, WIRETIDE_AGENTS_GRPC=agents_addr, WIRETIDE_AUTH_TOKENS_FILE=tokens
    )
    settings = AgentsSettings(nats_url=nats_server.url, agents_grpc=agents_addr)
    docs = entries(100, seed=9)
    async with running(gw), running(AgentsService(settings)):
        base = f"http://{gw.gs.gateway_http}"
        ed = {"authorization": f"Bearer {EDITOR}"}
        vi = {"authorization": f"Bearer {VIEWER}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            bad = await c.put(
                "/api/agents/bad", json={"source": "function f() {\n  return 1 +;\n}"}, headers=ed
            )
            assert bad.status_code == 400
            assert (bad.json()["line"], bad.json()["column"]) == (2, 13)
            denied = await c.put("/api/agents/count", json={"source": SOURCE}, headers=vi)
            assert denied.status_code == 403
            ok = await c.put("/api/agents/count", json={"source": SOURCE}, headers=ed)
            assert ok.status_code == 200, ok.text
            assert ok.json()["state"] == "running"
            await publish(nats_server.url, docs)
            await wait_for_async(
                "stored", lambda: gw.writer.stored if gw.writer else 0, lambda n: n >= len(docs)
            )
            listed = (await c.get("/api/agents", headers=vi)).json()["agents"]
            assert [a["name"] for a in listed] == ["count"]
            got = (await c.get("/api/agents/count", headers=vi)).json()
            assert got["source"] == SOURCE and got["history"]
            await wait_for_async(
                "the agent saw every entry",
                lambda: c.get("/api/agents/count/logs", headers=vi),
                lambda r: any(x["text"] == "seen 100" for x in r.json()["lines"]),
            )
            ids = [d["id"] for d in docs[:30]]
            marks = (await c.post("/api/agents/annotations", json={"ids": ids}, headers=vi)).json()["marks"]
            for d in docs[:30]:
                want = "fail" if (d.get("status") or 0) >= 500 else "pass"
                assert marks[d["id"]] == [
                    {"agent": "count", "result": want, "note": "5xx" if want == "fail" else ""}
                ]
            ws = base.replace("http://", "ws://") + f"/api/agents/count/logs/stream?token={VIEWER}"
            async with websockets.connect(ws) as conn:
                first = orjson.loads(await conn.recv())
                assert first["type"] == "line" and first["text"].startswith("seen")
            # The CLI, as a user runs it.
            env = {**os.environ, "WIRETIDE_GATEWAY_TOKEN": EDITOR}
            agent_file = tmp_path / "slow.js"
            agent_file.write_text(
                "function onItemCaptured(e) {\n  if (e.elapsed_us > 1e6) console.log(e.id);\n}\n"
            )

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "wiretide.cli", "agents", *args, "--url", base],
                    capture_output=True, text=True, env=env, timeout=60, check=False,
                )  # fmt: skip

            put = await asyncio.to_thread(cli, "put", str(agent_file))
            assert put.returncode == 0, put.stderr
            shown = await asyncio.to_thread(cli, "list")
            assert "slow" in shown.stdout and "count" in shown.stdout
            assert (await asyncio.to_thread(cli, "disable", "slow")).stdout.strip() == "slow: disabled"
            source = await asyncio.to_thread(cli, "get", "slow")
            assert source.stdout == agent_file.read_text()
            agent_file.write_text("function onItemCaptured(e) {\n  let x = ;\n}\n")
            broken = await asyncio.to_thread(cli, "put", str(agent_file))
            assert broken.returncode == 2
            assert f"{agent_file}:2:11: SyntaxError" in broken.stderr
            assert (await asyncio.to_thread(cli, "rm", "slow")).returncode == 0
            assert (await c.delete("/api/agents/count", headers=vi)).status_code == 403
            assert (await c.delete("/api/agents/count", headers=ed)).status_code == 200
            assert (await c.get("/api/agents", headers=vi)).json()["agents"] == []
            assert (await c.get("/api/agents/count", headers=vi)).status_code == 404

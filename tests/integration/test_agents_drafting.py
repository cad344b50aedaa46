"""Agents written and refined with the LLM, against a real gateway holding traffic, a real agents
service and nats-server, and the OpenAI-compatible stand-in that scripts the model (no LLM runs here).

"Describe the agent" → the model drafts JavaScript against the scripting reference → the replay
harness runs it over the caller's recent entries → the user sees its console output and pass/fail
counts and saves it. "Improve this agent" → a unified diff, stored only when the user approves it
(and only over the revision it was based on). Bad answers — no code, a syntax error, a loop, an
endpoint that fails — are reported with a way to try again; nothing is stored.
"""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.helpers.entries import entries
from tests.helpers.fake_llm import FakeLlm, Turn, fake_llm
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.integration.test_gateway_api import make_gateway, wait_stored
from tests.integration.test_store_writer import publish
from wiretide.agents.service import AgentsService, AgentsSettings
from wiretide.agents.templates import TEMPLATES
from wiretide.cli.supervisor import free_port
from wiretide.common.auth import NamespaceScope

DOCS = entries(150, seed=41)
SHOP = NamespaceScope.of(["shop"])
EDITOR, SHOP_EDITOR, VIEWER = (
    "draft-editor-token-000000001",
    "draft-shop-editor-token-0001",
    "draft-viewer-token-0001",
)

COUNTER = """// counts server errors
var seen = 0;
function onItemCaptured(entry) {
  seen++;
  if (entry.status >= 500) console.log("5xx", entry.path);
}
function onItemQueried(entry) {
  entry.status >= 500 ? test.fail(entry, "server error") : test.pass(entry);
}
"""


def fenced(code: str, note: str = "It logs every server error.") -> Turn:
    return Turn(text=f"Here is the agent:\n\n```javascript\n{code}```\n\n{note}")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def tokens(data: Path) -> dict[str, str]:
    data.mkdir(parents=True, exist_ok=True)
    doc = {
        "tokens": [
            {"token": EDITOR, "subject": "ed", "role": "editor", "namespaces": ["*"]},
            {"token": SHOP_EDITOR, "subject": "sh", "role": "editor", "namespaces": ["shop"]},
            {"token": VIEWER, "subject": "vi", "role": "viewer", "namespaces": ["*"]},
        ]
    }
    (data / "tokens.json").write_bytes(orjson.dumps(doc))
    return {"WIRETIDE_AUTH_TOKENS_FILE": str(data / "tokens.json")}


@asynccontextmanager
async def stack(nats: NatsServer, data: Path, llm: FakeLlm | None) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway holding DOCS and an agents service, the LLM pointed at `llm` (None: off); a client."""
    agents_addr = f"127.0.0.1:{free_port()}"
    env = {**tokens(data), "WIRETIDE_AGENTS_GRPC": agents_addr}
    if llm is not None:
        env.update(llm.env())
    gw = make_gateway(nats.url, data, **env)
    settings = AgentsSettings(nats_url=nats.url, agents_grpc=agents_addr, agents_durable="drafting")
    async with running(gw), running(AgentsService(settings)):
        await publish(nats.url, [DOCS[i : i + 50] for i in range(0, len(DOCS), 50)])
        await wait_stored(gw, len(DOCS))
        async with httpx.AsyncClient(base_url=f"http://{gw.gs.gateway_http}", timeout=60) as client:
            yield client


def system_prompt(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])


async def test_a_described_agent_is_drafted_against_the_reference_tried_on_recent_traffic_and_saved(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    fivexx = [d for d in DOCS if (d.get("status") or 0) >= 500]
    with fake_llm(fenced(COUNTER)) as llm:
        async with stack(nats_server, tmp_path, llm) as c:
            r = await c.post(
                "/api/agents/draft",
                json={"description": "log every server error", "limit": 1000},
                headers=bearer(EDITOR),
            )
            assert r.status_code == 200, r.text
            got = r.json()
            # Drafting stored nothing; saving is the user's step, and never over an existing agent.
            assert (await c.get("/api/agents", headers=bearer(EDITOR))).json()["agents"] == []
            body = {"source": got["source"], "base_revision": 0}
            saved = await c.put("/api/agents/errors", json=body, headers=bearer(EDITOR))
            again = await c.put("/api/agents/errors", json=body, headers=bearer(EDITOR))
    assert (
        got["source"] == COUNTER and got["explanation"] == "Here is the agent:\n\nIt logs every server error."
    )
    test = got["test"]
    assert test["ok"] is False and test["error"] == "" and test["entries"] == len(DOCS)
    assert (test["passed"], test["failed"]) == (len(DOCS) - len(fivexx), len(fivexx))
    assert [x["text"] for x in test["lines"]] == [f"5xx {d['path']}" for d in fivexx]
    # The model drafted against the scripting reference, with the user's words and a sample of traffic.
    prompt = system_prompt(llm.requests[0])
    assert "### `onItemCaptured(entry)`" in prompt and "### `kfl`" in prompt
    assert "log every server error" in llm.requests[0]["messages"][1]["content"]
    assert saved.status_code == 200 and saved.json()["revision"] >= 1
    assert again.status_code == 409 and "changed since" in again.json()["error"]


async def test_a_scoped_editor_s_draft_runs_only_on_entries_of_its_namespaces(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    with fake_llm(fenced("function onItemCaptured(e) { console.log(e.id); }\n")) as llm:
        async with stack(nats_server, tmp_path, llm) as c:
            r = await c.post(
                "/api/agents/draft",
                json={"description": "log ids", "limit": 1000},
                headers=bearer(SHOP_EDITOR),
            )
    test = r.json()["test"]
    mine = [d["id"] for d in sorted(DOCS, key=lambda d: (d["timestamp"], d["id"])) if SHOP.allows(d)]
    assert test["ok"] and [x["text"] for x in test["lines"]] == mine
    sample = orjson.loads(llm.requests[0]["messages"][1]["content"].split("(a sample, JSON):\n", 1)[1])
    assert sample and all(SHOP.allows(d) for d in sample)


async def test_improve_proposes_a_diff_and_nothing_changes_until_the_user_approves_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    better = COUNTER.replace('console.log("5xx", entry.path)', 'console.log("5xx", entry.method, entry.path)')
    with fake_llm(fenced(better, "Now with the method.")) as llm:
        async with stack(nats_server, tmp_path, llm) as c:
            first = await c.put("/api/agents/errors", json={"source": COUNTER}, headers=bearer(EDITOR))
            rev = first.json()["revision"]
            r = await c.post(
                "/api/agents/errors/improve",
                json={"instruction": "log the method too"},
                headers=bearer(EDITOR),
            )
            proposal = r.json()
            unchanged = (await c.get("/api/agents/errors", headers=bearer(EDITOR))).json()
            approve = {"source": proposal["source"], "base_revision": proposal["base_revision"]}
            applied = await c.put("/api/agents/errors", json=approve, headers=bearer(EDITOR))
            stale = await c.put("/api/agents/errors", json=approve, headers=bearer(EDITOR))
            now = (await c.get("/api/agents/errors", headers=bearer(EDITOR))).json()
    assert r.status_code == 200, r.text
    assert proposal["base_revision"] == rev and proposal["source"] == better
    assert proposal["diff"].startswith(f"--- errors (revision {rev})\n+++ errors (proposed)\n@@")
    assert '-  if (entry.status >= 500) console.log("5xx", entry.path);\n' in proposal["diff"]
    assert '+  if (entry.status >= 500) console.log("5xx", entry.method, entry.path);\n' in proposal["diff"]
    assert proposal["test"]["entries"] == len(DOCS)
    assert proposal["test"]["lines"][0]["text"].startswith("5xx ")
    assert "```javascript\n" + COUNTER + "```" in llm.requests[0]["messages"][1]["content"]
    assert unchanged["source"] == COUNTER and unchanged["revision"] == rev
    assert applied.status_code == 200 and now["source"] == better
    assert stale.status_code == 409


async def test_no_code_a_syntax_error_and_a_loop_are_reported_and_another_try_fixes_the_draft(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    broken = "function onItemCaptured(entry) {\n  if (entry.status >= 500 {\n  }\n}\n"
    loops = "function onItemCaptured(entry) {\n  while (true) {}\n}\n"
    script = [
        Turn(text="I would rather not write code today."),
        fenced(broken),
        fenced(COUNTER),
        fenced(loops),
        Turn(status=500),
    ]
    with fake_llm(*script) as llm:
        async with stack(nats_server, tmp_path, llm) as c:

            async def draft(**extra: Any) -> httpx.Response:
                body = {"description": "log server errors", "limit": 100, **extra}
                return await c.post("/api/agents/draft", json=body, headers=bearer(EDITOR))

            no_code = await draft()
            syntax = await draft()
            s = syntax.json()
            fixed = await draft(previous={"source": s["source"], "error": s["test"]["error"]})
            looped = await draft()
            failed = await draft()
            stored = (await c.get("/api/agents", headers=bearer(EDITOR))).json()["agents"]
    assert no_code.status_code == 422 and no_code.json()["retry"] is True
    assert "without any JavaScript" in no_code.json()["error"]
    assert syntax.status_code == 200 and s["source"] == broken
    assert s["test"]["error_kind"] == "syntax" and s["test"]["line"] == 2 and s["test"]["column"] > 0
    # The next try hands the model its broken draft and the error, and the corrected one runs.
    retry = llm.requests[2]["messages"]
    assert (
        retry[-2]["content"] == f"```javascript\n{broken}```" and s["test"]["error"] in retry[-1]["content"]
    )
    assert fixed.json()["test"]["error"] == "" and fixed.json()["test"]["entries"] == 100
    # The sandbox stops a loop at its time limit and names the line.
    lt = looped.json()["test"]
    assert lt["error_kind"] == "runtime" and lt["line"] == 2 and "time" in lt["error"].lower()
    assert failed.status_code == 502 and "HTTP 500" in failed.json()["error"]
    assert stored == []


async def test_drafting_is_the_editor_s_and_says_plainly_when_the_llm_is_off(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    with fake_llm() as llm:
        async with stack(nats_server, tmp_path, None) as c:
            off = await c.post("/api/agents/draft", json={"description": "x"}, headers=bearer(EDITOR))
            viewer = await c.post("/api/agents/draft", json={"description": "x"}, headers=bearer(VIEWER))
            improve = await c.post("/api/agents/x/improve", json={"instruction": "y"}, headers=bearer(VIEWER))
            templates = await c.get("/api/agents/templates", headers=bearer(VIEWER))
    assert off.status_code == 503 and "the LLM is disabled" in off.json()["error"]
    assert viewer.status_code == 403 and improve.status_code == 403
    assert llm.requests == []
    # The templates need no LLM: the UI offers them as a start.
    got = templates.json()["templates"]
    assert [(t["name"], t["summary"], t["source"]) for t in got] == [
        (t.name, t.summary, t.source) for t in TEMPLATES
    ]


def cli(*args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    """`wiretide agents ARGS`; with `answer`, stdin is a terminal the user types it into, else no stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")}
    command = [sys.executable, "-m", "wiretide.cli", "agents", *args]
    if answer is None:
        return subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120
        )
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode())
        return subprocess.run(command, stdin=follower, capture_output=True, text=True, env=env, timeout=120)
    finally:
        os.close(follower)
        os.close(leader)


async def test_the_cli_drafts_and_saves_and_improves_only_after_confirmation(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    better = COUNTER.replace("seen++;", "seen += 1;")
    with fake_llm(fenced(COUNTER), then=fenced(better)) as llm:
        async with stack(nats_server, tmp_path, llm) as c:
            common = ("--url", str(c.base_url), "--token", EDITOR)
            drafted = await asyncio.to_thread(
                cli, "draft", "log server errors", "--save", "errors", "--yes", *common
            )
            refused = await asyncio.to_thread(cli, "improve", "errors", "count with +=", *common)
            declined = await asyncio.to_thread(
                cli, "improve", "errors", "count with +=", *common, answer="n\n"
            )
            kept = (await c.get("/api/agents/errors", headers=bearer(EDITOR))).json()["source"]
            applied = await asyncio.to_thread(
                cli, "improve", "errors", "count with +=", *common, answer="y\n"
            )
            now = (await c.get("/api/agents/errors", headers=bearer(EDITOR))).json()["source"]
    assert drafted.returncode == 0, drafted.stderr
    assert COUNTER in drafted.stdout and "saved errors" in drafted.stdout
    assert f"{len(DOCS)} entries," in drafted.stderr and "failed" in drafted.stderr
    assert refused.returncode == 2 and "--yes" in refused.stderr and "+  seen += 1;\n" in refused.stdout
    assert declined.returncode == 1 and "not applied" in declined.stderr and kept == COUNTER
    assert applied.returncode == 0, applied.stderr
    assert now == better

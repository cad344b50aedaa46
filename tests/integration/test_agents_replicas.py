"""Two replicas of the agents service sharing the durable consumer, a real nats-server and a real
gateway: whichever replica the API reaches, it shows every replica's state and log of an agent — a
failure on one replica (with its error and line) next to the other still running, every entry's line
once whichever replica saw it, each line naming its replica — over gRPC, REST and the CLI; a replica
that stops leaves its lines and takes its state with it. Listings and histories read the bucket's
stream, never a watcher's "nothing pending" marker (nats-py can send it before keys on their way)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import nats
import pytest
from nats.js.kv import KeyValue

from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from tests.integration.test_agents_service import publish
from tests.integration.test_gateway_api import make_gateway
from wiretide.agents.model import AgentDef
from wiretide.agents.service import AgentsService, AgentsSettings
from wiretide.agents.store import AgentStore
from wiretide.cli.supervisor import free_port
from wiretide.proto.v1 import agents_pb2, agents_pb2_grpc

COUNT = 'function onItemCaptured(entry) {\n  console.log("entry", entry.id);\n}\n'
# Fails on replica r1 only (its job), with the line of the allocation; r2 goes on ticking.
BOMB = """var ticks = 0;
jobs.schedule("tick", "* * * * * *", function () {
  console.log("tick", utils.nodeName(), ++ticks);
  if (utils.nodeName() === "r1") {
    var s = "x";
    for (;;) s = s + s;
  }
});
"""


@asynccontextmanager
async def replica(url: str, name: str, address: str = "127.0.0.1:0") -> AsyncIterator[Any]:
    settings = AgentsSettings(
        nats_url=url, agents_grpc=address, node_name=name, agents_replica=name, agents_memory_mb=16
    )
    async with (
        running(AgentsService(settings)) as svc,
        grpc.aio.insecure_channel(f"127.0.0.1:{svc.grpc_port}") as ch,
    ):
        yield agents_pb2_grpc.AgentsServiceStub(ch)


async def agent(stub: Any, name: str) -> agents_pb2.Agent:
    return (await stub.GetAgent(agents_pb2.GetAgentRequest(name=name))).agent


async def lines(stub: Any, name: str) -> list[tuple[str, str, str]]:
    answer = await stub.GetLogs(agents_pb2.GetLogsRequest(name=name))
    seqs = [x.seq for x in answer.lines]
    assert seqs == sorted(set(seqs)), "one cursor order, no line twice"
    return [(x.replica, x.stream, x.text) for x in answer.lines]


def failed_on_r1(a: agents_pb2.Agent) -> bool:
    states = {r.replica: r.state for r in a.replicas}
    return states == {"r1": "failed", "r2": "running"} and a.state == "failed"


async def test_any_replica_shows_every_replica_s_state_and_log_over_grpc_rest_and_the_cli(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    docs = entries(120, seed=11)
    address = f"127.0.0.1:{free_port()}"
    gw = make_gateway(nats_server.url, tmp_path, WIRETIDE_AGENTS_GRPC=address)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(gw))
        r1 = await stack.enter_async_context(replica(nats_server.url, "r1"))
        r2 = await stack.enter_async_context(replica(nats_server.url, "r2", address))  # the gateway's
        put = agents_pb2.PutAgentRequest(agent=agents_pb2.Agent(name="count", source=COUNT, enabled=True))
        assert (await r1.PutAgent(put)).stored
        for i in range(0, len(docs), 10):  # many messages: the replicas share them
            await publish(nats_server.url, docs[i : i + 10])
        await wait_for_async(
            "both replicas' counts add up", lambda: agent(r2, "count"), lambda a: a.items == len(docs)
        )
        for stub in (r1, r2):
            seen = await wait_for_async(
                "every entry's line, from whichever replica",
                lambda s=stub: lines(s, "count"),
                lambda ls: len(ls) == len(docs),
            )
            assert sorted(text for _, _, text in seen) == sorted(f"entry {d['id']}" for d in docs)
            assert {who for who, _, _ in seen} <= {"r1", "r2"}

        put = agents_pb2.PutAgentRequest(agent=agents_pb2.Agent(name="bomb", source=BOMB, enabled=True))
        assert (await r2.PutAgent(put)).stored
        for stub in (r2, r1):
            shown = await wait_for_async(
                "r1's failure, seen by both", lambda s=stub: agent(s, "bomb"), failed_on_r1
            )
            assert shown.last_error == "r1: memory limit exceeded (16 MiB) (line 6)" and shown.error_line == 6
            (on_r1,) = [r for r in shown.replicas if r.replica == "r1"]
            assert (on_r1.error_line, on_r1.stale) == (6, False)
            log = await wait_for_async(
                "both replicas' lines",
                lambda s=stub: lines(s, "bomb"),
                lambda ls: ("r2", "log", "tick r2 2") in ls,
            )
            assert ("r1", "log", "tick r1 1") in log
            assert ("r1", "system", "agent stopped: memory limit exceeded (16 MiB) (line 6)") in log
            assert not any(who == "r1" and text.startswith("tick r1 2") for who, _, text in log)

        # REST and the CLI reach r2; they show r1's failure and lines too.
        base = f"http://{gw.gs.gateway_http}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            listed = {a["name"]: a for a in (await c.get("/api/agents")).json()["agents"]}
            assert listed["bomb"]["state"] == "failed" and listed["bomb"]["error_line"] == 6
            assert {r["replica"]: r["state"] for r in listed["bomb"]["replicas"]} == {
                "r1": "failed",
                "r2": "running",
            }
            logs = (await c.get("/api/agents/bomb/logs")).json()
            assert logs["replicas"] == ["r1", "r2"]
            assert {x["replica"] for x in logs["lines"]} == {"r1", "r2"}
            after = logs["lines"][-1]["seq"]
            newer = await wait_for_async(
                "lines after a cursor",
                lambda: c.get("/api/agents/bomb/logs", params={"after": after}),
                lambda r: bool(r.json()["lines"]),
            )
            assert all(x["seq"] > after and x["replica"] == "r2" for x in newer.json()["lines"])

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "wiretide.cli", "agents", *args, "--url", base],
                capture_output=True, text=True, env=dict(os.environ), timeout=60, check=False,
            )  # fmt: skip

        shown = await asyncio.to_thread(cli, "list")
        assert shown.returncode == 0, shown.stderr
        rows = shown.stdout.splitlines()
        assert any(row.startswith("bomb ") and "r1: memory limit exceeded" in row for row in rows)
        assert any("replica r1" in row and "failed" in row and "(line 6)" in row for row in rows)
        assert any("replica r2" in row and "running" in row for row in rows)
        printed = await asyncio.to_thread(cli, "logs", "bomb")
        assert printed.returncode == 0, printed.stderr
        assert "r1: tick r1 1" in printed.stdout.splitlines()
        assert "r2: tick r2 1" in printed.stdout.splitlines()

        await stack.aclose()  # not yet: r1 alone must still show r2's lines once r2 is gone
    async with replica(nats_server.url, "r1") as again:
        bomb = await agent(again, "bomb")
        assert [r.replica for r in bomb.replicas] == ["r1"]  # r2 stopped and said so; r1 restarted
        kept = await lines(again, "bomb")
        assert ("r2", "log", "tick r2 1") in kept and ("r1", "log", "tick r1 1") in kept


async def test_a_deleted_agent_takes_every_replica_s_lines_with_it(nats_server: NatsServer) -> None:
    async with replica(nats_server.url, "r1") as r1, replica(nats_server.url, "r2") as r2:
        source = (
            "jobs.schedule('t', '* * * * * *', function () { console.log('tick', utils.nodeName()); });\n"
        )
        put = agents_pb2.PutAgentRequest(agent=agents_pb2.Agent(name="ticker", source=source, enabled=True))
        assert (await r1.PutAgent(put)).stored
        await wait_for_async(
            "both tick",
            lambda: lines(r2, "ticker"),
            lambda ls: {("r1", "log", "tick r1"), ("r2", "log", "tick r2")} <= set(ls),
        )
        assert (await r2.DeleteAgent(agents_pb2.DeleteAgentRequest(name="ticker"))).deleted

        async def status_at_r1() -> grpc.StatusCode:
            try:
                await r1.GetLogs(agents_pb2.GetLogsRequest(name="ticker"))
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        # The other replica learns of the deletion from the store's watch: a moment later, not at once.
        await wait_for_async("r1 forgets the agent", status_at_r1, lambda c: c == grpc.StatusCode.NOT_FOUND)
        quiet = "function onItemCaptured(e) {}\n"
        put = agents_pb2.PutAgentRequest(agent=agents_pb2.Agent(name="ticker", source=quiet, enabled=True))
        assert (await r1.PutAgent(put)).stored

        async def both() -> tuple[list[Any], list[Any]] | None:
            try:
                return await lines(r1, "ticker"), await lines(r2, "ticker")
            except grpc.aio.AioRpcError as exc:  # a replica that has not seen the new agent yet
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                return None

        # A new agent of that name starts with an empty log everywhere (no line of the deleted one
        # comes back, even one a replica put while the deletion reached it).
        await wait_for_async("both logs empty", both, lambda got: got == ([], []))


async def test_listings_and_histories_never_wait_on_a_watcher_marker(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        store = await AgentStore.open(nc.jetstream())

        async def no_watch(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a listing used a KV watcher")

        monkeypatch.setattr(KeyValue, "watch", no_watch)
        assert await store.names() == [] and await store.history("a") == []
        revisions = [await store.put(AgentDef(n, "var x = 1;\n")) for n in ("b", "a", "c")]
        second = await store.put(AgentDef("a", "var x = 2;\n"))
        assert await store.delete("c")
        assert await store.names() == ["a", "b"]
        assert [d.source for d in await store.all()] == ["var x = 2;\n", "var x = 1;\n"]
        assert await store.history("a") == [second, revisions[1]]
        assert await store.history("c") == []
        again = await store.put(AgentDef("c", "var y;\n"))
        assert await store.history("c") == [again] and await store.names() == ["a", "b", "c"]
    finally:
        await nc.close()

"""The agents service over real gRPC and a real nats-server: definitions in JetStream KV (stored,
listed, versioned, reloaded by every replica, kept across a restart), entries from the durable
consumer through onItemCaptured, onItemQueried marks, hub actions across replicas, and outbound
webhooks to a real receiver on loopback — one that answers and one that never does."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import nats
import orjson
import pytest
from prometheus_client import REGISTRY

from tests.helpers.entries import entries
from tests.helpers.inprocess import running
from tests.helpers.nats import NatsServer
from tests.helpers.wait import wait_for_async
from wiretide.agents.service import AgentsService, AgentsSettings
from wiretide.common.bus import entries_subject
from wiretide.common.bus.connection import ensure_stream
from wiretide.common.bus.subjects import ENTRIES_STREAM
from wiretide.common.entry import encode_batch
from wiretide.proto.v1 import agents_pb2, agents_pb2_grpc


async def publish(url: str, docs: list[dict[str, Any]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js, ENTRIES_STREAM)
    await js.publish(entries_subject("node-a"), encode_batch(docs, "node-a", "test", 1))
    await nc.close()


@asynccontextmanager
async def agents(url: str, node: str = "n1", **extra: Any) -> AsyncIterator[tuple[AgentsService, Any]]:
    settings = AgentsSettings(
        nats_url=url, agents_grpc="127.0.0.1:0", node_name=node, agents_replica=node, **extra
    )
    async with (
        running(AgentsService(settings)) as svc,
        grpc.aio.insecure_channel(f"127.0.0.1:{svc.grpc_port}") as ch,
    ):
        assert isinstance(svc, AgentsService)
        yield svc, agents_pb2_grpc.AgentsServiceStub(ch)


async def put(stub: Any, name: str, source: str, **env: str) -> agents_pb2.PutAgentResponse:
    return await stub.PutAgent(
        agents_pb2.PutAgentRequest(agent=agents_pb2.Agent(name=name, source=source, enabled=True, env=env))
    )


async def logs(stub: Any, name: str) -> list[str]:
    answer = await stub.GetLogs(agents_pb2.GetLogsRequest(name=name))
    return [line.text for line in answer.lines]


class Receiver:
    """A real HTTP server on loopback that records what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A receiver that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/never"
    sock.close()


FIVE_XX = """
function onItemCaptured(entry) {
  if (kfl.match("http && status >= 500", entry)) {
    console.log("5xx", entry.id);
    vendor.webhook("POST", env.URL, {id: entry.id, status: entry.status});
  }
  prometheus.vector("seen", "entries seen", "counter", ["protocol"], [entry.protocol], 1);
}
function onItemQueried(entry) {
  entry.status >= 500 ? test.fail(entry, "server error") : test.pass(entry);
}
"""


async def test_an_agent_put_over_grpc_sees_every_entry_and_posts_its_5xx_to_a_real_webhook(
    nats_server: NatsServer, receiver: Receiver
) -> None:
    docs = entries(200, seed=3)
    errors = [d for d in docs if d["protocol"] == "http" and (d.get("status") or 0) >= 500]
    assert errors
    async with agents(nats_server.url) as (svc, stub):
        answer = await put(stub, "five-xx", FIVE_XX, URL=receiver.url)
        assert answer.stored, answer.error
        assert set(answer.agent.hooks) == {"onItemCaptured", "onItemQueried"}
        await publish(nats_server.url, docs)
        await wait_for_async("every error posted", lambda: len(receiver.bodies), lambda n: n == len(errors))
        posted = sorted(orjson.loads(b)["id"] for b in receiver.bodies)
        assert posted == sorted(d["id"] for d in errors)
        # The log lines travel apart from the webhooks: wait for them, never read once.
        lines = await wait_for_async(
            "every 5xx line in the agent's log",
            lambda: logs(stub, "five-xx"),
            lambda got: sum(1 for line in got if line.startswith("5xx ")) >= len(errors),
        )
        assert sum(1 for line in lines if line.startswith("5xx ")) == len(errors)
        http = sum(1 for d in docs if d["protocol"] == "http")
        assert REGISTRY.get_sample_value("seen_total", {"agent": "five-xx", "protocol": "http"}) == http
        marks = await stub.QueryItems(
            agents_pb2.QueryItemsRequest(entries_json=[orjson.dumps(d) for d in docs[:20]])
        )
        by_id = {m.entry_id: m.result for m in marks.marks}
        for d in docs[:20]:
            assert by_id[d["id"]] == ("fail" if (d.get("status") or 0) >= 500 else "pass")
        listed = (await stub.ListAgents(agents_pb2.ListAgentsRequest())).agents
        assert [(a.name, a.state) for a in listed] == [("five-xx", "running")]
        assert listed[0].items == len(docs) + 20  # captured, then queried


async def test_a_syntax_error_is_refused_at_put_with_its_line_and_column(nats_server: NatsServer) -> None:
    async with agents(nats_server.url) as (_svc, stub):
        answer = await put(stub, "broken", "function onItemCaptured(e) {\n  let x = ;\n}\n")
        assert not answer.stored
        assert (answer.line, answer.column) == (2, 11)
        assert "SyntaxError" in answer.error
        assert list((await stub.ListAgents(agents_pb2.ListAgentsRequest())).agents) == []


async def test_a_bad_cron_string_is_refused_at_put_naming_the_field(nats_server: NatsServer) -> None:
    async with agents(nats_server.url) as (_svc, stub):
        answer = await put(
            stub, "cron", 'var n = 0;\njobs.schedule("t", "*/5 * 25 * * *", function () { n++; });\n'
        )
        assert not answer.stored
        assert "hour: 25 is outside 0-23" in answer.error
        assert answer.line == 2


async def test_a_looping_agent_is_stopped_and_marked_failed_and_another_agent_sees_every_entry(
    nats_server: NatsServer,
) -> None:
    loop = "var seen = 0;\nfunction onItemCaptured(e) {\n  if (++seen > 3) { while (true) {} }\n}\n"
    count = (
        "var n = 0;\nfunction onItemCaptured(e) { n++; }\n"
        "jobs.schedule('report', '* * * * * *', function () { console.log('count', n); });\n"
    )
    docs = entries(50, seed=4)
    async with agents(nats_server.url, agents_time_limit_s=0.2) as (_svc, stub):
        assert (await put(stub, "loop", loop)).stored
        assert (await put(stub, "count", count)).stored
        await publish(nats_server.url, docs)

        async def state() -> dict[str, tuple[str, str, int]]:
            listed = (await stub.ListAgents(agents_pb2.ListAgentsRequest(without_source=True))).agents
            return {a.name: (a.state, a.last_error, a.error_line) for a in listed}

        seen = await wait_for_async("the loop fails", state, lambda s: s["loop"][0] == "failed")
        assert seen["loop"][1] == "time limit exceeded: a call ran longer than 0.2 s (line 3)"
        assert seen["loop"][2] == 3
        assert seen["count"][0] == "running"
        await wait_for_async(
            "the other agent counted every entry",
            lambda: logs(stub, "count"),
            lambda ls: f"count {len(docs)}" in ls,
        )


async def test_a_hanging_webhook_times_out_and_a_full_queue_drops_and_counts(
    nats_server: NatsServer, silent: str
) -> None:
    source = "function onItemCaptured(e) { vendor.webhook('POST', env.URL, e.id); }\n"
    docs = entries(40, seed=5)
    async with agents(
        nats_server.url, agents_outbound_timeout_s=0.5, agents_outbound_queue=5, agents_outbound_workers=1
    ) as (svc, stub):
        assert (await put(stub, "hang", source, URL=silent)).stored
        await publish(nats_server.url, docs)
        run = svc.runtime.agents["hang"]
        await wait_for_async(
            "a timeout logged", lambda: logs(stub, "hang"), lambda ls: any("timed out" in x for x in ls)
        )
        assert run.counters.outbound_dropped > 0
        assert run.state == "running"
        assert svc.entries_in == len(docs)


async def test_definitions_reach_every_replica_hub_actions_reach_both_and_survive_a_restart(
    nats_server: NatsServer,
) -> None:
    source = (
        "function onHubAction(action, obj) { console.log(action, obj.from); }\n"
        "jobs.schedule('hello', '* * * * * *', function () {\n"
        "  hub.action('hi', {from: utils.nodeName()});\n  jobs.remove('hello');\n});\n"
    )
    async with agents(nats_server.url, "r1") as (_a, stub_a), agents(nats_server.url, "r2") as (_b, stub_b):
        assert (await put(stub_a, "hub", source)).stored
        await wait_for_async("the second replica loaded it", lambda: logs(stub_b, "hub"), lambda ls: True)
        for stub in (stub_a, stub_b):
            await wait_for_async(
                "both replicas heard both",
                lambda s=stub: logs(s, "hub"),
                lambda ls: {"hi r1", "hi r2"} <= set(ls),
            )
        await stub_a.SetEnabled(agents_pb2.SetEnabledRequest(name="hub", enabled=False))
        got = await stub_b.GetAgent(agents_pb2.GetAgentRequest(name="hub"))
        assert len(got.history) == 2
    async with agents(nats_server.url, "r3") as (_c, stub_c):
        listed = (await stub_c.ListAgents(agents_pb2.ListAgentsRequest())).agents
        assert [(a.name, a.enabled, a.state) for a in listed] == [("hub", False, "disabled")]
        assert (await stub_c.DeleteAgent(agents_pb2.DeleteAgentRequest(name="hub"))).deleted
        assert list((await stub_c.ListAgents(agents_pb2.ListAgentsRequest())).agents) == []


async def test_vendor_slack_posts_a_slack_message_to_a_real_receiver(
    nats_server: NatsServer, receiver: Receiver
) -> None:
    source = (
        "function onItemCaptured(e) {\n"
        "  if (e.status >= 500) vendor.slack(env.URL, '#alerts', 'server error', e.id + ' ' + e.status);\n}\n"
    )
    docs = entries(60, seed=8)
    errors = [d for d in docs if (d.get("status") or 0) >= 500]
    assert errors
    async with agents(nats_server.url) as (_svc, stub):
        assert (await put(stub, "slack", source, URL=receiver.url)).stored
        await publish(nats_server.url, docs)
        await wait_for_async("every error posted", lambda: len(receiver.bodies), lambda n: n == len(errors))
    got = sorted((orjson.loads(b) for b in receiver.bodies), key=lambda m: m["attachments"][0]["text"])
    want = sorted(f"{d['id']} {d['status']}" for d in errors)
    assert got == [
        {"text": "server error", "channel": "#alerts", "attachments": [{"text": t, "color": "#d00000"}]}
        for t in want
    ]

"""The agents service process: agent definitions from JetStream KV (hot reload), entries from a durable
JetStream consumer shared by the replicas, events (packet counts, pod deltas, traces, hub actions)
and schedules, all handed to the agents' hooks; the gRPC API behind `/api/agents`, which answers
with every replica's state and log of an agent (`replicas.py`), whichever replica it reaches.

Rule: JavaScript runs in one thread of its own (`agents-js`) — never on the event loop's own turn, and
never two calls into a sandbox at once; the event loop only moves data and acknowledges an entries
message once every agent has seen its entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
import orjson
from prometheus_client import REGISTRY, Counter
from pydantic import field_validator

from wiretide.agents.docs import render
from wiretide.agents.helpers import Host
from wiretide.agents.hooks import ON_HUB_ACTION, ON_ITEM_CAPTURED, ON_PACKET_CAPTURED, ON_POD_EVENT, ON_TRACE
from wiretide.agents.model import AgentDef, InvalidAgent, check_name
from wiretide.agents.outbound import Outbound, Work
from wiretide.agents.replay import replay
from wiretide.agents.replicas import FLUSH_S, Replicas, state_doc
from wiretide.agents.runtime import FAILED, AgentRun, Backend, Limits, Runtime, check_syntax
from wiretide.agents.store import AgentStore, RevisionConflict
from wiretide.agents.templates import TEMPLATES
from wiretide.common.bus import (
    AGENT_EVENTS,
    ENTRIES_ALL,
    ENTRIES_STREAM,
    IDENTITY_UPDATES,
    Bus,
    decode_or_count,
    durable_pull,
)
from wiretide.common.bus.entries import fetch_entries
from wiretide.common.llm import LlmConfig
from wiretide.common.rpc import channel
from wiretide.common.service import Service
from wiretide.common.settings import CommonSettings, parse_hostport
from wiretide.common.tracers import Tracers, TracersUnavailable
from wiretide.proto.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    capture_pb2,
    capture_pb2_grpc,
    resolver_pb2,
    tracer_pb2,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

FETCH_BATCH: Final = 64  # EntryBatch messages per pull
FETCH_TIMEOUT_S: Final = 0.25
JOBS_TICK_S: Final = 0.2  # how often due jobs are looked for (a cron's resolution is a second)
TRACES_SEEN: Final = 100_000  # trace ids remembered so that each is offered once
# Completed traces asked for per poll, newest completed first: more than this completing within one
# interval are not all offered (agents_stats_interval_s bounds the rate; the tracer keeps the rest).
TRACES_PER_POLL: Final = 1000
RPC_TIMEOUT_S: Final = 10.0
MAX_QUERIED: Final = 500  # entries per QueryItems call
MAX_TESTED: Final = 2000  # entries per TestAgent call: recent traffic, enough to exercise a draft
MAX_TEST_LINES: Final = 400  # log lines a TestAgent answer carries (the first ones; the rest counted)

ENTRIES_IN = Counter("wiretide_agents_entries_total", "Entries handed to the agents")
AGENT_FAILURES = Counter("wiretide_agents_failures_total", "Agents stopped by an error or a limit", ["agent"])


class AgentsSettings(CommonSettings):
    """`WIRETIDE_AGENTS_*`: the sandbox's limits, the outbound worker, the consumer."""

    agents_durable: str = "agents"
    # This replica's name in agents' state and logs (empty: the host name, a pod's name in a cluster);
    # replicas sharing the durable consumer need different names.
    agents_replica: str = ""
    agents_memory_mb: int = 64
    agents_time_limit_s: float = 1.0
    agents_outbound_timeout_s: float = 5.0
    agents_outbound_queue: int = 1000
    agents_outbound_workers: int = 4
    agents_stats_interval_s: float = 1.0  # onPacketCaptured and onTrace polling
    # A trace is complete for onTrace once unchanged this long (the tracer's window is 2 s by default).
    agents_trace_settle_s: float = 3.0
    # Where kfl.query asks (the gateway's HTTP address, as the gateway reads it) and with which token.
    gateway_http: str = "127.0.0.1:8899"
    gateway_token: str = ""

    @field_validator("agents_memory_mb", "agents_outbound_queue", "agents_outbound_workers")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator(
        "agents_time_limit_s", "agents_outbound_timeout_s", "agents_stats_interval_s", "agents_trace_settle_s"
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("gateway_http")
    @classmethod
    def _hostport_http(cls, value: str) -> str:
        parse_hostport(value, "WIRETIDE_GATEWAY_HTTP")
        return value

    def limits(self) -> Limits:
        return Limits(memory_mb=self.agents_memory_mb, time_limit_s=self.agents_time_limit_s)

    @property
    def replica(self) -> str:
        return self.agents_replica or socket.gethostname()


class ServiceBackend(Backend):
    """The real peers: webhooks over HTTP, the gateway for kfl.query, the capture service for
    snapshots, NATS for hub actions."""

    def __init__(self, service: AgentsService) -> None:
        super().__init__(service.settings.node_name)
        self.service = service
        self.llm = LlmConfig.from_settings(service.settings)
        self.http: Any = None

    def submit(
        self,
        host: Host,
        what: str,
        work: Callable[[], Awaitable[Any]],
        done: Callable[[bool, Any], None] | None,
    ) -> None:
        outbound = self.service.outbound
        if outbound is None:
            super().submit(host, what, work, done)
            return
        outbound.submit(Work(host, what, work, done))

    def _client(self) -> Any:
        if self.http is None:
            import httpx

            self.http = httpx.AsyncClient(timeout=self.service.asettings.agents_outbound_timeout_s)
        return self.http

    async def webhook(self, method: str, url: str, body: str, headers: dict[str, str]) -> int:
        resp = await self._client().request(method, url, content=body.encode(), headers=headers)
        if resp.status_code >= 400:
            raise RuntimeError(f"HTTP {resp.status_code}")
        return int(resp.status_code)

    async def kfl_query(self, query: str, limit: int) -> list[dict[str, Any]]:
        s = self.service.asettings
        host, port = parse_hostport(s.gateway_http)
        headers = {"authorization": f"Bearer {s.gateway_token}"} if s.gateway_token else {}
        resp = await self._client().get(
            f"http://{host}:{port}/api/entries", params={"q": query, "limit": limit}, headers=headers
        )
        doc = resp.json()
        if resp.status_code != 200:
            raise RuntimeError(str(doc.get("error") if isinstance(doc, dict) else resp.status_code))
        entries: list[dict[str, Any]] = doc["entries"]
        return entries

    async def snapshot(self, bpf: str, name: str, seconds: float) -> dict[str, Any]:
        now = time.time_ns()
        async with channel(
            self.service.settings.capture_grpc, self.service.settings.transport, peer="capture"
        ) as ch:
            stub = capture_pb2_grpc.CaptureServiceStub(ch)
            answer = await stub.Snapshot(
                capture_pb2.CaptureServiceSnapshotRequest(
                    start_ns=now - int(seconds * 1e9), end_ns=now, bpf=bpf, inline=True
                ),
                timeout=RPC_TIMEOUT_S,
                metadata=self.service.auth.call_metadata(),
            )
        folder = Path(self.service.settings.data_dir) / "snapshots"
        path = folder / f"{name}.pcapng"
        await asyncio.to_thread(_write, path, answer.data)
        return {"path": str(path), "packets": int(answer.packets)}

    def hub(self, host: Host, action: str, obj: Any) -> None:
        self.service.publish_hub(host.agent, action, obj)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def agent_message(
    run: AgentRun | None,
    definition: AgentDef | None,
    with_source: bool = True,
    others: dict[str, dict[str, Any]] | None = None,
    replica: str = "",
) -> agents_pb2.Agent:
    """The agent as the API shows it: its definition, and its state over the replicas — this one's
    (`run`, live) and the others' as they last shared it (`others`, replica -> state)."""
    d = definition if definition is not None else (run.definition if run is not None else None)
    msg = agents_pb2.Agent()
    if d is not None:
        msg.name = d.name
        if with_source:
            msg.source = d.source
        msg.enabled = d.enabled
        msg.env.update(d.env)
        msg.revision = d.revision
        msg.updated_ns = d.updated_ns
        msg.state = "running" if d.enabled else "disabled"
    states: list[dict[str, Any]] = []
    if run is not None:
        st = run.status()
        msg.hooks.extend(st["hooks"])
        msg.jobs.extend(st["jobs"])
        states.append({**state_doc(run, replica, 0), "stale": False})
    states.extend(st for name, st in sorted((others or {}).items()) if st.get("replica") != replica)
    for st in states:
        msg.replicas.append(
            agents_pb2.ReplicaState(
                replica=str(st.get("replica", "")),
                state=str(st.get("state", "")),
                last_error=str(st.get("last_error", "")),
                error_line=int(st.get("error_line") or 0),
                revision=int(st.get("revision") or 0),
                invocations=int(st.get("invocations") or 0),
                items=int(st.get("items") or 0),
                failures=int(st.get("failures") or 0),
                tests_passed=int(st.get("tests_passed") or 0),
                tests_failed=int(st.get("tests_failed") or 0),
                log_dropped=int(st.get("log_dropped") or 0),
                outbound_dropped=int(st.get("outbound_dropped") or 0),
                seen_ns=int(st.get("seen_ns") or 0),
                stale=bool(st.get("stale")),
            )
        )
    # What the agent is now: the replicas that are alive and run the current revision.
    live = [
        st
        for st in states
        if not st.get("stale") and (d is None or not d.revision or st.get("revision") == d.revision)
    ]
    if not live:
        return msg
    failed = [st for st in live if st.get("state") == FAILED]
    if d is not None and not d.enabled:
        msg.state = "disabled"
    elif failed:
        msg.state = FAILED
        first = failed[0]
        where = f"{first.get('replica')}: " if len(live) > 1 else ""
        msg.last_error = where + str(first.get("last_error", ""))
        msg.error_line = int(first.get("error_line") or 0)
    elif any(st.get("state") == "running" for st in live):
        msg.state = "running"
    else:
        msg.state = str(live[0].get("state", msg.state))
    for counter in (
        "invocations",
        "items",
        "failures",
        "tests_passed",
        "tests_failed",
        "log_dropped",
        "outbound_dropped",
    ):
        setattr(msg, counter, sum(int(st.get(counter) or 0) for st in live))
    return msg


class AgentsApi(agents_pb2_grpc.AgentsServiceServicer):
    def __init__(self, service: AgentsService) -> None:
        self.s = service

    async def _store(self, context: grpc.aio.ServicerContext) -> AgentStore:
        if self.s.store is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agents store is not open yet (NATS)")
            raise AssertionError("abort() raises")
        return self.s.store

    async def _name(self, name: str, context: grpc.aio.ServicerContext) -> str:
        try:
            return check_name(name)
        except InvalidAgent as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("abort() raises") from None

    async def ListAgents(
        self, request: agents_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.ListAgentsResponse:
        store = await self._store(context)
        out = agents_pb2.ListAgentsResponse()
        for definition in await store.all():
            out.agents.append(self.s.message(definition.name, definition, not request.without_source))
        return out

    async def GetAgent(
        self, request: agents_pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.GetAgentResponse:
        store = await self._store(context)
        name = await self._name(request.name, context)
        definition = await store.get(name)
        if definition is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no agent {name!r}")
        return agents_pb2.GetAgentResponse(
            agent=self.s.message(name, definition), history=await store.history(name)
        )

    async def PutAgent(
        self, request: agents_pb2.PutAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.PutAgentResponse:
        store = await self._store(context)
        a = request.agent
        try:
            definition = AgentDef(a.name, a.source, dict(a.env), a.enabled).check()
        except InvalidAgent as exc:
            return agents_pb2.PutAgentResponse(stored=False, error=str(exc))
        problem = await asyncio.to_thread(trial_load, definition, self.s.asettings)
        if problem is not None:
            message, line, column = problem
            return agents_pb2.PutAgentResponse(stored=False, error=message, line=line, column=column)
        expected = request.expected_revision if request.HasField("expected_revision") else None
        try:
            revision = await store.put(definition, expected)
        except RevisionConflict as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
            raise AssertionError("abort() raises") from None
        stored = AgentDef(
            definition.name, definition.source, definition.env, definition.enabled, time.time_ns(), revision
        )
        await self.s.apply(definition.name, stored)
        return agents_pb2.PutAgentResponse(agent=self.s.message(definition.name, stored), stored=True)

    async def DeleteAgent(
        self, request: agents_pb2.DeleteAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.DeleteAgentResponse:
        store = await self._store(context)
        name = await self._name(request.name, context)
        deleted = await store.delete(name)
        if deleted:
            await self.s.apply(name, None)
            if self.s.replicas is not None:
                await self.s.replicas.forget(name)
        return agents_pb2.DeleteAgentResponse(deleted=deleted)

    async def SetEnabled(
        self, request: agents_pb2.SetEnabledRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.SetEnabledResponse:
        store = await self._store(context)
        name = await self._name(request.name, context)
        definition = await store.get(name)
        if definition is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no agent {name!r}")
            raise AssertionError("abort() raises")
        changed = AgentDef(definition.name, definition.source, definition.env, request.enabled)
        revision = await store.put(changed)
        stored = AgentDef(
            changed.name, changed.source, changed.env, changed.enabled, time.time_ns(), revision
        )
        await self.s.apply(name, stored)
        return agents_pb2.SetEnabledResponse(agent=self.s.message(name, stored))

    async def GetLogs(
        self, request: agents_pb2.GetLogsRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.GetLogsResponse:
        name = await self._name(request.name, context)
        replicas = self.s.replicas
        if replicas is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agents' logs are not open yet (NATS)")
            raise AssertionError("abort() raises")
        if name not in self.s.runtime.agents and not replicas.shared.knows(name):
            store = await self._store(context)
            if await store.get(name) is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no agent {name!r}")
        lines = replicas.shared.lines(name, request.after_seq, request.limit)
        return agents_pb2.GetLogsResponse(
            lines=[
                agents_pb2.LogLine(seq=x.seq, ts_ns=x.ts_ns, stream=x.stream, text=x.text, replica=x.replica)
                for x in lines
            ],
            replicas=replicas.shared.replicas_with_lines(name),
        )

    async def QueryItems(
        self, request: agents_pb2.QueryItemsRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.QueryItemsResponse:
        if len(request.entries_json) > MAX_QUERIED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_QUERIED} entries per call")
        marks = await self.s.in_js(self.s.runtime.query_items, _entries(request.entries_json))
        return agents_pb2.QueryItemsResponse(
            marks=[
                agents_pb2.Mark(agent=m.agent, result=m.result, entry_id=m.entry_id, note=m.note)
                for m in marks
            ]
        )

    async def TestAgent(
        self, request: agents_pb2.TestAgentRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.TestAgentResponse:
        if len(request.entries_json) > MAX_TESTED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_TESTED} entries per test")
        name = request.name or "draft"
        try:
            check_name(name)
            AgentDef(name, request.source, dict(request.env), True).check()
        except InvalidAgent as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("abort() raises") from None
        entries = _entries(request.entries_json)
        return await asyncio.get_running_loop().run_in_executor(
            self.s.tests, try_source, request.source, dict(request.env), name, entries, self.s.asettings
        )

    async def GetReference(
        self, request: agents_pb2.GetReferenceRequest, context: grpc.aio.ServicerContext
    ) -> agents_pb2.GetReferenceResponse:
        templates = [agents_pb2.Template(name=t.name, summary=t.summary, source=t.source) for t in TEMPLATES]
        return agents_pb2.GetReferenceResponse(reference=render(), templates=templates)


def _entries(raw: Sequence[bytes]) -> list[dict[str, Any]]:
    """Entry JSON that decodes to an object; anything else is skipped."""
    out = []
    for item in raw:
        try:
            doc = orjson.loads(item)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def try_source(
    source: str, env: dict[str, str], name: str, entries: list[dict[str, Any]], settings: AgentsSettings
) -> agents_pb2.TestAgentResponse:
    """The replay harness over `entries` (oldest first), in batches as the bus brings them, with the
    service's limits: a loop or an allocation bomb stops the draft, not the service."""
    batches = [entries[i : i + FETCH_BATCH] for i in range(0, len(entries), FETCH_BATCH)]
    result = replay(source, batches, env=env, name=name, limits=settings.limits())
    shown = result.lines[:MAX_TEST_LINES]
    return agents_pb2.TestAgentResponse(
        entries=result.entries,
        passed=result.passed,
        failed=result.failed,
        error=result.error,
        line=result.line,
        column=result.column,
        error_kind=result.error_kind,
        lines=[agents_pb2.LogLine(seq=x.seq, ts_ns=x.ts_ns, stream=x.stream, text=x.text) for x in shown],
        ok=result.ok,
        lines_dropped=len(result.lines) - len(shown),
    )


def trial_load(definition: AgentDef, settings: AgentsSettings) -> tuple[str, int, int] | None:
    """Why `definition` cannot run (message, line, column), or None: the syntax, then its top level run
    once in a scratch sandbox with offline helpers (bad kfl.match queries, bad cron strings, throws)."""
    problem = check_syntax(definition.source)
    if problem is not None:
        return str(problem), problem.line, problem.column
    if not definition.enabled:
        return None
    scratch = Runtime(Backend(settings.node_name), settings.limits())
    run = scratch.put(definition)
    if run.state == "failed":
        return run.last_error, run.error_line, 0
    return None


class AgentsService(Service):
    name = "agents"
    settings_cls = AgentsSettings

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        assert isinstance(settings, AgentsSettings)
        self.asettings = settings
        self.backend = ServiceBackend(self)
        self._js = ThreadPoolExecutor(1, thread_name_prefix="agents-js")
        # Drafts are tried one at a time in a thread of their own: never in the live agents' thread.
        self.tests = ThreadPoolExecutor(1, thread_name_prefix="agents-test")
        self.runtime = Runtime(self.backend, settings.limits(), wake=self._wake)
        self.store: AgentStore | None = None
        self.replicas: Replicas | None = None
        self.outbound: Outbound | None = None
        self.entries_in = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._inbox = asyncio.Event()
        self._loaded = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: set[str] = set()
        self._traces_seen: OrderedDict[str, None] = OrderedDict()
        self._traces_primed = False  # the traces completed before an agent wanted onTrace are known
        # trace id -> ((span count, duration, error), since when unchanged): traces not yet settled
        self._traces_pending: OrderedDict[str, tuple[tuple[int, int, bool], float]] = OrderedDict()
        self._last_stats: dict[str, int] = {}
        REGISTRY.register(self.backend.metrics)

    def register(self, server: grpc.aio.Server) -> None:
        agents_pb2_grpc.add_AgentsServiceServicer_to_server(AgentsApi(self), server)

    def ready(self) -> bool:
        return self._loaded.is_set()

    async def in_js(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the JavaScript thread."""
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._js, fn, *args)
        self._note_failures()
        return result

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._inbox.set)

    def _note_failures(self) -> None:
        for run in self.runtime.agents.values():
            if run.state == "failed" and run.agent not in self._failed:
                self._failed.add(run.agent)
                AGENT_FAILURES.labels(run.agent).inc()
            elif run.state != "failed":
                self._failed.discard(run.agent)

    def message(self, name: str, definition: AgentDef | None, with_source: bool = True) -> agents_pb2.Agent:
        """The agent with this replica's live state and the others' shared ones."""
        others = self.replicas.shared.states(name) if self.replicas is not None else {}
        run = self.runtime.agents.get(name)
        return agent_message(run, definition, with_source, others, self.asettings.replica)

    async def apply(self, name: str, definition: AgentDef | None) -> AgentRun | None:
        """Load (or remove) a definition read from the store, unless this revision already runs."""
        return await self.in_js(self._apply, name, definition)

    async def _watched(self, name: str, definition: AgentDef | None) -> None:
        await self.apply(name, definition)
        if definition is None and self.replicas is not None:
            await self.replicas.forget_own(name)

    def _apply(self, name: str, definition: AgentDef | None) -> AgentRun | None:
        if definition is None:
            self.runtime.remove(name)
            return None
        current = self.runtime.agents.get(name)
        if current is not None and definition.revision and current.definition.revision == definition.revision:
            return current
        return self.runtime.put(definition)

    async def start(self, bus: Bus) -> None:
        self._loop = asyncio.get_running_loop()
        s = self.asettings
        self.outbound = Outbound(
            s.agents_outbound_queue, s.agents_outbound_timeout_s, s.agents_outbound_workers
        )
        self.store = await AgentStore.open(bus.js)
        self.replicas = await Replicas.open(bus.js, s.replica)
        self._sub = await durable_pull(bus.js, ENTRIES_STREAM.name, ENTRIES_ALL, s.agents_durable)
        self._hub = await bus.nc.subscribe(AGENT_EVENTS, cb=self._on_hub)
        self._pods = await bus.nc.subscribe(IDENTITY_UPDATES, cb=self._on_identity)
        store = self.store
        self._tasks = [
            asyncio.create_task(store.watch(self._watched, self._loaded), name="agents-watch"),
            asyncio.create_task(self._consume(), name="agents-consume"),
            asyncio.create_task(self._inbox_loop(), name="agents-inbox"),
            asyncio.create_task(self._jobs_loop(), name="agents-jobs"),
            asyncio.create_task(self._stats_loop(), name="agents-stats"),
            asyncio.create_task(self.replicas.follow(), name="agents-replicas-follow"),
            asyncio.create_task(self._share_loop(), name="agents-replicas-share"),
        ]
        await asyncio.wait_for(self._loaded.wait(), timeout=30)
        log.info("agents loaded", extra={"agents": len(self.runtime.agents)})

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.replicas is not None:  # the last lines, then this replica's states go
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._share(), timeout=RPC_TIMEOUT_S)
                await asyncio.wait_for(self.replicas.leave(), timeout=RPC_TIMEOUT_S)
        if self.outbound is not None:
            await self.outbound.close()
        if self.backend.http is not None:
            await self.backend.http.aclose()
        self._js.shutdown(wait=False, cancel_futures=True)
        self.tests.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            REGISTRY.unregister(self.backend.metrics)

    # -- inputs -------------------------------------------------------------------------------
    async def _consume(self) -> None:
        while not self._stop.is_set():
            # While no deployed agent wants entries (asked when they arrive) they are counted off the
            # batches and acknowledged, none decoded: an idle agents service costs per message.
            got = await fetch_entries(self._sub, FETCH_BATCH, FETCH_TIMEOUT_S, decode=self._wanted)
            if got.entries:
                await self.in_js(self.runtime.dispatch, ON_ITEM_CAPTURED, got.entries)
            if got.count:
                self.entries_in += got.count
                ENTRIES_IN.inc(got.count)
            await got.ack()

    def _wanted(self) -> bool:
        return self.runtime.wants(ON_ITEM_CAPTURED)

    async def _inbox_loop(self) -> None:
        while not self._stop.is_set():
            await self._inbox.wait()
            self._inbox.clear()
            await self.in_js(self.runtime.process_inboxes)

    async def _jobs_loop(self) -> None:
        while not self._stop.is_set():
            nxt = self.runtime.next_job_s()
            if nxt is not None and nxt <= time.time():
                await self.in_js(self.runtime.run_due_jobs, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=JOBS_TICK_S)

    async def _share(self) -> None:
        if self.replicas is not None:
            await self.replicas.flush(list(self.runtime.agents.values()))

    async def _share_loop(self) -> None:
        """This replica's new log lines and due states to the other replicas, a few times a second."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=FLUSH_S)
            try:
                await self._share()
            except Exception as exc:  # NATS away: the next round tries again from the agents' logs
                log.debug("agents' state not shared", extra={"error": str(exc)})

    async def _stats_loop(self) -> None:
        interval = self.asettings.agents_stats_interval_s
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            try:
                if self.runtime.wants(ON_PACKET_CAPTURED):
                    await self._packet_stats()
                if self.runtime.wants(ON_TRACE):
                    await self._traces()
                else:
                    self._traces_primed = False
            except grpc.aio.AioRpcError as exc:
                log.debug("peer unavailable for agent events", extra={"error": exc.code().name})
            except TracersUnavailable as exc:
                log.debug("peer unavailable for agent events", extra={"error": str(exc)})

    async def _packet_stats(self) -> None:
        async with channel(self.settings.capture_grpc, self.settings.transport, peer="capture") as ch:
            status = await capture_pb2_grpc.CaptureServiceStub(ch).GetStatus(
                capture_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_S, metadata=self.auth.call_metadata()
            )
        event = packet_delta(status, self._last_stats)
        if event is not None:
            await self.in_js(self.runtime.dispatch, ON_PACKET_CAPTURED, [event])

    async def _traces(self) -> None:
        """Offer onTrace the traces completed since the previous poll, whatever their time (a replayed
        capture's traces are years old): the tracer's newest completed, less those already offered;
        the first poll only learns what was complete before (a restart offers nothing twice)."""
        # Every tracer replica, merged: a trace's summary counts the spans all of them hold.
        async with Tracers(self.settings.tracer_grpc, self.settings.transport, peer="tracer") as tracers:
            answer = await tracers.FindTraces(
                tracer_pb2.FindTracesRequest(limit=TRACES_PER_POLL),
                timeout=RPC_TIMEOUT_S,
                metadata=self.auth.call_metadata(),
            )
        fresh = []
        primed, self._traces_primed = self._traces_primed, True
        now = time.monotonic()
        settle = self.asettings.agents_trace_settle_s
        for t in answer.traces:
            if t.trace_id in self._traces_seen:
                continue
            if primed:  # offered once it stopped changing: the tracer adds spans as they leave its window
                shape = (t.span_count, t.duration_ns, t.error)
                since = self._traces_pending.get(t.trace_id)
                if since is None or since[0] != shape:
                    self._traces_pending[t.trace_id] = (shape, now)
                    if len(self._traces_pending) > TRACES_PER_POLL:
                        self._traces_pending.popitem(last=False)
                    continue
                if now - since[1] < settle:
                    continue
                del self._traces_pending[t.trace_id]
            self._traces_seen[t.trace_id] = None
            if len(self._traces_seen) > TRACES_SEEN:
                self._traces_seen.popitem(last=False)
            if not primed:
                continue
            fresh.append(
                {
                    "trace_id": t.trace_id,
                    "root_name": t.root_name,
                    "root_service": t.root_service,
                    "start_ns": t.start_ns,
                    "duration_us": t.duration_ns // 1000,
                    "span_count": t.span_count,
                    "error": t.error,
                    "min_confidence": t.min_confidence,
                }
            )
        if fresh:
            fresh.reverse()  # in the order they completed
            await self.in_js(self.runtime.dispatch, ON_TRACE, fresh)

    async def _on_identity(self, msg: Any) -> None:
        if not self.runtime.wants(ON_POD_EVENT):
            return
        update = decode_or_count(resolver_pb2.IdentityUpdate, msg.data, IDENTITY_UPDATES)
        if update is None:
            return
        events = pod_events(update)
        if events:
            await self.in_js(self.runtime.dispatch, ON_POD_EVENT, events)

    def publish_hub(self, agent: str, action: str, obj: Any) -> None:
        """Called in the JS thread: hand the publish to the event loop."""
        payload = orjson.dumps(
            {"agent": agent, "action": action, "obj": obj, "node": self.settings.node_name}
        )
        loop, bus = self._loop, self.bus
        if loop is None or bus is None:
            return
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(bus.nc.publish(AGENT_EVENTS, payload)))

    async def _on_hub(self, msg: Any) -> None:
        try:
            doc = orjson.loads(msg.data)
            run = self.runtime.agents.get(str(doc["agent"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if run is not None and ON_HUB_ACTION in run.hooks:
            run.fire(ON_HUB_ACTION, str(doc.get("action", "")), doc.get("obj"))


def packet_delta(status: capture_pb2.GetStatusResponse, last: dict[str, int]) -> dict[str, Any] | None:
    """The counts since the previous status (the first status only sets the baseline)."""
    first = not last
    now: dict[str, int] = {"packets": status.packets, "bytes": status.bytes}
    for reason, n in status.drops.items():
        now[f"drop:{reason}"] = n
    for i in status.interfaces:
        now[f"if:{i.name}:packets"] = i.packets
        now[f"if:{i.name}:bytes"] = i.bytes
        now[f"if:{i.name}:kernel_drops"] = i.kernel_drops

    def delta(key: str) -> int:
        return max(0, now.get(key, 0) - last.get(key, 0))

    event = {
        "node": status.node,
        "packets": delta("packets"),
        "bytes": delta("bytes"),
        "drops": {reason: delta(f"drop:{reason}") for reason in status.drops},
        "interfaces": [
            {
                "name": i.name,
                "packets": delta(f"if:{i.name}:packets"),
                "bytes": delta(f"if:{i.name}:bytes"),
                "kernel_drops": delta(f"if:{i.name}:kernel_drops"),
            }
            for i in status.interfaces
        ],
    }
    last.clear()
    last.update(now)
    return None if first else event


def pod_events(update: resolver_pb2.IdentityUpdate) -> list[dict[str, Any]]:
    """The pods of a resolver delta: an identity whose holding ended (`valid_until_ns`, how the resolver
    keeps a deleted pod for lookups at earlier times) or that was dropped is a removal."""
    out = []
    for dropped, identities in ((False, update.upserts), (True, update.removals)):
        for i in identities:
            if i.kind != "pod":
                continue
            out.append(
                {
                    "type": "removal" if dropped or i.valid_until_ns else "upsert",
                    "pod": {
                        "name": i.name,
                        "namespace": i.namespace,
                        "ip": i.ip,
                        "node": i.node,
                        "labels": dict(i.labels),
                        "workload": {"kind": i.workload.kind, "name": i.workload.name},
                    },
                }
            )
    return out

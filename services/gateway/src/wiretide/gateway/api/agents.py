"""REST and WebSocket routes for network agents: `/api/agents[/{name}]` (GET, PUT, DELETE),
`/api/agents/{name}/enable|disable` (POST), `/api/agents/{name}/logs` (GET, and a WebSocket at
`/api/agents/{name}/logs/stream`), `/api/agents/annotations` (POST: the onItemQueried marks of entries),
`/api/agents/templates` (GET), and the LLM's `/api/agents/draft` and `/api/agents/{name}/improve`
(POST: a proposed source, tried by the replay harness over the caller's recent traffic, never stored).
Each one calls the agents service over gRPC (`gw.settings.agents_grpc`).

An agent's state is over the replicas of the agents service (`replicas`: each one's state, counters
and error; the agent is failed when a live replica stopped it), and its log merges every replica's
lines, each naming its replica, whichever replica answers.

Rule: the handlers only translate; a definition the agents service refuses is a 400 with its message
(and the line and column of a syntax error), an unknown agent a 404, a PUT based on a revision that is
no longer current a 409, an agents service that cannot be reached a 503, never a 500. Routes that
change agents (and drafting, which spends the LLM) are the editor's; reading them is the viewer's
(whatever protects the API protects these: they are mounted in the same application). Drafts run
only over entries the caller may see, as the query layer gives them (scoped, redacted).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final, Protocol

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from wiretide.common.auth import NamespaceScope, Principal, Role, principal_of
from wiretide.common.llm import LlmClient, LlmDisabled, LlmError
from wiretide.common.rpc import channel
from wiretide.common.settings import CommonSettings
from wiretide.gateway import drafting
from wiretide.gateway.query import QueryError
from wiretide.proto.v1 import agents_pb2, agents_pb2_grpc

RPC_TIMEOUT_S: Final = 15.0  # a put loads the agent once (its top level may use its whole time limit)
MAX_BODY_BYTES: Final = 512 * 1024  # an agent's source is at most 256 KiB; JSON escaping can double it
MAX_ANNOTATE_IDS: Final = 500
LOG_POLL_S: Final = 0.5  # the log stream asks for new lines this often
# A draft is tried on this many of the caller's newest entries by default, at most MAX_TRY_ENTRIES
# (the agents service takes 2000) and MAX_TRY_BYTES of JSON: enough traffic to exercise it, bounded.
TRY_ENTRIES: Final = 200
MAX_TRY_ENTRIES: Final = 1000
MAX_TRY_BYTES: Final = 8 * 1024 * 1024
TRY_TIMEOUT_S: Final = 120.0  # a draft runs up to its time limit per batch of entries


class _Auth(Protocol):
    def call_metadata(self) -> tuple[tuple[str, str], ...]: ...


class _Page(Protocol):
    @property
    def entries(self) -> list[dict[str, Any]]: ...


class _Queries(Protocol):
    async def get(self, entry_id: str, scope: NamespaceScope) -> dict[str, Any] | None: ...

    async def query(self, query: str, limit: int | None, *, scope: NamespaceScope) -> _Page: ...


class _Gateway(Protocol):
    @property
    def settings(self) -> CommonSettings: ...

    @property
    def auth(self) -> _Auth: ...

    @property
    def queries(self) -> _Queries: ...


class BadRequest(ValueError):
    pass


class Conflict(RuntimeError):
    pass


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def agent_json(a: agents_pb2.Agent, with_source: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": a.name,
        "enabled": a.enabled,
        "state": a.state,
        "last_error": a.last_error,
        "error_line": a.error_line,
        "env": dict(a.env),
        "hooks": list(a.hooks),
        "jobs": list(a.jobs),
        "invocations": a.invocations,
        "items": a.items,
        "failures": a.failures,
        "tests_passed": a.tests_passed,
        "tests_failed": a.tests_failed,
        "log_dropped": a.log_dropped,
        "outbound_dropped": a.outbound_dropped,
        "revision": a.revision,
        "updated_ns": a.updated_ns,
        "replicas": [replica_json(r) for r in a.replicas],
    }
    if with_source:
        doc["source"] = a.source
    return doc


def replica_json(r: agents_pb2.ReplicaState) -> dict[str, Any]:
    return {
        "replica": r.replica,
        "state": r.state,
        "last_error": r.last_error,
        "error_line": r.error_line,
        "revision": r.revision,
        "invocations": r.invocations,
        "items": r.items,
        "failures": r.failures,
        "tests_passed": r.tests_passed,
        "tests_failed": r.tests_failed,
        "log_dropped": r.log_dropped,
        "outbound_dropped": r.outbound_dropped,
        "seen_ns": r.seen_ns,
        "stale": r.stale,
    }


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"body larger than {MAX_BODY_BYTES // 1024} KiB")
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body must be JSON") from None


def routes(gw: _Gateway) -> list[BaseRoute]:
    state: dict[str, Any] = {}

    def stub() -> agents_pb2_grpc.AgentsServiceStub:
        if "stub" not in state:
            state["channel"] = channel(gw.settings.agents_grpc, gw.settings.transport, peer="agents")
            state["stub"] = agents_pb2_grpc.AgentsServiceStub(state["channel"])
        return state["stub"]  # type: ignore[no-any-return]

    async def call(method: str, message: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
        try:
            return await getattr(stub(), method)(message, timeout=timeout, metadata=gw.auth.call_metadata())
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise BadRequest(exc.details() or "invalid request") from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise LookupError(exc.details() or "not found") from None
            if code == grpc.StatusCode.ABORTED:
                raise Conflict(exc.details() or "the agent changed") from None
            raise ConnectionError(f"agents service unavailable: {code.name}") from None

    def guarded(handler: Any, role: Role) -> Any:
        async def endpoint(request: Request) -> Response:
            principal_of(request.scope).require(role)  # PermissionDenied: the app answers 403
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except BadRequest as exc:
                return _json({"error": str(exc)}, 400)
            except LookupError as exc:
                return _json({"error": str(exc)}, 404)
            except Conflict as exc:
                return _json({"error": str(exc)}, 409)
            except ConnectionError as exc:
                return _json({"error": str(exc)}, 503)
            except (LlmDisabled, LlmError) as exc:  # the LLM is off (503) or its endpoint failed (502)
                return _json({"error": str(exc)}, 503 if isinstance(exc, LlmDisabled) else 502)

        return endpoint

    async def list_agents(request: Request) -> Response:
        answer = await call("ListAgents", agents_pb2.ListAgentsRequest(without_source=True))
        return _json({"agents": [agent_json(a, False) for a in answer.agents]})

    async def get_agent(request: Request) -> Response:
        answer = await call("GetAgent", agents_pb2.GetAgentRequest(name=request.path_params["name"]))
        return _json({**agent_json(answer.agent), "history": list(answer.history)})

    async def put_agent(request: Request) -> Response:
        doc = await _body(request)
        if not isinstance(doc, dict) or not isinstance(doc.get("source"), str):
            raise BadRequest('body must be JSON: {"source": "...", "env": {...}, "enabled": true}')
        env = doc.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise BadRequest("env must be an object of strings")
        enabled = doc.get("enabled", True)
        if not isinstance(enabled, bool):
            raise BadRequest("enabled must be true or false")
        base = doc.get("base_revision")
        if base is not None and (not isinstance(base, int) or isinstance(base, bool) or base < 0):
            raise BadRequest("base_revision must be the revision the change is based on (0: a new agent)")
        agent = agents_pb2.Agent(
            name=request.path_params["name"], source=doc["source"], enabled=enabled, env=env
        )
        answer = await call("PutAgent", agents_pb2.PutAgentRequest(agent=agent, expected_revision=base))
        if not answer.stored:
            return _json({"error": answer.error, "line": answer.line, "column": answer.column}, 400)
        return _json(agent_json(answer.agent))

    async def delete_agent(request: Request) -> Response:
        name = request.path_params["name"]
        answer = await call("DeleteAgent", agents_pb2.DeleteAgentRequest(name=name))
        if not answer.deleted:
            return _json({"error": f"no agent {name!r}"}, 404)
        return _json({"deleted": name})

    def set_enabled(enabled: bool) -> Any:
        async def handler(request: Request) -> Response:
            message = agents_pb2.SetEnabledRequest(name=request.path_params["name"], enabled=enabled)
            answer = await call("SetEnabled", message)
            return _json(agent_json(answer.agent, False))

        return handler

    async def agent_logs(request: Request) -> Response:
        after = request.query_params.get("after", "0")
        if not after.isdigit() or len(after) > 19:
            raise BadRequest("after must be a non-negative integer")
        answer = await call(
            "GetLogs", agents_pb2.GetLogsRequest(name=request.path_params["name"], after_seq=int(after))
        )
        return _json({"lines": [_line(x) for x in answer.lines], "replicas": list(answer.replicas)})

    async def annotations(request: Request) -> Response:
        doc = await _body(request)
        ids = doc.get("ids") if isinstance(doc, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadRequest('body must be JSON: {"ids": ["entry id", ...]}')
        if len(ids) > MAX_ANNOTATE_IDS:
            raise BadRequest(f"at most {MAX_ANNOTATE_IDS} ids")
        scope = principal_of(request.scope).scope
        docs = [d for d in await asyncio.gather(*(gw.queries.get(i, scope) for i in ids)) if d is not None]
        answer = await call(
            "QueryItems", agents_pb2.QueryItemsRequest(entries_json=[orjson.dumps(d) for d in docs])
        )
        marks: dict[str, list[dict[str, str]]] = {}
        for m in answer.marks:
            marks.setdefault(m.entry_id, []).append({"agent": m.agent, "result": m.result, "note": m.note})
        return _json({"marks": marks})

    async def templates(request: Request) -> Response:
        answer = await call("GetReference", agents_pb2.GetReferenceRequest())
        shown = [{"name": t.name, "summary": t.summary, "source": t.source} for t in answer.templates]
        return _json({"templates": shown})

    async def recent(doc: dict[str, Any], principal: Principal) -> list[dict[str, Any]]:
        """The caller's newest entries matching `kfl`, oldest first, within the count and byte bounds."""
        kfl, limit = doc.get("kfl") or "", doc.get("limit", TRY_ENTRIES)
        if not isinstance(kfl, str):
            raise BadRequest("kfl must be a KFL filter")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_TRY_ENTRIES:
            raise BadRequest(f"limit must be 0..{MAX_TRY_ENTRIES} entries")
        if not limit:
            return []
        try:
            page = await gw.queries.query(kfl, limit, scope=principal.scope)
        except QueryError as exc:
            raise BadRequest(f"kfl: {exc}") from None
        kept, size = [], 0
        for entry in page.entries:
            size += len(orjson.dumps(entry))
            if size > MAX_TRY_BYTES:
                break
            kept.append(entry)
        kept.reverse()
        return kept

    async def tried(source: str, env: dict[str, str], name: str, entries: list[dict[str, Any]]) -> Any:
        message = agents_pb2.TestAgentRequest(
            source=source, env=env, name=name, entries_json=[orjson.dumps(e) for e in entries]
        )
        answer = await call("TestAgent", message, TRY_TIMEOUT_S)
        return {
            "ok": answer.ok,
            "entries": answer.entries,
            "passed": answer.passed,
            "failed": answer.failed,
            "error": answer.error,
            "error_kind": answer.error_kind,
            "line": answer.line,
            "column": answer.column,
            "lines": [_line(x) for x in answer.lines],
            "lines_dropped": answer.lines_dropped,
        }

    def llm_client() -> LlmClient:
        llm = LlmClient.from_settings(gw.settings)
        if not llm.enabled:
            raise LlmDisabled
        return llm

    async def proposal_input(request: Request, field: str, example: str) -> tuple[dict[str, Any], str, Any]:
        doc = await _body(request)
        if not isinstance(doc, dict):
            raise BadRequest(f'body must be JSON: {{"{field}": "{example}"}}')
        try:
            text = drafting.check_text(doc.get(field), field, example)
            previous = drafting.Attempt.parse(doc.get("previous"))
        except drafting.DraftError as exc:
            raise BadRequest(str(exc)) from None
        return doc, text, previous

    async def draft_agent(request: Request) -> Response:
        llm = llm_client()
        doc, description, previous = await proposal_input(
            request, "description", "alert a webhook on every 5xx"
        )
        entries = await recent(doc, principal_of(request.scope))
        reference = (await call("GetReference", agents_pb2.GetReferenceRequest())).reference
        try:
            made = await drafting.draft(llm, reference, description, entries, previous)
        except drafting.NoCode as exc:
            return _json({"error": str(exc), "answer": exc.answer, "retry": True}, 422)
        finally:
            await llm.aclose()
        result = await tried(made.source, {}, "draft", entries)
        return _json({"source": made.source, "explanation": made.explanation, "test": result})

    async def improve_agent(request: Request) -> Response:
        llm = llm_client()
        name = request.path_params["name"]
        doc, instruction, previous = await proposal_input(request, "instruction", "also count 4xx")
        current = (await call("GetAgent", agents_pb2.GetAgentRequest(name=name))).agent
        entries = await recent(doc, principal_of(request.scope))
        reference = (await call("GetReference", agents_pb2.GetReferenceRequest())).reference
        try:
            made = await drafting.improve(
                llm, reference, name, current.source, instruction, entries, previous
            )
        except drafting.DraftError as exc:
            raise BadRequest(str(exc)) from None
        except drafting.NoCode as exc:
            return _json({"error": str(exc), "answer": exc.answer, "retry": True}, 422)
        finally:
            await llm.aclose()
        result = await tried(made.source, dict(current.env), name, entries)
        return _json(
            {
                "name": name,
                "base_revision": current.revision,
                "env": dict(current.env),
                "enabled": current.enabled,
                "source": made.source,
                "diff": drafting.unified_diff(current.source, made.source, name, current.revision),
                "explanation": made.explanation,
                "test": result,
            }
        )

    async def log_stream(ws: WebSocket) -> None:
        name = ws.path_params["name"]
        principal_of(ws.scope).require(Role.VIEWER)
        await ws.accept()
        after = 0

        async def drain_client() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_bytes()

        reader = asyncio.create_task(drain_client())
        try:
            while not reader.done():
                try:
                    answer = await call("GetLogs", agents_pb2.GetLogsRequest(name=name, after_seq=after))
                except (BadRequest, LookupError, ConnectionError) as exc:
                    await ws.send_text(orjson.dumps({"type": "error", "error": str(exc)}).decode())
                    await ws.close(code=4404 if isinstance(exc, LookupError) else 4400, reason=str(exc)[:120])
                    return
                for line in answer.lines:
                    await ws.send_text(orjson.dumps({"type": "line", **_line(line)}).decode())
                    after = line.seq
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), timeout=LOG_POLL_S)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            reader.cancel()

    return [
        Route("/api/agents", guarded(list_agents, Role.VIEWER), methods=["GET"]),
        Route("/api/agents/annotations", guarded(annotations, Role.VIEWER), methods=["POST"]),
        Route("/api/agents/templates", guarded(templates, Role.VIEWER), methods=["GET"]),
        Route("/api/agents/draft", guarded(draft_agent, Role.EDITOR), methods=["POST"]),
        Route("/api/agents/{name}/improve", guarded(improve_agent, Role.EDITOR), methods=["POST"]),
        Route("/api/agents/{name}", guarded(get_agent, Role.VIEWER), methods=["GET"]),
        Route("/api/agents/{name}", guarded(put_agent, Role.EDITOR), methods=["PUT"]),
        Route("/api/agents/{name}", guarded(delete_agent, Role.EDITOR), methods=["DELETE"]),
        Route("/api/agents/{name}/enable", guarded(set_enabled(True), Role.EDITOR), methods=["POST"]),
        Route("/api/agents/{name}/disable", guarded(set_enabled(False), Role.EDITOR), methods=["POST"]),
        Route("/api/agents/{name}/logs", guarded(agent_logs, Role.VIEWER), methods=["GET"]),
        WebSocketRoute("/api/agents/{name}/logs/stream", log_stream),
    ]


def _line(x: agents_pb2.LogLine) -> dict[str, Any]:
    return {"seq": x.seq, "ts_ns": x.ts_ns, "stream": x.stream, "text": x.text, "replica": x.replica}

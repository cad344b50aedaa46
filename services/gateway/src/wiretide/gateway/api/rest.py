"""REST and WebSocket routes (Starlette). Handlers translate HTTP to the application layer
(`QueryService`) and back; they hold no logic of their own. Bad input is a 4xx, never a 500.

Rule: every route but the UI's static shell answers as the caller's Principal (common/auth), passing
its namespace scope to the application layer; the browser guard (Host, Origin, security headers)
stands in front of everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from wiretide.common.auth import (
    AuthMiddleware,
    BrowserGuard,
    NamespaceScope,
    PermissionDenied,
    browser_policy,
    principal_of,
)
from wiretide.common.kfl import VARIABLES, KflError, compile_predicate
from wiretide.common.protocols import table_json
from wiretide.gateway.api import agents, console, mcp, pcap, targets, tls, traces
from wiretide.gateway.api.health import service_health, undissected
from wiretide.gateway.api.openapi import document
from wiretide.gateway.query import QueryError
from wiretide.gateway.recording import api as recordings
from wiretide.gateway.store import StoreError

if TYPE_CHECKING:
    from wiretide.gateway.service import GatewayService

MAX_QUERY_CHARS = 8_192  # longer filters are refused, not parsed
MAX_BODY_BYTES = 64 * 1024
UI_DIR = Path(__file__).resolve().parents[1] / "ui"
# The UI's static shell (HTML, scripts, styles: no data) loads without a token, so that it can ask for one.
UI_SHELL = ("/", "/ui/")


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def _error(status: int, message: str, **extra: Any) -> Response:
    return OrjsonResponse({"error": message, **extra}, status_code=status)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise QueryError(f"{name} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def _query_param(request: Request) -> str:
    q = request.query_params.get("q", "")
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"query longer than {MAX_QUERY_CHARS} characters")
    return q


def _scope(request: Request | WebSocket) -> NamespaceScope:
    return principal_of(request.scope).scope


def build_app(gw: GatewayService) -> Starlette:
    async def health(request: Request) -> Response:
        services = await service_health(gw.settings, "gateway", gw.ready())
        nats = await gw.nats_status()
        ok = all(s["status"] == "SERVING" for s in services.values()) and nats["connected"]
        body: dict[str, Any] = {
            "status": "SERVING" if ok else "DEGRADED",
            "services": services,
            "nats": nats,
            "store": gw.store_status(),
            "capture": gw.completeness.capture,
            "undissected": undissected(gw.completeness.undissected),
            "recordings": gw.recording_status(),
        }
        return OrjsonResponse(body)

    async def entries(request: Request) -> Response:
        result = await gw.queries.query(
            _query_param(request),
            _int_param(request, "limit"),
            request.query_params.get("before"),
            request.query_params.get("after"),
            _scope(request),
        )
        return OrjsonResponse(
            {"entries": result.entries, "next": result.next, "completeness": result.completeness}
        )

    async def whoami(request: Request) -> Response:
        return OrjsonResponse(principal_of(request.scope).to_dict(), headers={"cache-control": "no-store"})

    async def entry(request: Request) -> Response:
        doc = await gw.queries.get(request.path_params["id"], _scope(request))
        if doc is None:
            return _error(404, "no such entry")
        return OrjsonResponse(doc)

    async def entry_pcap(request: Request) -> Response:
        doc = await gw.queries.get(request.path_params["id"], _scope(request))
        if doc is None:
            return _error(404, "no such entry")
        data = await gw.flow_pcap(doc)
        if data is None:
            return _error(
                503,
                "the capture recorder has no packets for this entry's flow (recording off or rotated out)",
            )
        name = f"wiretide-{doc['id']}.pcapng"
        return Response(
            data,
            media_type="application/vnd.tcpdump.pcap",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def export_har(request: Request) -> Response:
        doc = await gw.queries.har(_query_param(request), _int_param(request, "limit"), _scope(request))
        return OrjsonResponse(doc, headers={"content-disposition": 'attachment; filename="wiretide.har"'})

    async def stats(request: Request) -> Response:
        return OrjsonResponse(
            await gw.queries.stats(
                _query_param(request), request.query_params.get("by", "protocol"), _scope(request)
            )
        )

    async def kfl_validate(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "body too large")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, 'body must be JSON: {"query": "..."}')
        if not isinstance(doc, dict) or not isinstance(doc.get("query"), str):
            return _error(400, 'body must be JSON: {"query": "..."}')
        if len(doc["query"]) > MAX_QUERY_CHARS:
            return _error(400, f"query longer than {MAX_QUERY_CHARS} characters")
        return OrjsonResponse(gw.queries.validate(doc["query"]))

    async def openapi(request: Request) -> Response:
        return OrjsonResponse(document())

    variables_doc = {
        "variables": [
            {"name": v.name, "kind": v.kind, "description": v.description, "example": v.example}
            for v in sorted(VARIABLES.values(), key=lambda v: v.name)
        ]
    }

    async def kfl_variables(request: Request) -> Response:
        return OrjsonResponse(variables_doc)

    protocols_doc = table_json()

    async def protocols(request: Request) -> Response:
        return OrjsonResponse(protocols_doc, headers={"cache-control": "no-cache"})

    async def index(request: Request) -> Response:
        return FileResponse(UI_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def stream(ws: WebSocket) -> None:
        q = ws.query_params.get("q", "")
        scope = _scope(ws)
        await ws.accept()
        try:
            if len(q) > MAX_QUERY_CHARS:
                raise QueryError(f"query longer than {MAX_QUERY_CHARS} characters")
            gw.queries.check(q)
            q_run = gw.queries.expand(q)  # record("name") -> that recording's selection
            predicate = compile_predicate(q_run) if q.strip() else (lambda _e: True)
        except (QueryError, KflError) as exc:
            err = exc.to_dict() if isinstance(exc, QueryError) else {"error": str(exc)}
            await ws.send_text(orjson.dumps({"type": "error", **err}).decode())
            await ws.close(code=4400, reason="invalid query")
            return
        try:
            await gw.live.ready()
        except Exception as exc:  # NATS away: say so rather than hang a stream that gets nothing
            error = {"type": "error", "error": f"live feed unavailable: {exc}"}
            await ws.send_text(orjson.dumps(error).decode())
            await ws.close(code=1011, reason="live feed unavailable")
            return
        sub = gw.live.subscribe(predicate, scope)  # no await since `ready`: the feed is still there
        await ws.send_text(orjson.dumps({"type": "hello", "query": q}).decode())

        async def drain_client() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_bytes()

        reader = asyncio.create_task(drain_client())
        try:
            while True:
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    getter.cancel()
                    return
                doc = getter.result()
                if doc is None:
                    await ws.close(code=4408, reason=(sub.closed_reason or "closed")[:120])
                    return
                await ws.send_text(orjson.dumps({"type": "entry", "entry": doc}).decode())
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            reader.cancel()
            gw.live.close(sub, "client gone")

    async def on_query_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, QueryError)
        return OrjsonResponse(exc.to_dict(), status_code=400)

    async def on_store_error(request: Request, exc: Exception) -> Response:
        return _error(503, f"store unavailable: {exc}")

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no route {request.url.path[:200]}")

    async def on_method(request: Request, exc: Exception) -> Response:
        return _error(405, "method not allowed")

    async def on_forbidden(request: Request, exc: Exception) -> Response:
        return _error(403, f"forbidden: {exc}")

    origins = [o.strip() for o in gw.gs.gateway_cors_origins.split(",") if o.strip()]
    host = gw.gs.gateway_http.rpartition(":")[0]
    # Outermost first: the browser guard, CORS (closed unless origins are named), then authentication.
    middleware = [Middleware(BrowserGuard, policy=browser_policy(host, gw.gs.auth_allowed_hosts, origins))]
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
            )
        )
    middleware.append(
        Middleware(
            AuthMiddleware,
            authenticator=gw.auth.for_people(gw.gs.gateway_http),
            public=UI_SHELL,
        )
    )
    return Starlette(
        routes=[
            *traces.routes(gw),
            *agents.routes(gw),
            *targets.routes(gw),
            *pcap.routes(gw),
            *tls.routes(gw),
            *recordings.routes(lambda: gw.recordings),
            *console.routes(gw),
            *mcp.routes(lambda _scope: console.tools_for(gw)),
            Route("/whoami", whoami),
            Route("/api/whoami", whoami),
            Route("/api/health", health),
            Route("/api/entries", entries),
            Route("/api/entries/{id}", entry),
            Route("/api/entries/{id}/pcap", entry_pcap),
            Route("/api/export.har", export_har),
            Route("/api/stats", stats),
            Route("/api/kfl/validate", kfl_validate, methods=["POST"]),
            Route("/api/kfl/variables", kfl_variables),
            Route("/api/protocols", protocols),
            Route("/api/openapi.json", openapi),
            WebSocketRoute("/api/stream", stream),
            Route("/", index),
            Mount("/ui", StaticFiles(directory=UI_DIR), name="ui"),
        ],
        middleware=middleware,
        exception_handlers={
            QueryError: on_query_error,
            StoreError: on_store_error,
            PermissionDenied: on_forbidden,
            404: on_not_found,
            405: on_method,
        },
    )

"""REST routes (Starlette). Handlers translate HTTP to the application layer and back; no logic here."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from wiretide.gateway.api.health import service_health
from wiretide.gateway.store import StoreError

if TYPE_CHECKING:
    from wiretide.gateway.service import GatewayService

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # a page larger than this is capped, not refused


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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
        }
        return JSONResponse(body)

    async def entries(request: Request) -> Response:
        raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
        if not raw.isdigit():
            return _error(400, f"limit must be a non-negative integer, got {raw!r}")
        limit = min(int(raw), MAX_LIMIT)
        if gw.store is None:
            return _error(503, "store not open yet")
        try:
            docs = await asyncio.to_thread(gw.store.latest, limit)
        except StoreError as exc:
            return _error(503, str(exc))
        return JSONResponse(
            {
                "entries": docs,
                "next": None,
                "completeness": {"returned": len(docs), "limit": limit, "capped": int(raw) > MAX_LIMIT},
            }
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no route {request.url.path}")

    return Starlette(
        routes=[Route("/api/health", health), Route("/api/entries", entries)],
        exception_handlers={404: not_found},
    )

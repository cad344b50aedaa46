"""Optional bearer-token auth on every route (WIRETIDE_GATEWAY_TOKEN). WebSockets and GET requests may
pass `?token=` instead, since browsers cannot set headers on them or on download links."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self.token)
        if scope["type"] == "websocket" or scope.get("method") == "GET":
            qs = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
            return any(hmac.compare_digest(t.encode(), self.token) for t in qs.get("token", []))
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "unauthorized"})
            return
        body = b'{"error":"unauthorized: send Authorization: Bearer <token>"}'
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})

"""The HTTP side (ASGI): authentication on every request, and the browser's guards.

Rule: a request reaches a route only as a Principal (kept in the ASGI scope, read with
`principal_of`); a browser request reaches it only if its Host is ours (no DNS rebinding) and, for
WebSocket handshakes and state-changing methods, its Origin is ours or allowed. Every HTTP answer
carries the security headers (CSP without inline script, no framing, no sniffing, no referrer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wiretide.common.auth.authenticator import Authenticator
from wiretide.common.auth.principal import PermissionDenied, Principal, Role, Unauthenticated

PRINCIPAL_KEY: Final = "wiretide.principal"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def principal_of(scope: Scope) -> Principal:
    """The principal the middleware put in this request's scope (PermissionDenied if none: a route
    mounted outside the middleware must not answer)."""
    found = scope.get(PRINCIPAL_KEY)
    if not isinstance(found, Principal):
        raise PermissionDenied("no principal on this request")
    return found


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def refuse(
    scope: Scope, send: Send, status: int, message: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer `status` with a JSON error — for a WebSocket, as the handshake's HTTP answer."""
    body = orjson.dumps({"error": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *extra,
    ]
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # servers without the extension turn a close before accept into 403
            await send({"type": "websocket.close", "code": 4000 + status, "reason": message[:120]})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    """Authenticates every HTTP and WebSocket request (except `public` paths, which carry no data)
    and requires `minimum` role. A `public` entry is an exact path, or a prefix when it ends in '/'
    ('/' itself is only the root). WebSockets and GETs may pass `?token=`: browsers cannot set
    headers on a WebSocket handshake or a download link."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        minimum: Role = Role.VIEWER,
        public: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.minimum = minimum
        self.public = tuple(public)

    def _credential(self, scope: Scope) -> str | None:
        header = _header(scope, b"authorization")
        if header is not None:
            return header
        if scope["type"] == "websocket" or scope.get("method") in ("GET", "HEAD"):
            qs = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            tokens = qs.get("token")
            if tokens:
                return f"Bearer {tokens[0]}"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path in self.public or any(
            path.startswith(p) for p in self.public if p.endswith("/") and p != "/"
        ):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(self._credential(scope))
            principal.require(self.minimum)
        except Unauthenticated as exc:
            await refuse(scope, send, 401, f"unauthorized: {exc}", [(b"www-authenticate", b"Bearer")])
            return
        except PermissionDenied as exc:
            await refuse(scope, send, 403, f"forbidden: {exc}")
            return
        scope[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def _netloc(scheme: str, host: str) -> str:
    """`host[:port]` lower-cased, with the scheme's default port written out."""
    parts = urlsplit(f"//{host}")
    try:
        port = parts.port
    except ValueError:
        return ""
    name = (parts.hostname or "").lower()
    if ":" in name:
        name = f"[{name}]"
    return f"{name}:{port or DEFAULT_PORTS.get(scheme, 80)}"


@dataclass(frozen=True, slots=True)
class BrowserPolicy:
    """`hosts`: the Host names this server answers to (None: any — only when the operator says so);
    `origins`: origins other than our own allowed to open WebSockets and send state-changing requests."""

    hosts: frozenset[str] | None
    origins: frozenset[str]

    def host_ok(self, host: str | None) -> bool:
        if self.hosts is None:
            return True
        if not host:
            return False
        name = urlsplit(f"//{host}").hostname or ""
        return name.lower() in self.hosts

    def origin_ok(self, origin: str | None, host: str | None, scheme: str) -> bool:
        if origin is None:
            return True  # not a browser (browsers send Origin on these requests)
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not host:
            return False  # "null", file:, extensions…
        own = "https" if scheme in ("https", "wss") else "http"
        return _netloc(parts.scheme, parts.netloc) == _netloc(own, host) and parts.scheme == own


def browser_policy(listen_host: str, extra_hosts: str, origins: Iterable[str]) -> BrowserPolicy:
    """Hosts: loopback names, the listen host when it is a name or address (not a wildcard), and
    `extra_hosts` (comma-separated; '*' accepts any Host)."""
    extra = {h.strip().lower() for h in extra_hosts.split(",") if h.strip()}
    allowed_origins = frozenset(o.strip() for o in origins if o.strip())
    if "*" in extra:
        return BrowserPolicy(None, allowed_origins)
    hosts = set(LOOPBACK_HOSTS) | extra
    listen = listen_host.strip("[]").lower()
    if listen not in ("", "0.0.0.0", "::"):
        hosts.add(listen)
    return BrowserPolicy(frozenset(hosts), allowed_origins)


class BrowserGuard:
    """Host check on every request, Origin check on WebSocket handshakes and unsafe methods, and the
    security headers on every HTTP answer."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not self.policy.host_ok(host):
            await refuse(scope, send, 421, f"this server does not answer to host {str(host)[:80]!r}")
            return
        unsafe = kind == "websocket" or str(scope.get("method", "GET")) not in SAFE_METHODS
        if unsafe and not self.policy.origin_ok(
            _header(scope, b"origin"), host, str(scope.get("scheme", "http"))
        ):
            await refuse(scope, send, 403, "cross-origin request refused (Origin is not this server's)")
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {bytes(k).lower() for k, _v in message.get("headers", [])}
                extra = [h for h in SECURITY_HEADERS if h[0] not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)

"""OIDC bearer tokens: JWTs signed by the issuer's keys, checked against its JWKS.

Rule: a token is accepted only if its signature verifies with a key the issuer publishes (found
through the issuer's discovery document), with an allowed algorithm (RS256/ES256 by default, never
`none` or a MAC), and `iss`, `aud`, `exp` (and `nbf` when present) hold. Keys are cached; an unknown
`kid` fetches the JWKS again (key rotation), at most once per `JWKS_MIN_REFRESH_S`, so a stream of
made-up `kid`s cannot turn the gateway into a load on the issuer.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import jwt
import orjson

from wiretide.common.auth.principal import Principal, Role, Unauthenticated
from wiretide.common.auth.scope import NO_NAMESPACES, NamespaceScope

ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA"}
)
JWKS_TTL_S: Final = 300.0  # keys are fetched again this often, so a withdrawn key stops working
JWKS_MIN_REFRESH_S: Final = 10.0  # the shortest time between two fetches an unknown kid may cause
LEEWAY_S: Final = 30  # clock skew tolerated on exp/nbf/iat
FETCH_TIMEOUT_S: Final = 5.0
MAX_DOCUMENT_BYTES: Final = 1024 * 1024  # a discovery document or JWKS larger than this is refused

Fetch = Callable[[str], Awaitable[bytes]]


async def fetch_url(url: str) -> bytes:
    """GET `url` (in a thread: urllib blocks)."""

    def get() -> bytes:
        request = urllib.request.Request(url, headers={"accept": "application/json"})
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as resp:
            data: bytes = resp.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        return data

    return await asyncio.to_thread(get)


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    audience: str
    role_claim: str = "wiretide_role"  # a string or a list; a dotted path reaches nested claims
    namespaces_claim: str = "wiretide_namespaces"  # a list or a comma/space-separated string
    algorithms: tuple[str, ...] = ("RS256", "ES256")

    def __post_init__(self) -> None:
        if not self.issuer.startswith(("https://", "http://")):
            raise ValueError(f"the OIDC issuer must be an http(s) URL, got {self.issuer[:80]!r}")
        if not self.audience:
            raise ValueError("an OIDC issuer needs an audience (WIRETIDE_AUTH_OIDC_AUDIENCE)")
        bad = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not self.algorithms:
            raise ValueError(f"OIDC algorithms must be among {sorted(ASYMMETRIC_ALGORITHMS)}, got {bad}")


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [p for p in value.replace(",", " ").split() if p]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def principal_from_claims(claims: dict[str, Any], config: OidcConfig) -> Principal:
    """The highest role named in the role claim; namespaces from their claim (none when absent)."""
    roles = []
    for name in _strings(_claim(claims, config.role_claim)):
        try:
            roles.append(Role.parse(name))
        except ValueError:
            continue  # other applications' roles share the claim
    role = max(roles, default=Role.NONE)
    names = _strings(_claim(claims, config.namespaces_claim))
    scope = NamespaceScope.of(names) if names else NO_NAMESPACES
    if role is Role.ADMIN:
        scope = NamespaceScope.of(None)
    subject = claims.get("preferred_username") or claims.get("email") or claims.get("sub")
    return Principal(str(subject), role, scope, "oidc")


class OidcVerifier:
    """Validates OIDC access/ID tokens of one issuer."""

    def __init__(
        self, config: OidcConfig, fetch: Fetch = fetch_url, clock: Callable[[], float] = time.monotonic
    ):
        self.config = config
        self._fetch = fetch
        self._clock = clock
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # JWKS fetches so far (tests and metrics read it)

    async def _discover(self) -> str:
        if self._jwks_uri is None:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = orjson.loads(await self._fetch(url))
            if not isinstance(doc, dict) or doc.get("issuer") != self.config.issuer:
                raise ValueError(f"{url} names another issuer: {str(doc.get('issuer'))[:80]!r}")
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise ValueError(f"{url} has no jwks_uri")
            self._jwks_uri = uri
        return self._jwks_uri

    async def _refresh(self) -> None:
        uri = await self._discover()
        doc = orjson.loads(await self._fetch(uri))
        keys: dict[str, jwt.PyJWK] = {}
        for i, raw in enumerate(doc.get("keys", []) if isinstance(doc, dict) else []):
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(raw)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type this library cannot use: skip it, keep the others
            keys[str(raw.get("kid", f"#{i}"))] = key
        self._keys = keys
        self._fetched_at = self._clock()
        self.fetches += 1

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        async with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at > JWKS_TTL_S
            missing = (kid not in self._keys) if kid is not None else not self._keys
            may_refetch = self._fetched_at is None or now - self._fetched_at >= JWKS_MIN_REFRESH_S
            if stale or (missing and may_refetch):
                try:
                    await self._refresh()
                except Exception as exc:  # the issuer away: keep the keys we have (if any)
                    if not self._keys:
                        raise Unauthenticated(f"cannot fetch the OIDC issuer's keys: {exc}") from None
            if kid is None:
                if len(self._keys) == 1:
                    return next(iter(self._keys.values()))
                raise Unauthenticated("token has no kid and the issuer publishes several keys")
            key = self._keys.get(kid)
            if key is None:
                raise Unauthenticated("token signed by a key the issuer does not publish")
            return key

    async def principal(self, token: str) -> Principal:
        """The principal of a valid token; Unauthenticated (with the reason) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("bearer token is neither a known token nor a JWT") from None
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise Unauthenticated(f"token algorithm {str(alg)[:20]!r} is not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        return principal_from_claims(claims, self.config)


def algorithms(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())

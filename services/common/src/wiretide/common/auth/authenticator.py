"""From an `Authorization` value to a Principal: static tokens, the service token, OIDC, or the local
anonymous default.

Rule: the anonymous principal exists only when no user credential of any kind is configured AND the
listener is loopback; configure any credential, or listen beyond loopback, and every request must
authenticate. A wrong credential is never "anonymous": it is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wiretide.common.auth.oidc import OidcConfig, OidcVerifier, algorithms
from wiretide.common.auth.principal import (
    SERVICE_SUBJECT,
    Principal,
    Unauthenticated,
    anonymous_principal,
    service_principal,
)
from wiretide.common.auth.tokens import StaticTokens, TokensFile, admin_token, digest, read_secret
from wiretide.common.tls import host_of, is_loopback

if TYPE_CHECKING:
    from wiretide.common.settings import CommonSettings

log = logging.getLogger(__name__)

BEARER: Final = "bearer "
HOW_TO: Final = "send Authorization: Bearer <token>"


def bearer_value(authorization: str | None) -> str | None:
    """The token of `Bearer <token>` (None when the header is absent or another scheme)."""
    if not authorization or authorization[: len(BEARER)].lower() != BEARER:
        return None
    return authorization[len(BEARER) :].strip() or None


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Every way this process accepts a caller. `user_credentials` counts the ways meant for people
    (the service token is not one); `anonymous` is decided per listener (`for_listener`). `tokens`
    are given once (admin and service tokens); `tokens_file` is the users' file, which it re-reads
    when it changes."""

    tokens: StaticTokens = field(default_factory=StaticTokens)
    oidc: OidcVerifier | None = None
    user_credentials: bool = False
    anonymous: bool = False
    service_token: str = ""  # what this process sends to its peers ("" when none is configured)
    tokens_file: TokensFile | None = None

    @property
    def configured(self) -> bool:
        return self.user_credentials or len(self.tokens) > 0 or self.tokens_file is not None

    def for_listener(self, address: str) -> Authenticator:
        """This authenticator as a listener at `address` uses it: anonymous only when nothing is
        configured and the address is loopback."""
        return replace(self, anonymous=not self.configured and is_loopback(host_of(address)))

    def for_people(self, address: str) -> Authenticator:
        """For a door meant for people (the gateway, the agents API): the service token alone does not
        close it, so the local default stays usable on loopback."""
        return replace(self, anonymous=not self.user_credentials and is_loopback(host_of(address)))

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_value(authorization)
        if token is None:
            if authorization:
                raise Unauthenticated(f"unsupported authorization scheme; {HOW_TO}")
            if self.anonymous:
                return anonymous_principal()
            raise Unauthenticated(f"authentication required: {HOW_TO}")
        return await self.token(token)

    async def token(self, token: str) -> Principal:
        found = self.tokens.lookup(token)
        if found is None and self.tokens_file is not None:
            found = self.tokens_file.current().lookup(token)
        if found is not None:
            return found
        if self.oidc is not None and token.count(".") == 2:
            return await self.oidc.principal(token)
        raise Unauthenticated("unknown or invalid bearer token")

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata that authenticates this process to its peers (empty without a service token)."""
        return (("authorization", f"Bearer {self.service_token}"),) if self.service_token else ()


def from_settings(settings: CommonSettings, admin_tokens: dict[str, str] | None = None) -> Authenticator:
    """The authenticator the settings describe; `admin_tokens` (token → subject) adds admin tokens a
    service takes from its own settings (WIRETIDE_GATEWAY_TOKEN). Raises ValueError naming the setting."""
    tokens = StaticTokens()
    user = False
    tokens_file = None
    if settings.auth_tokens_file:
        tokens_file = TokensFile(Path(settings.auth_tokens_file))
        user = True
    for token, subject in (admin_tokens or {}).items():
        if token:
            tokens = tokens.merged(admin_token(token, subject))
            user = True
    service_token = ""
    if settings.auth_service_token_file:
        service_token = read_secret(Path(settings.auth_service_token_file), "service token file")
        tokens = tokens.merged({digest(service_token): service_principal()})
    oidc = None
    if settings.auth_oidc_issuer:
        config = OidcConfig(
            issuer=settings.auth_oidc_issuer,
            audience=settings.auth_oidc_audience,
            role_claim=settings.auth_oidc_role_claim,
            namespaces_claim=settings.auth_oidc_namespaces_claim,
            algorithms=algorithms(settings.auth_oidc_algorithms),
        )
        oidc = OidcVerifier(config)
        user = True
    return Authenticator(tokens, oidc, user, False, service_token, tokens_file)


__all__ = ["SERVICE_SUBJECT", "Authenticator", "bearer_value", "from_settings"]

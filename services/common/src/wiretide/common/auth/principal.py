"""Who is asking: a `Principal` (subject, role, namespace scope) and the two ways a request is refused.

Rule: every answer is decided from a Principal, never from a raw token — authentication turns a token
into a Principal once (tokens.py, oidc.py, authenticator.py) and everything after reads only the
Principal. Roles are ordered: a role includes every role below it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wiretide.common.auth.scope import ALL_NAMESPACES, NamespaceScope


class Role(enum.IntEnum):
    """What a principal may do. Ordered: admin ⊃ editor ⊃ viewer; NONE is authenticated but nothing."""

    NONE = 0
    VIEWER = 1  # read entries, stats, traces, the map (within its namespaces)
    EDITOR = 2  # also change agents, recordings, saved queries (within its namespaces)
    ADMIN = 3  # everything, every namespace; capture's raw packets; other services' APIs

    @classmethod
    def parse(cls, text: str) -> Role:
        """'admin' | 'editor' | 'viewer' (any case); ValueError otherwise."""
        role = _BY_NAME.get(text.strip().lower())
        if role is None:
            raise ValueError(f"role must be admin, editor or viewer, got {text[:40]!r}")
        return role


ROLE_NAMES: dict[Role, str] = {r: r.name.lower() for r in Role}
_BY_NAME: dict[str, Role] = {"admin": Role.ADMIN, "editor": Role.EDITOR, "viewer": Role.VIEWER}


class Unauthenticated(Exception):
    """No credential, or one that is not valid: HTTP 401 / gRPC UNAUTHENTICATED."""


class PermissionDenied(Exception):
    """A valid credential whose role is too low: HTTP 403 / gRPC PERMISSION_DENIED."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller (or the local anonymous one, `authenticated=False`)."""

    subject: str
    role: Role
    scope: NamespaceScope
    method: str  # "token" | "oidc" | "service" | "anonymous"
    authenticated: bool = True

    def require(self, role: Role) -> None:
        """Raise PermissionDenied unless this principal holds `role` (or a higher one)."""
        if self.role < role:
            raise PermissionDenied(
                f"{self.subject} is {ROLE_NAMES[self.role]}; this needs {ROLE_NAMES[role]} or higher"
            )

    def to_dict(self) -> dict[str, object]:
        """The `/whoami` answer."""
        doc: dict[str, object] = {
            "subject": self.subject,
            "role": ROLE_NAMES[self.role],
            "namespaces": self.scope.to_list(),
            "method": self.method,
            "authenticated": self.authenticated,
        }
        if not self.authenticated:
            doc["warning"] = (
                "no authentication is configured: anyone who can reach this loopback address is admin. "
                "Set WIRETIDE_AUTH_TOKENS_FILE, WIRETIDE_AUTH_OIDC_ISSUER or WIRETIDE_GATEWAY_TOKEN "
                "(docs/security.md)."
            )
        return doc


SERVICE_SUBJECT = "wiretide-service"


def service_principal() -> Principal:
    """The identity Wiretide's own services present to each other (the service token)."""
    return Principal(SERVICE_SUBJECT, Role.ADMIN, ALL_NAMESPACES, "service")


def anonymous_principal() -> Principal:
    """The local default: nothing configured, a loopback listener — admin, and it says so."""
    return Principal("anonymous", Role.ADMIN, ALL_NAMESPACES, "anonymous", authenticated=False)

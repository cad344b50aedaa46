"""One authentication and authorization layer for every door: REST, WebSocket and gRPC.

Rule: a request becomes a `Principal` once (static tokens, the service token, OIDC, or the local
anonymous default), and every answer is decided from it: its role for what it may call, its
`NamespaceScope` for which entries it may see (docs/security.md).
"""

from wiretide.common.auth.authenticator import Authenticator, bearer_value, from_settings
from wiretide.common.auth.grpc import AuthInterceptor, current_principal
from wiretide.common.auth.http import (
    AuthMiddleware,
    BrowserGuard,
    BrowserPolicy,
    browser_policy,
    principal_of,
)
from wiretide.common.auth.oidc import OidcConfig, OidcVerifier
from wiretide.common.auth.policy import METHOD_ROLES, SCOPED_ANSWERS, USER_FACING
from wiretide.common.auth.principal import (
    PermissionDenied,
    Principal,
    Role,
    Unauthenticated,
    anonymous_principal,
    service_principal,
)
from wiretide.common.auth.scope import ALL_NAMESPACES, NO_NAMESPACES, NamespaceScope, check_restricted
from wiretide.common.auth.server import server_interceptors
from wiretide.common.auth.tokens import (
    StaticTokens,
    TokenFileError,
    TokensFile,
    load_tokens,
    parse_tokens,
)

__all__ = [
    "ALL_NAMESPACES",
    "METHOD_ROLES",
    "NO_NAMESPACES",
    "SCOPED_ANSWERS",
    "USER_FACING",
    "AuthInterceptor",
    "AuthMiddleware",
    "Authenticator",
    "BrowserGuard",
    "BrowserPolicy",
    "NamespaceScope",
    "OidcConfig",
    "OidcVerifier",
    "PermissionDenied",
    "Principal",
    "Role",
    "StaticTokens",
    "TokenFileError",
    "TokensFile",
    "Unauthenticated",
    "anonymous_principal",
    "bearer_value",
    "browser_policy",
    "check_restricted",
    "current_principal",
    "from_settings",
    "load_tokens",
    "parse_tokens",
    "principal_of",
    "server_interceptors",
    "service_principal",
]

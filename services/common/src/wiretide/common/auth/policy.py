"""Which role each gRPC method needs, for the services whose servers check their callers.

Rule: one table. A service listed here checks every call (methods it does not name need admin).
Only a method in `SCOPED_ANSWERS` narrows its answer to the caller's namespaces (in its handler);
every other method answers across every namespace, so a caller restricted to some namespaces is
refused it whatever its role. Wiretide's own services hold the service token, an admin identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from wiretide.common.auth.principal import Role

_GATEWAY: Final = "/wiretide.proto.v1.GatewayService/"
_RESOLVER: Final = "/wiretide.proto.v1.ResolverService/"
_AGENTS: Final = "/wiretide.proto.v1.AgentsService/"

METHOD_ROLES: Final[Mapping[str, Mapping[str, Role]]] = {
    "gateway": {
        f"{_GATEWAY}Query": Role.VIEWER,
        f"{_GATEWAY}Get": Role.VIEWER,
        f"{_GATEWAY}Stream": Role.VIEWER,
        f"{_GATEWAY}Stats": Role.VIEWER,
    },
    # Raw packets of every flow on the node (an empty-flow Snapshot is all of them): admin only.
    "capture": {},
    # Traces and the map across every namespace: the gateway asks (and scopes) on a user's behalf.
    "tracer": {},
    # Ingest is capture's packets (any caller could inject traffic): admin only — the service token.
    # GetStats (drop counters) too: the gateway polls it with the service token.
    "dissector": {},
    # Who is who (pod names, addresses, labels): readable by a viewer of every namespace.
    "resolver": {
        f"{_RESOLVER}Snapshot": Role.VIEWER,
        f"{_RESOLVER}Lookup": Role.VIEWER,
    },
    # The agents API: an editor changes agents, a viewer reads them; agents see every namespace, so
    # a namespace-scoped caller goes through the gateway's agents API, which scopes for it.
    "agents": {
        f"{_AGENTS}ListAgents": Role.VIEWER,
        f"{_AGENTS}GetAgent": Role.VIEWER,
        f"{_AGENTS}GetLogs": Role.VIEWER,
        f"{_AGENTS}QueryItems": Role.VIEWER,
        f"{_AGENTS}PutAgent": Role.EDITOR,
        f"{_AGENTS}DeleteAgent": Role.EDITOR,
        f"{_AGENTS}SetEnabled": Role.EDITOR,
    },
}

# Methods whose handlers narrow the answer to the caller's namespace scope (`current_principal()`).
SCOPED_ANSWERS: Final = frozenset(METHOD_ROLES["gateway"])

# Services whose answers are meant for people: without any user credential configured, a loopback
# listener lets the local user in as the anonymous admin (and /whoami says so).
USER_FACING: Final = frozenset({"gateway", "agents"})

"""The interceptors a service's gRPC server runs with (the hook `common.service.serve` calls).

Rule: no service serves a call unchecked: each checks the roles policy.METHOD_ROLES names for it,
and a service the table does not name answers admins only.
"""

from __future__ import annotations

import grpc

from wiretide.common.auth.authenticator import Authenticator
from wiretide.common.auth.grpc import AuthInterceptor
from wiretide.common.auth.policy import METHOD_ROLES, SCOPED_ANSWERS, USER_FACING


def server_interceptors(
    service: str, authenticator: Authenticator, listen: str
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors for `service`'s server listening at `listen`."""
    roles = METHOD_ROLES.get(service, {})
    door = authenticator.for_people(listen) if service in USER_FACING else authenticator.for_listener(listen)
    return [AuthInterceptor(door, roles, scoped=SCOPED_ANSWERS)]

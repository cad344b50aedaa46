"""The gRPC side: a server interceptor that authenticates every call and checks the role its method
needs (policy.py), and the principal a handler reads with `current_principal()`.

Rule: no servicer method runs without a Principal that holds the method's role, and a method that
answers across every namespace runs only for a principal that may see every namespace; health and
reflection stay open (probes and tooling carry no data). A missing or wrong credential is
UNAUTHENTICATED, a too-low role or a too-narrow scope PERMISSION_DENIED.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, Final

import grpc

from wiretide.common.auth.authenticator import Authenticator
from wiretide.common.auth.principal import PermissionDenied, Principal, Role, Unauthenticated

PUBLIC_PREFIXES: Final = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "wiretide_principal", default=None
)


def current_principal() -> Principal:
    """The caller of the gRPC method being served (PermissionDenied outside an authenticated call)."""
    found = _CURRENT.get()
    if found is None:
        raise PermissionDenied("no authenticated caller")
    return found


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Wraps each method handler: authenticate, check the role in `roles` (`default` for methods the
    table does not name) and, unless the method is in `scoped` (its handler narrows its answer to the
    caller's namespaces), that the caller may see every namespace; then run the handler with the
    principal set."""

    def __init__(
        self,
        authenticator: Authenticator,
        roles: Mapping[str, Role],
        default: Role = Role.ADMIN,
        scoped: Collection[str] = frozenset(),
    ) -> None:
        self.authenticator = authenticator
        self.roles = roles
        self.default = default
        self.scoped = frozenset(scoped)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        role = self.roles.get(method, self.default)
        return _wrap(handler, self._admit_for(role, every_namespace=method not in self.scoped))

    def _admit_for(
        self, role: Role, *, every_namespace: bool
    ) -> Callable[[grpc.aio.ServicerContext], Awaitable[Principal]]:
        async def admit(context: grpc.aio.ServicerContext) -> Principal:
            try:
                principal = await self.authenticator.authenticate(_authorization(context))
            except Unauthenticated as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
                raise
            try:
                principal.require(role)
                if every_namespace and not principal.scope.unrestricted:
                    raise PermissionDenied(
                        f"{principal.subject} may see some namespaces only; this answers across all of "
                        "them (ask the gateway, which scopes its answers)"
                    )
            except PermissionDenied as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                raise
            return principal

        return admit


def _wrap(
    handler: grpc.RpcMethodHandler, admit: Callable[[grpc.aio.ServicerContext], Awaitable[Principal]]
) -> grpc.RpcMethodHandler:
    def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = _CURRENT.set(await admit(context))
            try:
                return await behavior(request, context)
            finally:
                _CURRENT.reset(token)

        return call

    def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(behavior):  # a coroutine that writes with context.write
            return unary(behavior)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = _CURRENT.set(await admit(context))
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                _CURRENT.reset(token)

        return call

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), des, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), des, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), des, ser)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), des, ser)

"""`/api/targets`: what is captured, read by anyone signed in and changed live by an editor.

    GET /api/targets   {"spec": {pod_regex, namespaces, excluded_namespaces}, "revision": n,
                        "nodes": [{node, filter, note, pods: [{name, namespace, ip, node}], errors}]}
    PUT /api/targets   {"pod_regex": "checkout-.*", "namespaces": ["shop"], "excluded_namespaces": []}

The spec is stored in the JetStream KV bucket every capture node watches; each node rebuilds its
kernel filter from it and publishes what it applied, which GET reports per node. A scoped viewer sees
only the targeted pods of its namespaces.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from wiretide.common import targets
from wiretide.common.auth import Role, principal_of
from wiretide.common.bus import Bus
from wiretide.common.settings import CommonSettings
from wiretide.common.targets import TargetError, TargetSpec

MAX_BODY_BYTES = 64 * 1024


class _Gateway(Protocol):
    @property
    def bus(self) -> Bus | None: ...

    @property
    def settings(self) -> CommonSettings: ...


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def routes(gw: _Gateway) -> list[BaseRoute]:
    state: dict[str, Any] = {}

    async def bucket() -> Any:
        if "kv" not in state:
            bus = gw.bus
            if bus is None or not bus.connected:
                raise ConnectionError("NATS is not connected")
            state["kv"] = await targets.open_bucket(bus.js)
        return state["kv"]

    async def get_targets(request: Request) -> Response:
        principal = principal_of(request.scope)
        principal.require(Role.VIEWER)
        try:
            kv = await bucket()
            spec, revision = await targets.load(kv, TargetSpec.from_settings(gw.settings))
            nodes = await targets.nodes(kv)
        except ConnectionError as exc:
            return _json({"error": str(exc)}, 503)
        except TargetError as exc:
            return _json({"error": f"the stored spec does not decode: {exc}"}, 500)
        scope = principal.scope
        if not scope.unrestricted:
            allowed = set(scope.to_list() or ())
            for n in nodes:
                n["pods"] = [p for p in n.get("pods", []) if p.get("namespace") in allowed]
        return _json(
            {"spec": spec.to_json(), "revision": revision, "everything": spec.everything, "nodes": nodes}
        )

    async def put_targets(request: Request) -> Response:
        principal_of(request.scope).require(Role.EDITOR)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _json({"error": f"body larger than {MAX_BODY_BYTES // 1024} KiB"}, 400)
        try:
            spec = targets.decode(raw or b"{}")
        except TargetError as exc:
            return _json({"error": str(exc)}, 400)
        try:
            revision = await targets.store(await bucket(), spec)
        except ConnectionError as exc:
            return _json({"error": str(exc)}, 503)
        return _json({"spec": spec.to_json(), "revision": revision, "everything": spec.everything})

    async def endpoint(request: Request) -> Response:
        if request.method == "PUT":
            return await put_targets(request)
        return await get_targets(request)

    return [Route("/api/targets", endpoint, methods=["GET", "PUT"])]

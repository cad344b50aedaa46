"""`GET /api/tls`: the decryptability report of every capture node — per process, the TLS library it
uses, whether Wiretide reads its plaintext (eBPF hooks) and, when not, why not.

Processes are not namespaced objects here (a process is mapped to its container id, not yet to its
pod), so the report is for callers whose scope is the whole cluster; a scoped caller gets 403.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Protocol

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from wiretide.common.auth import Role, principal_of
from wiretide.common.rpc import channel
from wiretide.common.settings import CommonSettings
from wiretide.proto.v1 import capture_pb2, capture_pb2_grpc

CALL_TIMEOUT_S = 30.0


class _Auth(Protocol):
    def call_metadata(self) -> tuple[tuple[str, str], ...]: ...


class _Gateway(Protocol):
    @property
    def settings(self) -> CommonSettings: ...

    @property
    def auth(self) -> _Auth: ...

    async def capture_nodes(self) -> dict[str, str]: ...


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def node_json(r: capture_pb2.TlsReportResponse) -> dict[str, Any]:
    processes: list[dict[str, Any]] = [
        {
            "pid": p.pid,
            "comm": p.comm,
            "exe": p.exe,
            "container_id": p.container_id,
            "readable": any(lib.hooked for lib in p.libraries),
            "libraries": [
                {
                    "kind": lib.kind,
                    "path": lib.path,
                    "version": lib.version,
                    "hooked": lib.hooked,
                    "reason": lib.reason,
                }
                for lib in p.libraries
            ],
        }
        for p in r.processes
    ]
    reasons: Counter[str] = Counter()
    for p in processes:
        for lib in p["libraries"]:
            if not lib["hooked"]:
                reasons[lib["reason"]] += 1
    return {
        "node": r.node,
        "ebpf_running": r.ebpf_running,
        "ebpf_state": r.ebpf_state,
        "truncated": r.truncated,
        "summary": {
            "processes": len(processes),
            "readable": sum(1 for p in processes if p["readable"]),
            "not_readable_by_reason": dict(reasons.most_common()),
        },
        "processes": processes,
    }


def routes(gw: _Gateway) -> list[BaseRoute]:
    async def one(node: str, address: str) -> dict[str, Any]:
        async with channel(address, gw.settings.transport, peer="capture") as ch:
            try:
                r = await capture_pb2_grpc.CaptureServiceStub(ch).TlsReport(
                    capture_pb2.TlsReportRequest(), timeout=CALL_TIMEOUT_S, metadata=gw.auth.call_metadata()
                )
            except grpc.aio.AioRpcError as exc:
                return {"node": node, "error": f"{exc.code().name}: {exc.details()}"}
        return node_json(r)

    async def report(request: Request) -> Response:
        principal = principal_of(request.scope)
        principal.require(Role.VIEWER)
        if not principal.scope.unrestricted:
            return _json(
                {"error": "the TLS report covers every process of a node: it needs an unscoped caller"}, 403
            )
        nodes = await gw.capture_nodes() or {"": gw.settings.capture_grpc}
        answers = await asyncio.gather(*(one(n, a) for n, a in sorted(nodes.items())))
        return _json({"nodes": answers})

    return [Route("/api/tls", report)]

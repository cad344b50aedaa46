"""`GET /api/pcap?start_ns=…&end_ns=…[&bpf=…]`: a time window of packets from every capture node's
recorder, merged into one pcapng download (one section per node). Admin only: a window holds every
flow, whoever's namespace it belongs to (an entry's own flow is `/api/entries/{id}/pcap`)."""

from __future__ import annotations

import time
from typing import Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from wiretide.common.auth import Role, principal_of

MAX_WINDOW_NS = 3600 * 1_000_000_000  # the recorder keeps an hour by default; more is a mistake
MAX_BPF_CHARS = 4096


class _Gateway(Protocol):
    async def window_pcap(self, start_ns: int, end_ns: int, bpf: str) -> tuple[bytes, list[str]]: ...


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


def routes(gw: _Gateway) -> list[BaseRoute]:
    async def window(request: Request) -> Response:
        principal_of(request.scope).require(Role.ADMIN)
        params = request.query_params
        now = time.time_ns()
        try:
            end = int(params.get("end_ns") or now)
            start = int(params.get("start_ns") or end - 60 * 1_000_000_000)
        except ValueError:
            return _error(400, "start_ns and end_ns are integers (ns since the epoch)")
        if not 0 <= start < end or end - start > MAX_WINDOW_NS:
            return _error(400, "a window needs 0 <= start_ns < end_ns, at most one hour long")
        bpf = params.get("bpf", "")
        if len(bpf) > MAX_BPF_CHARS:
            return _error(400, f"bpf longer than {MAX_BPF_CHARS} characters")
        data, nodes = await gw.window_pcap(start, end, bpf)
        if not data:
            return _error(404, "no capture node recorded packets in that window")
        return Response(
            data,
            media_type="application/vnd.tcpdump.pcap",
            headers={
                "content-disposition": f'attachment; filename="wiretide-{start}-{end}.pcapng"',
                "x-wiretide-nodes": ",".join(nodes),
            },
        )

    return [Route("/api/pcap", window)]

"""Health of the whole deployment: every service's grpc.health.v1 answer plus NATS, in one document,
and how complete the picture is (packets captured but only counted, by protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from wiretide.common.rpc import check_health
from wiretide.common.settings import CommonSettings
from wiretide.common.types import GRPC_SERVICE, SERVICES

CHECK_TIMEOUT_S = 1.0


async def service_health(settings: CommonSettings, own: str, own_serving: bool) -> dict[str, dict[str, Any]]:
    async def one(name: str) -> tuple[str, dict[str, Any]]:
        address = settings.grpc_address(name)
        if name == own:
            return name, {"status": "SERVING" if own_serving else "NOT_SERVING", "address": address}
        status = await check_health(
            address, GRPC_SERVICE[name], timeout=CHECK_TIMEOUT_S, transport=settings.transport, peer=name
        )
        return name, {"status": status, "address": address}

    results = await asyncio.gather(*(one(n) for n in SERVICES))
    return dict(results)


def undissected(counts: Mapping[str, int]) -> dict[str, Any]:
    """Packets the dissectors counted but made no entry of: `{total, by_protocol}`, most first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"total": sum(counts.values()), "by_protocol": dict(ordered)}

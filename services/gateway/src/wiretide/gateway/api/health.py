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


def _addresses(settings: CommonSettings, name: str) -> list[str]:
    """Every instance of a service the gateway is told of (dissectors and tracer replicas are lists)."""
    if name == "dissector":
        return list(settings.dissector_endpoints)
    if name == "tracer":
        return list(settings.tracer_endpoints)
    return [settings.grpc_address(name)]


async def service_health(settings: CommonSettings, own: str, own_serving: bool) -> dict[str, dict[str, Any]]:
    """Each service's status; a service of several instances is SERVING only when every one is, and
    says which one is not (`instances`)."""

    async def check(name: str, address: str) -> str:
        return await check_health(
            address, GRPC_SERVICE[name], timeout=CHECK_TIMEOUT_S, transport=settings.transport, peer=name
        )

    async def one(name: str) -> tuple[str, dict[str, Any]]:
        addresses = _addresses(settings, name)
        if name == own:
            status = "SERVING" if own_serving else "NOT_SERVING"
            return name, {"status": status, "address": settings.grpc_address(name)}
        if len(addresses) == 1:
            return name, {"status": await check(name, addresses[0]), "address": addresses[0]}
        states = await asyncio.gather(*(check(name, a) for a in addresses))
        worst = next((s for s in states if s != "SERVING"), "SERVING")
        instances = [{"address": a, "status": s} for a, s in zip(addresses, states, strict=True)]
        return name, {"status": worst, "address": ",".join(addresses), "instances": instances}

    results = await asyncio.gather(*(one(n) for n in SERVICES))
    return dict(results)


def undissected(counts: Mapping[str, int]) -> dict[str, Any]:
    """Packets the dissectors counted but made no entry of: `{total, by_protocol}`, most first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"total": sum(counts.values()), "by_protocol": dict(ordered)}

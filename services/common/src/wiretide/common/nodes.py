"""Where each capture node answers: the per-node registry the gateway uses to reach the recorder that
holds a flow's packets (an entry names its node), and to cut a time window from every node.

Each capture node puts `{node, grpc, ts_ns}` into a JetStream KV bucket under its name and refreshes it
every `REFRESH_S`; the bucket forgets a key `TTL_S` after its last refresh, so a node that went away
drops out by itself. A Service in front of the DaemonSet (`capture:50051`) would pick any node, which
usually is not the one that recorded the flow.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

BUCKET: Final = "wiretide_capture_nodes"
REFRESH_S: Final = 20.0
TTL_S: Final = 90.0


def key(node: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in node) or "_"


async def open_bucket(js: Any) -> Any:
    from nats.js.api import StorageType

    from wiretide.common.bus.kv import open_kv

    return await open_kv(
        js, BUCKET, history=1, ttl=TTL_S, storage=StorageType.MEMORY, description="Wiretide capture nodes"
    )


async def advertise(kv: Any, node: str, grpc_address: str) -> None:
    await kv.put(key(node), orjson.dumps({"node": node, "grpc": grpc_address, "ts_ns": time.time_ns()}))


async def addresses(kv: Any) -> dict[str, str]:
    """node → gRPC address of every capture node heard from within the TTL."""
    from nats.js.errors import KeyNotFoundError, NoKeysError

    try:
        names = await kv.keys()
    except NoKeysError:
        return {}
    out: dict[str, str] = {}
    for name in names:
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            continue
        try:
            doc = orjson.loads(entry.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("node"), str) and isinstance(doc.get("grpc"), str):
            out[doc["node"]] = doc["grpc"]
    return out

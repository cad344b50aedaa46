"""The nouns everyone uses: the six services and their gRPC service names."""

from __future__ import annotations

from typing import Final, Literal

ServiceName = Literal["capture", "dissector", "resolver", "tracer", "agents", "gateway"]

# Start order for a local run: producers of identities and consumers first, the door last.
SERVICES: Final[tuple[ServiceName, ...]] = (
    "resolver",
    "dissector",
    "capture",
    "tracer",
    "agents",
    "gateway",
)

# Fully-qualified gRPC service each one serves (health is reported under this name too).
GRPC_SERVICE: Final[dict[str, str]] = {
    "capture": "wiretide.proto.v1.CaptureService",
    "dissector": "wiretide.proto.v1.DissectorService",
    "resolver": "wiretide.proto.v1.ResolverService",
    "tracer": "wiretide.proto.v1.TracerService",
    "agents": "wiretide.proto.v1.AgentsService",
    "gateway": "wiretide.proto.v1.GatewayService",
}

# Environment prefixes owned by each service (beyond WIRETIDE_<NAME>_).
EXTRA_PREFIXES: Final[dict[str, tuple[str, ...]]] = {
    "tracer": ("TRACES_",),
    "gateway": ("RECORDING_",),
}

"""Wiretide's shared plumbing and vocabulary.

Everything every service needs and nothing any one service does: settings, logging,
self-telemetry, metrics, lifecycle, the NATS bus, gRPC servers/channels, and the Entry.
"""

from wiretide.common.types import SERVICES, ServiceName

__all__ = ["SERVICES", "ServiceName"]

"""Prometheus metrics: one registry per process, served over HTTP on the service's metrics address."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, start_http_server

from wiretide.common.settings import parse_hostport

log = logging.getLogger(__name__)

# Metrics shared by every service (declared once here so that names do not drift).
BUS_INVALID = Counter(
    "wiretide_bus_invalid_messages_total",
    "NATS messages that could not be decoded or validated, skipped",
    ["subject"],
)
BUS_PUBLISHED = Counter("wiretide_bus_published_messages_total", "NATS messages published", ["subject"])
BUS_DROPPED = Counter(
    "wiretide_bus_dropped_total", "Items dropped before publishing, by reason", ["subject", "reason"]
)
UP = Gauge("wiretide_service_ready", "1 when the service reports SERVING", ["service"])


def serve_metrics(address: str, registry: CollectorRegistry = REGISTRY) -> tuple[str, int]:
    """Start the /metrics HTTP endpoint in a background thread; returns the bound address."""
    host, port = parse_hostport(address, "metrics address")
    server: Any
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound_host, bound_port = server.server_address[:2]
    log.info("metrics endpoint listening", extra={"address": f"{bound_host}:{bound_port}"})
    return str(bound_host), int(bound_port)

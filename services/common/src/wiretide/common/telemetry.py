"""Self-telemetry: Wiretide's own OpenTelemetry spans, configured by the standard OTEL_* variables.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (or
OTEL_TRACES_EXPORTER says otherwise). These are spans *about Wiretide*; the traces Wiretide
reconstructs from traffic go to their own endpoint (tracer settings) and never through here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace


def telemetry_enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_telemetry(service: str, node: str) -> trace.TracerProvider | None:
    """Install a global tracer provider exporting over OTLP, or do nothing when not configured."""
    if not telemetry_enabled():
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs = {"service.name": os.environ.get("OTEL_SERVICE_NAME", f"wiretide-{service}"), "host.name": node}
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)

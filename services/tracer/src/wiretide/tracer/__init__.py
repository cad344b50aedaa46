"""Wiretide tracer: distributed traces, service map and RED metrics from observed API calls."""

from wiretide.tracer import native as _native

_native.extend(__name__, __path__)  # compiled hot modules ahead of the sources, when their build is fresh

"""OTLP export of reconstructed traces: encoding (`otlp`), transports (`transport`), queue (`exporter`)."""

from wiretide.tracer import native as _native

_native.extend(__name__, __path__)  # the compiled encoder ahead of the sources, when its build is fresh

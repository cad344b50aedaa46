"""OTLP export of reconstructed traces: encoding (`otlp`), transports (`transport`), queue (`exporter`)."""

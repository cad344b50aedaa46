"""Wiretide tracer: distributed traces, service map and RED metrics from observed API calls."""

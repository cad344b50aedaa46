"""Test helpers shared across suites (network namespaces, real peers)."""

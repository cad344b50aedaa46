"""Wiretide resolver: who is who — Kubernetes and local identities for every address, over time."""

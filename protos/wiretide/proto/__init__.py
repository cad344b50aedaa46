"""Wiretide contracts."""

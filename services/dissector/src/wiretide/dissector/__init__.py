"""Wiretide dissector: flows into API calls (entries)."""

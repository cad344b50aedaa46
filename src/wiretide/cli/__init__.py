"""The `wiretide` command: the local supervisor and the user's tools (capture, analyze, query…)."""

"""Entry stores: SQLite (the embedded default). Every store has the same interface."""

from wiretide.gateway.store.sqlite import SqliteStore, StoreError

__all__ = ["SqliteStore", "StoreError"]

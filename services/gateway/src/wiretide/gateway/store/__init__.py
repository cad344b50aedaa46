"""Entry stores: SQLite (the embedded default) and MongoDB (clusters), one interface."""

from wiretide.gateway.store.base import BadCursor, Cursor, EntryStore, Page, StoreError
from wiretide.gateway.store.sqlite import SqliteStore

__all__ = ["BadCursor", "Cursor", "EntryStore", "Page", "SqliteStore", "StoreError"]

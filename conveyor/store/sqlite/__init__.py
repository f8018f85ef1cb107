"""The SQLite store: statements (named pieces), connections, and the Store built from them."""

from __future__ import annotations

from .connection import missing_database, sqlite_path
from .store import SQLiteStore

__all__ = ["SQLiteStore", "missing_database", "sqlite_path"]

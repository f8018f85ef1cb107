"""Stores: ``open_store(url)`` is the one place that looks at the URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import SCHEMA_VERSION, Capabilities, Store

__all__ = ["SCHEMA_VERSION", "Capabilities", "Store", "open_store"]


def open_store(url: str) -> Store:
    """Open a store for a URL; raises ConfigurationError with a one-line reason if it is malformed."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("database URL is empty; use sqlite:///path.db or postgresql://...")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        try:
            from .postgres import PostgresStore
        except ImportError as e:  # psycopg is an extra
            raise ConfigurationError(
                "PostgreSQL support needs psycopg: pip install 'conveyor[postgres]'"
            ) from e
        store: Store = PostgresStore(url)
        return store
    raise ConfigurationError(
        f"unsupported database URL {url!r}: expected sqlite:///path.db or postgresql://user@host/db"
    )

"""Stores: ``open_store(url)`` and ``store_missing(url)`` are the only places that look at the
URL scheme. Both backends offer the same behaviour behind the same methods; nothing outside
the store packages asks which one it has (a backend difference that callers must know about
would become a flag here, asked of the store, never a URL check)."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import SCHEMA_VERSION, Store
from .shared import check_schema_version

__all__ = [
    "SCHEMA_VERSION", "Store", "check_schema_version", "open_store", "store_missing",
]


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def store_missing(url: str) -> str | None:
    """Why opening ``url`` would create a new, empty database (a SQLite file that does not exist
    yet), or None. Looking at a store must not create one."""
    if _scheme(url) != "sqlite":
        return None  # a server's database is never created by opening it
    from .sqlite import missing_database, sqlite_path

    return missing_database(sqlite_path(url))


def open_store(url: str) -> Store:
    """Open a store for a URL; raises ConfigurationError with a one-line reason if it is malformed."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("database URL is empty; use sqlite:///path.db or postgresql://...")
    scheme = _scheme(url)
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

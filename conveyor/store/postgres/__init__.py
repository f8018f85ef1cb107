"""The PostgreSQL store: statements (named pieces), connections (pool, claim connection,
listener, leader sessions), inserts and COPY encoding, and the Store built from them."""

from __future__ import annotations

from .connections import postgres_conninfo
from .store import PostgresStore

__all__ = ["PostgresStore", "postgres_conninfo"]

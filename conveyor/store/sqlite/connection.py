"""SQLite connections: one per thread in WAL mode, writes in ``BEGIN IMMEDIATE`` retried while the
file is busy, and every ``sqlite3`` error translated into conveyor's own on one line."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from ...errors import (
    ConfigurationError,
    ConveyorError,
    DuplicateJob,
    SchemaError,
    StoreError,
    StoreUnavailable,
)
from ..shared import duplicate_message

T = TypeVar("T")
BUSY_DEADLINE = 120.0  # seconds a write keeps retrying a busy database before giving up
_UNIQUE_KEY_FAILED = "UNIQUE constraint failed: conveyor_jobs.unique_key"


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``."""
    rest = url[len("sqlite:") :]
    if not rest.startswith("///"):
        raise ConfigurationError(
            f"malformed SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
        )
    path = rest[3:].split("?", 1)[0]
    if not path:
        raise ConfigurationError(f"malformed SQLite URL {url!r}: no file path")
    return path


def missing_database(path: str) -> str | None:
    """Why opening ``path`` would create a new, empty database file, or None: the file does not
    exist, in a directory that does (where none could be created, opening it says why)."""
    if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return None
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return None
    return (f"SQLite database {os.path.abspath(path)} does not exist: check the database"
            " URL (CONVEYOR_DATABASE_URL or the app's), or create it with: conveyor migrate")


def _busy(error: sqlite3.Error) -> bool:
    text = str(error)
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def translate(error: sqlite3.Error, path: str) -> ConveyorError:
    """conveyor's error for a ``sqlite3`` one: the schema is missing (SchemaError), a unique key
    is held (DuplicateJob), another constraint or misuse (StoreError), the rest StoreUnavailable."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    if isinstance(error, sqlite3.OperationalError) and "no such table" in text:
        return SchemaError(f"{path} has no conveyor schema; run: conveyor migrate")
    if isinstance(error, sqlite3.IntegrityError) and text.startswith(_UNIQUE_KEY_FAILED):
        return DuplicateJob(duplicate_message(None, path))
    if isinstance(error, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return StoreError(f"SQLite database {path}: {text}")  # not an outage: never retried
    return StoreUnavailable(f"SQLite database {path}: {text}")


def retry(path: str, fn: Callable[[], T]) -> T:
    """``fn()``, retried with backoff while the database is busy; errors translated."""
    deadline = time.monotonic() + BUSY_DEADLINE
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.Error as e:
            if not _busy(e) or time.monotonic() > deadline:
                raise translate(e, path) from e
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.25)


def immediate(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return out


class Connections:
    """One connection per thread to one database file, all closed together."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._open: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        """A new connection in WAL mode. What waiting cannot mend (not a database, a corrupt
        file, no permission, no such directory) raises StoreError; the rest StoreUnavailable."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(
                f"cannot open SQLite database {self.path}: directory {directory} does not exist"
            )
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 30000")
            self._wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # a broken file says so now
        except sqlite3.Error as e:
            if conn is not None:
                with suppress(sqlite3.Error):
                    conn.close()
            raise self._open_error(e, directory) from e
        return conn

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        """Switch to WAL, waiting out a busy file (another process switching it at once)."""
        deadline = time.monotonic() + BUSY_DEADLINE
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if not _busy(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01 * (1 + random.random()))

    def _open_error(self, error: sqlite3.Error, directory: str) -> StoreError:
        name = getattr(error, "sqlite_errorname", "") or ""
        path = self.path
        if name.startswith("SQLITE_NOTADB"):
            return StoreError(
                f"{path} is not a SQLite database ({error}): point the database URL at a conveyor"
                " database, or at a file that does not exist yet"
            )
        if name.startswith("SQLITE_CORRUPT"):
            return StoreError(
                f"SQLite database {path} is corrupt ({error}): restore it from a backup, or move"
                " it aside and run: conveyor migrate"
            )
        if os.path.isdir(path):
            return StoreError(f"cannot open SQLite database {path}: it is a directory")
        denied = self._access_problem(directory)
        if denied or name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
            return StoreError(
                f"cannot write SQLite database {path}: {denied or error} (conveyor writes the file"
                " and creates its -wal and -shm files beside it)"
            )
        return StoreUnavailable(f"cannot open SQLite database {path}: {error}")

    def _access_problem(self, directory: str) -> str | None:
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"no permission to write in directory {directory}"
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK | os.W_OK):
            return f"no permission to read and write {self.path}"
        return None

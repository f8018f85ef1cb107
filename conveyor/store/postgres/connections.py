"""PostgreSQL connections: the pool, the claim loop's own connection, the LISTEN connection and
leader sessions; and the one place psycopg errors become conveyor's (StoreUnavailable,
SchemaError, DuplicateJob or StoreError, each on one line)."""

from __future__ import annotations

import re
import select
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import ConfigurationError, DuplicateJob, SchemaError, StoreError, StoreUnavailable
from ...urls import redact_url
from ..shared import duplicate_message
from . import statements as sql

Conn = psycopg.Connection[Any]

CONNECT_TIMEOUT = 5  # seconds libpq waits for a server to answer
GETCONN_TIMEOUT = 5.0  # seconds a call waits for a pooled connection before StoreUnavailable
POOL_MIN, POOL_MAX = 1, 10
IDLE_CHECK_AFTER = 2.0  # seconds unused after which a pooled connection is tested before use
UNIQUE_INDEX = "conveyor_jobs_unique"


def postgres_conninfo(url: str) -> str:
    """Validate a ``postgresql[+driver]://`` / ``postgres://`` URL and return a libpq conninfo."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower().split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"malformed PostgreSQL URL {redact_url(url)!r}: use postgresql://user@host:port/dbname"
        )
    # a password with '/', '@' or ':' unescaped splits the URL in the wrong places, and the
    # parser's complaint would then quote a piece of it: say only what to do
    secret = redact_url(url) != url
    escape = "a password holding '/', '@', ':' or '%' must be %-escaped (e.g. %2F for '/')"
    if rest.partition("?")[0].count("@") > 1:  # libpq would take what follows one for a host
        raise ConfigurationError(f"malformed PostgreSQL URL {redact_url(url)!r}: {escape}")
    try:
        params = conninfo_to_dict("postgresql://" + rest)
    except psycopg.ProgrammingError as e:
        reason = escape if secret else (reason_of(e) or "cannot parse it")
        raise ConfigurationError(f"malformed PostgreSQL URL {redact_url(url)!r}: {reason}") from e
    port = str(params.get("port", "5432"))
    if not all(part.strip().isdigit() for part in port.split(",")):
        what = f"the port is not a number; {escape}" if secret else f"port {port!r}"
        raise ConfigurationError(f"malformed PostgreSQL URL {redact_url(url)!r}: {what}")
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    # notice a server that vanished without closing the socket (listener, leader lock)
    for option, value in (("keepalives_idle", 30), ("keepalives_interval", 10),
                          ("keepalives_count", 3)):
        params.setdefault(option, value)
    params.setdefault("application_name", "conveyor")
    # timestamps then arrive already in UTC, as conveyor hands them out: no conversion per value
    params["options"] = f"{params.get('options', '')} -c TimeZone=UTC".strip()
    return make_conninfo("", **params)


def reason_of(error: BaseException) -> str:
    """The useful part of a libpq error, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    text = re.sub(r"^connection (failed|is bad):\s*", "", text)
    text = re.sub(r"^connection to server (at|on) .*? failed:\s*", "", text)
    return re.sub(r"^FATAL:\s*", "", text)


def close_quietly(conn: Conn | None) -> None:
    if conn is not None:
        with suppress(Exception):
            conn.close()


def _held_key(error: pg_errors.UniqueViolation) -> str | None:
    found = re.search(r"\(unique_key\)=\((.*)\) already exists", error.diag.message_detail or "")
    return found.group(1) if found else None


class Connections:
    """Every connection one store opens, and the translation of what goes wrong with them."""

    def __init__(self, url: str) -> None:
        self.conninfo = postgres_conninfo(url)
        info = conninfo_to_dict(self.conninfo)
        self.where = (
            f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )
        self._pool: ConnectionPool[Conn] | None = None
        self._lock = threading.Lock()
        self._listener: Conn | None = None
        self._listen_lock = threading.Lock()
        self._leaders: dict[tuple[str, str], tuple[Conn, bool]] = {}
        self._leader_lock = threading.Lock()
        self._last_used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self.claimer = Dedicated(self)
        self.beater = Dedicated(self)

    # --- errors ---------------------------------------------------------------------------------
    def unavailable(self, error: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"PostgreSQL at {self.where} is unavailable: {reason_of(error)}")

    def _diagnose(self) -> StoreUnavailable:
        """Why no pooled connection came: ask libpq directly for the exact reason."""
        try:
            psycopg.connect(self.conninfo).close()
        except psycopg.Error as e:
            return self.unavailable(e)
        return StoreUnavailable(
            f"PostgreSQL at {self.where}: no free connection within {GETCONN_TIMEOUT:g} s"
            f" (pool max_size={POOL_MAX})"
        )

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Translate psycopg errors into conveyor's at the store boundary."""
        try:
            yield
        except pg_errors.UndefinedTable as e:
            raise SchemaError(
                f"PostgreSQL database {self.where} has no conveyor schema; run: conveyor migrate"
            ) from e
        except pg_errors.UniqueViolation as e:
            if e.diag.constraint_name != UNIQUE_INDEX:
                raise StoreError(f"PostgreSQL at {self.where}: {reason_of(e)}") from e
            key = _held_key(e)
            raise DuplicateJob(duplicate_message(key, self.where), unique_key=key) from e
        except PoolTimeout as e:
            raise self._diagnose() from e
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise self.unavailable(e) from e
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL at {self.where}: {reason_of(e)}") from e

    # --- the pool -------------------------------------------------------------------------------
    def _get_pool(self) -> ConnectionPool[Conn]:
        with self._lock:
            if self._pool is None:
                # connect once directly, so a wrong URL fails at once with libpq's own reason
                psycopg.connect(self.conninfo).close()
                pool: ConnectionPool[Conn] = ConnectionPool(
                    self.conninfo, min_size=POOL_MIN, max_size=POOL_MAX, open=False,
                    timeout=GETCONN_TIMEOUT, kwargs={"autocommit": True},
                    check=self._check_if_idle, reset=self._mark_used, name="conveyor",
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def _mark_used(self, conn: Conn) -> None:
        self._last_used[conn] = time.monotonic()

    def _check_if_idle(self, conn: Conn) -> None:
        """Test a pooled connection (one round trip) before use when it may be dead, so it is
        replaced rather than failing a call: when it has been idle a while, or when its socket
        is readable although no query is in flight (the server said goodbye or closed it).
        A healthy connection in steady use costs a zero-timeout select(), not a round trip."""
        idle = time.monotonic() - self._last_used.get(conn, 0.0) > IDLE_CHECK_AFTER
        if idle or select.select([conn.fileno()], [], [], 0)[0]:
            ConnectionPool.check_connection(conn)

    @contextmanager
    def connect(self) -> Iterator[Conn]:
        """A pooled autocommit connection: each statement commits unless inside ``tx``."""
        with self.errors(), self._get_pool().connection() as conn:
            yield conn

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        with self.connect() as conn, conn.transaction():
            yield conn

    # --- connections of their own: the claim loop's and the heartbeat's ------------------------
    def hot(self) -> AbstractContextManager[Conn]:
        """The claim loop's connection: a pool checkout and return costs about as much Python
        as the claim itself."""
        return self.claimer.use()

    def beat(self) -> AbstractContextManager[Conn]:
        """The heartbeat's connection: after an outage the pool reconnects with a backoff that
        grows with the outage, and a heartbeat waiting behind it would make a live worker look
        dead to the leader; this one reconnects on its next use."""
        return self.beater.use()

    # --- leader sessions ------------------------------------------------------------------------
    def leader_acquire(self, name: str, holder: str) -> bool:
        """Leadership is a session advisory lock on a connection kept for (name, holder)."""
        key = (name, holder)
        with self._leader_lock, self.errors():
            conn, holding = self._leaders.pop(key, (None, False))
            if conn is not None:
                try:
                    holding = self._leader_try(conn, name, holding)
                except psycopg.OperationalError:  # the session died, and its lock with it
                    close_quietly(conn)
                    conn = None
            if conn is None:
                conn = psycopg.connect(self.conninfo, autocommit=True)
                try:
                    holding = self._leader_try(conn, name, False)
                except BaseException:
                    close_quietly(conn)
                    raise
            self._leaders[key] = (conn, holding)
            return holding

    @staticmethod
    def _leader_try(conn: Conn, name: str, holding: bool) -> bool:
        if holding:  # still connected means still locked; don't stack a second lock
            conn.execute(sql.STILL_THERE)
            return True
        row = conn.execute(sql.LEADER_TRY, (sql.advisory_key(f"conveyor:leader:{name}"),)).fetchone()
        return bool(row and row[0])

    def leader_release(self, name: str, holder: str) -> None:
        with self._leader_lock:
            conn, holding = self._leaders.pop((name, holder), (None, False))
        if conn is not None:
            if holding:
                with suppress(psycopg.Error):
                    conn.execute(sql.LEADER_UNLOCK, (sql.advisory_key(f"conveyor:leader:{name}"),))
            close_quietly(conn)  # ending the session would free the lock anyway

    # --- the listener ---------------------------------------------------------------------------
    def wait_for_notify(self, timeout: float) -> None:
        """Block on LISTEN up to ``timeout``. Never raises: if the listening connection broke,
        drop it, sleep out the timeout, and reconnect on the next call."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._listen_lock:
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = psycopg.connect(self.conninfo, autocommit=True)
                    self._listener.execute(sql.LISTEN)
                for _ in self._listener.notifies(timeout=max(timeout, 0.0), stop_after=1):
                    pass
                for _ in self._listener.notifies(timeout=0):  # one wake-up per burst
                    pass
                return
            except psycopg.Error:
                close_quietly(self._listener)
                self._listener = None
        time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        with self._listen_lock:
            listener, self._listener = self._listener, None
        close_quietly(listener)
        self.claimer.close()
        self.beater.close()
        with self._leader_lock:
            leaders, self._leaders = list(self._leaders.values()), {}
        for conn, _ in leaders:
            close_quietly(conn)


class Dedicated:
    """A connection of one duty's own, not the pool's. Checked like a pooled one when idle,
    replaced after an error, reconnected on its next use; a second thread wanting it at the
    same moment gets a pooled connection instead."""

    def __init__(self, owner: Connections) -> None:
        self._owner = owner
        self._conn: Conn | None = None
        self._lock = threading.Lock()

    @contextmanager
    def use(self) -> Iterator[Conn]:
        if not self._lock.acquire(blocking=False):
            with self._owner.connect() as conn:
                yield conn
            return
        try:
            with self._owner.errors():
                conn = self._fresh()
                try:
                    yield conn
                except psycopg.Error:
                    self._conn = None
                    close_quietly(conn)
                    raise
                finally:
                    self._owner._last_used[conn] = time.monotonic()
        finally:
            self._lock.release()

    def _fresh(self) -> Conn:
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                self._owner._check_if_idle(conn)
            except psycopg.Error:
                close_quietly(conn)
                conn = None
        if conn is None or conn.closed:
            conn = self._conn = psycopg.connect(self._owner.conninfo, autocommit=True)
        return conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        close_quietly(conn)

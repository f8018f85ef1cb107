"""The embedded store: one SQLite file in WAL mode, shared by many processes on one host.

Every write runs in ``BEGIN IMMEDIATE`` so writers queue on SQLite's lock instead of failing on
upgrade; a busy database is retried with backoff and never surfaces as "database is locked".
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..errors import ConfigurationError, SchemaError, StoreError, StoreUnavailable
from ..models import (
    POISON_AFTER,
    AttemptOutcome,
    AttemptRecord,
    Held,
    HeldJob,
    JobFilter,
    JobOutcome,
    JobRecord,
    JobState,
    LogRecord,
    NewJob,
    ProcessRecord,
    QueueStats,
)
from . import _common as c
from .base import SCHEMA_VERSION, Capabilities, HealthFacts

T = TypeVar("T")
BUSY_DEADLINE = 120.0  # seconds a write keeps retrying a busy database before giving up
SHUTDOWN_REASON = "worker shut down before the job finished; attempt not counted"

# --- conveyor doctor's aggregates (health_facts) ----------------------------------------------
HEALTH_STUCK = (
    f"SELECT {c.JOB_COLUMNS} FROM conveyor_jobs WHERE state = 'running' AND ("
    " (timeout IS NOT NULL AND started_at + timeout + ? < ?)"
    " OR NOT EXISTS (SELECT 1 FROM conveyor_processes p"
    "   WHERE p.id = conveyor_jobs.worker_id AND p.heartbeat_at >= ?))"
    " ORDER BY started_at, id LIMIT ?"
)
HEALTH_OVERDUE = (
    "SELECT COUNT(*), MIN(run_at) FROM conveyor_jobs"
    " WHERE state IN ('scheduled', 'failed') AND run_at < ?"
)
# the condition of the finished index, word for word (migration 0002), so queries can use it
FINISHED_SQL = "(state = 'succeeded' OR state = 'dead' OR state = 'cancelled')"
HEALTH_DEAD = (  # error is "Class: message" or "Class"
    "SELECT name, CASE WHEN instr(COALESCE(error, ''), ':') > 0"
    " THEN substr(error, 1, instr(error, ':') - 1) ELSE COALESCE(error, '') END, COUNT(*)"
    f" FROM conveyor_jobs WHERE state = 'dead' AND {c.QUIET_SQL} AND finished_at >= ?"
    " GROUP BY 1, 2"
)
HEALTH_UNKNOWN = (
    "SELECT name, COUNT(*) FROM conveyor_jobs"
    " WHERE (error = 'UnknownJob' OR error LIKE 'UnknownJob:%')"
    " AND (state IN ('scheduled', 'ready', 'failed') OR (state = 'dead' AND finished_at >= ?))"
    " GROUP BY name"
)


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


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


def _claim_sql(pick: str) -> str:
    return (
        "UPDATE conveyor_jobs SET state = 'running', attempt = attempt + 1, worker_id = ?,"
        " lease = ?, started_at = ?, heartbeat_at = ?, finished_at = NULL, progress = NULL,"
        " progress_message = NULL"
        f" WHERE id IN (SELECT id FROM conveyor_jobs WHERE {pick} AND queue = ?"
        "   ORDER BY priority DESC, id LIMIT ?)"
        " AND NOT EXISTS (SELECT 1 FROM conveyor_queues WHERE name = ? AND paused = 1)"
        f" RETURNING {c.JOB_COLUMNS}"
    )


CLAIM = _claim_sql(c.PICK_READY)
CLAIM_SUSPECT = _claim_sql(c.PICK_SUSPECT)
FINISH = (
    "UPDATE conveyor_jobs SET state = ?, result = ?, error = ?, lease = NULL,"
    " heartbeat_at = NULL, lost_count = 0, finished_at = ?, run_at = COALESCE(?, run_at)"
    " WHERE id = ? AND lease = ? AND state = 'running'"
)
ATTEMPTS = c.attempts_query("?")
RECORD_ATTEMPT = (
    f"INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _immediate(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return out


def _claim(
    conn: sqlite3.Connection, worker_id: str, queue: str, limit: int, at: float,
    statement: str = CLAIM,
) -> list[JobRecord]:
    lease = c.new_lease()
    rows = conn.execute(statement, (worker_id, lease, at, at, queue, limit, queue)).fetchall()
    jobs = [c.job_from_row(r, _dt) for r in rows]
    jobs.sort(key=lambda j: (-j.priority, j.id))
    return jobs


def _finish(conn: sqlite3.Connection, outcomes: Sequence[JobOutcome], at: float) -> list[bool]:
    accepted = []
    for o in outcomes:
        finished = _ts(o.finished_at) or at
        cur = conn.execute(FINISH, (
            str(o.state), o.result, o.error_summary,
            finished if o.state.finished else None, _ts(o.retry_at), o.job_id, o.lease,
        ))
        ok = cur.rowcount == 1
        if ok and o.state is not JobState.SUCCEEDED:  # a success is the job row itself
            conn.execute(RECORD_ATTEMPT, (
                o.job_id, o.attempt, o.worker_id, o.started_at.timestamp(), finished,
                str(o.outcome), o.error_class, o.error_message, o.traceback,
            ))
        accepted.append(ok)
    return accepted


class SQLiteStore:
    capabilities = Capabilities(transactional_enqueue=True)

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # --- connections and transactions ---------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
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
            self._retry(conn.cursor().execute, "PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # a broken file says so now
        except (sqlite3.Error, StoreError) as e:
            if conn is not None:
                with suppress(sqlite3.Error):
                    conn.close()
            cause = e if isinstance(e, sqlite3.Error) else e.__cause__
            if not isinstance(cause, sqlite3.Error):
                raise
            raise self._open_error(cause, directory) from e
        return conn

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

    def close(self) -> None:
        with self._lock:
            conns, self._connections = self._connections, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def _retry(self, fn: Callable[..., T], *args: Any) -> T:
        deadline = time.monotonic() + BUSY_DEADLINE
        delay = 0.005
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as e:
                text = str(e)
                if "no such table" in text:
                    raise SchemaError(
                        f"{self.path} has no conveyor schema; run: conveyor migrate"
                    ) from e
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise StoreUnavailable(f"SQLite database {self.path}: {text}") from e
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)
            except sqlite3.IntegrityError as e:  # a constraint, not an outage: never retry it
                raise StoreError(f"SQLite database {self.path}: {e}") from e
            except sqlite3.DatabaseError as e:
                raise StoreUnavailable(f"SQLite database {self.path}: {e}") from e

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one immediate transaction, retried as a whole while the file is busy."""
        conn = self._conn()
        return self._retry(lambda: _immediate(conn, fn))

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        conn = self._conn()
        return self._retry(lambda: conn.execute(sql, params).fetchall())

    @staticmethod
    def _now(now: datetime | None) -> float:
        return time.time() if now is None else now.timestamp()

    # --- schema -------------------------------------------------------------------------
    def schema_version(self) -> int | None:
        rows = self._read(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='conveyor_schema'"
        )
        if not rows:
            return None
        got = self._read("SELECT MAX(version) FROM conveyor_schema")
        return got[0][0] if got and got[0][0] is not None else None

    def migrate(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS conveyor_schema "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            current = conn.execute("SELECT MAX(version) FROM conveyor_schema").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} has schema version {current}, newer than this conveyor "
                    f"understands ({SCHEMA_VERSION}); upgrade conveyor"
                )
            for version, sql in c.migrations("sqlite"):
                if version > current:
                    for statement in sql.split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO conveyor_schema (version, applied_at) VALUES (?, ?)",
                        (version, time.time()),
                    )
                    current = version
            return int(current)

        return self._write(run)

    # --- jobs ---------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], *, connection: Any = None, now: datetime | None = None
    ) -> list[int]:
        at = self._now(now)
        rows = [
            (
                j.name, j.queue, j.priority,
                "ready" if j.run_at is None or j.run_at.timestamp() <= at else "scheduled",
                j.args, j.kwargs, j.max_attempts, j.timeout,
                at if j.run_at is None else j.run_at.timestamp(), at, j.unique_key,
                j.concurrency_key,
            )
            for j in jobs
        ]
        sql = (
            "INSERT INTO conveyor_jobs (name, queue, priority, state, args, kwargs, max_attempts,"
            " timeout, run_at, created_at, unique_key, concurrency_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

        def run(conn: sqlite3.Connection) -> list[int]:
            if not rows:
                return []
            conn.executemany(sql, rows)
            # the write lock is held, so AUTOINCREMENT ids of this statement are consecutive
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            return list(range(last - len(rows) + 1, last + 1))

        if connection is not None:
            if not isinstance(connection, sqlite3.Connection):
                raise ConfigurationError(
                    "enqueue(connection=...) on a SQLite store needs a sqlite3.Connection"
                )
            if connection.in_transaction or connection.isolation_level is not None:
                return run(connection)  # the caller's transaction (sqlite3 opens one implicitly)
            return _immediate(connection, run)  # an autocommit connection: our own transaction
        return self._write(run)

    def job_get(self, job_id: int) -> JobRecord | None:
        rows = self._read(f"SELECT {c.JOB_COLUMNS} FROM conveyor_jobs WHERE id = ?", (job_id,))
        return c.job_from_row(rows[0], _dt) if rows else None

    def job_list(self, filter: JobFilter) -> list[JobRecord]:
        where: list[str] = []
        params: list[Any] = []
        if filter.states:
            where.append(f"state IN ({','.join('?' * len(filter.states))})")
            params += [str(s) for s in filter.states]
            if c.quiet(filter.states):
                where.append(c.QUIET_SQL)
        for column, value in (
            ("queue", filter.queue), ("name", filter.name), ("worker_id", filter.worker_id)
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if filter.ids:
            where.append(f"id IN ({','.join('?' * len(filter.ids))})")
            params += list(filter.ids)
        if filter.before_id is not None:
            where.append("id < ?")
            params.append(filter.before_id)
        sql = f"SELECT {c.JOB_COLUMNS} FROM conveyor_jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(filter.limit)
        return [c.job_from_row(r, _dt) for r in self._read(sql, params)]

    def job_claim(
        self, worker_id: str, queue: str, limit: int, *, suspects: bool = False,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        at = self._now(now)
        pick = c.PICK_SUSPECT if suspects else c.PICK_READY
        # a lock-free look first: idle workers polling an empty queue never take the write lock
        if not self._read(
            f"SELECT 1 FROM conveyor_jobs WHERE {pick} AND queue = ? LIMIT 1", (queue,)
        ):
            return []
        statement = CLAIM_SUSPECT if suspects else CLAIM
        return self._write(lambda conn: _claim(conn, worker_id, queue, limit, at, statement))

    def job_finish_many(
        self, outcomes: Sequence[JobOutcome], *, now: datetime | None = None
    ) -> list[bool]:
        at = self._now(now)
        return self._write(lambda conn: _finish(conn, outcomes, at))

    def job_finish_and_claim(
        self, outcomes: Sequence[JobOutcome], worker_id: str, queue: str, limit: int,
        *, now: datetime | None = None,
    ) -> tuple[list[bool], list[JobRecord]]:
        at = self._now(now)
        return self._write(lambda conn: (
            _finish(conn, outcomes, at), _claim(conn, worker_id, queue, limit, at)
        ))

    def job_release(
        self, leases: Sequence[tuple[int, str]], *, reason: str | None = None,
        started: bool = True, now: datetime | None = None,
    ) -> int:
        at = self._now(now)
        message = reason or SHUTDOWN_REASON

        def run(conn: sqlite3.Connection) -> int:
            released = 0
            for job_id, lease in leases:
                row = conn.execute(
                    "UPDATE conveyor_jobs SET attempt = attempt - 1, lease = NULL,"
                    " heartbeat_at = NULL, run_at = ?,"
                    " state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END,"
                    " finished_at = CASE WHEN cancel_requested THEN ? END"
                    " WHERE id = ? AND lease = ? AND state = 'running'"
                    " RETURNING attempt + 1, worker_id, started_at",
                    (at, at, job_id, lease),
                ).fetchone()
                if row:
                    released += 1
                if row and started:
                    conn.execute(
                        f"INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, 'shutdown', NULL, ?, NULL)",
                        (job_id, row[0], row[1], row[2], at, message),
                    )
            return released

        return self._write(run)

    def job_progress(
        self, job_id: int, lease: str, percent: float | None, message: str | None,
        *, now: datetime | None = None,
    ) -> bool:
        at = self._now(now)
        params: tuple[Any, ...]
        if percent is None:
            sql, params = (
                "UPDATE conveyor_jobs SET heartbeat_at = ? WHERE id = ? AND lease = ?",
                (at, job_id, lease),
            )
        else:
            sql, params = (
                "UPDATE conveyor_jobs SET heartbeat_at = ?, progress = ?, progress_message = ?"
                " WHERE id = ? AND lease = ?",
                (at, percent, message, job_id, lease),
            )
        return self._write(lambda conn: conn.execute(sql, params).rowcount == 1)

    def job_log(self, job_id: int, attempt: int, message: str, *, now: datetime | None = None) -> None:
        at = self._now(now)
        self._write(lambda conn: conn.execute(
            "INSERT INTO conveyor_logs (job_id, attempt, at, message) VALUES (?, ?, ?, ?)",
            (job_id, attempt, at, message),
        ))

    def job_logs(self, job_id: int) -> list[LogRecord]:
        rows = self._read(
            "SELECT job_id, attempt, at, message FROM conveyor_logs WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [LogRecord(r[0], r[1], _dt(r[2]), r[3]) for r in rows]  # type: ignore[arg-type]

    def job_attempts(self, job_id: int) -> list[AttemptRecord]:
        rows = self._read(ATTEMPTS, (job_id, job_id, job_id))
        return [AttemptRecord(**c.attempt_fields(r, _dt)) for r in rows]

    def job_cancel(self, job_id: int, *, now: datetime | None = None) -> JobState | None:
        at = self._now(now)

        def run(conn: sqlite3.Connection) -> JobState | None:
            conn.execute(
                "UPDATE conveyor_jobs SET state = 'cancelled', finished_at = ?"
                f" WHERE id = ? AND state IN {c.WAITING}",
                (at, job_id),
            )
            conn.execute(
                "UPDATE conveyor_jobs SET cancel_requested = 1,"
                " cancel_requested_at = COALESCE(cancel_requested_at, ?)"
                " WHERE id = ? AND state = 'running'",
                (at, job_id),
            )
            row = conn.execute("SELECT state FROM conveyor_jobs WHERE id = ?", (job_id,)).fetchone()
            return JobState(row[0]) if row else None

        return self._write(run)

    def job_retry(self, job_ids: Sequence[int], *, now: datetime | None = None) -> int:
        at = self._now(now)
        marks = ",".join("?" * len(job_ids))
        sql = (
            "UPDATE conveyor_jobs SET state = 'ready', run_at = ?, finished_at = NULL,"
            " max_attempts = MAX(max_attempts, attempt + 1), cancel_requested = 0,"
            " cancel_requested_at = NULL, lost_count = 0"
            f" WHERE id IN ({marks}) AND state IN ('dead', 'cancelled', 'failed')"
        )
        if not job_ids:
            return 0
        return self._write(lambda conn: conn.execute(sql, (at, *job_ids)).rowcount)

    def job_discard(self, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        marks = ",".join("?" * len(job_ids))

        def run(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM conveyor_jobs WHERE id IN ({marks}) AND state != 'running'",
                tuple(job_ids),
            )]
            self._delete_jobs(conn, ids)
            return len(ids)

        return self._write(run)

    @staticmethod
    def _delete_jobs(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for table, column in (
                ("conveyor_attempts", "job_id"), ("conveyor_logs", "job_id"),
                ("conveyor_job_dependencies", "job_id"), ("conveyor_jobs", "id"),
            ):
                conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)

    def job_ids_by_state(self, state: JobState, *, queue: str | None = None) -> list[int]:
        sql = "SELECT id FROM conveyor_jobs WHERE state = ?"
        params: list[Any] = [str(state)]
        if c.quiet([state]):
            sql += f" AND {c.QUIET_SQL}"
        if queue is not None:
            sql += " AND queue = ?"
            params.append(queue)
        return [r[0] for r in self._read(sql + " ORDER BY id", params)]

    # --- time-driven duties -----------------------------------------------------------
    def jobs_promote(
        self, *, now: datetime | None = None, include_retries: bool = False, limit: int = 10_000
    ) -> int:
        at = self._now(now)
        sql = (
            "UPDATE conveyor_jobs SET state = 'ready', run_at = MIN(run_at, ?) WHERE id IN"
            " (SELECT id FROM conveyor_jobs WHERE state IN ('scheduled', 'failed') AND"
            " (run_at <= ? OR (? AND state = 'failed')) ORDER BY run_at LIMIT ?)"
        )
        return self._write(lambda conn: conn.execute(sql, (at, at, include_retries, limit)).rowcount)

    def jobs_prune(self, *, succeeded_before: datetime, dead_before: datetime) -> int:
        def run(conn: sqlite3.Connection) -> int:
            succeeded, dead = succeeded_before.timestamp(), dead_before.timestamp()
            ids = [r[0] for r in conn.execute(  # through the finished index: old rows only
                f"SELECT id FROM conveyor_jobs WHERE {FINISHED_SQL} AND finished_at < ?"
                " AND ((state = 'succeeded' AND finished_at < ?)"
                " OR (state IN ('dead', 'cancelled') AND finished_at < ?)) LIMIT 5000",
                (max(succeeded, dead), succeeded, dead),
            )]
            self._delete_jobs(conn, ids)
            return len(ids)

        total = 0
        while (n := self._write(run)) > 0:
            total += n
        return total

    def jobs_overdue(
        self, worker_ids: Sequence[str], *, grace: float, cancel_grace: float,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        if not worker_ids:
            return []
        at = self._now(now)
        marks = ",".join("?" * len(worker_ids))
        rows = self._read(
            f"SELECT {c.JOB_COLUMNS} FROM conveyor_jobs WHERE state = 'running'"
            f" AND worker_id IN ({marks}) AND ((timeout IS NOT NULL AND started_at + timeout + ? < ?)"
            " OR (cancel_requested = 1 AND cancel_requested_at + ? < ?)) ORDER BY id",
            (*worker_ids, grace, at, cancel_grace, at),
        )
        return [c.job_from_row(r, _dt) for r in rows]

    def jobs_rescue(
        self, process_ids: Sequence[str], reason: str, *,
        held: Mapping[int, Held] | None = None, now: datetime | None = None,
    ) -> list[int]:
        if not process_ids:
            return []
        at = self._now(now)
        marks = ",".join("?" * len(process_ids))

        def run(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT id, attempt, worker_id, started_at FROM conveyor_jobs"
                f" WHERE state = 'running' AND worker_id IN ({marks})",
                tuple(process_ids),
            ).fetchall()
            for job_id, attempt, worker, started in rows:
                stage = Held.RUNNING if held is None else Held(held.get(job_id, Held.WAITING))
                message = c.lost_reason(stage, reason)
                conn.execute(
                    "UPDATE conveyor_jobs SET attempt = attempt - 1, lease = NULL,"
                    " heartbeat_at = NULL, run_at = ?, lost_count = lost_count + ?,"
                    " error = CASE WHEN ? THEN ? ELSE error END,"
                    " state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END,"
                    " finished_at = CASE WHEN cancel_requested THEN ? END WHERE id = ?",
                    (at, int(stage is Held.RUNNING), stage is not Held.WAITING,
                     f"WorkerLost: {message}", at, job_id),
                )
                if stage is not Held.WAITING:
                    conn.execute(
                        f"INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, 'WorkerLost', ?, NULL)",
                        (job_id, attempt, worker, started, at, str(AttemptOutcome.WORKER_LOST),
                         message),
                    )
            return [r[0] for r in rows]

        return self._write(run)

    def job_lost(
        self, job_id: int, lease: str, reason: str, *, poison_after: int = POISON_AFTER,
        now: datetime | None = None,
    ) -> JobState | None:
        at = self._now(now)

        def run(conn: sqlite3.Connection) -> JobState | None:
            row = conn.execute(
                "SELECT attempt, worker_id, started_at, lost_count FROM conveyor_jobs"
                " WHERE id = ? AND lease = ? AND state = 'running'", (job_id, lease),
            ).fetchone()
            if row is None:
                return None
            attempt, worker, started, lost = row
            dead = lost + 1 >= poison_after
            message = c.poisoned_reason(poison_after, reason) if dead else reason
            state = JobState.DEAD if dead else JobState.READY
            conn.execute(
                "UPDATE conveyor_jobs SET state = ?, attempt = attempt - ?, lease = NULL,"
                " heartbeat_at = NULL, lost_count = lost_count + 1, error = ?, run_at = ?,"
                " finished_at = ? WHERE id = ?",
                (str(state), int(not dead), f"WorkerLost: {message}", at, at if dead else None,
                 job_id),
            )
            conn.execute(
                f"INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, 'WorkerLost', ?, NULL)",
                (job_id, attempt, worker, started, at, str(AttemptOutcome.WORKER_LOST), message),
            )
            return state

        return self._write(run)

    # --- queues -------------------------------------------------------------------------
    def _set_paused(self, name: str, paused: bool) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT INTO conveyor_queues (name, paused, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET paused = excluded.paused,"
            " updated_at = excluded.updated_at",
            (name, int(paused), time.time()),
        ))

    def queue_pause(self, name: str) -> None:
        self._set_paused(name, True)

    def queue_resume(self, name: str) -> None:
        self._set_paused(name, False)

    def queue_stats(self) -> list[QueueStats]:
        counts: dict[str, dict[JobState, int]] = {}
        for queue, state, n in self._read(c.QUEUE_COUNTS):
            counts.setdefault(queue, {})[JobState(state)] = n
        oldest = dict(self._read(
            "SELECT queue, MIN(run_at) FROM conveyor_jobs WHERE state = 'ready' GROUP BY queue"
        ))
        paused = dict(self._read("SELECT name, paused FROM conveyor_queues"))
        names = sorted(set(counts) | set(paused))
        return [
            QueueStats(q, bool(paused.get(q)), counts.get(q, {}), _dt(oldest.get(q)))
            for q in names
        ]

    # --- processes ----------------------------------------------------------------------
    def process_register(self, process: ProcessRecord) -> None:
        p = process
        self._write(lambda conn: conn.execute(
            f"INSERT OR REPLACE INTO conveyor_processes ({c.PROCESS_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (p.id, p.kind, p.host, p.pid, p.started_at.timestamp(), p.heartbeat_at.timestamp(),
             p.supervisor_id, json.dumps(list(p.queues)), p.concurrency,
             json.dumps(list(p.job_names))),
        ))

    def process_heartbeat(self, process_id: str, *, now: datetime | None = None) -> list[HeldJob]:
        at = self._now(now)

        def run(conn: sqlite3.Connection) -> list[HeldJob]:
            conn.execute(
                "UPDATE conveyor_processes SET heartbeat_at = ? WHERE id = ?", (at, process_id)
            )
            return [
                HeldJob(r[0], r[1], bool(r[2]))
                for r in conn.execute(
                    "SELECT id, lease, cancel_requested FROM conveyor_jobs"
                    " WHERE state = 'running' AND worker_id = ? ORDER BY id", (process_id,),
                )
            ]

        return self._write(run)

    def process_deregister(self, process_id: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM conveyor_processes WHERE id = ?", (process_id,)
        ))

    def process_list(self) -> list[ProcessRecord]:
        rows = self._read(
            f"SELECT {c.PROCESS_COLUMNS} FROM conveyor_processes ORDER BY started_at, id"
        )
        return [c.process_from_row(r, _dt) for r in rows]

    def processes_stale(self, older_than_seconds: float, *, now: datetime | None = None) -> list[str]:
        cutoff = self._now(now) - older_than_seconds
        rows = self._read(
            "SELECT id FROM conveyor_processes WHERE heartbeat_at < ?"
            " UNION SELECT DISTINCT worker_id FROM conveyor_jobs WHERE state = 'running'"
            " AND heartbeat_at < ? AND worker_id NOT IN (SELECT id FROM conveyor_processes)"
            " ORDER BY 1",
            (cutoff, cutoff),
        )
        return [r[0] for r in rows]

    # --- leadership and wake-ups ---------------------------------------------------------
    def leader_acquire(self, name: str, holder: str, ttl: float) -> bool:
        at = time.time()
        return self._write(lambda conn: conn.execute(
            "INSERT INTO conveyor_leaders (name, holder, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
            " expires_at = excluded.expires_at"
            " WHERE conveyor_leaders.holder = excluded.holder OR conveyor_leaders.expires_at < ?",
            (name, holder, at + ttl, at),
        ).rowcount == 1)

    def leader_release(self, name: str, holder: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM conveyor_leaders WHERE name = ? AND holder = ?", (name, holder)
        ))

    def wait_for_jobs(self, timeout: float) -> None:
        """Poll SQLite's data_version (changes when another connection commits): a few
        microseconds a check, so an idle worker notices a new job within milliseconds."""
        conn = self._conn()
        deadline = time.monotonic() + timeout
        start = conn.execute("PRAGMA data_version").fetchone()[0]
        while time.monotonic() < deadline:
            time.sleep(0.002)
            if conn.execute("PRAGMA data_version").fetchone()[0] != start:
                return

    # --- health ----------------------------------------------------------------------------
    def health_facts(
        self, *, stale_after: float, timeout_grace: float = 0.0, overdue_after: float = 60.0,
        recent: float = 3600.0, limit: int = 50, now: datetime | None = None,
    ) -> HealthFacts:
        clock = time.time()  # embedded: the database's clock is this host's
        at = clock if now is None else now.timestamp()
        stuck = self._read(HEALTH_STUCK, (timeout_grace, at, at - stale_after, limit))
        overdue, oldest = self._read(HEALTH_OVERDUE, (at - overdue_after,))[0]
        dead = self._read(HEALTH_DEAD, (at - recent,))
        return HealthFacts(
            now=datetime.fromtimestamp(at, UTC), store_clock=datetime.fromtimestamp(clock, UTC),
            waiting_by_name=dict(self._read(c.HEALTH_WAITING)),
            running_by_worker=dict(self._read(c.HEALTH_RUNNING)),
            stuck=tuple(c.job_from_row(r, _dt) for r in stuck),
            overdue=overdue, oldest_overdue_at=_dt(oldest),
            dead_recent={(name, cls): n for name, cls, n in dead},
            unknown_recent=dict(self._read(HEALTH_UNKNOWN, (at - recent,))),
        )

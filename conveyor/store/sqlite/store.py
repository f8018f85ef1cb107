"""The embedded store: one SQLite file in WAL mode, shared by many processes on one host.

Every write runs in ``BEGIN IMMEDIATE`` so writers queue on SQLite's lock instead of failing on
upgrade; a busy database is retried with backoff and never surfaces as "database is locked".
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ...errors import ConfigurationError
from ...models import (
    POISON_AFTER,
    RATE_RECENT,
    AttemptRecord,
    Held,
    HeldJob,
    Inserted,
    JobFilter,
    JobOutcome,
    JobRecord,
    JobState,
    LimitUsage,
    LogRecord,
    NewJob,
    ProcessRecord,
    QueueStats,
    RateBacklog,
)
from .. import shared
from ..base import HealthFacts
from . import statements as sql
from .attempts import claim as _claim
from .attempts import dt as _dt
from .attempts import finish as _finish
from .connection import Connections, immediate, retry, sqlite_path, translate
from .cron import SQLiteCron
from .flow import LOCKS_PRUNE, USAGE, settle, settle_blocked
from .history import ChangeWatch, SQLiteHistory
from .inserts import insert_rows, insert_unless_held, insert_without_keys
from .rates import BACKLOG

T = TypeVar("T")


def _then(result: T, _: object) -> T:
    return result


def _in_list(values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"IN ({sql.marks(len(values))})", list(values)


class SQLiteStore(SQLiteCron, SQLiteHistory):
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._connections = Connections(self.path)
        self._changes = ChangeWatch(self.path)

    # --- connections and transactions -----------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def close(self) -> None:
        self._connections.close()
        self._changes.close()

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one immediate transaction, retried as a whole while the file is busy."""
        conn = self._conn()
        return retry(self.path, lambda: immediate(conn, fn))

    def _settled(self, fn: Callable[[sqlite3.Connection], T], at: float) -> T:
        """``fn``, then blocked jobs admitted to the slots it may have freed, in one transaction."""
        return self._write(lambda conn: _then(fn(conn), settle_blocked(conn, at)))

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._conn()
        return retry(self.path, lambda: conn.execute(statement, params).fetchall())

    def _in_callers(self, connection: Any, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` inside the caller's transaction (sqlite3 opens one implicitly before a write),
        or in one of our own on an autocommit connection. Not retried: the transaction is theirs."""
        if not isinstance(connection, sqlite3.Connection):
            raise ConfigurationError(
                "enqueue(connection=...) on a SQLite store needs a sqlite3.Connection"
            )
        try:
            if connection.in_transaction or connection.isolation_level is not None:
                return fn(connection)
            return immediate(connection, fn)
        except sqlite3.Error as e:
            raise translate(e, self.path) from e

    @staticmethod
    def _now(now: datetime | None) -> float:
        return time.time() if now is None else now.timestamp()

    # --- schema ---------------------------------------------------------------------------------
    def schema_version(self) -> int | None:
        if not self._read(sql.HAS_SCHEMA):
            return None
        got = self._read(sql.SCHEMA_VERSION)
        return got[0][0] if got and got[0][0] is not None else None

    def migrate(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(sql.CREATE_SCHEMA_TABLE)
            current = conn.execute(sql.SCHEMA_VERSION).fetchone()[0] or 0
            shared.check_schema_version(self.path, current)
            for version, script in shared.migrations("sqlite"):
                if version > current:
                    for statement in script.split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(sql.RECORD_VERSION, (version, time.time()))
                    current = version
            return int(current)

        return self._write(run)

    # --- jobs -----------------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], *, connection: Any = None, now: datetime | None = None
    ) -> list[Inserted]:
        at = self._now(now)
        rows = insert_rows(jobs, at)
        keyed = any(j.unique_key is not None for j in jobs)
        limited = [j.concurrency_key for j in jobs if j.concurrency_key is not None]

        def run(conn: sqlite3.Connection) -> list[Inserted]:
            inserted = (
                insert_unless_held(conn, rows, jobs, at) if keyed
                else insert_without_keys(conn, rows)
            )
            if keyed:
                shared.refuse_held(jobs, inserted, self.path)
            if limited:
                settle(conn, limited, at)
            return inserted

        if connection is not None:
            return self._in_callers(connection, run)
        return self._write(run)

    def job_get(self, job_id: int) -> JobRecord | None:
        rows = self._read(sql.GET, (job_id,))
        return shared.job_from_row(rows[0], _dt) if rows else None

    def job_list(self, filter: JobFilter) -> list[JobRecord]:
        statement, params = shared.job_list_query(filter, "?", _in_list)
        return [shared.job_from_row(r, _dt) for r in self._read(statement, params)]

    def job_claim(
        self, worker_id: str, queue: str, limit: int, *, suspects: bool = False,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        at = self._now(now)
        if not self._read(sql.ANY_SUSPECT if suspects else sql.ANY_READY, (queue,)):
            return []
        statement = sql.CLAIM_SUSPECT if suspects else sql.CLAIM
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
        message = reason or shared.SHUTDOWN_REASON

        def run(conn: sqlite3.Connection) -> int:
            released = 0
            for job_id, lease in leases:
                row = conn.execute(sql.RELEASE, (at, at, job_id, lease)).fetchone()
                if row:
                    released += 1
                if row and started:
                    conn.execute(sql.RECORD_SHUTDOWN, (job_id, row[0], row[1], row[2], at, message))
            return released

        return self._settled(run, at)

    def job_progress(
        self, job_id: int, lease: str, percent: float | None, message: str | None,
        *, now: datetime | None = None,
    ) -> bool:
        at = self._now(now)
        statement, params = (
            (sql.HEARTBEAT_JOB, (at, job_id, lease)) if percent is None
            else (sql.PROGRESS, (at, percent, message, job_id, lease))
        )
        return self._write(lambda conn: conn.execute(statement, params).rowcount == 1)

    def job_log(self, job_id: int, attempt: int, message: str, *, now: datetime | None = None) -> None:
        at = self._now(now)
        self._write(lambda conn: conn.execute(sql.LOG, (job_id, attempt, at, message)))

    def job_logs(self, job_id: int) -> list[LogRecord]:
        rows = self._read(sql.LOGS, (job_id,))
        return [LogRecord(r[0], r[1], _dt(r[2]), r[3]) for r in rows]  # type: ignore[arg-type]

    def job_attempts(self, job_id: int) -> list[AttemptRecord]:
        rows = self._read(sql.ATTEMPTS, (job_id, job_id, job_id))
        return [AttemptRecord(**shared.attempt_fields(r, _dt)) for r in rows]

    def job_cancel(self, job_id: int, *, now: datetime | None = None) -> JobState | None:
        at = self._now(now)

        def run(conn: sqlite3.Connection) -> JobState | None:
            conn.execute(sql.CANCEL_WAITING, (at, job_id))
            conn.execute(sql.CANCEL_RUNNING, (at, job_id))
            row = conn.execute(sql.STATE_OF, (job_id,)).fetchone()
            return JobState(row[0]) if row else None

        return self._settled(run, at)

    def job_retry(self, job_ids: Sequence[int], *, now: datetime | None = None) -> int:
        if not job_ids:
            return 0
        at, statement = self._now(now), sql.retry(len(job_ids))
        return self._settled(lambda conn: conn.execute(statement, (at, *job_ids)).rowcount, at)

    def job_discard(self, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0

        def run(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute(sql.not_running(len(job_ids)), tuple(job_ids))]
            self._delete_jobs(conn, ids)
            return len(ids)

        return self._settled(run, time.time())

    @staticmethod
    def _delete_jobs(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for table, column in sql.JOB_TABLES:
                conn.execute(sql.delete_where_in(table, column, len(chunk)), chunk)

    def job_ids_by_state(self, state: JobState, *, queue: str | None = None) -> list[int]:
        params: list[Any] = [str(state)] + ([] if queue is None else [queue])
        return [r[0] for r in self._read(sql.ids_by_state(state, queue is not None), params)]

    def limit_usage(self) -> list[LimitUsage]:
        return shared.limit_usage(self._read(USAGE))

    def rate_backlog(self, *, now: datetime | None = None) -> list[RateBacklog]:
        rows = self._read(BACKLOG, (self._now(now) - RATE_RECENT,))
        return [RateBacklog(k, int(c), float(p), int(n), int(r)) for k, c, p, n, r in rows]

    # --- time-driven duties ---------------------------------------------------------------------
    def jobs_promote(
        self, *, now: datetime | None = None, include_retries: bool = False, limit: int = 10_000
    ) -> int:
        at = self._now(now)
        params = (at, at, include_retries, limit)
        return self._settled(lambda conn: conn.execute(sql.PROMOTE, params).rowcount, at)

    def jobs_prune(self, *, succeeded_before: datetime, dead_before: datetime) -> int:
        succeeded, dead = succeeded_before.timestamp(), dead_before.timestamp()
        params = (max(succeeded, dead), succeeded, dead)

        def run(conn: sqlite3.Connection) -> int:
            conn.execute(LOCKS_PRUNE, (time.time(),))
            ids = [r[0] for r in conn.execute(sql.PRUNABLE, params)]
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
        rows = self._read(sql.overdue(len(worker_ids)), (*worker_ids, grace, at, cancel_grace, at))
        return [shared.job_from_row(r, _dt) for r in rows]

    def jobs_rescue(
        self, process_ids: Sequence[str], reason: str, *,
        held: Mapping[int, Held] | None = None, now: datetime | None = None,
    ) -> list[int]:
        if not process_ids:
            return []
        at = self._now(now)

        def run(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(sql.running_of(len(process_ids)), tuple(process_ids)).fetchall()
            for job_id, attempt, worker, started in rows:
                stage = Held.RUNNING if held is None else Held(held.get(job_id, Held.WAITING))
                message = shared.lost_reason(stage, reason)
                conn.execute(sql.RESCUE, (
                    at, int(stage is Held.RUNNING), stage is not Held.WAITING,
                    f"WorkerLost: {message}", at, job_id,
                ))
                if stage is not Held.WAITING:
                    conn.execute(sql.RECORD_LOST, (job_id, attempt, worker, started, at, message))
            return [r[0] for r in rows]

        return self._settled(run, at)

    def job_lost(
        self, job_id: int, lease: str, reason: str, *, poison_after: int = POISON_AFTER,
        now: datetime | None = None,
    ) -> JobState | None:
        at = self._now(now)

        def run(conn: sqlite3.Connection) -> JobState | None:
            row = conn.execute(sql.LOST_HOLDER, (job_id, lease)).fetchone()
            if row is None:
                return None
            attempt, worker, started, lost = row
            dead = lost + 1 >= poison_after
            message = shared.poisoned_reason(poison_after, reason) if dead else reason
            state = JobState.DEAD if dead else JobState.READY
            conn.execute(sql.LOST, (
                str(state), int(not dead), f"WorkerLost: {message}", at, at if dead else None,
                job_id,
            ))
            conn.execute(sql.RECORD_LOST, (job_id, attempt, worker, started, at, message))
            return state

        return self._settled(run, at)

    # --- queues ---------------------------------------------------------------------------------
    def _set_paused(self, name: str, paused: bool) -> None:
        params = (name, int(paused), time.time())
        self._write(lambda conn: conn.execute(sql.SET_PAUSED, params))

    def queue_pause(self, name: str) -> None:
        self._set_paused(name, True)

    def queue_resume(self, name: str) -> None:
        self._set_paused(name, False)

    def queue_stats(self) -> list[QueueStats]:
        return shared.queue_stats(
            self._read(shared.QUEUE_COUNTS), dict(self._read(shared.QUEUE_OLDEST)),
            dict(self._read(shared.QUEUE_PAUSED)), _dt,
        )

    # --- processes ------------------------------------------------------------------------------
    def process_register(self, process: ProcessRecord) -> None:
        p = process
        params = (p.id, p.kind, p.host, p.pid, p.started_at.timestamp(), p.heartbeat_at.timestamp(),
                  p.supervisor_id, json.dumps(list(p.queues)), p.concurrency,
                  json.dumps(list(p.job_names)))
        self._write(lambda conn: conn.execute(sql.REGISTER, params))

    def process_heartbeat(self, process_id: str, *, now: datetime | None = None) -> list[HeldJob]:
        at = self._now(now)

        def run(conn: sqlite3.Connection) -> list[HeldJob]:
            conn.execute(sql.HEARTBEAT, (at, process_id))
            return [HeldJob(r[0], r[1], bool(r[2])) for r in conn.execute(sql.HELD_BY, (process_id,))]

        return self._write(run)

    def process_deregister(self, process_id: str) -> None:
        self._write(lambda conn: conn.execute(sql.DEREGISTER, (process_id,)))

    def process_list(self) -> list[ProcessRecord]:
        return [shared.process_from_row(r, _dt) for r in self._read(sql.PROCESSES)]

    def processes_stale(self, older_than_seconds: float, *, now: datetime | None = None) -> list[str]:
        cutoff = self._now(now) - older_than_seconds
        return [r[0] for r in self._read(sql.STALE, (cutoff, cutoff))]

    # --- leadership and wake-ups ----------------------------------------------------------------
    def leader_acquire(self, name: str, holder: str, ttl: float) -> bool:
        at = time.time()
        params = (name, holder, at + ttl, at)
        return self._write(lambda conn: conn.execute(sql.LEADER_ACQUIRE, params).rowcount == 1)

    def leader_release(self, name: str, holder: str) -> None:
        self._write(lambda conn: conn.execute(sql.LEADER_RELEASE, (name, holder)))

    def wait_for_jobs(self, timeout: float) -> None:
        """Poll SQLite's data_version (changes when another connection commits): a few
        microseconds a check, so an idle worker notices a new job within milliseconds."""
        conn = self._conn()
        deadline = time.monotonic() + timeout

        def version() -> int:
            return int(conn.execute(sql.DATA_VERSION).fetchone()[0])

        start = retry(self.path, version)
        while time.monotonic() < deadline:
            time.sleep(0.002)
            if retry(self.path, version) != start:
                return

    # --- health ---------------------------------------------------------------------------------
    def health_facts(
        self, *, stale_after: float, timeout_grace: float = 0.0, overdue_after: float = 60.0,
        recent: float = 3600.0, limit: int = 50, now: datetime | None = None,
    ) -> HealthFacts:
        clock = time.time()  # embedded: the database's clock is this host's
        at = clock if now is None else now.timestamp()
        stuck = self._read(sql.HEALTH_STUCK, (timeout_grace, at, at - stale_after, limit))
        overdue, oldest = self._read(sql.HEALTH_OVERDUE, (at - overdue_after,))[0]
        dead = self._read(sql.HEALTH_DEAD, (at - recent,))
        return HealthFacts(
            now=datetime.fromtimestamp(at, UTC), store_clock=datetime.fromtimestamp(clock, UTC),
            waiting_by_name=dict(self._read(shared.HEALTH_WAITING)),
            running_by_worker=dict(self._read(shared.HEALTH_RUNNING)),
            stuck=tuple(shared.job_from_row(r, _dt) for r in stuck),
            overdue=overdue, oldest_overdue_at=_dt(oldest),
            dead_recent={(name, cls): n for name, cls, n in dead},
            unknown_recent=dict(self._read(sql.HEALTH_UNKNOWN, (at - recent,))),
        )

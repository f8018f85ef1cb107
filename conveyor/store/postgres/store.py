"""The production store: PostgreSQL through psycopg 3, shared by workers on many hosts.

- Claims use ``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait on each other.
- Wake-ups: every write that makes jobs ready runs ``pg_notify('conveyor_jobs')`` in its own
  transaction (delivered on commit); ``wait_for_jobs`` LISTENs on a dedicated connection.
- Leadership is a session-level advisory lock held on a dedicated connection.
- Time: a method's ``now=None`` means the database's ``now()``, never the host clock.
- Every psycopg error is wrapped (connections.Connections.errors).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

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
from . import flow, rates
from . import statements as sql
from .changes import ChangeListener, Throttle
from .connections import Connections
from .cron import PostgresCron
from .history import PostgresHistory
from .inserts import COPY_THRESHOLD, insert_jobs


def _dt(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:  # the session's TimeZone is UTC (postgres_conninfo)
        return value
    return value.astimezone(UTC)


def _claim_params(worker_id: str, queue: str, limit: int, now: datetime | None) -> dict[str, Any]:
    return {"now": now, "worker": worker_id, "lease": shared.new_lease(), "queue": queue,
            "limit": limit}


def _finish_params(
    outcomes: Sequence[JobOutcome], now: datetime | None, notify: bool
) -> dict[str, Any]:
    rows = []
    for i, o in enumerate(outcomes, 1):
        row: dict[str, Any] = {"ord": i, "job_id": o.job_id, "lease": o.lease, "state": o.state,
                               "outcome": o.outcome, "result": o.result}
        if o.error_class is not None:
            row.update(error=o.error_summary, error_class=o.error_class,
                       error_message=o.error_message, traceback=o.traceback)
        if o.retry_at is not None:
            row["retry_at"] = o.retry_at.timestamp()
        if o.finished_at is not None:
            row["finished_at"] = o.finished_at.timestamp()
        rows.append(row)
    ids = "{" + ",".join(str(o.job_id) for o in outcomes) + "}"
    return {"now": now, "outcomes": json.dumps(rows), "ids": ids, "notify": notify}


def _accepted(count: int, ords: Sequence[int]) -> list[bool]:
    accepted = set(ords)
    return [i + 1 in accepted for i in range(count)]


def _any(values: Sequence[Any]) -> tuple[str, list[Any]]:
    return "= ANY(%s)", [list(values)]


class PostgresStore(PostgresCron, PostgresHistory):
    def __init__(self, url: str) -> None:
        self.url = url
        self._db = Connections(url)
        self._where = self._db.where
        self._changes = ChangeListener(self._db.conninfo)
        self._notices = Throttle(lambda: self._count(sql.CHANGED))  # for finishes and progress

    def _rows(self, statement: Any, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._db.connect() as conn:
            return conn.execute(statement, params).fetchall()

    def _count(self, statement: Any, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        with self._db.connect() as conn:
            return conn.execute(statement, params).rowcount

    def close(self) -> None:
        self._notices.close()
        self._db.close()
        self._changes.close()

    # --- schema ---------------------------------------------------------------------------------
    def schema_version(self) -> int | None:
        with self._db.connect() as conn:
            exists = conn.execute(sql.HAS_SCHEMA).fetchone()
            if exists is None or exists[0] is None:
                return None
            row = conn.execute(sql.SCHEMA_VERSION).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def migrate(self) -> int:
        """Safe to run from many processes at once: the first takes the lock and migrates."""
        with self._db.tx() as conn:
            conn.execute(sql.LOCK_MIGRATIONS, (sql.MIGRATE_LOCK,))
            conn.execute(sql.CREATE_SCHEMA_TABLE)
            row = conn.execute(sql.SCHEMA_VERSION).fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            shared.check_schema_version(f"PostgreSQL database {self._where}", current)
            for version, script in shared.migrations("postgres"):
                if version > current:
                    conn.execute(script)  # no params: one multi-statement simple query
                    conn.execute(sql.RECORD_VERSION, (version,))
                    current = version
        return current

    # --- jobs -----------------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], *, connection: Any = None, now: datetime | None = None
    ) -> list[Inserted]:
        if connection is not None and not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                "enqueue(connection=...) on a PostgreSQL store needs a psycopg.Connection"
            )
        if not jobs:
            return []
        if connection is not None:  # the caller's transaction: theirs to commit or roll back
            with self._db.errors():
                return self._insert(connection, jobs, now)
        keyed = any(j.unique_key is not None or j.concurrency_key is not None for j in jobs)
        if len(jobs) < COPY_THRESHOLD and not keyed:  # one statement: autocommit is its transaction
            with self._db.connect() as conn:
                return insert_jobs(conn, jobs, now)
        if len(jobs) == 1 and jobs[0].concurrency_key is None and jobs[0].unique_for is None:
            with self._db.connect() as conn:  # a lone unique job: nothing to roll back together
                return self._insert(conn, jobs, now)
        with self._db.tx() as conn:
            return self._insert(conn, jobs, now)

    def _insert(self, conn: Any, jobs: Sequence[NewJob], now: datetime | None) -> list[Inserted]:
        """Insert in a transaction: a held key that should raise rolls the batch back; jobs of
        concurrency keys, entered blocked, are admitted to free slots."""
        inserted = insert_jobs(conn, jobs, now)
        shared.refuse_held(jobs, inserted, f"PostgreSQL database {self._where}")
        flow.settle(conn, (j.concurrency_key for j in jobs), now)
        return inserted

    def _settle(self, keys: Sequence[str | None], now: datetime | None, *, blocked: bool = False) -> None:
        """Admit blocked jobs to slots just given back (``blocked``: to every key's), in a
        transaction of its own, after the change that freed them committed."""
        if blocked:
            with self._db.tx() as conn:
                flow.settle_blocked(conn, now)
        elif keys:  # pipelined: the lock, the admission and the commit in one round trip
            with self._db.connect() as conn, conn.pipeline(), conn.transaction():
                flow.settle(conn, keys, now, count=False)

    def job_get(self, job_id: int) -> JobRecord | None:
        rows = self._rows(sql.GET, (job_id,))
        return shared.job_from_row(rows[0], _dt) if rows else None

    def job_list(self, filter: JobFilter) -> list[JobRecord]:
        statement, params = shared.job_list_query(filter, "%s", _any)
        return [shared.job_from_row(r, _dt) for r in self._rows(statement, params)]

    def job_claim(
        self, worker_id: str, queue: str, limit: int, *, suspects: bool = False,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        statement = sql.CLAIM_SUSPECT if suspects else sql.CLAIM
        with self._db.hot() as conn:
            rows = conn.execute(statement, _claim_params(worker_id, queue, limit, now)).fetchall()
        return self._rated(shared.claimed(rows, _dt), now)

    def _rated(self, jobs: list[JobRecord], now: datetime | None) -> list[JobRecord]:
        """Claimed jobs within their rate (all, when none has a rate key); the others are put
        back in a transaction of their own, before the worker ever hears of them."""
        if all(j.rate_key is None for j in jobs):
            return jobs
        with self._db.tx() as conn:
            return rates.admit(conn, jobs, now)

    def job_finish_many(
        self, outcomes: Sequence[JobOutcome], *, now: datetime | None = None
    ) -> list[bool]:
        if not outcomes:
            return []
        notify = self._notices.take()
        rows = self._rows(sql.FINISH, _finish_params(outcomes, now, notify))
        if rows and not notify:
            self._notices.owe()
        self._settle([r[1] for r in rows if r[1] is not None], now)
        return _accepted(len(outcomes), [r[0] for r in rows])

    def job_finish_and_claim(
        self, outcomes: Sequence[JobOutcome], worker_id: str, queue: str, limit: int,
        *, now: datetime | None = None,
    ) -> tuple[list[bool], list[JobRecord]]:
        notify = self._notices.take()
        params = {**_finish_params(outcomes, now, notify),
                  **_claim_params(worker_id, queue, limit, now)}
        with self._db.hot() as conn:
            rows = conn.execute(sql.FINISH_AND_CLAIM, params).fetchall()
        if rows[0][0] and not notify:
            self._notices.owe()
        claimed = [r[3:] for r in rows if r[3] is not None]
        self._settle(rows[0][1] or [], now)
        return _accepted(len(outcomes), rows[0][0] or ()), self._rated(shared.claimed(claimed, _dt), now)

    def job_release(
        self, leases: Sequence[tuple[int, str]], *, reason: str | None = None,
        started: bool = True, now: datetime | None = None,
    ) -> int:
        if not leases:
            return 0
        params = {
            "now": now, "ids": [job_id for job_id, _ in leases],
            "leases": [lease for _, lease in leases], "started": started,
            "message": reason or shared.SHUTDOWN_REASON,
        }
        released = int(self._rows(sql.RELEASE, params)[0][0])
        self._settle([], now, blocked=True)
        return released

    def job_progress(
        self, job_id: int, lease: str, percent: float | None, message: str | None,
        *, now: datetime | None = None,
    ) -> bool:
        params = {"now": now, "id": job_id, "lease": lease, "percent": percent, "message": message}
        if percent is None:
            return self._count(sql.HEARTBEAT_JOB, params) == 1
        notify = self._notices.take()
        done = int(self._rows(sql.PROGRESS, {**params, "notify": notify})[0][0]) == 1
        if done and not notify:
            self._notices.owe()
        return done

    def job_log(self, job_id: int, attempt: int, message: str, *, now: datetime | None = None) -> None:
        self._count(sql.LOG, {"now": now, "id": job_id, "attempt": attempt, "message": message})

    def job_logs(self, job_id: int) -> list[LogRecord]:
        rows = self._rows(sql.LOGS, (job_id,))
        return [LogRecord(r[0], r[1], r[2].astimezone(UTC), r[3]) for r in rows]

    def job_attempts(self, job_id: int) -> list[AttemptRecord]:
        rows = self._rows(sql.ATTEMPTS, (job_id, job_id, job_id))
        return [AttemptRecord(**shared.attempt_fields(r, _dt)) for r in rows]

    def job_cancel(self, job_id: int, *, now: datetime | None = None) -> JobState | None:
        params = {"now": now, "id": job_id}
        with self._db.tx() as conn:
            conn.execute(sql.CANCEL_WAITING, params)
            conn.execute(sql.CANCEL_RUNNING, params)
            row = conn.execute(sql.STATE_OF, params).fetchone()
            conn.execute(sql.CHANGED)
        self._settle([], now, blocked=True)
        return JobState(row[0]) if row else None

    def job_retry(self, job_ids: Sequence[int], *, now: datetime | None = None) -> int:
        if not job_ids:
            return 0
        retried = int(self._rows(sql.RETRY, {"now": now, "ids": list(job_ids)})[0][0])
        self._settle([], now, blocked=True)
        return retried

    def job_discard(self, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        discarded = int(self._rows(sql.DISCARD, {"ids": list(job_ids)})[0][0])
        self._settle([], None, blocked=True)
        return discarded

    def job_ids_by_state(self, state: JobState, *, queue: str | None = None) -> list[int]:
        statement = sql.ids_by_state(shared.quiet([state]), queue is not None)
        return [r[0] for r in self._rows(statement, {"state": str(state), "queue": queue})]

    def limit_usage(self) -> list[LimitUsage]:
        return shared.limit_usage(self._rows(flow.USAGE))

    def rate_backlog(self, *, now: datetime | None = None) -> list[RateBacklog]:
        since = self._rows(sql.HEALTH_CLOCK, {"now": now})[0][1] - timedelta(seconds=RATE_RECENT)
        rows = self._rows(rates.BACKLOG, (since,))
        return [RateBacklog(k, int(c), float(p), int(n), int(r)) for k, c, p, n, r in rows]

    # --- time-driven duties ---------------------------------------------------------------------
    def jobs_promote(
        self, *, now: datetime | None = None, include_retries: bool = False, limit: int = 10_000
    ) -> int:
        params = {"now": now, "retries": include_retries, "limit": limit}
        promoted = int(self._rows(sql.PROMOTE, params)[0][0])
        self._settle([], now, blocked=True)  # also the sweep after a crash between finish and admit
        return promoted

    def jobs_prune(self, *, succeeded_before: datetime, dead_before: datetime) -> int:
        params = {"succeeded_before": succeeded_before, "dead_before": dead_before}
        self._count(flow.LOCKS_PRUNE)
        total = 0
        while (n := int(self._rows(sql.PRUNE, params)[0][0])) > 0:
            total += n
        return total

    def jobs_overdue(
        self, worker_ids: Sequence[str], *, grace: float, cancel_grace: float,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        if not worker_ids:
            return []
        params = {"now": now, "workers": list(worker_ids), "grace": grace,
                  "cancel_grace": cancel_grace}
        return [shared.job_from_row(r, _dt) for r in self._rows(sql.OVERDUE, params)]

    def jobs_rescue(
        self, process_ids: Sequence[str], reason: str, *,
        held: Mapping[int, Held] | None = None, now: datetime | None = None,
    ) -> list[int]:
        if not process_ids:
            return []
        seen = held or {}
        params = {
            "now": now, "workers": list(process_ids), "known": held is not None,
            "held_ids": list(seen), "held_stages": [str(stage) for stage in seen.values()],
            "reason": reason, "finished": shared.lost_reason(Held.FINISHED, reason),
        }
        rescued = [r[0] for r in self._rows(sql.RESCUE, params)]
        self._settle([], now, blocked=True)
        return rescued

    def job_lost(
        self, job_id: int, lease: str, reason: str, *, poison_after: int = POISON_AFTER,
        now: datetime | None = None,
    ) -> JobState | None:
        params = {"now": now, "id": job_id, "lease": lease, "poison_after": poison_after,
                  "reason": reason, "poisoned": shared.poisoned_reason(poison_after, reason)}
        rows = self._rows(sql.LOST, params)
        self._settle([], now, blocked=True)
        return JobState(rows[0][0]) if rows else None

    # --- queues ---------------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None:
        self._count(sql.SET_PAUSED, {"name": name, "paused": True})

    def queue_resume(self, name: str) -> None:
        self._count(sql.SET_PAUSED, {"name": name, "paused": False})

    def queue_stats(self) -> list[QueueStats]:
        with self._db.connect() as conn:
            counted = conn.execute(shared.QUEUE_COUNTS).fetchall()
            oldest = dict(conn.execute(shared.QUEUE_OLDEST).fetchall())
            paused = dict(conn.execute(shared.QUEUE_PAUSED).fetchall())
        return shared.queue_stats(counted, oldest, paused, _dt)

    # --- processes ------------------------------------------------------------------------------
    def process_register(self, process: ProcessRecord) -> None:
        p = process
        self._count(sql.REGISTER, (
            p.id, p.kind, p.host, p.pid, p.started_at, p.heartbeat_at, p.supervisor_id,
            json.dumps(list(p.queues)), p.concurrency, json.dumps(list(p.job_names)),
        ))

    def process_heartbeat(self, process_id: str, *, now: datetime | None = None) -> list[HeldJob]:
        with self._db.beat() as conn:
            rows = conn.execute(sql.HEARTBEAT, {"now": now, "id": process_id}).fetchall()
        return [HeldJob(r[0], r[1], bool(r[2])) for r in rows]

    def process_deregister(self, process_id: str) -> None:
        self._count(sql.DEREGISTER, (process_id,))

    def process_list(self) -> list[ProcessRecord]:
        return [shared.process_from_row(r, _dt) for r in self._rows(sql.PROCESSES)]

    def processes_stale(self, older_than_seconds: float, *, now: datetime | None = None) -> list[str]:
        rows = self._rows(sql.STALE, {"now": now, "age": float(older_than_seconds)})
        return [r[0] for r in rows]

    # --- leadership and wake-ups ----------------------------------------------------------------
    def leader_acquire(self, name: str, holder: str, ttl: float) -> bool:
        """``ttl`` is unused: the advisory lock lives exactly as long as its session, so a
        leader that dies (or loses its connection) frees it at once, and a live one needs no
        renewal."""
        return self._db.leader_acquire(name, holder)

    def leader_release(self, name: str, holder: str) -> None:
        self._db.leader_release(name, holder)

    def wait_for_jobs(self, timeout: float) -> None:
        """Block on LISTEN conveyor_jobs up to ``timeout``; never raises."""
        self._db.wait_for_notify(timeout)

    # --- health ---------------------------------------------------------------------------------
    def health_facts(
        self, *, stale_after: float, timeout_grace: float = 0.0, overdue_after: float = 60.0,
        recent: float = 3600.0, limit: int = 50, now: datetime | None = None,
    ) -> HealthFacts:
        with self._db.connect() as conn:
            row = conn.execute(sql.HEALTH_CLOCK, {"now": now}).fetchone()
            assert row is not None
            clock, at = row
            params = {"at": at, "grace": float(timeout_grace), "stale": float(stale_after),
                      "limit": limit, "overdue": float(overdue_after), "recent": float(recent)}
            waiting = conn.execute(shared.HEALTH_WAITING).fetchall()
            running = conn.execute(shared.HEALTH_RUNNING).fetchall()
            stuck = conn.execute(sql.HEALTH_STUCK, params).fetchall()
            overdue = conn.execute(sql.HEALTH_OVERDUE, params).fetchone() or (0, None)
            dead = conn.execute(sql.HEALTH_DEAD, params).fetchall()
            unknown = conn.execute(sql.HEALTH_UNKNOWN, params).fetchall()
        return HealthFacts(
            now=at.astimezone(UTC), store_clock=clock.astimezone(UTC),
            waiting_by_name=dict(waiting), running_by_worker=dict(running),
            stuck=tuple(shared.job_from_row(r, _dt) for r in stuck),
            overdue=int(overdue[0]), oldest_overdue_at=_dt(overdue[1]),
            dead_recent={(name, cls): n for name, cls, n in dead}, unknown_recent=dict(unknown),
        )

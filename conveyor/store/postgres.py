"""The production store: PostgreSQL through psycopg 3, shared by workers on many hosts.

- Claims use ``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait on each other.
- Wake-ups: every write that makes jobs ready runs ``pg_notify('conveyor_jobs')`` in its own
  transaction (delivered on commit); ``wait_for_jobs`` LISTENs on a dedicated connection.
- Leadership is a session-level advisory lock held on a dedicated connection.
- Time: a method's ``now=None`` means the database's ``now()``, never the host clock.
- Every psycopg error is wrapped here: StoreUnavailable, SchemaError or StoreError.
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

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
from ..urls import redact_url
from . import _common as c
from .base import SCHEMA_VERSION, Capabilities, HealthFacts

Conn = psycopg.Connection[Any]

CHANNEL = "conveyor_jobs"
CONNECT_TIMEOUT = 5  # seconds libpq waits for a server to answer
GETCONN_TIMEOUT = 5.0  # seconds a call waits for a pooled connection before StoreUnavailable
POOL_MIN, POOL_MAX = 1, 10
IDLE_CHECK_AFTER = 2.0  # seconds unused after which a pooled connection is tested before use
PRUNE_BATCH = 5000

# the store's clock: the caller's frozen time if given, else the database's
NOW = "COALESCE(%(now)s::timestamptz, now())"
FINISHED_SQL = "('succeeded', 'dead', 'cancelled')"


def _wake_if_ready(source: str) -> str:
    """A scalar that notifies listeners (once, on commit) if ``source`` holds a ready job."""
    return (
        f"(SELECT count(pg_notify('{CHANNEL}', '')) FROM"
        f" (SELECT 1 FROM {source} WHERE state = 'ready' LIMIT 1) AS wake)"
    )


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_*advisory*lock`` (Python's hash() is salted)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


MIGRATE_LOCK = _advisory_key("conveyor:migrate")

# --- SQL ---------------------------------------------------------------------------------------
CREATE_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS conveyor_schema"
    " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)

INSERT_JOBS = f"""
WITH input AS (
    SELECT * FROM unnest(
        %(name)s::text[], %(queue)s::text[], %(priority)s::int[], %(args)s::text[],
        %(kwargs)s::text[], %(max_attempts)s::int[], %(timeout)s::float8[],
        %(run_at)s::timestamptz[], %(unique_key)s::text[], %(concurrency_key)s::text[]
    ) WITH ORDINALITY AS t(name, queue, priority, args, kwargs, max_attempts, timeout, run_at,
                           unique_key, concurrency_key, ord)
), inserted AS (
    INSERT INTO conveyor_jobs (name, queue, priority, state, args, kwargs, max_attempts,
                               timeout, run_at, created_at, unique_key, concurrency_key)
    SELECT name, queue, priority,
           CASE WHEN run_at IS NULL OR run_at <= {NOW} THEN 'ready' ELSE 'scheduled' END,
           args, kwargs, max_attempts, timeout, COALESCE(run_at, {NOW}), {NOW},
           unique_key, concurrency_key
    FROM input ORDER BY ord  -- identity values are drawn in this order
    RETURNING id, state
)
SELECT id, {_wake_if_ready("inserted")} FROM inserted ORDER BY id
"""

INSERT_ONE = f"""
WITH inserted AS (
    INSERT INTO conveyor_jobs (name, queue, priority, state, args, kwargs, max_attempts,
                               timeout, run_at, created_at, unique_key, concurrency_key)
    VALUES (%(name)s, %(queue)s, %(priority)s,
            CASE WHEN %(run_at)s::timestamptz IS NULL OR %(run_at)s::timestamptz <= {NOW}
                 THEN 'ready' ELSE 'scheduled' END,
            %(args)s, %(kwargs)s, %(max_attempts)s, %(timeout)s,
            COALESCE(%(run_at)s::timestamptz, {NOW}), {NOW}, %(unique_key)s, %(concurrency_key)s)
    RETURNING id, state
)
SELECT id, {_wake_if_ready("inserted")} FROM inserted
"""
COPY_THRESHOLD = 64  # from this many jobs on, COPY beats one multi-row INSERT
# ids for a COPY, drawn in two steps: the sequence's name, then the ids from it named literally
# (pg_get_serial_sequence() inside the loop looked the name up again for every id: 8 us a job),
# all in one text value (1,000 rows of two values cost more to fetch than to draw)
ID_SEQUENCE = "SELECT pg_get_serial_sequence('conveyor_jobs', 'id'), COALESCE(%s::timestamptz, now())"
NEXT_IDS = "SELECT string_agg(nextval({})::text, ',') FROM generate_series(1, %s)"
COPY_JOBS = (
    "COPY conveyor_jobs (id, name, queue, priority, state, args, kwargs, max_attempts, timeout,"
    " run_at, created_at, unique_key, concurrency_key) FROM STDIN"
)

def _claim_sql(pick: str) -> str:
    return f"""
UPDATE conveyor_jobs SET state = 'running', attempt = attempt + 1, worker_id = %(worker)s,
    lease = %(lease)s, started_at = {NOW}, heartbeat_at = {NOW}, finished_at = NULL,
    progress = NULL, progress_message = NULL
WHERE id IN (
    SELECT id FROM conveyor_jobs WHERE {pick} AND queue = %(queue)s
    ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
  AND NOT EXISTS (SELECT 1 FROM conveyor_queues WHERE name = %(queue)s AND paused)
RETURNING {c.JOB_COLUMNS}
"""


CLAIM = _claim_sql(c.PICK_READY)
CLAIM_SUSPECT = _claim_sql(c.PICK_SUSPECT)

# Outcomes arrive as one JSON array (encoded in C on both ends; psycopg dumps arrays in Python),
# their job ids also as an array literal, so the update finds its rows through the primary key.
# A successful attempt is the job row itself (started_at, finished_at, worker_id, attempt): only
# attempts that did not succeed get a conveyor_attempts row, with their error and traceback.
FINISH = f"""
WITH o AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS t(
        ord int, job_id bigint, lease text, state text, outcome text, result text, error text,
        error_class text, error_message text, traceback text, retry_at float8, finished_at float8)
), done AS (
    UPDATE conveyor_jobs j SET state = o.state, result = o.result, error = o.error,
        lease = NULL, heartbeat_at = NULL, lost_count = 0,
        finished_at = CASE WHEN o.state IN {FINISHED_SQL}
                           THEN COALESCE(to_timestamp(o.finished_at), {NOW}) END,
        run_at = COALESCE(to_timestamp(o.retry_at), j.run_at)
    FROM (SELECT DISTINCT ON (job_id, lease) * FROM o ORDER BY job_id, lease, ord) o
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = o.job_id AND j.lease = o.lease
      AND j.state = 'running'
    RETURNING o.ord, j.attempt, j.worker_id, j.started_at
), recorded AS (
    INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS})
    SELECT o.job_id, done.attempt, done.worker_id, done.started_at,
           COALESCE(to_timestamp(o.finished_at), {NOW}), o.outcome,
           o.error_class, o.error_message, o.traceback
    FROM o JOIN done USING (ord) WHERE o.outcome <> 'succeeded' ORDER BY ord
)
SELECT ord FROM done
"""

# finish then claim in ONE statement (one round trip, one commit): the CTEs touch disjoint rows,
# running ones fenced by lease for the outcomes, ready ones for the claim
FINISH_AND_CLAIM = (
    FINISH.replace("SELECT ord FROM done", "")
    + CLAIM.replace("UPDATE conveyor_jobs SET", ", claimed AS (UPDATE conveyor_jobs SET", 1)
    + """)
SELECT acc.accepted, claimed.* FROM (SELECT array_agg(ord) AS accepted FROM done) AS acc
LEFT JOIN claimed ON true
"""
)

ATTEMPTS = c.attempts_query("%s")

RELEASE = f"""
WITH given AS (
    SELECT DISTINCT * FROM unnest(%(ids)s::bigint[], %(leases)s::text[]) AS t(id, lease)
), released AS (
    UPDATE conveyor_jobs j SET attempt = j.attempt - 1, lease = NULL, heartbeat_at = NULL,
        run_at = {NOW},
        state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'ready' END,
        finished_at = CASE WHEN j.cancel_requested THEN {NOW} END
    FROM given WHERE j.id = given.id AND j.lease = given.lease AND j.state = 'running'
    RETURNING j.id, j.attempt + 1 AS attempt, j.worker_id, j.started_at, j.state
), recorded AS (
    INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS})
    SELECT id, attempt, worker_id, started_at, {NOW}, 'shutdown', NULL, %(message)s, NULL
    FROM released WHERE %(started)s ORDER BY id
)
SELECT count(*), {_wake_if_ready("released")} FROM released
"""

CANCEL_WAITING = (
    f"UPDATE conveyor_jobs SET state = 'cancelled', finished_at = {NOW}"
    f" WHERE id = %(id)s AND state IN {c.WAITING}"
)
CANCEL_RUNNING = (
    "UPDATE conveyor_jobs SET cancel_requested = true,"
    f" cancel_requested_at = COALESCE(cancel_requested_at, {NOW})"
    " WHERE id = %(id)s AND state = 'running'"
)
OVERDUE = f"""
SELECT {c.JOB_COLUMNS} FROM conveyor_jobs
WHERE state = 'running' AND worker_id = ANY(%(workers)s) AND (
    (timeout IS NOT NULL
     AND started_at + (timeout + %(grace)s) * interval '1 second' < {NOW})
    OR (cancel_requested
        AND cancel_requested_at + %(cancel_grace)s * interval '1 second' < {NOW}))
ORDER BY id
"""

RETRY = f"""
WITH retried AS (
    UPDATE conveyor_jobs SET state = 'ready', run_at = {NOW}, finished_at = NULL,
        max_attempts = GREATEST(max_attempts, attempt + 1), cancel_requested = false,
        cancel_requested_at = NULL, lost_count = 0
    WHERE id = ANY(%(ids)s) AND state IN ('dead', 'cancelled', 'failed')
    RETURNING state
)
SELECT count(*), {_wake_if_ready("retried")} FROM retried
"""

# data-modifying CTEs run to completion even when unreferenced
DELETE_CHILDREN = """
a AS (DELETE FROM conveyor_attempts WHERE job_id IN (SELECT id FROM gone)),
l AS (DELETE FROM conveyor_logs WHERE job_id IN (SELECT id FROM gone)),
d AS (DELETE FROM conveyor_job_dependencies WHERE job_id IN (SELECT id FROM gone))
SELECT count(*) FROM gone
"""

DISCARD = f"""
WITH gone AS (
    DELETE FROM conveyor_jobs WHERE id = ANY(%(ids)s) AND state <> 'running' RETURNING id
), {DELETE_CHILDREN}"""

PRUNE = f"""
WITH gone AS (
    DELETE FROM conveyor_jobs WHERE id IN (
        SELECT id FROM conveyor_jobs
        WHERE (state = 'succeeded' AND finished_at < %(succeeded_before)s)
           OR (state IN ('dead', 'cancelled') AND finished_at < %(dead_before)s)
        LIMIT {PRUNE_BATCH} FOR UPDATE SKIP LOCKED)
    RETURNING id
), {DELETE_CHILDREN}"""

PROMOTE = f"""
WITH promoted AS (
    UPDATE conveyor_jobs SET state = 'ready', run_at = LEAST(run_at, {NOW})
    WHERE id IN (
        SELECT id FROM conveyor_jobs WHERE state IN ('scheduled', 'failed')
          AND (run_at <= {NOW} OR (%(retries)s AND state = 'failed'))
        ORDER BY run_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING state
)
SELECT count(*), {_wake_if_ready("promoted")} FROM promoted
"""

# held: what the dead process's supervisor saw it hold (job id -> waiting | running |
# finished); %(known)s false means unknown (a lost host), and every job counts as running
RESCUE = f"""
WITH seen AS (
    SELECT * FROM unnest(%(held_ids)s::bigint[], %(held_stages)s::text[]) AS t(id, stage)
), lost AS (
    SELECT j.id, CASE WHEN %(known)s THEN COALESCE(seen.stage, 'waiting') ELSE 'running' END
                 AS stage
    FROM conveyor_jobs j LEFT JOIN seen ON seen.id = j.id
    WHERE j.state = 'running' AND j.worker_id = ANY(%(workers)s)
    FOR UPDATE OF j
), rescued AS (
    UPDATE conveyor_jobs j SET
        state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'ready' END,
        attempt = j.attempt - 1, lease = NULL, heartbeat_at = NULL, run_at = {NOW},
        lost_count = j.lost_count + CASE WHEN lost.stage = 'running' THEN 1 ELSE 0 END,
        error = CASE lost.stage WHEN 'waiting' THEN j.error
                WHEN 'finished' THEN 'WorkerLost: ' || %(finished)s
                ELSE 'WorkerLost: ' || %(reason)s END,
        finished_at = CASE WHEN j.cancel_requested THEN {NOW} END
    FROM lost WHERE j.id = lost.id
    RETURNING j.id, j.attempt + 1 AS attempt, j.worker_id, j.started_at, j.state, lost.stage
), recorded AS (
    INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS})
    SELECT id, attempt, worker_id, started_at, {NOW}, '{AttemptOutcome.WORKER_LOST}',
           'WorkerLost', CASE stage WHEN 'finished' THEN %(finished)s ELSE %(reason)s END, NULL
    FROM rescued WHERE stage <> 'waiting' ORDER BY id
)
SELECT id, {_wake_if_ready("rescued")} FROM rescued ORDER BY id
"""

# a job that killed the process it ran in alone: one more strike, dead at poison_after
LOST = f"""
WITH lost AS (
    UPDATE conveyor_jobs SET
        state = CASE WHEN lost_count + 1 >= %(poison_after)s THEN 'dead' ELSE 'ready' END,
        attempt = CASE WHEN lost_count + 1 >= %(poison_after)s THEN attempt ELSE attempt - 1 END,
        error = 'WorkerLost: ' || CASE WHEN lost_count + 1 >= %(poison_after)s
                                       THEN %(poisoned)s ELSE %(reason)s END,
        lost_count = lost_count + 1, lease = NULL, heartbeat_at = NULL, run_at = {NOW},
        finished_at = CASE WHEN lost_count + 1 >= %(poison_after)s THEN {NOW} END
    WHERE id = %(id)s AND lease = %(lease)s AND state = 'running'
    RETURNING id, CASE WHEN state = 'dead' THEN attempt ELSE attempt + 1 END AS attempt,
              worker_id, started_at, state, error
), recorded AS (
    INSERT INTO conveyor_attempts ({c.ATTEMPT_COLUMNS})
    SELECT id, attempt, worker_id, started_at, {NOW}, '{AttemptOutcome.WORKER_LOST}',
           'WorkerLost', substr(error, length('WorkerLost: ') + 1), NULL
    FROM lost
)
SELECT state, {_wake_if_ready("lost")} FROM lost
"""

SET_PAUSED = """
INSERT INTO conveyor_queues (name, paused, updated_at) VALUES (%(name)s, %(paused)s, now())
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
"""

REGISTER = (
    f"INSERT INTO conveyor_processes ({c.PROCESS_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{col} = excluded.{col}" for col in c.PROCESS_COLUMNS.split(", ")[1:])
)

HEARTBEAT = f"""
WITH beat AS (UPDATE conveyor_processes SET heartbeat_at = {NOW} WHERE id = %(id)s)
SELECT id, lease, cancel_requested FROM conveyor_jobs
WHERE state = 'running' AND worker_id = %(id)s ORDER BY id
"""


# --- conveyor doctor's aggregates (health_facts); %(at)s is the time they are measured at ------
HEALTH_CLOCK = "SELECT statement_timestamp(), COALESCE(%(now)s::timestamptz, statement_timestamp())"
HEALTH_STUCK = f"""
SELECT {c.JOB_COLUMNS} FROM conveyor_jobs WHERE state = 'running' AND (
    (timeout IS NOT NULL
     AND started_at + (timeout + %(grace)s) * interval '1 second' < %(at)s)
    OR NOT EXISTS (SELECT 1 FROM conveyor_processes p WHERE p.id = conveyor_jobs.worker_id
                   AND p.heartbeat_at >= %(at)s - %(stale)s * interval '1 second'))
ORDER BY started_at, id LIMIT %(limit)s
"""
HEALTH_OVERDUE = (
    "SELECT COUNT(*), MIN(run_at) FROM conveyor_jobs WHERE state IN ('scheduled', 'failed')"
    " AND run_at < %(at)s - %(overdue)s * interval '1 second'"
)
HEALTH_DEAD = (  # error is "Class: message" or "Class"
    "SELECT name, split_part(COALESCE(error, ''), ':', 1), COUNT(*) FROM conveyor_jobs"
    " WHERE state = 'dead' AND finished_at >= %(at)s - %(recent)s * interval '1 second'"
    " GROUP BY 1, 2"
)
HEALTH_UNKNOWN = (
    "SELECT name, COUNT(*) FROM conveyor_jobs"
    " WHERE (error = 'UnknownJob' OR error LIKE 'UnknownJob:%%')"
    " AND (state IN ('scheduled', 'ready', 'failed') OR (state = 'dead'"
    "      AND finished_at >= %(at)s - %(recent)s * interval '1 second'))"
    " GROUP BY name"
)

# --- URLs and errors ---------------------------------------------------------------------------
def postgres_conninfo(url: str) -> str:
    """Validate a ``postgresql[+driver]://`` / ``postgres://`` URL and return a libpq conninfo."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower().split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"malformed PostgreSQL URL {redact_url(url)!r}: use postgresql://user@host:port/dbname"
        )
    try:
        params = conninfo_to_dict("postgresql://" + rest)
    except psycopg.ProgrammingError as e:
        reason = redact_url(_reason(e)) or "cannot parse it"
        raise ConfigurationError(f"malformed PostgreSQL URL {redact_url(url)!r}: {reason}") from e
    port = str(params.get("port", "5432"))
    if not all(part.strip().isdigit() for part in port.split(",")):
        raise ConfigurationError(f"malformed PostgreSQL URL {redact_url(url)!r}: port {port!r}")
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    # notice a server that vanished without closing the socket (listener, leader lock)
    for option, value in (("keepalives_idle", 30), ("keepalives_interval", 10),
                          ("keepalives_count", 3)):
        params.setdefault(option, value)
    params.setdefault("application_name", "conveyor")
    # timestamps then arrive already in UTC, as conveyor hands them out: no conversion per value
    params["options"] = f"{params.get('options', '')} -c TimeZone=UTC".strip()
    return make_conninfo("", **params)


def _reason(error: BaseException) -> str:
    """The useful part of a libpq error, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    text = re.sub(r"^connection (failed|is bad):\s*", "", text)
    text = re.sub(r"^connection to server (at|on) .*? failed:\s*", "", text)
    return re.sub(r"^FATAL:\s*", "", text)


def _claim_params(worker_id: str, queue: str, limit: int, now: datetime | None) -> dict[str, Any]:
    return {"now": now, "worker": worker_id, "lease": c.new_lease(), "queue": queue,
            "limit": limit}


def _claimed(rows: list[Any]) -> list[JobRecord]:
    jobs = [c.job_from_row(r, _dt) for r in rows]
    jobs.sort(key=lambda j: (-j.priority, j.id))
    return jobs


def _finish_params(outcomes: Sequence[JobOutcome], now: datetime | None) -> dict[str, Any]:
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
    return {"now": now, "outcomes": json.dumps(rows), "ids": ids}


def _accepted(outcomes: Sequence[JobOutcome], rows: list[Any]) -> list[bool]:
    accepted = {r[0] for r in rows}
    return [i + 1 in accepted for i in range(len(outcomes))]


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    """A text value in COPY's text format: NULL is \\N; backslash, tab and newlines escaped."""
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _dt(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:  # the session's TimeZone is UTC (postgres_conninfo)
        return value
    return value.astimezone(UTC)


def _close_quietly(conn: Conn | None) -> None:
    if conn is not None:
        with suppress(Exception):
            conn.close()


class PostgresStore:
    capabilities = Capabilities(
        listen_notify=True, skip_locked=True, advisory_locks=True, multi_host=True,
        transactional_enqueue=True,
    )

    def __init__(self, url: str) -> None:
        self.url = url
        self._conninfo = postgres_conninfo(url)
        info = conninfo_to_dict(self._conninfo)
        self._where = (
            f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )
        self._pool: ConnectionPool[Conn] | None = None
        self._lock = threading.Lock()
        self._listener: Conn | None = None
        self._listen_lock = threading.Lock()
        self._leaders: dict[tuple[str, str], tuple[Conn, bool]] = {}
        self._leader_lock = threading.Lock()
        self._last_used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._claimer: Conn | None = None
        self._claimer_lock = threading.Lock()

    # --- connections and errors ------------------------------------------------------------
    def _unavailable(self, error: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"PostgreSQL at {self._where} is unavailable: {_reason(error)}")

    def _diagnose(self) -> StoreUnavailable:
        """Why no pooled connection came: ask libpq directly for the exact reason."""
        try:
            psycopg.connect(self._conninfo).close()
        except psycopg.Error as e:
            return self._unavailable(e)
        return StoreUnavailable(
            f"PostgreSQL at {self._where}: no free connection within {GETCONN_TIMEOUT:g} s"
            f" (pool max_size={POOL_MAX})"
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate psycopg errors into conveyor's at the store boundary."""
        try:
            yield
        except pg_errors.UndefinedTable as e:
            raise SchemaError(
                f"PostgreSQL database {self._where} has no conveyor schema; run: conveyor migrate"
            ) from e
        except PoolTimeout as e:
            raise self._diagnose() from e
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise self._unavailable(e) from e
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL at {self._where}: {_reason(e)}") from e

    def _get_pool(self) -> ConnectionPool[Conn]:
        with self._lock:
            if self._pool is None:
                # connect once directly, so a wrong URL fails at once with libpq's own reason
                psycopg.connect(self._conninfo).close()
                pool: ConnectionPool[Conn] = ConnectionPool(
                    self._conninfo, min_size=POOL_MIN, max_size=POOL_MAX, open=False,
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
    def _connect(self) -> Iterator[Conn]:
        """A pooled autocommit connection: each statement commits unless inside ``_tx``."""
        with self._errors(), self._get_pool().connection() as conn:
            yield conn

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        with self._connect() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _hot(self) -> Iterator[Conn]:
        """The connection of the worker's claim loop: its own rather than the pool's, since a
        pool checkout and return costs about as much Python as the claim itself. Checked like
        a pooled one, replaced after an error; a second thread claiming at once uses the pool."""
        if not self._claimer_lock.acquire(blocking=False):
            with self._connect() as conn:
                yield conn
            return
        try:
            with self._errors():
                hot = self._claimer
                if hot is not None and not hot.closed:
                    try:
                        self._check_if_idle(hot)
                    except psycopg.Error:
                        _close_quietly(hot)
                        hot = None
                if hot is None or hot.closed:
                    hot = self._claimer = psycopg.connect(self._conninfo, autocommit=True)
                try:
                    yield hot
                except psycopg.Error:
                    self._claimer = None
                    _close_quietly(hot)
                    raise
                finally:
                    self._last_used[hot] = time.monotonic()
        finally:
            self._claimer_lock.release()

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._connect() as conn:
            return conn.execute(sql, params).fetchall()

    def _count(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        with self._connect() as conn:
            return conn.execute(sql, params).rowcount

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        with self._listen_lock:
            listener, self._listener = self._listener, None
        _close_quietly(listener)
        with self._claimer_lock:
            claimer, self._claimer = self._claimer, None
        _close_quietly(claimer)
        with self._leader_lock:
            leaders, self._leaders = list(self._leaders.values()), {}
        for conn, _ in leaders:
            _close_quietly(conn)

    # --- schema ----------------------------------------------------------------------------
    def schema_version(self) -> int | None:
        with self._connect() as conn:
            exists = conn.execute("SELECT to_regclass('conveyor_schema')").fetchone()
            if exists is None or exists[0] is None:
                return None
            row = conn.execute("SELECT MAX(version) FROM conveyor_schema").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def migrate(self) -> int:
        """Safe to run from many processes at once: the first takes the lock and migrates."""
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            conn.execute(CREATE_SCHEMA_TABLE)
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM conveyor_schema").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise SchemaError(
                    f"PostgreSQL database {self._where} has schema version {current}, newer than"
                    f" this conveyor understands ({SCHEMA_VERSION}); upgrade conveyor"
                )
            for version, sql in c.migrations("postgres"):
                if version > current:
                    conn.execute(sql)  # no params: sent as one multi-statement simple query
                    conn.execute(
                        "INSERT INTO conveyor_schema (version, applied_at) VALUES (%s, now())",
                        (version,),
                    )
                    current = version
        return current

    # --- jobs ------------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], *, connection: Any = None, now: datetime | None = None
    ) -> list[int]:
        if connection is not None and not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                "enqueue(connection=...) on a PostgreSQL store needs a psycopg.Connection"
            )
        if not jobs:
            return []
        if connection is not None:  # the caller's transaction: theirs to commit or roll back
            with self._errors():
                return self._insert(connection, jobs, now)
        if len(jobs) < COPY_THRESHOLD:  # one statement: autocommit is its transaction
            with self._connect() as conn:
                return self._insert(conn, jobs, now)
        with self._tx() as conn:
            return self._insert(conn, jobs, now)

    @staticmethod
    def _insert(conn: Conn, jobs: Sequence[NewJob], now: datetime | None) -> list[int]:
        if len(jobs) == 1:
            j = jobs[0]
            params: dict[str, Any] = {
                "now": now, "name": j.name, "queue": j.queue, "priority": int(j.priority),
                "args": j.args, "kwargs": j.kwargs, "max_attempts": int(j.max_attempts),
                "timeout": j.timeout, "run_at": j.run_at, "unique_key": j.unique_key,
                "concurrency_key": j.concurrency_key,
            }
            row = conn.execute(INSERT_ONE, params).fetchone()
            assert row is not None
            return [row[0]]
        if len(jobs) >= COPY_THRESHOLD:
            return PostgresStore._copy(conn, jobs, now)
        params = {
            "now": now,
            "name": [j.name for j in jobs], "queue": [j.queue for j in jobs],
            "priority": [int(j.priority) for j in jobs], "args": [j.args for j in jobs],
            "kwargs": [j.kwargs for j in jobs],
            "max_attempts": [int(j.max_attempts) for j in jobs],
            "timeout": [None if j.timeout is None else float(j.timeout) for j in jobs],
            "run_at": [j.run_at for j in jobs], "unique_key": [j.unique_key for j in jobs],
            "concurrency_key": [j.concurrency_key for j in jobs],
        }
        return [r[0] for r in conn.execute(INSERT_JOBS, params).fetchall()]

    @staticmethod
    def _copy(conn: Conn, jobs: Sequence[NewJob], now: datetime | None) -> list[int]:
        """Many jobs: draw their ids first (in order), then stream the rows with COPY."""
        row = conn.execute(ID_SEQUENCE, (now,)).fetchone()
        assert row is not None
        sequence, at = row
        drawn = conn.execute(pgsql.SQL(NEXT_IDS).format(pgsql.Literal(sequence)), (len(jobs),)).fetchone()
        assert drawn is not None
        ids = sorted(map(int, drawn[0].split(",")))
        ready = False
        stamp = at.isoformat()
        lines = []
        for job_id, j in zip(ids, jobs, strict=True):
            state = "ready" if j.run_at is None or j.run_at <= at else "scheduled"
            ready = ready or state == "ready"
            lines.append("\t".join((
                str(job_id), _copy_text(j.name), _copy_text(j.queue), str(int(j.priority)), state,
                _copy_text(j.args), _copy_text(j.kwargs), str(int(j.max_attempts)),
                "\\N" if j.timeout is None else repr(float(j.timeout)),
                stamp if j.run_at is None else j.run_at.isoformat(), stamp,
                _copy_text(j.unique_key), _copy_text(j.concurrency_key),
            )))
        lines.append("")
        # the rows as COPY text, built in one pass: psycopg's write_row() formats each value
        # through its dumpers, which cost more than the database's own work per row
        with conn.cursor().copy(COPY_JOBS) as copy:
            copy.write("\n".join(lines))
        if ready:
            conn.execute(f"SELECT pg_notify('{CHANNEL}', '')")
        return ids

    def job_get(self, job_id: int) -> JobRecord | None:
        rows = self._rows(f"SELECT {c.JOB_COLUMNS} FROM conveyor_jobs WHERE id = %s", (job_id,))
        return c.job_from_row(rows[0], _dt) if rows else None

    def job_list(self, filter: JobFilter) -> list[JobRecord]:
        where: list[str] = []
        params: list[Any] = []
        if filter.states:
            where.append("state = ANY(%s)")
            params.append([str(s) for s in filter.states])
            if c.quiet(filter.states):
                where.append(c.QUIET_SQL)
        for column, value in (
            ("queue", filter.queue), ("name", filter.name), ("worker_id", filter.worker_id)
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if filter.ids:
            where.append("id = ANY(%s::bigint[])")
            params.append(list(filter.ids))
        if filter.before_id is not None:
            where.append("id < %s")
            params.append(filter.before_id)
        sql = f"SELECT {c.JOB_COLUMNS} FROM conveyor_jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        params.append(filter.limit)
        return [c.job_from_row(r, _dt) for r in self._rows(sql, params)]

    def job_claim(
        self, worker_id: str, queue: str, limit: int, *, suspects: bool = False,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        statement = CLAIM_SUSPECT if suspects else CLAIM
        with self._hot() as conn:
            rows = conn.execute(statement, _claim_params(worker_id, queue, limit, now)).fetchall()
        return _claimed(rows)

    def job_finish_many(
        self, outcomes: Sequence[JobOutcome], *, now: datetime | None = None
    ) -> list[bool]:
        if not outcomes:
            return []
        return _accepted(outcomes, self._rows(FINISH, _finish_params(outcomes, now)))

    def job_finish_and_claim(
        self, outcomes: Sequence[JobOutcome], worker_id: str, queue: str, limit: int,
        *, now: datetime | None = None,
    ) -> tuple[list[bool], list[JobRecord]]:
        params = {**_finish_params(outcomes, now), **_claim_params(worker_id, queue, limit, now)}
        with self._hot() as conn:
            rows = conn.execute(FINISH_AND_CLAIM, params).fetchall()
        accepted = set(rows[0][0] or ())
        claimed = [r[1:] for r in rows if r[1] is not None]
        return [i + 1 in accepted for i in range(len(outcomes))], _claimed(claimed)

    def job_release(
        self, leases: Sequence[tuple[int, str]], *, reason: str | None = None,
        started: bool = True, now: datetime | None = None,
    ) -> int:
        if not leases:
            return 0
        params = {
            "now": now, "ids": [job_id for job_id, _ in leases],
            "leases": [lease for _, lease in leases], "started": started,
            "message": reason or "worker shut down before the job finished; attempt not counted",
        }
        return int(self._rows(RELEASE, params)[0][0])

    def job_progress(
        self, job_id: int, lease: str, percent: float | None, message: str | None,
        *, now: datetime | None = None,
    ) -> bool:
        params = {"now": now, "id": job_id, "lease": lease, "percent": percent, "message": message}
        progress = "" if percent is None else ", progress = %(percent)s, progress_message = %(message)s"
        sql = (
            f"UPDATE conveyor_jobs SET heartbeat_at = {NOW}{progress}"
            " WHERE id = %(id)s AND lease = %(lease)s"
        )
        return self._count(sql, params) == 1

    def job_log(self, job_id: int, attempt: int, message: str, *, now: datetime | None = None) -> None:
        self._count(
            "INSERT INTO conveyor_logs (job_id, attempt, at, message)"
            f" VALUES (%(id)s, %(attempt)s, {NOW}, %(message)s)",
            {"now": now, "id": job_id, "attempt": attempt, "message": message},
        )

    def job_logs(self, job_id: int) -> list[LogRecord]:
        rows = self._rows(
            "SELECT job_id, attempt, at, message FROM conveyor_logs WHERE job_id = %s ORDER BY id",
            (job_id,),
        )
        return [LogRecord(r[0], r[1], r[2].astimezone(UTC), r[3]) for r in rows]

    def job_attempts(self, job_id: int) -> list[AttemptRecord]:
        rows = self._rows(ATTEMPTS, (job_id, job_id, job_id))
        return [AttemptRecord(**c.attempt_fields(r, _dt)) for r in rows]

    def job_cancel(self, job_id: int, *, now: datetime | None = None) -> JobState | None:
        params = {"now": now, "id": job_id}
        with self._tx() as conn:
            conn.execute(CANCEL_WAITING, params)
            conn.execute(CANCEL_RUNNING, params)
            row = conn.execute("SELECT state FROM conveyor_jobs WHERE id = %(id)s", params).fetchone()
        return JobState(row[0]) if row else None

    def job_retry(self, job_ids: Sequence[int], *, now: datetime | None = None) -> int:
        if not job_ids:
            return 0
        return int(self._rows(RETRY, {"now": now, "ids": list(job_ids)})[0][0])

    def job_discard(self, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        return int(self._rows(DISCARD, {"ids": list(job_ids)})[0][0])

    def job_ids_by_state(self, state: JobState, *, queue: str | None = None) -> list[int]:
        sql = "SELECT id FROM conveyor_jobs WHERE state = %(state)s"
        if c.quiet([state]):
            sql += f" AND {c.QUIET_SQL}"
        if queue is not None:
            sql += " AND queue = %(queue)s"
        rows = self._rows(sql + " ORDER BY id", {"state": str(state), "queue": queue})
        return [r[0] for r in rows]

    # --- time-driven duties ----------------------------------------------------------------
    def jobs_promote(
        self, *, now: datetime | None = None, include_retries: bool = False, limit: int = 10_000
    ) -> int:
        params = {"now": now, "retries": include_retries, "limit": limit}
        return int(self._rows(PROMOTE, params)[0][0])

    def jobs_prune(self, *, succeeded_before: datetime, dead_before: datetime) -> int:
        params = {"succeeded_before": succeeded_before, "dead_before": dead_before}
        total = 0
        while (n := int(self._rows(PRUNE, params)[0][0])) > 0:
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
        return [c.job_from_row(r, _dt) for r in self._rows(OVERDUE, params)]

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
            "reason": reason, "finished": c.lost_reason(Held.FINISHED, reason),
        }
        return [r[0] for r in self._rows(RESCUE, params)]

    def job_lost(
        self, job_id: int, lease: str, reason: str, *, poison_after: int = POISON_AFTER,
        now: datetime | None = None,
    ) -> JobState | None:
        params = {"now": now, "id": job_id, "lease": lease, "poison_after": poison_after,
                  "reason": reason, "poisoned": c.poisoned_reason(poison_after, reason)}
        rows = self._rows(LOST, params)
        return JobState(rows[0][0]) if rows else None

    # --- queues ----------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None:
        self._count(SET_PAUSED, {"name": name, "paused": True})

    def queue_resume(self, name: str) -> None:
        self._count(SET_PAUSED, {"name": name, "paused": False})

    def queue_stats(self) -> list[QueueStats]:
        with self._connect() as conn:
            counted = conn.execute(c.QUEUE_COUNTS).fetchall()
            oldest = dict(conn.execute(
                "SELECT queue, MIN(run_at) FROM conveyor_jobs WHERE state = 'ready' GROUP BY queue"
            ).fetchall())
            paused = dict(conn.execute("SELECT name, paused FROM conveyor_queues").fetchall())
        counts: dict[str, dict[JobState, int]] = {}
        for queue, state, n in counted:
            counts.setdefault(queue, {})[JobState(state)] = n
        return [
            QueueStats(q, bool(paused.get(q)), counts.get(q, {}), _dt(oldest.get(q)))
            for q in sorted(set(counts) | set(paused))
        ]

    # --- processes -------------------------------------------------------------------------
    def process_register(self, process: ProcessRecord) -> None:
        p = process
        self._count(REGISTER, (
            p.id, p.kind, p.host, p.pid, p.started_at, p.heartbeat_at, p.supervisor_id,
            json.dumps(list(p.queues)), p.concurrency, json.dumps(list(p.job_names)),
        ))

    def process_heartbeat(self, process_id: str, *, now: datetime | None = None) -> list[HeldJob]:
        rows = self._rows(HEARTBEAT, {"now": now, "id": process_id})
        return [HeldJob(r[0], r[1], bool(r[2])) for r in rows]

    def process_deregister(self, process_id: str) -> None:
        self._count("DELETE FROM conveyor_processes WHERE id = %s", (process_id,))

    def process_list(self) -> list[ProcessRecord]:
        rows = self._rows(
            f"SELECT {c.PROCESS_COLUMNS} FROM conveyor_processes ORDER BY started_at, id"
        )
        return [c.process_from_row(r, _dt) for r in rows]

    def processes_stale(self, older_than_seconds: float, *, now: datetime | None = None) -> list[str]:
        rows = self._rows(
            "SELECT id FROM conveyor_processes"
            f" WHERE heartbeat_at < {NOW} - make_interval(secs => %(age)s)"
            " UNION SELECT DISTINCT worker_id FROM conveyor_jobs WHERE state = 'running'"
            f" AND heartbeat_at < {NOW} - make_interval(secs => %(age)s)"
            " AND worker_id NOT IN (SELECT id FROM conveyor_processes) ORDER BY 1",
            {"now": now, "age": float(older_than_seconds)},
        )
        return [r[0] for r in rows]

    # --- leadership ------------------------------------------------------------------------
    def leader_acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Leadership is a session advisory lock on a connection kept for (name, holder).

        ``ttl`` is unused: the lock lives exactly as long as that session, so a leader that dies
        (or loses its connection) frees it at once, and a live one needs no renewal."""
        key = (name, holder)
        with self._leader_lock, self._errors():
            conn, holding = self._leaders.pop(key, (None, False))
            if conn is not None:
                try:
                    holding = self._leader_try(conn, name, holding)
                except psycopg.OperationalError:  # the session died, and its lock with it
                    _close_quietly(conn)
                    conn = None
            if conn is None:
                conn = psycopg.connect(self._conninfo, autocommit=True)
                try:
                    holding = self._leader_try(conn, name, False)
                except BaseException:
                    _close_quietly(conn)
                    raise
            self._leaders[key] = (conn, holding)
            return holding

    @staticmethod
    def _leader_try(conn: Conn, name: str, holding: bool) -> bool:
        if holding:  # still connected means still locked; don't stack a second lock
            conn.execute("SELECT 1")
            return True
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s)", (_advisory_key(f"conveyor:leader:{name}"),)
        ).fetchone()
        return bool(row and row[0])

    def leader_release(self, name: str, holder: str) -> None:
        with self._leader_lock:
            conn, holding = self._leaders.pop((name, holder), (None, False))
        if conn is not None:
            if holding:
                with suppress(psycopg.Error):
                    conn.execute(
                        "SELECT pg_advisory_unlock(%s)", (_advisory_key(f"conveyor:leader:{name}"),)
                    )
            _close_quietly(conn)  # ending the session would free the lock anyway

    # --- wake-ups --------------------------------------------------------------------------
    def wait_for_jobs(self, timeout: float) -> None:
        """Block on LISTEN conveyor_jobs up to ``timeout``. Never raises: if the listening
        connection broke, drop it, sleep out the timeout, and reconnect on the next call."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._listen_lock:
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = psycopg.connect(self._conninfo, autocommit=True)
                    self._listener.execute(f"LISTEN {CHANNEL}")
                for _ in self._listener.notifies(timeout=max(timeout, 0.0), stop_after=1):
                    pass
                for _ in self._listener.notifies(timeout=0):  # one wake-up per burst
                    pass
                return
            except psycopg.Error:
                _close_quietly(self._listener)
                self._listener = None
        time.sleep(max(0.0, deadline - time.monotonic()))

    # --- health ----------------------------------------------------------------------------
    def health_facts(
        self, *, stale_after: float, timeout_grace: float = 0.0, overdue_after: float = 60.0,
        recent: float = 3600.0, limit: int = 50, now: datetime | None = None,
    ) -> HealthFacts:
        with self._connect() as conn:
            row = conn.execute(HEALTH_CLOCK, {"now": now}).fetchone()
            assert row is not None
            clock, at = row
            params = {"at": at, "grace": float(timeout_grace), "stale": float(stale_after),
                      "limit": limit, "overdue": float(overdue_after), "recent": float(recent)}
            waiting = conn.execute(c.HEALTH_WAITING).fetchall()
            running = conn.execute(c.HEALTH_RUNNING).fetchall()
            stuck = conn.execute(HEALTH_STUCK, params).fetchall()
            overdue = conn.execute(HEALTH_OVERDUE, params).fetchone() or (0, None)
            dead = conn.execute(HEALTH_DEAD, params).fetchall()
            unknown = conn.execute(HEALTH_UNKNOWN, params).fetchall()
        return HealthFacts(
            now=at.astimezone(UTC), store_clock=clock.astimezone(UTC),
            waiting_by_name=dict(waiting), running_by_worker=dict(running),
            stuck=tuple(c.job_from_row(r, _dt) for r in stuck),
            overdue=int(overdue[0]), oldest_overdue_at=_dt(overdue[1]),
            dead_recent={(name, cls): n for name, cls, n in dead}, unknown_recent=dict(unknown),
        )

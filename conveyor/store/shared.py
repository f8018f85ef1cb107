"""What both stores compute alike: column lists, row conversion, state-set SQL, the job-list
filter, queue stats, the schema-version check, migration files. No driver is imported here;
where the SQL differs only in its placeholder, the placeholder is a parameter."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from ..errors import CorruptRow, DuplicateJob, SchemaError
from ..models import (
    FINISHED_STATES,
    QUIET_STATES,
    SUSPECT_AT,
    UNFINISHED_STATES,
    WAITING_STATES,
    AttemptOutcome,
    Inserted,
    JobFilter,
    JobRecord,
    JobState,
    LimitUsage,
    NewJob,
    ProcessRecord,
    QueueStats,
)
from .base import SCHEMA_VERSION

JOB_COLUMNS = (
    "id, name, queue, priority, state, args, kwargs, attempt, max_attempts, timeout, run_at,"
    " created_at, started_at, finished_at, heartbeat_at, worker_id, lease, result, error,"
    " progress, progress_message, cancel_requested, lost_count, unique_key, concurrency_key,"
    " concurrency_max, rate_key, rate_count, rate_period, sensitive"
)
# jobs with no flow control leave the columns after concurrency_key at their defaults
PLAIN_INSERT_COLUMNS = (
    "name, queue, priority, state, args, kwargs, max_attempts, timeout, run_at, created_at,"
    " unique_key, concurrency_key"
)
INSERT_COLUMNS = (
    f"{PLAIN_INSERT_COLUMNS}, concurrency_max, unique_started, rate_key, rate_count, rate_period,"
    " sensitive"
)
PROCESS_COLUMNS = (
    "id, kind, host, pid, started_at, heartbeat_at, supervisor_id, queues, concurrency, job_names"
)
ATTEMPT_COLUMNS = (
    "job_id, attempt, worker_id, started_at, finished_at, outcome, error_class, error_message,"
    " traceback"
)


# --- sets of states as SQL ---------------------------------------------------------------------
def _ordered(states: Iterable[JobState | str]) -> list[str]:
    """The states' names in JobState's order, so the same set always reads the same."""
    wanted = {str(s) for s in states}
    return [s.value for s in JobState if s.value in wanted]


def state_in(states: Iterable[JobState | str], column: str = "state") -> str:
    """``state IN ('a', 'b')`` for a set of states."""
    return f"{column} IN ({', '.join(repr(s) for s in _ordered(states))})"


def state_any(states: Iterable[JobState | str], column: str = "state") -> str:
    """``(state = 'a' OR state = 'b')``: the form the partial indexes of migration 0002 are
    written in. SQLite uses a partial index only when a query repeats its condition word for
    word, so a query that wants one of those indexes says it this way."""
    return "(" + " OR ".join(f"{column} = '{s}'" for s in _ordered(states)) + ")"


FINISHED_SQL = state_any(FINISHED_STATES)
QUIET_SQL = state_any(QUIET_STATES)
WAITING_SQL = state_in(WAITING_STATES)
# the predicate of the unique index on unique_key: SQLite's words (migration 0002) and
# PostgreSQL's (0001); an upsert names the index by repeating its predicate
UNIQUE_HELD_OR = f"unique_key IS NOT NULL AND {state_any(UNFINISHED_STATES)}"
UNIQUE_HELD_IN = f"unique_key IS NOT NULL AND {state_in(UNFINISHED_STATES)}"


def quiet(states: Sequence[Any]) -> bool:
    """True if every one of ``states`` (JobState or str) is a quiet one (indexed)."""
    return bool(states) and all(str(s) in QUIET_STATES for s in states)


# claims: ordinary jobs, and suspects (lost SUSPECT_AT times in a row), which run only alone;
# each condition repeats its partial index's word for word (SQLite needs that to use it)
PICK_READY = f"state = 'ready' AND lost_count < {SUSPECT_AT}"
PICK_SUSPECT = f"state = 'ready' AND lost_count >= {SUSPECT_AT}"
# a job made runnable (promoted, retried) waits for a slot if it has a concurrency key
# an attempt that ended on its own while a cancellation it never heard of was pending
UNHEARD = "outcome NOT IN ('cancelled', 'cancel_forced')"
READY_OR_BLOCKED = "CASE WHEN concurrency_key IS NULL THEN 'ready' ELSE 'blocked' END"

# jobs by queue and state, each part read through its partial index (succeeded not counted)
QUEUE_COUNTS = (
    "SELECT queue, state, COUNT(*) FROM conveyor_jobs"
    f" WHERE {state_in(QUIET_STATES - {JobState.CANCELLED})} AND {QUIET_SQL}"
    " GROUP BY queue, state"
    " UNION ALL SELECT queue, 'ready', COUNT(*) FROM conveyor_jobs WHERE state = 'ready'"
    " GROUP BY queue"
    " UNION ALL SELECT queue, 'running', COUNT(*) FROM conveyor_jobs WHERE state = 'running'"
    " GROUP BY queue"
)
QUEUE_OLDEST = "SELECT queue, MIN(run_at) FROM conveyor_jobs WHERE state = 'ready' GROUP BY queue"
QUEUE_PAUSED = "SELECT name, paused FROM conveyor_queues"

# conveyor doctor's aggregates that read the same in both stores' SQL
HEALTH_WAITING = (
    "SELECT name, CAST(SUM(n) AS INTEGER) FROM ("
    "SELECT name, COUNT(*) AS n FROM conveyor_jobs WHERE state = 'ready' GROUP BY name"
    " UNION ALL SELECT name, COUNT(*) FROM conveyor_jobs"
    f" WHERE {state_in({JobState.SCHEDULED, JobState.FAILED})} AND {QUIET_SQL}"
    " GROUP BY name) AS w GROUP BY name"
)
HEALTH_RUNNING = (
    "SELECT worker_id, COUNT(*) FROM conveyor_jobs WHERE state = 'running'"
    " AND worker_id IS NOT NULL GROUP BY worker_id"
)


def attempts_query(param: str) -> str:
    """Every attempt of one job (``param`` is the placeholder of its id, given three times):
    the conveyor_attempts rows, then the successful attempt, which has no row of its own: the
    job row itself records it (started_at, finished_at, worker_id, attempt). Rows written when
    a success had its own row, or that finished anyway after a cancellation was asked for (a
    ``finished_anyway`` row of the same attempt), are not listed twice."""
    return (
        f"SELECT {ATTEMPT_COLUMNS} FROM (SELECT 0 AS k, id AS n, {ATTEMPT_COLUMNS}"
        f" FROM conveyor_attempts WHERE job_id = {param}"
        " UNION ALL SELECT 1, 0, id, attempt, worker_id, started_at, finished_at, 'succeeded',"
        " NULL, NULL, NULL FROM conveyor_jobs"
        f" WHERE id = {param} AND state = 'succeeded' AND NOT EXISTS (SELECT 1 FROM"
        f" conveyor_attempts c WHERE c.job_id = {param} AND (c.outcome = 'succeeded' OR"
        " (c.outcome = 'finished_anyway' AND c.attempt = conveyor_jobs.attempt)))) AS a"
        " ORDER BY k, n"
    )


# --- the job list and search --------------------------------------------------------------------
Many = Callable[[Sequence[Any]], tuple[str, list[Any]]]


def _filtered(filter: JobFilter, mark: str, many: Many) -> tuple[list[str], list[Any]]:
    """The conditions of ``filter`` (all but its limit) and their parameters."""
    where: list[str] = []
    params: list[Any] = []

    def add(column: str, values: Sequence[Any]) -> None:
        text, more = many(values)
        where.append(f"{column} {text}")
        params.extend(more)

    if filter.states:
        add("state", [str(s) for s in filter.states])
        if quiet(filter.states):
            where.append(QUIET_SQL)
        elif _hot(filter):
            where.append(f"state = '{filter.states[0]}'")  # literal: SQLite's partial index
    for column, value in (
        ("queue", filter.queue), ("name", filter.name), ("worker_id", filter.worker_id)
    ):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    if filter.ids:
        add("id", list(filter.ids))
    if filter.before_id is not None:
        where.append(f"id < {mark}")
        params.append(filter.before_id)
    return where, params


def _hot(filter: JobFilter) -> bool:
    """Only ready or only running jobs: few, with partial indexes of their own. Read through
    those and sorted (``+id`` keeps SQLite off the primary key, whose newest-first walk would
    cross every finished job when few are running)."""
    return len(filter.states) == 1 and filter.states[0] in (JobState.READY, JobState.RUNNING)


def _jobs_where(where: Sequence[str], mark: str, hot: bool = False) -> str:
    sql = f"SELECT {JOB_COLUMNS} FROM conveyor_jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY {'+id' if hot else 'id'} DESC LIMIT {mark}"


def job_list_query(filter: JobFilter, mark: str, many: Many) -> tuple[str, list[Any]]:
    """``SELECT`` for ``job_list``, newest first, and its parameters. ``mark`` is the driver's
    placeholder (``?`` or ``%s``); ``many(values)`` renders "is one of these values" for it
    (``IN (?, ?)`` or ``= ANY(%s)``) as the text after the column, and its parameters."""
    where, params = _filtered(filter, mark, many)
    return _jobs_where(where, mark, _hot(filter)), [*params, filter.limit]


def search_window_query(before_id: int | None, budget: int, mark: str) -> tuple[str, list[Any]]:
    """The lowest id among the ``budget`` newest jobs below ``before_id``, through the primary
    key; no row when fewer jobs are left than that."""
    below = "" if before_id is None else f" WHERE id < {mark}"
    params: list[Any] = [] if before_id is None else [before_id]
    sql = f"SELECT id FROM conveyor_jobs{below} ORDER BY id DESC LIMIT 1 OFFSET {mark}"
    return sql, [*params, max(1, budget) - 1]


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its ``\\``, ``%`` and ``_`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def job_search_query(
    filter: JobFilter, text: str, low: int | None, mark: str, many: Many, like: str,
) -> tuple[str, list[Any]]:
    """``SELECT`` of the jobs matching ``filter`` with ids from ``low`` (None: the first) whose
    args, kwargs or error contain ``text``; ``like`` is the dialect's case-insensitive LIKE."""
    where, params = _filtered(filter, mark, many)
    if low is not None:
        where.append(f"id >= {mark}")
        params.append(low)
    if text:  # "": every job of the filter in the window (a bounded list)
        pattern = like_pattern(text)
        where.append("(" + " OR ".join(
            f"{column} {like} {mark} ESCAPE '\\'" for column in ("args", "kwargs", "error")
        ) + ")")
        params += [pattern, pattern, pattern]
    return _jobs_where(where, mark), [*params, filter.limit]


def search_next(found: Sequence[JobRecord], limit: int, low: int | None) -> int | None:
    """Where the next search goes on from: below the last match when the page is full, else
    below the window (None: the window reached the oldest job)."""
    if found and len(found) >= limit:
        return found[-1].id
    return low


def rate_backlog_query(mark: str) -> str:
    """Rate keys with jobs waiting, and how many of them were enqueued since ``mark`` (a time).
    Waiting keyed jobs are ready (their own index) or sent back to scheduled (the due index:
    its condition repeated for SQLite), never found by a scan of finished jobs."""
    return (
        "SELECT rate_key, MAX(rate_count), MAX(rate_period), COUNT(*),"
        f" SUM(CASE WHEN created_at > {mark} THEN 1 ELSE 0 END) FROM ("
        " SELECT rate_key, rate_count, rate_period, created_at FROM conveyor_jobs"
        " WHERE rate_key IS NOT NULL AND state = 'ready'"
        " UNION ALL SELECT rate_key, rate_count, rate_period, created_at FROM conveyor_jobs"
        " WHERE state IN ('scheduled', 'failed') AND state = 'scheduled' AND rate_key IS NOT NULL"
        ") AS w GROUP BY rate_key ORDER BY rate_key"
    )


def queue_stats(
    counted: Iterable[Sequence[Any]], oldest: dict[str, Any], paused: dict[str, Any],
    to_dt: Callable[[Any], Any],
) -> list[QueueStats]:
    """QueueStats from the rows of QUEUE_COUNTS, QUEUE_OLDEST and QUEUE_PAUSED."""
    counts: dict[str, dict[JobState, int]] = {}
    for queue, state, n in counted:
        counts.setdefault(queue, {})[JobState(state)] = n
    return [
        QueueStats(q, bool(paused.get(q)), counts.get(q, {}), to_dt(oldest.get(q)))
        for q in sorted(set(counts) | set(paused))
    ]


# --- schema ------------------------------------------------------------------------------------
def check_schema_version(where: str, found: int) -> None:
    """Refuse a store whose schema is newer than this code (SchemaError, one line)."""
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"{where} has schema version {found}, newer than this conveyor understands"
            f" ({SCHEMA_VERSION}); upgrade conveyor"
        )


def migrations(backend: str) -> list[tuple[int, str]]:
    """(version, sql) for every migration file of a backend, in order."""
    folder = resources.files("conveyor.store") / "migrations" / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


# --- rows and records --------------------------------------------------------------------------
_STATES = {state.value: state for state in JobState}


def job_from_row(row: Sequence[Any], to_dt: Any) -> JobRecord:
    try:
        return _job(row, to_dt)
    except (ValueError, TypeError) as e:
        raise CorruptRow(f"job {row[0]}: its stored row cannot be read ({e})") from None


def _job(row: Sequence[Any], to_dt: Any) -> JobRecord:
    return JobRecord(
        id=row[0], name=row[1], queue=row[2], priority=row[3], state=_STATES.get(row[4]) or JobState(row[4]),
        args=row[5], kwargs=row[6], attempt=row[7], max_attempts=row[8], timeout=row[9],
        run_at=to_dt(row[10]), created_at=to_dt(row[11]), started_at=to_dt(row[12]),
        finished_at=to_dt(row[13]), heartbeat_at=to_dt(row[14]), worker_id=row[15],
        lease=row[16], result=row[17], error=row[18], progress=row[19],
        progress_message=row[20], cancel_requested=bool(row[21]), lost_count=row[22],
        unique_key=row[23], concurrency_key=row[24], concurrency_max=row[25],
        rate_key=row[26], rate_count=row[27], rate_period=row[28],
        sensitive=tuple(json.loads(row[29])) if row[29] else (),
    )


def limit_usage(rows: Iterable[Sequence[Any]]) -> list[LimitUsage]:
    """LimitUsage per key, by key, from USAGE rows (admitted and blocked counted apart)."""
    found: dict[str, list[int]] = {}
    for key, admitted, blocked, most in rows:
        got = found.setdefault(key, [0, 0, 1])
        got[0], got[1], got[2] = got[0] + int(admitted), got[1] + int(blocked), max(got[2], int(most or 1))
    return [LimitUsage(k, *found[k]) for k in sorted(found)]


def claimed(rows: Iterable[Sequence[Any]], to_dt: Any) -> list[JobRecord]:
    """Claimed jobs in the order they should start: highest priority first, then oldest."""
    jobs = [job_from_row(r, to_dt) for r in rows]
    jobs.sort(key=lambda j: (-j.priority, j.id))
    return jobs


def process_from_row(row: Sequence[Any], to_dt: Any) -> ProcessRecord:
    return ProcessRecord(
        id=row[0], kind=row[1], host=row[2], pid=row[3], started_at=to_dt(row[4]),
        heartbeat_at=to_dt(row[5]), supervisor_id=row[6], queues=tuple(json.loads(row[7])),
        concurrency=row[8], job_names=tuple(json.loads(row[9])),
    )


def attempt_fields(row: Sequence[Any], to_dt: Any) -> dict[str, Any]:
    try:
        return _attempt(row, to_dt)
    except (ValueError, TypeError) as e:
        raise CorruptRow(f"job {row[0]}: its attempt {row[1]} cannot be read ({e})") from None


def _attempt(row: Sequence[Any], to_dt: Any) -> dict[str, Any]:
    return dict(
        job_id=row[0], attempt=row[1], worker_id=row[2], started_at=to_dt(row[3]),
        finished_at=to_dt(row[4]), outcome=AttemptOutcome(row[5]), error_class=row[6],
        error_message=row[7], traceback=row[8],
    )


# --- words and tokens --------------------------------------------------------------------------
SHUTDOWN_REASON = "worker shut down before the job finished; attempt not counted"


def lost_reason(held: str, reason: str) -> str:
    """The attempt message of a job rescued from a dead process, by how far it had got."""
    if held == "finished":
        return f"{reason}; the job had finished, but its outcome was not recorded: run again"
    return reason


def poisoned_reason(poison_after: int, reason: str) -> str:
    return (f"{reason}; it killed its process {poison_after} times in a row, the last time"
            " running alone in a fresh process (poison pill), not retried")


def refuse_held(jobs: Sequence[NewJob], inserted: Sequence[Inserted], where: str) -> None:
    """DuplicateJob for the first job that asked to raise and found its unique key held; the
    caller raises it inside the insert's transaction, so the batch is not written."""
    for job, got in zip(jobs, inserted, strict=True):
        if job.raise_if_held and not got.created:
            raise DuplicateJob(
                duplicate_message(job.unique_key, where), existing_id=got.id,
                unique_key=job.unique_key,
            )


def plain(jobs: Sequence[NewJob]) -> bool:
    """No job of ``jobs`` has flow control or sensitive arguments: written with
    PLAIN_INSERT_COLUMNS, ready or not."""
    return all(j.concurrency_key is None and j.rate_key is None and j.unique_key is None
               and not j.sensitive for j in jobs)


def sensitive_text(job: NewJob) -> str | None:
    """The ``sensitive`` column of a job: its keys as a JSON list, NULL for none."""
    return json.dumps(list(job.sensitive)) if job.sensitive else None


def state_on_insert(job: NewJob, ready: bool) -> str:
    """A job due now is ready, or blocked when it has a concurrency key (the store admits it)."""
    if not ready:
        return "scheduled"
    return "ready" if job.concurrency_key is None else "blocked"


def duplicate_message(key: str | None, where: str) -> str:
    shown = "" if key is None else f" {key!r}"
    return f"an unfinished job with unique key{shown} already exists in {where}"


_LEASE_PREFIX = os.urandom(6).hex()  # this import's; the pid tells forked children apart
_lease_counter = itertools.count(1)


def new_lease() -> str:
    """A token unique to one claim, fencing every later write of that attempt. Unique without a
    system call per claim: random per import, the process id, then a counter."""
    return f"{_LEASE_PREFIX}{os.getpid():x}.{next(_lease_counter):x}"

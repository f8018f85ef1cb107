"""Pieces both stores share: column lists, row conversion, migration files."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

from ..models import SUSPECT_AT, AttemptOutcome, JobRecord, JobState, ProcessRecord

JOB_COLUMNS = (
    "id, name, queue, priority, state, args, kwargs, attempt, max_attempts, timeout, run_at,"
    " created_at, started_at, finished_at, heartbeat_at, worker_id, lease, result, error,"
    " progress, progress_message, cancel_requested, lost_count, unique_key, concurrency_key"
)
PROCESS_COLUMNS = (
    "id, kind, host, pid, started_at, heartbeat_at, supervisor_id, queues, concurrency, job_names"
)
ATTEMPT_COLUMNS = (
    "job_id, attempt, worker_id, started_at, finished_at, outcome, error_class, error_message,"
    " traceback"
)
FINISHED = ("succeeded", "dead", "cancelled")

# States a job that runs and succeeds never passes through. Listing by state or name is indexed
# for these only (migration 0002); a query that wants those indexes repeats this predicate
# literally, since SQLite uses a partial index only when the query names its condition.
QUIET = ("scheduled", "failed", "dead", "cancelled", "blocked")
QUIET_SQL = (
    "(state = 'scheduled' OR state = 'failed' OR state = 'dead' OR state = 'cancelled'"
    " OR state = 'blocked')"
)


def quiet(states: Sequence[Any]) -> bool:
    """True if every one of ``states`` (JobState or str) is one of QUIET."""
    return bool(states) and all(str(s) in QUIET for s in states)


# jobs by queue and state, each part read through its partial index (succeeded not counted)
QUEUE_COUNTS = (
    "SELECT queue, state, COUNT(*) FROM conveyor_jobs"
    f" WHERE state IN ('scheduled', 'failed', 'dead', 'blocked') AND {QUIET_SQL}"
    " GROUP BY queue, state"
    " UNION ALL SELECT queue, 'ready', COUNT(*) FROM conveyor_jobs WHERE state = 'ready'"
    " GROUP BY queue"
    " UNION ALL SELECT queue, 'running', COUNT(*) FROM conveyor_jobs WHERE state = 'running'"
    " GROUP BY queue"
)

# conveyor doctor's aggregates that read the same in both stores' SQL
HEALTH_WAITING = (
    "SELECT name, CAST(SUM(n) AS INTEGER) FROM ("
    "SELECT name, COUNT(*) AS n FROM conveyor_jobs WHERE state = 'ready' GROUP BY name"
    " UNION ALL SELECT name, COUNT(*) FROM conveyor_jobs"
    f" WHERE state IN ('scheduled', 'failed') AND {QUIET_SQL} GROUP BY name) AS w GROUP BY name"
)
HEALTH_RUNNING = (
    "SELECT worker_id, COUNT(*) FROM conveyor_jobs WHERE state = 'running'"
    " AND worker_id IS NOT NULL GROUP BY worker_id"
)


def attempts_query(param: str) -> str:
    """Every attempt of one job (``param`` is the placeholder of its id, given three times):
    the conveyor_attempts rows, then the successful attempt, which has no row of its own: the
    job row itself records it (started_at, finished_at, worker_id, attempt). Rows written when
    a success had its own row are not listed twice."""
    return (
        f"SELECT {ATTEMPT_COLUMNS} FROM (SELECT 0 AS k, id AS n, {ATTEMPT_COLUMNS}"
        f" FROM conveyor_attempts WHERE job_id = {param}"
        " UNION ALL SELECT 1, 0, id, attempt, worker_id, started_at, finished_at, 'succeeded',"
        " NULL, NULL, NULL FROM conveyor_jobs"
        f" WHERE id = {param} AND state = 'succeeded' AND NOT EXISTS (SELECT 1 FROM"
        f" conveyor_attempts WHERE job_id = {param} AND outcome = 'succeeded')) AS a ORDER BY k, n"
    )
_LEASE_PREFIX = os.urandom(6).hex()  # this import's; the pid tells forked children apart
_lease_counter = itertools.count(1)


def new_lease() -> str:
    """A token unique to one claim, fencing every later write of that attempt. Unique without a
    system call per claim: random per import, the process id, then a counter."""
    return f"{_LEASE_PREFIX}{os.getpid():x}.{next(_lease_counter):x}"
WAITING = ("scheduled", "ready", "failed", "blocked")


def migrations(backend: str) -> list[tuple[int, str]]:
    """(version, sql) for every migration file of a backend, in order."""
    folder = resources.files("conveyor.store") / "migrations" / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


_STATES = {state.value: state for state in JobState}


def job_from_row(row: Sequence[Any], to_dt: Any) -> JobRecord:
    return JobRecord(
        id=row[0], name=row[1], queue=row[2], priority=row[3], state=_STATES.get(row[4]) or JobState(row[4]),
        args=row[5], kwargs=row[6], attempt=row[7], max_attempts=row[8], timeout=row[9],
        run_at=to_dt(row[10]), created_at=to_dt(row[11]), started_at=to_dt(row[12]),
        finished_at=to_dt(row[13]), heartbeat_at=to_dt(row[14]), worker_id=row[15],
        lease=row[16], result=row[17], error=row[18], progress=row[19],
        progress_message=row[20], cancel_requested=bool(row[21]), lost_count=row[22],
        unique_key=row[23], concurrency_key=row[24],
    )


def process_from_row(row: Sequence[Any], to_dt: Any) -> ProcessRecord:
    return ProcessRecord(
        id=row[0], kind=row[1], host=row[2], pid=row[3], started_at=to_dt(row[4]),
        heartbeat_at=to_dt(row[5]), supervisor_id=row[6], queues=tuple(json.loads(row[7])),
        concurrency=row[8], job_names=tuple(json.loads(row[9])),
    )


def attempt_fields(row: Sequence[Any], to_dt: Any) -> dict[str, Any]:
    return dict(
        job_id=row[0], attempt=row[1], worker_id=row[2], started_at=to_dt(row[3]),
        finished_at=to_dt(row[4]), outcome=AttemptOutcome(row[5]), error_class=row[6],
        error_message=row[7], traceback=row[8],
    )


def lost_reason(held: str, reason: str) -> str:
    """The attempt message of a job rescued from a dead process, by how far it had got."""
    if held == "finished":
        return f"{reason}; the job had finished, but its outcome was not recorded: run again"
    return reason


def poisoned_reason(poison_after: int, reason: str) -> str:
    return (f"{reason}; it killed its process {poison_after} times in a row, the last time"
            " running alone in a fresh process (poison pill), not retried")


# claims: ordinary jobs, and suspects (lost SUSPECT_AT times in a row), which run only alone;
# each condition repeats its partial index's word for word (SQLite needs that to use it)
PICK_READY = f"state = 'ready' AND lost_count < {SUSPECT_AT}"
PICK_SUSPECT = f"state = 'ready' AND lost_count >= {SUSPECT_AT}"

"""What both stores share of history sampling (see migration 0007): the window a sample
covers, the one statement that counts it, and how its rows become MinuteStats rows and
metric totals. Only the placeholders and the time arithmetic differ between the dialects.

A sample counts, since the previous one:
- enqueued: jobs with ids past the previous sample's highest (the primary key);
- succeeded and dead: jobs that finished so, through the finished-jobs index (a success has
  no attempt row: the job row records it), their durations (successes) and waits, up to
  ``SETTLE`` seconds before the sample;
- failed: attempts that ended in an error, a timeout or a memory limit (ids past the
  previous sample's highest attempt), with their durations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..models import (
    COUNTER_METRICS,
    HISTOGRAM_BOUNDS,
    AuditEntry,
    MetricTotal,
    MinuteStats,
    bucket_metric,
)
from .shared import FINISHED_SQL

# ids of each table one sample reads at most: after a gap wider than this (a bulk import, a
# restore) a sample counts the newest MAX_IDS and passes over the rest, so one sample stays
# cheap and the next is back to normal (at 16,000 jobs/s a 15 s sample reads 240,000)
MAX_IDS = 500_000
MAX_LOOKBACK = timedelta(hours=1)  # finishes older than this when a sample is late go uncounted
FIRST_LOOKBACK = timedelta(minutes=1)  # finishes the very first sample counts
# finishes are counted once this old: a worker's batch of outcomes commits a moment after its
# jobs ended (finished_at is when they ended), and a sample must not pass over them
SETTLE = timedelta(seconds=10)
FAILED_OUTCOMES = ("error", "timeout", "memory_exceeded")

Param = Callable[[str], str]  # a parameter's name -> the dialect's placeholder for it
Seconds = Callable[[str, str], str]  # (later, earlier) columns -> seconds between, at least 0


@dataclass(frozen=True)
class Window:
    """What one sample covers: ids in (from, to], finishes in (since, until]. ``marks`` are the
    stored marks it moves on from (from, unless a gap was passed over)."""

    minute: datetime
    job_from: int
    job_to: int
    attempt_from: int
    attempt_to: int
    since: datetime
    until: datetime
    marks: tuple[int, int] = (0, 0)


def window(
    now: datetime, marks: Sequence[Any] | None, top_job: int, top_attempt: int,
    to_dt: Callable[[Any], datetime | None],
) -> Window | None:
    """The window of a sample at ``now`` after the one ``marks`` records (minute, sampled_at,
    job_id, attempt_id; None: none yet), or None if ``now``'s minute has one already."""
    minute = now.replace(second=0, microsecond=0)
    last_minute, sampled_at, first_job, first_attempt = marks or (None, None, 0, 0)
    marked = (int(first_job), int(first_attempt))
    job_from = max(marked[0], top_job - MAX_IDS)
    attempt_from = max(marked[1], top_attempt - MAX_IDS)
    last = to_dt(last_minute)
    if last is not None and minute <= last:
        return None
    until = now - SETTLE
    since = to_dt(sampled_at) or until - FIRST_LOOKBACK
    return Window(
        minute=minute,
        job_from=job_from, job_to=max(job_from, min(top_job, job_from + MAX_IDS)),
        attempt_from=attempt_from,
        attempt_to=max(attempt_from, min(top_attempt, attempt_from + MAX_IDS)),
        since=min(max(since, until - MAX_LOOKBACK), until), until=until, marks=marked,
    )


def _buckets(column: str) -> list[str]:
    return [
        f"COUNT({column})" if bound == float("inf")
        else f"SUM(CASE WHEN {column} <= {bound!r} THEN 1 ELSE 0 END)"
        for bound in HISTOGRAM_BOUNDS
    ]


def sample_query(p: Param, seconds: Seconds) -> str:
    """Per queue and job name: enqueued, succeeded, failed, dead, then the duration sum, count
    and buckets, then the same for waits (see the module's docstring)."""
    none = "CAST(NULL AS double precision)"
    finished = (
        f"{FINISHED_SQL} AND finished_at > {p('since')} AND finished_at <= {p('until')}"
        " AND state <> 'cancelled'"
    )
    failed = ", ".join(f"'{o}'" for o in FAILED_OUTCOMES)
    parts = f"""
SELECT queue, name, 1 AS enq, 0 AS ok, 0 AS failed, 0 AS died, {none} AS d, {none} AS w
FROM conveyor_jobs WHERE id > {p('job_from')} AND id <= {p('job_to')}
UNION ALL
SELECT queue, name, 0, CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END, 0,
       CASE WHEN state = 'dead' THEN 1 ELSE 0 END,
       CASE WHEN state = 'succeeded' THEN {seconds('finished_at', 'started_at')} END,
       {seconds('started_at', 'run_at')}
FROM conveyor_jobs WHERE {finished}
UNION ALL
SELECT j.queue, j.name, 0, 0, 1, 0, {seconds('a.finished_at', 'a.started_at')}, {none}
FROM conveyor_attempts a JOIN conveyor_jobs j ON j.id = a.job_id
WHERE a.id > {p('attempt_from')} AND a.id <= {p('attempt_to')} AND a.outcome IN ({failed})"""
    totals = ", ".join([
        "SUM(enq)", "SUM(ok)", "SUM(failed)", "SUM(died)",
        "COALESCE(SUM(d), 0)", "COUNT(d)", *_buckets("d"),
        "COALESCE(SUM(w), 0)", "COUNT(w)", *_buckets("w"),
    ])
    return f"SELECT queue, name, {totals} FROM ({parts}) AS s GROUP BY queue, name"


TOPS = (
    "SELECT (SELECT COALESCE(MAX(id), 0) FROM conveyor_jobs),"
    " (SELECT COALESCE(MAX(id), 0) FROM conveyor_attempts)"
)
MARKS = "SELECT minute, sampled_at, job_id, attempt_id FROM conveyor_history_marks WHERE id = 1"
READY = "SELECT queue, COUNT(*), MIN(run_at) FROM conveyor_jobs WHERE state = 'ready' GROUP BY queue"
HISTORY_COLUMNS = (
    "minute, queue, enqueued, succeeded, failed, dead, ready, latency, duration_sum,"
    " duration_count"
)
AUDIT_COLUMNS = "id, at, actor, action, target, detail"
TOTALS = "SELECT queue, job, metric, value FROM conveyor_metric_totals ORDER BY queue, job, metric"


def mark(p: Param) -> str:
    """Move the marks past a sample, unless another sampler moved them first (no row then)."""
    m = "conveyor_history_marks"
    return (
        f"INSERT INTO {m} (id, minute, sampled_at, job_id, attempt_id) VALUES (1, {p('minute')},"
        f" {p('until')}, {p('job_to')}, {p('attempt_to')}) ON CONFLICT (id) DO UPDATE SET"
        " minute = excluded.minute, sampled_at = excluded.sampled_at,"
        " job_id = excluded.job_id, attempt_id = excluded.attempt_id"
        f" WHERE {m}.job_id = {p('job_marked')} AND {m}.attempt_id = {p('attempt_marked')}"
        f" AND ({m}.minute IS NULL OR {m}.minute < excluded.minute) RETURNING id"
    )


def history_insert(mark: str) -> str:
    return f"INSERT INTO conveyor_history ({HISTORY_COLUMNS}) VALUES ({', '.join([mark] * 10)})"


def total_add(mark: str) -> str:
    return (
        f"INSERT INTO conveyor_metric_totals (queue, job, metric, value)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT (queue, job, metric)"
        " DO UPDATE SET value = conveyor_metric_totals.value + excluded.value"
    )


def history_list(p: Param, by_queue: bool) -> str:
    queue = f" AND queue = {p('queue')}" if by_queue else ""
    return (
        f"SELECT {HISTORY_COLUMNS} FROM conveyor_history WHERE minute >= {p('since')}{queue}"
        " ORDER BY minute, queue"
    )


@dataclass(frozen=True)
class Tally:
    """A sample's rows: (queue, enqueued, succeeded, failed, dead, ready, latency,
    duration_sum, duration_count) per queue, and (queue, job, metric, value) to add."""

    history: list[tuple[Any, ...]]
    totals: list[tuple[str, str, str, float]]


def _family(name: str, total: float, count: int, buckets: Sequence[Any]) -> list[tuple[str, float]]:
    """A histogram's metrics, or none when it observed nothing."""
    if not count:
        return []
    found = [(bucket_metric(name, bound), float(n or 0))
             for bound, n in zip(HISTOGRAM_BOUNDS, buckets, strict=True)]
    return [(f"{name}_sum", float(total)), (f"{name}_count", float(count)), *found]


def tally(rows: Iterable[Sequence[Any]], ready: dict[str, tuple[int, float | None]]) -> Tally:
    """The history rows and metric totals of ``sample_query``'s rows; ``ready`` is the ready
    jobs per queue at sample time and the age in seconds of the oldest."""
    k = len(HISTOGRAM_BOUNDS)
    queues: dict[str, list[float]] = {}
    totals: list[tuple[str, str, str, float]] = []
    for row in rows:
        queue, job = row[0], row[1]
        counts = [int(n or 0) for n in row[2:6]]
        d_sum, d_count, d_buckets = float(row[6] or 0), int(row[7]), row[8 : 8 + k]
        w_sum, w_count, w_buckets = float(row[8 + k] or 0), int(row[9 + k]), row[10 + k :]
        got = queues.setdefault(queue, [0, 0, 0, 0, 0.0, 0])
        for i, n in enumerate(counts):
            got[i] += n
        got[4] += d_sum
        got[5] += d_count
        metrics = [(name, float(n)) for name, n in zip(COUNTER_METRICS, counts, strict=True) if n]
        metrics += _family("duration", d_sum, d_count, d_buckets)
        metrics += _family("wait", w_sum, w_count, w_buckets)
        totals += [(queue, job, metric, value) for metric, value in metrics]
    history: list[tuple[Any, ...]] = []
    for queue in sorted(set(queues) | set(ready)):
        enq, ok, failed, dead, spent, ran = queues.get(queue, [0, 0, 0, 0, 0.0, 0])
        n_ready, latency = ready.get(queue, (0, None))
        history.append((queue, int(enq), int(ok), int(failed), int(dead), int(n_ready), latency,
                        spent, int(ran)))
    return Tally(history, totals)


def minute_stats(row: Sequence[Any], to_dt: Callable[[Any], Any]) -> MinuteStats:
    return MinuteStats(
        minute=to_dt(row[0]), queue=row[1], enqueued=int(row[2]), succeeded=int(row[3]),
        failed=int(row[4]), dead=int(row[5]), ready=int(row[6]),
        latency=None if row[7] is None else float(row[7]), duration_sum=float(row[8]),
        duration_count=int(row[9]),
    )


def audit_entry(row: Sequence[Any], to_dt: Callable[[Any], Any]) -> AuditEntry:
    return AuditEntry(id=int(row[0]), at=to_dt(row[1]), actor=row[2], action=row[3],
                      target=row[4], detail=row[5])


def metric_total(row: Sequence[Any]) -> MetricTotal:
    return MetricTotal(queue=row[0], job=row[1], metric=row[2], value=float(row[3]))

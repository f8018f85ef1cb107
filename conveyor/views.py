"""JSON-ready shapes of what conveyor shows: a job, an attempt, a log line, a queue, a worker
process, a doctor finding and report, a recurring schedule and its ticks.

Every view is built from plain records and holds only dicts, lists, str, int, float, bool and
None, so ``json.dumps`` takes it as it is. The CLI's ``--json`` output and its tables render
from these; an HTTP API and the dashboard are meant to as well, so all of them always agree.
Nothing here reads the store.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import fields, replace
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from .cron import ScheduleInfo, TickRecord
from .models import (
    AttemptRecord,
    JobRecord,
    JobState,
    LimitUsage,
    LogRecord,
    ProcessRecord,
    QueueStats,
    RateBacklog,
)

View = dict[str, Any]
# the counts a queue view carries, in the order tables show them
QUEUE_STATES = (
    JobState.READY, JobState.SCHEDULED, JobState.RUNNING, JobState.FAILED, JobState.DEAD,
    JobState.BLOCKED,
)


class FindingLike(Protocol):
    """What a doctor finding carries (``conveyor.doctor.Finding``)."""

    @property
    def code(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def evidence(self) -> Sequence[str]: ...
    @property
    def fix(self) -> str: ...


# --- plain values ----------------------------------------------------------------------------
def iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def seconds_since(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else round(max(0.0, (now - when).total_seconds()), 3)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, Enum) else value


def _payload(text: str | None) -> Any:
    return None if text is None else json.loads(text)


REDACTED = "[redacted]"


def redact(value: Any, keys: Collection[str]) -> Any:
    """``value`` (decoded JSON) with the value of every object key in ``keys`` replaced by
    ``"[redacted]"``, at any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if k in keys else redact(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, keys) for v in value]
    return value


def shown_args(job: JobRecord) -> tuple[Any, Any]:
    """The job's positional and keyword arguments as they may be shown: the one place where
    stored arguments become visible. The values of the job's sensitive keys are redacted,
    wherever they are inside the arguments."""
    args, kwargs = _payload(job.args), _payload(job.kwargs)
    if not job.sensitive:
        return args, kwargs
    keys = frozenset(job.sensitive)
    at = {int(k[1:]) for k in keys if k.startswith("#") and k[1:].isdigit()}  # by position
    if at and isinstance(args, list):
        args = [REDACTED if i in at else v for i, v in enumerate(args)]
    return redact(args, keys), redact(kwargs, keys)


def redacted(job: JobRecord) -> JobRecord:
    """The job with its sensitive values redacted from ``args`` and ``kwargs`` (still JSON
    text), for what hands records on: event hooks, reports. The same job if it has none."""
    if not job.sensitive:
        return job
    args, kwargs = shown_args(job)
    return replace(job, args=json.dumps(args), kwargs=json.dumps(kwargs))


# --- records -------------------------------------------------------------------------------------
FLOW_KEYS = ("unique_key", "concurrency_key", "rate_key")


def job_view(job: JobRecord) -> View:
    """Every field of a job; args, kwargs and result as the JSON they are stored as."""
    view: View = {f.name: _plain(getattr(job, f.name)) for f in fields(job)}
    args, kwargs = shown_args(job)
    view.update(args=args, kwargs=kwargs, result=_payload(job.result))  # keys keep their places
    if job.sensitive:  # keys made from the arguments (a unique key hashes them all) stay hidden
        for key in FLOW_KEYS:
            if view[key] is not None:
                view[key] = REDACTED
    return view


def attempt_view(a: AttemptRecord) -> View:
    view = {f.name: _plain(getattr(a, f.name)) for f in fields(a)}
    view["duration_seconds"] = (
        None if a.finished_at is None else round((a.finished_at - a.started_at).total_seconds(), 3)
    )
    return view


def log_view(entry: LogRecord) -> View:
    return {"attempt": entry.attempt, "at": iso(entry.at), "message": entry.message}


def job_detail_view(
    job: JobRecord, attempts: Sequence[AttemptRecord], logs: Sequence[LogRecord]
) -> View:
    """A job with every attempt (tracebacks included) and its log lines."""
    return {
        **job_view(job),
        "attempts": [attempt_view(a) for a in attempts],
        "logs": [log_view(entry) for entry in logs],
    }


def waiting_for(job: JobRecord, usage: Sequence[LimitUsage]) -> str | None:
    """Why a waiting job is not running yet, when flow control holds it: ``limit acct:42 (1/1)``
    (the key, the jobs holding its slots, its max), or ``rate api (20 per 1s), earliest start
    ...`` for a job put back until its rate's window has room."""
    if job.rate_key is not None and job.state is JobState.SCHEDULED:
        return (f"rate {job.rate_key} ({job.rate_count} per {job.rate_period or 1:g}s),"
                f" earliest start {iso(job.run_at)}")
    if job.state is not JobState.BLOCKED or job.concurrency_key is None:
        return None
    used = next((u for u in usage if u.key == job.concurrency_key), None)
    held = 0 if used is None else used.admitted
    return f"limit {job.concurrency_key} ({held}/{job.concurrency_max or 1})"


def limit_view(u: LimitUsage) -> View:
    return {"key": u.key, "running_or_ready": u.admitted, "blocked": u.blocked, "max": u.max}


def rate_view(r: RateBacklog) -> View:
    return {"key": r.key, "rate": f"{r.count}/{r.period:g}s", "waiting": r.waiting,
            "enqueued_last_minute": r.recent}


def queue_view(stats: QueueStats, now: datetime) -> View:
    """Counts by state, paused or not, and latency: the age of the oldest ready job."""
    view: View = {"queue": stats.queue, "paused": stats.paused}
    view.update({str(s): stats.count(s) for s in QUEUE_STATES})
    view["latency_seconds"] = seconds_since(stats.oldest_ready_at, now)
    return view


def worker_view(p: ProcessRecord, now: datetime, stale_after: float) -> View:
    """A registered process; ``stale`` once its heartbeat is older than ``stale_after``."""
    heartbeat_age = seconds_since(p.heartbeat_at, now) or 0.0
    return {
        "id": p.id, "kind": p.kind, "host": p.host, "pid": p.pid, "queues": list(p.queues),
        "concurrency": p.concurrency, "started_at": iso(p.started_at),
        "heartbeat_at": iso(p.heartbeat_at), "heartbeat_age_seconds": heartbeat_age,
        "stale": heartbeat_age > stale_after,
    }


# --- doctor ----------------------------------------------------------------------------------
def finding_view(f: FindingLike) -> View:
    return {"code": f.code, "severity": f.severity, "title": f.title,
            "evidence": list(f.evidence), "fix": f.fix}


def report_view(
    findings: Sequence[FindingLike], *, status: str, exit_code: int, store: str,
    checked_at: str | None, summary: str,
) -> View:
    return {
        "status": status, "exit_code": exit_code, "store": store, "checked_at": checked_at,
        "summary": summary, "findings": [finding_view(f) for f in findings],
    }


# --- recurring schedules -----------------------------------------------------------------------
def schedule_view(info: ScheduleInfo) -> View:
    """A schedule as ``cron list`` and the dashboard show it."""
    return {
        "name": info.name, "schedule": info.description, "timezone": info.timezone,
        "job": info.job_name, "state": str(info.status), "misfire": info.misfire,
        "last_run_at": iso(info.last_run_at), "last_job_id": info.last_job_id,
        "last_outcome": None if info.last_outcome is None else str(info.last_outcome),
        "next_run_at": iso(info.next_run_at), "first_seen_at": iso(info.first_seen_at),
    }


def tick_view(tick: TickRecord) -> View:
    """One line of a schedule's history: fired, skipped or missed, and why."""
    return {
        "schedule": tick.schedule, "fire_at": iso(tick.fire_at), "status": str(tick.status),
        "manual": tick.manual, "reason": tick.reason, "job_id": tick.job_id,
        "outcome": None if tick.outcome is None else str(tick.outcome),
        "recorded_at": iso(tick.recorded_at),
    }

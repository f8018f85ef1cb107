"""What both stores share for recurring schedules: the stored form of a schedule's job, and
rows read back as records. No driver is imported here."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..cron import ScheduleState, TickRecord, TickStatus
from ..models import JobState, NewJob

SCHEDULE_COLUMNS = (
    "name, description, timezone, job, first_seen_at, seen_at, last_tick_at, paused, resumed_at"
)
# the latest run of each schedule (scheduled or run now), and its job's state now
LAST_RUN = (
    f"SELECT {', '.join('s.' + c.strip() for c in SCHEDULE_COLUMNS.split(','))},"
    " t.fire_at, t.job_id, j.state FROM conveyor_cron_schedules s"
    " LEFT JOIN conveyor_cron_ticks t ON t.id = (SELECT id FROM conveyor_cron_ticks"
    " WHERE schedule = s.name AND status = 'fired' ORDER BY fire_at DESC, id DESC LIMIT 1)"
    " LEFT JOIN conveyor_jobs j ON j.id = t.job_id ORDER BY s.name"
)
TICK_COLUMNS = (
    "t.schedule, t.fire_at, t.kind, t.status, t.reason, t.job_id, j.state, t.recorded_at"
)
_JOB_FIELDS = ("name", "args", "kwargs", "queue", "priority", "max_attempts", "timeout")
ToDt = Callable[[Any], datetime | None]


def job_to_text(job: NewJob) -> str:
    fields: dict[str, Any] = {f: getattr(job, f) for f in _JOB_FIELDS}
    if job.sensitive:
        fields["sensitive"] = list(job.sensitive)
    return json.dumps(fields, sort_keys=True)


def job_from_text(text: str) -> NewJob:
    known = {f.name for f in dataclasses.fields(NewJob)}
    fields = {k: v for k, v in json.loads(text).items() if k in known}
    if "sensitive" in fields:
        fields["sensitive"] = tuple(fields["sensitive"])
    return NewJob(**fields)


def _state(value: Any) -> JobState | None:
    return None if value is None else JobState(value)


def schedule_from_row(row: Sequence[Any], to_dt: ToDt) -> ScheduleState:
    first, seen = to_dt(row[4]), to_dt(row[5])
    assert first is not None and seen is not None
    extra = row[9:] if len(row) > 9 else (None, None, None)
    return ScheduleState(
        name=row[0], description=row[1], timezone=row[2], job=job_from_text(row[3]),
        first_seen_at=first, seen_at=seen, last_tick_at=to_dt(row[6]), paused=bool(row[7]),
        resumed_at=to_dt(row[8]), last_run_at=to_dt(extra[0]), last_job_id=extra[1],
        last_outcome=_state(extra[2]),
    )


def tick_from_row(row: Sequence[Any], to_dt: ToDt) -> TickRecord:
    fire_at, recorded_at = to_dt(row[1]), to_dt(row[7])
    assert fire_at is not None and recorded_at is not None
    return TickRecord(
        schedule=row[0], fire_at=fire_at, manual=row[2] == "manual", status=TickStatus(row[3]),
        reason=row[4], job_id=row[5], outcome=_state(row[6]), recorded_at=recorded_at,
    )


def held_reason(holder: int) -> str:
    return f"not enqueued: unfinished job {holder} holds the job's unique key"

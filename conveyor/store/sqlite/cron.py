"""Recurring schedules in SQLite: the schedule rows and the tick table (see migration 0005).

A scheduler records the ticks it decided in one transaction that first moves the schedule's
``last_tick_at`` from the value it computed from (another scheduler that got there first
makes it a no-op), then writes each tick (unique per schedule and time) with its job."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ...cron import ScheduleDef, ScheduleState, TickPlan, TickRecord, TickStatus
from ...models import Inserted, NewJob
from .. import cronrows as rows

T = TypeVar("T")

REGISTER = (
    "INSERT INTO conveyor_cron_schedules (name, description, timezone, job, first_seen_at,"
    " seen_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
    " description = excluded.description, timezone = excluded.timezone, job = excluded.job,"
    " seen_at = excluded.seen_at"
)
STATES = f"SELECT {rows.SCHEDULE_COLUMNS} FROM conveyor_cron_schedules ORDER BY name"
ADVANCE = (
    "UPDATE conveyor_cron_schedules SET last_tick_at = ? WHERE name = ? AND last_tick_at IS ?"
)
TICK = (
    "INSERT INTO conveyor_cron_ticks (schedule, fire_at, kind, status, reason, recorded_at,"
    " recorded_by) VALUES (?, ?, 'scheduled', ?, ?, ?, ?)"
    " ON CONFLICT (schedule, fire_at) WHERE kind = 'scheduled' DO NOTHING RETURNING id"
)
TICK_JOB = "UPDATE conveyor_cron_ticks SET job_id = ?, status = ?, reason = ? WHERE id = ?"
MANUAL = (
    "INSERT INTO conveyor_cron_ticks (schedule, fire_at, kind, status, reason, job_id,"
    " recorded_at, recorded_by) VALUES (?, ?, 'manual', 'fired', ?, ?, ?, ?)"
)
EXISTS = "SELECT job FROM conveyor_cron_schedules WHERE name = ?"
SET_PAUSED = (
    "UPDATE conveyor_cron_schedules SET paused = ?,"
    " resumed_at = CASE WHEN ? THEN resumed_at ELSE ? END, updated_at = ? WHERE name = ?"
)
HISTORY = (
    f"SELECT {rows.TICK_COLUMNS} FROM conveyor_cron_ticks t"
    " LEFT JOIN conveyor_jobs j ON j.id = t.job_id WHERE t.schedule = ?"
    " AND (? IS NULL OR t.fire_at < ?) ORDER BY t.fire_at DESC, t.id DESC LIMIT ?"
)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


class SQLiteCron:
    """The cron methods of SQLiteStore."""

    if TYPE_CHECKING:
        def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]: ...
        def job_insert_many(
            self, jobs: Sequence[NewJob], *, connection: Any = None, now: datetime | None = None
        ) -> list[Inserted]: ...

    def _enqueue_one(self, conn: sqlite3.Connection, job: NewJob, at: float) -> tuple[int, bool]:
        """Insert one job inside the open transaction, as any enqueue would: (its id, True),
        or (the id of the unfinished job holding its unique key, False)."""
        done = self.job_insert_many([job], connection=conn, now=_dt(at))[0]
        return done.id, done.created

    @staticmethod
    def _cron_now(now: datetime | None) -> float:
        return time.time() if now is None else now.timestamp()

    def cron_register(self, schedules: Sequence[ScheduleDef], *, now: datetime | None = None) -> None:
        at = self._cron_now(now)
        params = [(s.name, s.description, s.timezone, rows.job_to_text(s.job), at, at)
                  for s in schedules]
        if params:
            self._write(lambda conn: conn.executemany(REGISTER, params))

    def cron_states(self, *, now: datetime | None = None) -> tuple[datetime, list[ScheduleState]]:
        at = datetime.fromtimestamp(self._cron_now(now), UTC)
        return at, [rows.schedule_from_row(r, _dt) for r in self._read(STATES)]

    def cron_list(self) -> list[ScheduleState]:
        return [rows.schedule_from_row(r, _dt) for r in self._read(rows.LAST_RUN)]

    def cron_record(
        self, name: str, base: datetime | None, ticks: Sequence[TickPlan], job: NewJob, *,
        recorded_by: str, now: datetime | None = None,
    ) -> list[int] | None:
        if not ticks:
            return []
        at = self._cron_now(now)

        def run(conn: sqlite3.Connection) -> list[int] | None:
            moved = conn.execute(ADVANCE, (ticks[-1].fire_at.timestamp(), name, _ts(base)))
            if moved.rowcount != 1:
                return None  # another scheduler recorded these ticks first
            enqueued = []
            for tick in ticks:
                row = conn.execute(TICK, (name, tick.fire_at.timestamp(), str(tick.status),
                                          tick.reason, at, recorded_by)).fetchone()
                if row is None or tick.status is not TickStatus.FIRED:
                    continue
                job_id, created = self._enqueue_one(conn, job, at)
                status, reason = ((tick.status, tick.reason) if created
                                  else (TickStatus.SKIPPED, rows.held_reason(job_id)))
                conn.execute(TICK_JOB, (job_id, str(status), reason, row[0]))
                if created:
                    enqueued.append(job_id)
            return enqueued

        return self._write(run)

    def cron_set_paused(self, name: str, paused: bool, *, now: datetime | None = None) -> bool:
        at = self._cron_now(now)
        params = (int(paused), int(paused), at, at, name)
        return bool(self._write(lambda conn: conn.execute(SET_PAUSED, params).rowcount))

    def cron_run_now(
        self, name: str, job: NewJob | None, *, recorded_by: str = "run now",
        now: datetime | None = None,
    ) -> int | None:
        at = self._cron_now(now)

        def run(conn: sqlite3.Connection) -> int | None:
            found = conn.execute(EXISTS, (name,)).fetchone()
            if found is None:
                return None
            job_id, created = self._enqueue_one(conn, job or rows.job_from_text(found[0]), at)
            reason = "run now" if created else rows.held_reason(job_id)
            conn.execute(MANUAL, (name, at, reason, job_id, at, recorded_by))
            return job_id

        return self._write(run)

    def cron_history(
        self, name: str, *, limit: int = 100, before: datetime | None = None
    ) -> list[TickRecord]:
        b = _ts(before)
        return [rows.tick_from_row(r, _dt) for r in self._read(HISTORY, (name, b, b, limit))]

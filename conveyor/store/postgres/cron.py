"""Recurring schedules in PostgreSQL: the schedule rows and the tick table (see migration 0005).

A scheduler records the ticks it decided in one transaction that first moves the schedule's
``last_tick_at`` from the value it computed from: a second scheduler doing the same waits on
that row, then finds it moved and records nothing. Each tick is unique per schedule and time,
and is written with its job."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...cron import ScheduleDef, ScheduleState, TickPlan, TickRecord, TickStatus
from ...models import Inserted, NewJob
from .. import cronrows as rows

if TYPE_CHECKING:
    from .connections import Conn, Connections

NOW = "COALESCE(%(now)s::timestamptz, now())"
REGISTER = (
    "INSERT INTO conveyor_cron_schedules (name, description, timezone, job, first_seen_at,"
    f" seen_at) VALUES (%(name)s, %(description)s, %(timezone)s, %(job)s, {NOW}, {NOW})"
    " ON CONFLICT (name) DO UPDATE SET description = excluded.description,"
    " timezone = excluded.timezone, job = excluded.job, seen_at = excluded.seen_at"
)
CLOCK = f"SELECT {NOW}"
STATES = f"SELECT {rows.SCHEDULE_COLUMNS} FROM conveyor_cron_schedules ORDER BY name"
ADVANCE = (
    "UPDATE conveyor_cron_schedules SET last_tick_at = %(last)s WHERE name = %(name)s"
    " AND last_tick_at IS NOT DISTINCT FROM %(base)s::timestamptz"
)
TICK = (
    "INSERT INTO conveyor_cron_ticks (schedule, fire_at, kind, status, reason, recorded_at,"
    f" recorded_by) VALUES (%(name)s, %(fire_at)s, 'scheduled', %(status)s, %(reason)s, {NOW},"
    " %(by)s) ON CONFLICT (schedule, fire_at) WHERE kind = 'scheduled' DO NOTHING RETURNING id"
)
TICK_JOB = (
    "UPDATE conveyor_cron_ticks SET job_id = %(job_id)s, status = %(status)s,"
    " reason = %(reason)s WHERE id = %(id)s"
)
MANUAL = (
    "INSERT INTO conveyor_cron_ticks (schedule, fire_at, kind, status, reason, job_id,"
    f" recorded_at, recorded_by) VALUES (%(name)s, {NOW}, 'manual', 'fired', %(reason)s,"
    f" %(job_id)s, {NOW}, %(by)s)"
)
EXISTS = "SELECT job FROM conveyor_cron_schedules WHERE name = %(name)s FOR UPDATE"
SET_PAUSED = (
    "UPDATE conveyor_cron_schedules SET paused = %(paused)s,"
    f" resumed_at = CASE WHEN %(paused)s THEN resumed_at ELSE {NOW} END, updated_at = {NOW}"
    " WHERE name = %(name)s"
)
HISTORY = (
    f"SELECT {rows.TICK_COLUMNS} FROM conveyor_cron_ticks t"
    " LEFT JOIN conveyor_jobs j ON j.id = t.job_id WHERE t.schedule = %(name)s"
    " AND (%(before)s::timestamptz IS NULL OR t.fire_at < %(before)s)"
    " ORDER BY t.fire_at DESC, t.id DESC LIMIT %(limit)s"
)


def _dt(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


class PostgresCron:
    """The cron methods of PostgresStore."""

    if TYPE_CHECKING:
        _db: Connections

        def job_insert_many(
            self, jobs: Sequence[NewJob], *, connection: Any = None, now: datetime | None = None
        ) -> list[Inserted]: ...

    def _enqueue_one(self, conn: Conn, job: NewJob, now: datetime | None) -> tuple[int, bool]:
        """Insert one job inside the open transaction, as any enqueue would: (its id, True),
        or (the id of the unfinished job holding its unique key, False)."""
        done = self.job_insert_many([job], connection=conn, now=now)[0]
        return done.id, done.created

    def cron_register(self, schedules: Sequence[ScheduleDef], *, now: datetime | None = None) -> None:
        params = [{"now": now, "name": s.name, "description": s.description,
                   "timezone": s.timezone, "job": rows.job_to_text(s.job)} for s in schedules]
        if params:
            with self._db.tx() as conn:
                conn.cursor().executemany(REGISTER, params)

    def cron_states(self, *, now: datetime | None = None) -> tuple[datetime, list[ScheduleState]]:
        with self._db.connect() as conn:
            clock = conn.execute(CLOCK, {"now": now}).fetchone()
            found = conn.execute(STATES).fetchall()
        assert clock is not None
        return clock[0].astimezone(UTC), [rows.schedule_from_row(r, _dt) for r in found]

    def cron_list(self) -> list[ScheduleState]:
        with self._db.connect() as conn:
            found = conn.execute(rows.LAST_RUN).fetchall()
        return [rows.schedule_from_row(r, _dt) for r in found]

    def cron_record(
        self, name: str, base: datetime | None, ticks: Sequence[TickPlan], job: NewJob, *,
        recorded_by: str, now: datetime | None = None,
    ) -> list[int] | None:
        if not ticks:
            return []
        enqueued: list[int] = []
        with self._db.tx() as conn:
            moved = conn.execute(ADVANCE, {"last": ticks[-1].fire_at, "name": name, "base": base})
            if moved.rowcount != 1:
                return None  # another scheduler recorded these ticks first
            for tick in ticks:
                row = conn.execute(TICK, {
                    "now": now, "name": name, "fire_at": tick.fire_at, "status": str(tick.status),
                    "reason": tick.reason, "by": recorded_by}).fetchone()
                if row is None or tick.status is not TickStatus.FIRED:
                    continue
                job_id, created = self._enqueue_one(conn, job, now)
                status, reason = ((tick.status, tick.reason) if created
                                  else (TickStatus.SKIPPED, rows.held_reason(job_id)))
                conn.execute(TICK_JOB, {"job_id": job_id, "status": str(status),
                                        "reason": reason, "id": row[0]})
                if created:
                    enqueued.append(job_id)
        return enqueued

    def cron_set_paused(self, name: str, paused: bool, *, now: datetime | None = None) -> bool:
        with self._db.connect() as conn:
            done = conn.execute(SET_PAUSED, {"now": now, "paused": paused, "name": name})
            return done.rowcount == 1

    def cron_run_now(
        self, name: str, job: NewJob | None, *, recorded_by: str = "run now",
        now: datetime | None = None,
    ) -> int | None:
        with self._db.tx() as conn:
            found = conn.execute(EXISTS, {"name": name}).fetchone()
            if found is None:
                return None
            job_id, created = self._enqueue_one(conn, job or rows.job_from_text(found[0]), now)
            reason = "run now" if created else rows.held_reason(job_id)
            conn.execute(MANUAL, {"now": now, "name": name, "reason": reason, "job_id": job_id,
                                  "by": recorded_by})
        return job_id

    def cron_history(
        self, name: str, *, limit: int = 100, before: datetime | None = None
    ) -> list[TickRecord]:
        params = {"name": name, "before": before, "limit": limit}
        with self._db.connect() as conn:
            found = conn.execute(HISTORY, params).fetchall()
        return [rows.tick_from_row(r, _dt) for r in found]

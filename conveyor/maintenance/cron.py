"""The cron scheduler: every supervisor runs one, not only the leader, so losing a leader never
loses a tick. Each pass reads the schedules' stored state, decides every tick due since the
latest one recorded (``cron.plan``: on time, paused, or missed and what the misfire policy
makes of it) and records them with their jobs in one store transaction. The store writes each
tick once, so schedulers racing for the same tick enqueue one job between them.

Nothing is kept in memory but a hint of when to look again: the next tick is always computed
from the stored latest tick, so a restart at the tick neither misses nor repeats it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from ..clock import utcnow
from ..cron import SIGHTING_EVERY, CronRegistry, CronSchedule, ScheduleDef, ScheduleState, plan
from ..errors import StoreError
from ..store import Store

log = logging.getLogger("conveyor.cron")
REREAD_EVERY = 5.0  # seconds between reads of the stored state when no tick is due


def definition(schedule: CronSchedule) -> ScheduleDef:
    return ScheduleDef(schedule.name, schedule.description, schedule.timing.timezone,
                       schedule.new_job())


class CronScheduler:
    def __init__(self, store: Store, schedules: CronRegistry, scheduler_id: str) -> None:
        self.store = store
        self.schedules = schedules
        self.id = scheduler_id
        self._registered = float("-inf")
        self._read_at = float("-inf")
        self._next_due: datetime | None = None  # on the store's clock
        self._skew = timedelta(0)  # the store's clock minus this host's, at the last read

    def register(self, now: datetime | None = None) -> None:
        """Write the code's schedules (first sightings are recorded by the store)."""
        self.store.cron_register([definition(s) for s in self.schedules.all()], now=now)
        self._registered = time.monotonic()

    def run_once(self, now: datetime | None = None) -> int:
        """One pass at ``now`` (None: the store's clock); how many jobs it enqueued."""
        if not len(self.schedules):
            return 0
        mono = time.monotonic()
        if mono - self._registered >= SIGHTING_EVERY:
            self.register(now)
        if now is None and not self._due(mono):
            return 0
        at, states = self.store.cron_states(now=now)
        self._read_at, self._skew = mono, at - utcnow()
        stored = {s.name: s for s in states}
        enqueued, next_due = 0, None
        for schedule in self.schedules.all():
            state = stored.get(schedule.name)
            if state is None:  # its row went away: written again on the next pass
                self._registered = float("-inf")
                continue
            try:
                n, upcoming = self._one(schedule, state, at, now)
            except StoreError:
                raise
            except Exception:  # one broken schedule must not stop the others
                log.exception("cron schedule failed", extra={"schedule": schedule.name})
                continue
            enqueued += n
            next_due = upcoming if next_due is None else min(next_due, upcoming)
        self._next_due = next_due
        return enqueued

    def _due(self, mono: float) -> bool:
        if self._next_due is None or mono - self._read_at >= REREAD_EVERY:
            return True
        return utcnow() + self._skew >= self._next_due

    def _one(
        self, schedule: CronSchedule, state: ScheduleState, at: datetime, now: datetime | None
    ) -> tuple[int, datetime]:
        """Record what is due of one schedule; (jobs enqueued, when its next tick falls)."""
        ticks = plan(schedule, state, at)
        base = state.last_tick_at or state.first_seen_at
        if not ticks:
            return 0, schedule.timing.next_after(base)
        got = self.store.cron_record(schedule.name, state.last_tick_at, ticks, schedule.new_job(),
                                     recorded_by=self.id, now=now)
        if got is None:  # another scheduler was first: look again at once
            return 0, at
        for tick in ticks:
            if tick.reason is not None:  # late, missed or paused: worth a line
                level = logging.DEBUG if tick.reason == "paused" else logging.INFO
                log.log(level, "cron tick %s", tick.status, extra={
                    "schedule": schedule.name, "fire_at": tick.fire_at.isoformat(),
                    "reason": tick.reason})
        return len(got), schedule.timing.next_after(ticks[-1].fire_at)

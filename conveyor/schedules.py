"""``Schedules``: recurring schedules read and acted on from outside a worker (``app.schedules``,
also ``app.client.schedules``): list, pause, resume, run now, history. The CLI's ``conveyor
cron ...`` and the dashboard use these.

A schedule is known from two sides: the code (``@app.cron``) and the store (written by the
first scheduler that ran it). One in the store that the code no longer defines is orphaned:
shown, never fired. Without the app's code at hand (no schedule defined in this process), a
schedule counts as orphaned when schedulers that keep writing the others stopped writing it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .clock import Clock
from .cron import (
    SIGHTING_EVERY,
    CronRegistry,
    CronSchedule,
    ScheduleDef,
    ScheduleInfo,
    ScheduleState,
    ScheduleStatus,
    TickRecord,
    Timing,
    UnknownSchedule,
)
from .errors import InvalidState
from .store import Store

if TYPE_CHECKING:
    from .client import JobHandle

STALE_SIGHTING = timedelta(seconds=3 * SIGHTING_EVERY)


class Schedules:
    """The app's schedules (``registry``, from its code) and what the store keeps of them."""

    def __init__(
        self, store: Callable[[], Store], clock: Callable[[], Clock],
        handle: Callable[[int], JobHandle],
    ) -> None:
        self.registry = CronRegistry()
        self._store = store
        self._clock = clock
        self._handle = handle

    def __iter__(self) -> Iterator[CronSchedule]:
        return iter(self.registry.all())

    def __len__(self) -> int:
        return len(self.registry)

    def get(self, name: str) -> CronSchedule | None:
        return self.registry.get(name)

    def all(self) -> builtins.list[CronSchedule]:
        return self.registry.all()

    def names(self) -> builtins.list[str]:
        return self.registry.names()

    def _now(self) -> datetime | None:
        clock = self._clock()
        return clock.now() if clock.frozen else None

    # --- reading -----------------------------------------------------------------------------
    def list(self) -> builtins.list[ScheduleInfo]:
        """Every schedule, stored or defined, by name: state, last run and outcome, next run."""
        stored = {s.name: s for s in self._store().cron_list()}
        now = self._clock().now()
        newest = max((s.seen_at for s in stored.values()), default=None)
        out = []
        for name in sorted(set(stored) | set(self.registry.names())):
            state, code = stored.get(name), self.registry.get(name)
            out.append(self._info(name, state, code, newest, now))
        return out

    def _info(
        self, name: str, state: ScheduleState | None, code: CronSchedule | None,
        newest: datetime | None, now: datetime,
    ) -> ScheduleInfo:
        status = self._status(state, code, newest)
        timing = code.timing if code is not None else None
        if timing is None and state is not None:
            timing = Timing.from_description(state.description, state.timezone)
        next_run = None
        if status is ScheduleStatus.ACTIVE and timing is not None:
            base = state.last_tick_at or state.first_seen_at if state is not None else now
            next_run = timing.next_after(max(base, now))
        return ScheduleInfo(
            name=name,
            description=code.description if code is not None else state.description,  # type: ignore[union-attr]
            timezone=code.timing.timezone if code is not None else state.timezone,  # type: ignore[union-attr]
            job_name=code.job.name if code is not None else state.job.name,  # type: ignore[union-attr]
            status=status, next_run_at=next_run,
            last_run_at=state.last_run_at if state else None,
            last_job_id=state.last_job_id if state else None,
            last_outcome=state.last_outcome if state else None,
            first_seen_at=state.first_seen_at if state else None,
            misfire=code.misfire if code is not None else None,
        )

    def _status(
        self, state: ScheduleState | None, code: CronSchedule | None, newest: datetime | None
    ) -> ScheduleStatus:
        if self._orphaned(state, code, newest):
            return ScheduleStatus.ORPHANED
        return ScheduleStatus.PAUSED if state is not None and state.paused else ScheduleStatus.ACTIVE

    def _orphaned(
        self, state: ScheduleState | None, code: CronSchedule | None, newest: datetime | None
    ) -> bool:
        if code is not None or state is None:
            return False
        if len(self.registry):  # the code is at hand, and it does not define this one
            return True
        return newest is not None and newest - state.seen_at > STALE_SIGHTING

    def get_info(self, name: str) -> ScheduleInfo:
        for info in self.list():
            if info.name == name:
                return info
        raise self._unknown(name)

    def _unknown(self, name: str) -> UnknownSchedule:
        """No such schedule, with the name meant when only the module part was left out."""
        known = sorted(set(self.registry.names()) | {s.name for s in self._store().cron_list()})
        near = [k for k in known if k.rsplit(":", 1)[-1] == name]
        if near:
            hint = f"; did you mean {near[0]!r}?"
        else:
            hint = f"; known: {', '.join(known[:10])}" if known else "; none is defined"
        return UnknownSchedule(f"no schedule named {name!r}{hint}")

    def history(
        self, name: str, *, limit: int = 100, before: datetime | None = None
    ) -> builtins.list[TickRecord]:
        """Every tick of a schedule, newest first: fired, skipped or missed, with its job."""
        ticks = self._store().cron_history(name, limit=limit, before=before)
        if not ticks and name not in self.registry.names():
            self.get_info(name)  # UnknownSchedule unless it is stored
        return ticks

    # --- acting ------------------------------------------------------------------------------
    def pause(self, name: str) -> None:
        """Stop firing ``name``; its ticks are recorded as skipped until it is resumed."""
        self._set_paused(name, True)

    def resume(self, name: str) -> None:
        self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> None:
        store, now = self._store(), self._now()
        if store.cron_set_paused(name, paused, now=now):
            return
        code = self.registry.get(name)
        if code is None:
            raise self._unknown(name)
        self._register(code)  # defined, not yet seen by a scheduler: it is from now on
        store.cron_set_paused(name, paused, now=now)

    def run(self, name: str) -> JobHandle:
        """Enqueue the schedule's job now, outside the schedule, paused or not."""
        code = self.registry.get(name)
        info = self.get_info(name)
        if info.status is ScheduleStatus.ORPHANED:
            raise InvalidState(
                f"schedule {name!r} is orphaned (no longer in the code), so it never runs")
        store = self._store()
        job_id = store.cron_run_now(name, code.new_job() if code else None, now=self._now())
        if job_id is None and code is not None:
            self._register(code)
            job_id = store.cron_run_now(name, code.new_job(), now=self._now())
        if job_id is None:
            raise self._unknown(name)
        return self._handle(job_id)

    def _register(self, code: CronSchedule) -> None:
        self._store().cron_register(
            [ScheduleDef(code.name, code.description, code.timing.timezone, code.new_job())],
            now=self._now())

"""Recurring schedules as the code defines them, what the store keeps about them, and the
misfire policy that decides what becomes of the ticks that fell due.

A tick is due once its time has passed. It is on time while no more than ``misfire_grace``
has passed since; later than that it was missed (no scheduler ran), and the policy decides:

- ``skip``: every missed tick is recorded as missed, and none runs;
- ``run_once`` (default): one run for all of them, recorded on the latest (the others are
  recorded as missed, covered by that run);
- ``catch_up``: each runs, the latest ``max_catch_up`` of them; older ones are missed.

Ticks of a paused schedule are recorded as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..models import JobState, NewJob
from .timing import CronError, Timing

if TYPE_CHECKING:
    from ..jobs import JobDefinition

MISFIRE = ("skip", "run_once", "catch_up")
SIGHTING_EVERY = 60.0  # seconds between a scheduler's writes of the schedules in its code
DUE_LIMIT = 1000  # ticks decided per schedule in one pass; a longer backlog takes more passes


class TickStatus(StrEnum):
    FIRED = "fired"  # a job was enqueued for it
    SKIPPED = "skipped"  # the schedule was paused
    MISSED = "missed"  # no scheduler ran in time, and the misfire policy did not run it


class ScheduleStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ORPHANED = "orphaned"  # in the store, no longer in the code: never fires


@dataclass(frozen=True)
class CronSchedule:
    """One recurring schedule of one job (``job`` is its JobDefinition)."""

    name: str
    timing: Timing
    job: JobDefinition[Any, Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    misfire: str = "run_once"
    misfire_grace: float = 60.0
    max_catch_up: int = 10

    def __post_init__(self) -> None:
        if self.misfire not in MISFIRE:
            raise CronError(f"misfire={self.misfire!r}: use one of {', '.join(MISFIRE)}")
        if not self.misfire_grace >= 0:
            raise CronError(f"misfire_grace must be 0 or more seconds, not {self.misfire_grace!r}")
        if isinstance(self.max_catch_up, bool) or not isinstance(self.max_catch_up, int) \
                or self.max_catch_up < 1:
            raise CronError(f"max_catch_up must be a whole number, at least 1, not {self.max_catch_up!r}")
        self.new_job()  # arguments that cannot be encoded fail here, where the schedule is defined

    def new_job(self) -> NewJob:
        """The job one tick enqueues."""
        changes: dict[str, Any] = {}
        if self.queue is not None:
            changes["queue"] = self.queue
        if self.priority is not None:
            changes["priority"] = self.priority
        target = self.job.options(**changes) if changes else self.job
        return target.prepare(*self.args, **dict(self.kwargs)).new_job

    @property
    def description(self) -> str:
        return self.timing.describe()


class CronRegistry:
    """The schedules an app's code defines, by name."""

    def __init__(self) -> None:
        self._schedules: dict[str, CronSchedule] = {}

    def add(self, schedule: CronSchedule) -> None:
        if schedule.name in self._schedules:
            raise CronError(
                f"two schedules are named {schedule.name!r}; pass name= to one of them"
            )
        self._schedules[schedule.name] = schedule

    def get(self, name: str) -> CronSchedule | None:
        return self._schedules.get(name)

    def all(self) -> list[CronSchedule]:
        return [self._schedules[n] for n in sorted(self._schedules)]

    def names(self) -> list[str]:
        return sorted(self._schedules)

    def __len__(self) -> int:
        return len(self._schedules)


# --- what the store keeps ---------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleDef:
    """What a scheduler writes about a schedule it runs (the store keeps when it first saw it)."""

    name: str
    description: str
    timezone: str
    job: NewJob  # the job one tick enqueues (for ``run`` when the code is not at hand)


@dataclass(frozen=True)
class ScheduleState:
    """A schedule as the store has it."""

    name: str
    description: str
    timezone: str
    job: NewJob
    first_seen_at: datetime  # ticks count from here
    seen_at: datetime  # a scheduler (or the CLI) last wrote this schedule's definition
    last_tick_at: datetime | None  # the latest tick recorded, whatever became of it
    paused: bool
    resumed_at: datetime | None  # ticks up to here fell while paused
    last_run_at: datetime | None = None  # the latest tick that enqueued a job (not run-now)
    last_job_id: int | None = None
    last_outcome: JobState | None = None  # that job's state (None: pruned or no run yet)


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as ``cron list`` shows it: the store's record and the code's, together."""

    name: str
    description: str
    timezone: str
    job_name: str
    status: ScheduleStatus
    next_run_at: datetime | None  # None: paused or orphaned, it will not fire
    last_run_at: datetime | None
    last_job_id: int | None
    last_outcome: JobState | None
    first_seen_at: datetime | None  # None: no scheduler has seen it yet
    misfire: str | None  # None: not in the code at hand


@dataclass(frozen=True)
class TickPlan:
    """What to record for one tick."""

    fire_at: datetime
    status: TickStatus
    reason: str | None = None


@dataclass(frozen=True)
class TickRecord:
    """One line of a schedule's history."""

    schedule: str
    fire_at: datetime
    manual: bool  # ``run`` outside the schedule
    status: TickStatus
    reason: str | None
    job_id: int | None
    outcome: JobState | None  # the job's state now; None if it was pruned
    recorded_at: datetime


# --- deciding --------------------------------------------------------------------------------
def plan(
    schedule: CronSchedule, state: ScheduleState, now: datetime, *, limit: int = DUE_LIMIT
) -> list[TickPlan]:
    """What becomes of each tick due since the last one recorded (or since the schedule was
    first seen), at ``now``, at most ``limit`` of them. Empty when nothing is due."""
    base = state.last_tick_at or state.first_seen_at
    due = schedule.timing.ticks(base, now, limit)
    if not due:
        return []
    if state.paused:
        return [TickPlan(t, TickStatus.SKIPPED, "paused") for t in due]
    grace = timedelta(seconds=schedule.misfire_grace)
    out: list[TickPlan] = []
    if state.resumed_at is not None:
        out = [TickPlan(t, TickStatus.SKIPPED, "paused") for t in due if t <= state.resumed_at]
        due = [t for t in due if t > state.resumed_at]
    late = [t for t in due if now - t > grace]
    on_time = [t for t in due if now - t <= grace]
    later = 0  # a backlog longer than one pass: late ticks after these, for a later pass
    if len(due) == limit:
        until = now - grace - timedelta(microseconds=1)  # late: more than the grace ago
        later = len(schedule.timing.ticks(due[-1], until, schedule.max_catch_up))
    out += _misfire(schedule, late, now, later)
    out += [TickPlan(t, TickStatus.FIRED) for t in on_time]
    return out


def _misfire(
    schedule: CronSchedule, late: Sequence[datetime], now: datetime, later: int = 0
) -> list[TickPlan]:
    """``later``: late ticks that come after these (decided in a later pass); the runs the
    policy allows go to the latest late ticks of all."""
    if not late:
        return []
    n = len(late)
    if later and schedule.misfire != "skip":
        keep = 0 if schedule.misfire == "run_once" else max(0, schedule.max_catch_up - later)
        why = f"misfire={schedule.misfire}: covered by the run of a later missed tick"
        if keep == 0:
            return [TickPlan(t, TickStatus.MISSED, why) for t in late]
        return [TickPlan(t, TickStatus.MISSED, why) for t in late[:-keep]] + [
            TickPlan(t, TickStatus.FIRED, "misfire=catch_up: late run") for t in late[-keep:]]
    how_late = f"{(now - late[-1]).total_seconds():.0f}s late, past misfire_grace"
    if schedule.misfire == "skip":
        return [TickPlan(t, TickStatus.MISSED, "misfire=skip") for t in late]
    if schedule.misfire == "run_once":
        why = f"misfire=run_once: covered by the run at {late[-1].isoformat()}"
        ran = f"misfire=run_once: one run for {n} missed tick{'s' if n > 1 else ''} ({how_late})"
        return [TickPlan(t, TickStatus.MISSED, why) for t in late[:-1]] + [
            TickPlan(late[-1], TickStatus.FIRED, ran)
        ]
    keep = schedule.max_catch_up
    dropped = [TickPlan(t, TickStatus.MISSED, f"misfire=catch_up: beyond max_catch_up={keep}")
               for t in late[:-keep]]
    return dropped + [TickPlan(t, TickStatus.FIRED, "misfire=catch_up: late run")
                      for t in late[-keep:]]

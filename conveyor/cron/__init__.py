"""Recurring schedules: when ticks fall (``timing``) and what becomes of them (``schedule``).
Pure: the store keeps the ticks, ``maintenance.cron`` runs the scheduler."""

from __future__ import annotations

from .schedule import (
    MISFIRE,
    SIGHTING_EVERY,
    CronRegistry,
    CronSchedule,
    ScheduleDef,
    ScheduleInfo,
    ScheduleState,
    ScheduleStatus,
    TickPlan,
    TickRecord,
    TickStatus,
    plan,
)
from .timing import CronError, Timing, UnknownSchedule

__all__ = [
    "MISFIRE", "SIGHTING_EVERY", "CronError", "CronRegistry", "CronSchedule", "ScheduleDef",
    "ScheduleInfo", "ScheduleState", "ScheduleStatus", "TickPlan", "TickRecord", "TickStatus",
    "Timing", "UnknownSchedule", "plan",
]

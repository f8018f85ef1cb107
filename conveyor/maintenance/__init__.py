"""Time-driven duties, each a small service with ``run_once(now)`` (``now=None``: the store's
clock) that a test drives with a frozen time:

- ``promote``: scheduled jobs and retries whose time has come become ready
- ``rescue``: jobs of workers that stopped heartbeating run again
- ``prune``: finished jobs past their retention are deleted
- ``history``: a sample a minute of what happened per queue, for the dashboard and metrics
- ``watchdog``: running jobs past their timeout or cancellation grace, for the supervisor to stop

``Maintenance`` runs these four on their cadences in the leader supervisor; every
supervisor runs its own watchdog over its own children, and its own cron scheduler
(``CronScheduler``: the store keeps each tick to one enqueue, so any number may run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..clock import Clock
from ..settings import Settings
from ..store import Store
from .cron import CronScheduler
from .history import History
from .promote import Promote
from .prune import Prune
from .rescue import Rescue
from .watchdog import Watchdog

__all__ = [
    "CronScheduler", "Duty", "History", "Maintenance", "Promote", "Prune", "Rescue", "Service",
    "Watchdog",
]


class Service(Protocol):
    def run_once(self, now: datetime | None = None) -> object: ...


@dataclass
class Duty:
    """A service and how often it runs (monotonic seconds)."""

    every: float
    service: Service | None = None
    last: float = field(default=float("-inf"))

    def due(self, mono: float) -> bool:
        if mono - self.last >= self.every:
            self.last = mono
            return True
        return False


class Maintenance:
    """The leader's duties on their cadences: promote, rescue, prune, history."""

    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.promote = Promote(store)
        self.rescue = Rescue(store, rescue_after=settings.rescue_after)
        self.prune = Prune(store, settings, clock)
        self.history = History(store, clock)
        self.duties = [
            Duty(every=min(1.0, settings.poll_interval), service=self.promote),
            Duty(every=max(0.5, settings.rescue_after / 4), service=self.rescue),
            Duty(every=60.0, service=self.prune),
            # a sample a minute: looked for four times a minute, so no minute is skipped
            Duty(every=15.0, service=self.history),
        ]

    def run_once(self, now: datetime | None = None, *, mono: float | None = None) -> None:
        mono = time.monotonic() if mono is None else mono
        for duty in self.duties:
            if duty.service is not None and duty.due(mono):
                duty.service.run_once(now)

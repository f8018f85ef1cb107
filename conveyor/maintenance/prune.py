"""Finished jobs past their retention are deleted: succeeded after ``retention_succeeded``,
dead after ``retention_dead``."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ..clock import Clock
from ..settings import Settings
from ..store import Store

log = logging.getLogger("conveyor.maintenance")


class Prune:
    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.succeeded = timedelta(seconds=settings.retention_succeeded)
        self.dead = timedelta(seconds=settings.retention_dead)
        self.clock = clock

    def run_once(self, now: datetime | None = None) -> int:
        at = now or self.clock.now()
        n = self.store.jobs_prune(succeeded_before=at - self.succeeded, dead_before=at - self.dead)
        if n:
            log.info("pruned finished jobs past retention", extra={"jobs": n})
        return n

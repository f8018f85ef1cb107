"""Leader duties, run by one supervisor at a time: each a ``run_once(now)`` on its own cadence."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Conveyor

log = logging.getLogger("conveyor.maintenance")


@dataclass
class Duty:
    every: float
    last: float = field(default=float("-inf"))

    def due(self, mono: float) -> bool:
        if mono - self.last >= self.every:
            self.last = mono
            return True
        return False


class Maintenance:
    """Promote due jobs, rescue jobs of dead workers, prune old jobs."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        s = app.settings
        self.promote = Duty(every=min(1.0, s.poll_interval))
        self.rescue = Duty(every=max(0.5, s.rescue_after / 4))
        self.prune = Duty(every=60.0)

    def run_once(self, now: datetime | None = None, *, mono: float | None = None) -> None:
        mono = time.monotonic() if mono is None else mono
        if self.promote.due(mono):
            self.promote_due(now)
        if self.rescue.due(mono):
            self.rescue_stale(now)
        if self.prune.due(mono):
            self.prune_old(now)

    def promote_due(self, now: datetime | None = None) -> int:
        n = self.app.store.jobs_promote(now=now)
        if n:
            log.debug("promoted due jobs", extra={"jobs": n})
        return n

    def rescue_stale(self, now: datetime | None = None) -> list[int]:
        store = self.app.store
        after = self.app.settings.rescue_after
        stale = store.processes_stale(after, now=now)
        if not stale:
            return []
        rescued = store.jobs_rescue(stale, f"worker stopped heartbeating for over {after:g}s", now=now)
        for process_id in stale:
            store.process_deregister(process_id)
        log.warning("rescued jobs of unresponsive workers",
                    extra={"workers": ",".join(stale), "jobs": len(rescued)})
        return rescued

    def prune_old(self, now: datetime | None = None) -> int:
        s = self.app.settings
        at = now or self.app.clock.now()
        n = self.app.store.jobs_prune(
            succeeded_before=at - timedelta(seconds=s.retention_succeeded),
            dead_before=at - timedelta(seconds=s.retention_dead),
        )
        if n:
            log.info("pruned finished jobs past retention", extra={"jobs": n})
        return n

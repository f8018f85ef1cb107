"""The dashboard's history: one sample a minute (what was enqueued, finished and failed per
queue, the ready backlog and its age; the metric totals with it), and samples older than
``KEEP`` deleted about once an hour."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ..clock import Clock
from ..store import Store

log = logging.getLogger("conveyor.maintenance")

KEEP = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=1)


class History:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._pruned_at: datetime | None = None

    def run_once(self, now: datetime | None = None) -> bool:
        """Sample ``now``'s minute unless it has a sample already (called more often than once
        a minute, so that no minute goes without); True if this call recorded it."""
        at = now or self.clock.now()
        sampled = self.store.history_sample(at)
        if self._pruned_at is None or at - self._pruned_at >= PRUNE_EVERY:
            n = self.store.history_prune(at - KEEP)
            self._pruned_at = at
            if n:
                log.info("pruned history samples past retention", extra={"rows": n})
        return sampled

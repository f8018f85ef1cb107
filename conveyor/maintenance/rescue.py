"""Jobs of workers that stopped heartbeating for ``rescue_after`` run again.

A supervisor rescues its own dead children at once, knowing how far each job had got (see
``worker.ledger``); this is the backstop for workers nobody watches any more: a lost host, a
supervisor killed with its children. With nobody to say how far they got, every job counts as
running (a worker_lost attempt, not charged to its retries).

A store outage silences every heartbeat, so right after one every worker looks stale. The
leader tells the service when it got the store back and how long it was gone (``hold``):
nobody is rescued until ``rescue_after`` plus that long has passed, time for live workers to
heartbeat again (their connection pools reconnect with a backoff that grows with the outage).
Otherwise an outage longer than ``rescue_after`` would run every job running at the time twice.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from ..store import Store

log = logging.getLogger("conveyor.maintenance")


class Rescue:
    def __init__(self, store: Store, *, rescue_after: float) -> None:
        self.store = store
        self.rescue_after = rescue_after
        self.held_until = float("-inf")  # time.monotonic() before which nobody is rescued

    def hold(self, mono: float, *, down: float = 0.0) -> None:
        """The store came back at monotonic ``mono`` after ``down`` seconds: heartbeats were
        impossible until now, so judge them only once ``rescue_after + down`` has passed."""
        self.held_until = mono + self.rescue_after + down

    def run_once(self, now: datetime | None = None) -> list[int]:
        if time.monotonic() < self.held_until:
            return []
        stale = self.store.processes_stale(self.rescue_after, now=now)
        if not stale:
            return []
        reason = f"worker stopped heartbeating for over {self.rescue_after:g}s"
        rescued = self.store.jobs_rescue(stale, reason, now=now)
        for process_id in stale:
            self.store.process_deregister(process_id)
        log.warning("rescued jobs of unresponsive workers",
                    extra={"workers": ",".join(stale), "jobs": len(rescued)})
        return rescued

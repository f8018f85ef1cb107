"""Running jobs past their ``timeout`` (plus a grace) or their cancellation grace.

Such a job may be stuck where no thread can be interrupted (C code, a socket read), so the
supervisor replaces its whole worker process; this service only finds them, by worker.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from ..models import JobRecord
from ..store import Store

TIMEOUT_GRACE = 0.5  # an async job's own timeout fires first; a blocked one is stopped after this


class Watchdog:
    def __init__(self, store: Store, workers: Callable[[], Collection[str]], *,
                 cancel_grace: float) -> None:
        self.store = store
        self.workers = workers  # the worker ids this supervisor watches
        self.cancel_grace = cancel_grace

    def run_once(self, now: datetime | None = None) -> dict[str, list[JobRecord]]:
        """Overdue jobs of the watched workers, by worker id."""
        overdue = self.store.jobs_overdue(list(self.workers()), grace=TIMEOUT_GRACE,
                                          cancel_grace=self.cancel_grace, now=now)
        by_worker: dict[str, list[JobRecord]] = {}
        for job in overdue:
            by_worker.setdefault(job.worker_id or "", []).append(job)
        return by_worker

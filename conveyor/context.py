"""``current_job()``: what a running job can ask about itself and tell the world."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import StoreError

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("conveyor.job")


@dataclass
class JobContext:
    """The job being run. Outside a worker (a plain call) it is inert: progress and logs go
    nowhere, ``id`` is None, ``attempt`` is 1."""

    id: int | None = None
    name: str = ""
    queue: str = ""
    attempt: int = 1
    max_attempts: int = 1
    lease: str | None = None
    _store: Store | None = None
    _cancelled: bool = False

    # Progress, heartbeats and log lines are reports, not the job's work: one that cannot reach
    # the store (an outage, a value the database refuses) is dropped with a warning, never
    # raised into the job, or an outage would fail jobs that were doing fine.
    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0-100); also counts as a heartbeat."""
        if not 0 <= percent <= 100:
            raise ValueError("progress percent must be within 0..100")
        if self._store is not None and self.id is not None and self.lease is not None:
            self._report(self._store.job_progress, self.id, self.lease, float(percent), message)

    def heartbeat(self) -> None:
        """Tell the store this job is alive (long jobs without progress to report)."""
        if self._store is not None and self.id is not None and self.lease is not None:
            self._report(self._store.job_progress, self.id, self.lease, None, None)

    def log(self, message: str) -> None:
        """Attach a line to this attempt, shown by ``conveyor jobs show`` and the dashboard."""
        if self._store is not None and self.id is not None:
            self._report(self._store.job_log, self.id, self.attempt, str(message))

    def _report(self, write: Callable[..., object], *args: object) -> None:
        try:
            write(*args)
        except StoreError as e:
            log.warning("a job's report could not be recorded; dropped",
                        extra={"job_id": self.id, "error": str(e)})

    def report_to(self, store: Store | None) -> None:
        """Send progress, heartbeats and log lines to ``store`` from now on (a forked process
        must not use its parent's connections)."""
        self._store = store

    @property
    def cancel_requested(self) -> bool:
        return self._cancelled

    def request_cancel(self) -> None:
        self._cancelled = True  # one bool, read by the job's own thread: no lock needed


_current: ContextVar[JobContext | None] = ContextVar("conveyor_current_job", default=None)


def current_job() -> JobContext:
    """The job running in this thread or task (an inert context outside a worker)."""
    ctx = _current.get()
    return ctx if ctx is not None else JobContext()

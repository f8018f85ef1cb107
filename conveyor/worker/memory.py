"""``max_memory``: a worker process over its limit is replaced; a job over its own is stopped.

A thread reads the process's resident memory twice a second (``/proc/self/statm``: no system
call beyond a small read). Two limits:

- the worker's (``max_memory`` setting, ``--max-memory``): past it, the process stops claiming,
  lets its running jobs finish as at a graceful shutdown, and exits with ``EXIT_REPLACE`` so its
  supervisor starts a fresh one at once;
- a job's (``@app.job(max_memory=...)``): while that job runs, the process's memory is its
  memory. Past it, the job cannot be stopped from another thread, so the whole process goes:
  the job's attempt fails with ``MemoryExceeded`` (retried per its policy), the jobs beside it
  go back to the queue uncounted, and the process exits for its supervisor to replace. Give
  memory-hungry jobs a queue and a ``--concurrency 1`` worker of their own, so that the memory
  measured is theirs alone.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from .. import executor

log = logging.getLogger("conveyor.worker")
EXIT_REPLACE = 75  # "replace me": the supervisor starts a new process at once, no backoff
EVERY = 0.5
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's resident memory, or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def job_limit(call: executor.Call) -> int | None:
    return getattr(call.definition, "max_memory", None)


class MemoryWatch:
    def __init__(
        self, worker_limit: int | None, running: Callable[[], list[executor.Call]], *,
        over_worker: Callable[[int], None], over_job: Callable[[executor.Call, int], None],
        measure: Callable[[], int | None] = resident_bytes,
    ) -> None:
        self.worker_limit = worker_limit
        self._running = running
        self._over_worker = over_worker
        self._over_job = over_job
        self._measure = measure
        self._replacing = False

    def check(self) -> None:
        """One look: act on the first limit crossed."""
        rss = self._measure()
        if rss is None:
            return
        for call in self._running():
            limit = job_limit(call)
            if limit is not None and rss > limit:
                self._over_job(call, rss)
                return
        if self.worker_limit is not None and rss > self.worker_limit and not self._replacing:
            self._replacing = True
            self._over_worker(rss)

    def run(self) -> None:
        """The watching thread (a daemon: it ends with the process)."""
        while True:
            time.sleep(EVERY)
            self.check()


def mb(n: int) -> str:
    return f"{n / 1_048_576:.0f} MB"

"""How a worker paces itself: how many jobs to claim ahead (``Pace``), and how it waits out a
store outage (``Outage``)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("conveyor.worker")

BATCH_WAIT = 0.002  # seconds a busy worker may wait to claim a bigger batch
PREFETCH_MAX = 3  # at most this many times ``concurrency`` jobs claimed beyond the slots
WAITING_MAX = 1.0  # seconds a job claimed ahead may wait for a slot before it is returned


class Pace:
    """Moving averages of how long a job runs and how long a claim takes, and from them how many
    jobs to claim ahead of free slots: what the slots get through during one claim round trip."""

    WEIGHT = 0.1  # of the newest sample

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.job = 0.0  # seconds; 0 until a job has run
        self.claim = 0.0

    def ran(self, seconds: float) -> None:
        self.job = seconds if not self.job else self.job + self.WEIGHT * (seconds - self.job)

    def stalled(self, seconds: float) -> None:
        """Slots stayed busy this long: take jobs to be that long until finished ones say not."""
        self.job = max(self.job, seconds)

    def claimed(self, seconds: float) -> None:
        self.claim = seconds if not self.claim else self.claim + self.WEIGHT * (seconds - self.claim)

    def ahead(self) -> int:
        """Jobs worth claiming beyond the free slots (0 while jobs are as long as a claim)."""
        if not self.job or not self.claim:
            return 0
        fits = int(self.concurrency * self.claim / self.job)
        return min(PREFETCH_MAX * self.concurrency, fits)


class Outage:
    """Logs a store outage once when it starts and once when it ends, and paces retries."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.delay = 0.1

    def failed(self, error: Exception) -> float:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("store unavailable, %s paused; retrying", self.what, extra={"error": str(error)})
        delay, self.delay = self.delay, min(self.delay * 2, 2.0)
        return delay

    def ok(self) -> None:
        if self.since is not None:
            log.warning("store back, %s resumed", self.what,
                        extra={"down_s": round(time.monotonic() - self.since, 2)})
            self.since, self.delay = None, 0.1

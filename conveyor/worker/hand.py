"""``Hand``: the jobs one worker process holds, and how far each has got.

A job is held from its claim until its outcome is written or it is returned. While held it is
waiting (claimed ahead of a free slot), running, or finished with its outcome not yet written.
Every change goes through here, under one lock, and is mirrored into the ``Ledger`` that the
supervisor reads if the process dies.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from .. import executor
from ..models import Held, HeldJob, JobRecord
from .ledger import Ledger

Pair = tuple[int, str]  # (job id, lease): one claim's jobs share a lease, so both are needed
EVERY_FINISH = 1 << 30  # a ``wake_at`` that any finished job reaches


class Hand:
    def __init__(self, concurrency: int, ledger: Ledger | None = None) -> None:
        self.concurrency = concurrency
        self.ledger = ledger or Ledger.for_worker(concurrency)
        self.freed = threading.Event()  # room came free (or the worker is stopping)
        # a finished job sets ``freed`` only once the jobs in hand fall to this many: the claim
        # loop sets it to where its next claim is due, and is not woken by every job before
        self.wake_at = EVERY_FINISH
        self._lock = threading.Lock()
        self._running: dict[int, executor.Call] = {}
        self._waiting: deque[tuple[JobRecord, float]] = deque()  # (job, monotonic when claimed)
        self._held: set[Pair] = set()

    # --- counts ---------------------------------------------------------------------------
    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def in_hand(self) -> int:
        """Running and waiting: what counts against the room a claim may fill."""
        with self._lock:
            return len(self._running) + len(self._waiting)

    # --- holding ----------------------------------------------------------------------------
    def hold(self, jobs: Iterable[JobRecord]) -> None:
        jobs = list(jobs)
        with self._lock:
            self._held.update((job.id, job.lease or "") for job in jobs)
        for job in jobs:
            self.ledger.hold(job.id, Held.WAITING)

    def let_go(self, pairs: Iterable[Pair]) -> None:
        """Written back or returned: no longer held."""
        pairs = list(pairs)
        with self._lock:
            self._held.difference_update(pairs)
        for job_id, _ in pairs:
            self.ledger.drop(job_id)

    def place(self, job: JobRecord, now: float) -> bool:
        """True if ``job`` may start now; else it waits for a slot (claimed ahead)."""
        with self._lock:
            if len(self._running) >= self.concurrency or self._waiting:
                self._waiting.append((job, now))
                return False
            return True

    def started(self, call: executor.Call) -> None:
        with self._lock:
            self._running[call.job.id] = call
        self.ledger.hold(call.job.id, Held.RUNNING)

    def finished(self, job: JobRecord) -> None:
        """Its outcome is made (not yet written): the slot is free."""
        self.ledger.hold(job.id, Held.FINISHED)
        with self._lock:
            self._running.pop(job.id, None)
            low = len(self._running) + len(self._waiting) <= self.wake_at
        if low:
            self.freed.set()

    def lost(self, job: JobRecord) -> None:
        """It ended without an outcome to write (recorded another way)."""
        with self._lock:
            self._running.pop(job.id, None)
        self.let_go([(job.id, job.lease or "")])
        self.freed.set()

    def next_waiting(self) -> JobRecord | None:
        """The oldest job claimed ahead, if a slot is free for it."""
        with self._lock:
            if self._waiting and len(self._running) < self.concurrency:
                return self._waiting.popleft()[0]
            return None

    def take_overdue(self, claimed_before: float) -> list[JobRecord]:
        """All waiting jobs, if the oldest was claimed before ``claimed_before``."""
        with self._lock:
            if not self._waiting or self._waiting[0][1] > claimed_before:
                return []
            overdue = [job for job, _ in self._waiting]
            self._waiting.clear()
            return overdue

    def put_back(self, jobs: list[JobRecord], now: float) -> None:
        with self._lock:
            self._waiting.extendleft((job, now) for job in reversed(jobs))

    def take_waiting(self) -> list[Pair]:
        """Every job claimed ahead and not started (at shutdown)."""
        with self._lock:
            pairs = [(job.id, job.lease or "") for job, _ in self._waiting]
            self._waiting.clear()
            return pairs

    def running_calls(self) -> list[executor.Call]:
        with self._lock:
            return list(self._running.values())

    def running_pairs(self) -> list[Pair]:
        with self._lock:
            return [(c.job.id, c.job.lease or "") for c in self._running.values()]

    # --- what the store says this process holds -----------------------------------------------
    def compare(self, recorded: list[HeldJob]) -> list[Pair]:
        """Relay cancellations to running jobs; return the recorded jobs this process never
        heard it held (a claim whose reply was lost)."""
        unheard = []
        with self._lock:
            for job in recorded:
                call = self._running.get(job.id)
                if call is not None and job.cancel_requested:
                    call.context.request_cancel()
                elif (job.id, job.lease) not in self._held:
                    unheard.append((job.id, job.lease))
        return unheard

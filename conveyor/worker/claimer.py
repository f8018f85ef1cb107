"""``Claimer``: one turn of a worker's claim loop, driven by the caller with explicit times.

``step(now)`` returns jobs claimed ahead that waited too long, looks for a suspect to run alone
now and then, claims for the room there is (carrying the outcomes waiting to be written in the
same commit) and hands each job to a slot or the waiting line. It returns how long the caller
may wait before the next turn (``IDLE``: until the store says jobs may be ready).

Claiming ahead: when recent jobs are much shorter than a claim's round trip, a claim also takes
the jobs the slots will get through during the next round trip (``Pace``), so that one commit
serves many short jobs. They wait, already claimed, about one round trip; past ``WAITING_MAX``
(the slots stayed busy) they go back to the queue unstarted, nothing recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import StoreError, StoreUnavailable
from ..models import JobRecord
from ..queues import QueueSpec
from ..store import Store
from .completer import Completer
from .hand import Hand
from .pacing import BATCH_WAIT, WAITING_MAX, Pace

log = logging.getLogger("conveyor.worker")
IDLE = -1.0  # step() found nothing to claim: wait for the store's wake-up
SUSPECTS_EVERY = 1.0  # seconds between looks for suspects (jobs to run alone) while a slot is free


class Claimer:
    def __init__(
        self, store: Callable[[], Store], worker_id: str, queues: QueueSpec, hand: Hand,
        completer: Completer, launch: Callable[[JobRecord], object], *, poll: float,
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self.queues = queues
        self._order = queues.selector()
        self.hand = hand
        self.completer = completer
        self._launch = launch
        self.pace = Pace(hand.concurrency)
        self.poll = poll
        self._suspects_at = float("-inf")  # when to look for suspects next
        self._batch_since: float | None = None  # a small claim held back since then

    def step(self, now: float) -> float:
        """One turn at monotonic time ``now``; returns seconds to wait (0: go on, ``IDLE``)."""
        self.return_overdue(now)
        room = self.hand.concurrency + self.pace.ahead()
        # the caller's wait ends when room comes free (set before counting what is in hand, so
        # that no job finishing meanwhile goes unnoticed)
        self.hand.wake_at = room - 1
        wanted = room - self.hand.in_hand()
        if wanted <= 0:
            self._batch_since = None
            return min(self.poll, WAITING_MAX)
        # while jobs are in hand, wait a moment (BATCH_WAIT) for half the room to come free: a
        # claim is a commit, and one commit for many jobs is what lets short jobs drain fast.
        # Meanwhile only half the room wakes the caller, not each job that ends
        if wanted < max(1, room // 2) and wanted < room:
            since = self._batch_since = self._batch_since if self._batch_since is not None else now
            if now - since < BATCH_WAIT:
                self.hand.wake_at = room - max(1, room // 2)
                return BATCH_WAIT - (now - since)
        self._batch_since = None
        self.claim_suspect(now)
        began = time.perf_counter()
        jobs = self.claim(wanted)
        self.pace.claimed(time.perf_counter() - began)
        for job in jobs:
            if self.hand.place(job, now):
                self._launch(job)
        return 0.0 if jobs else IDLE

    def claim(self, free: int) -> list[JobRecord]:
        """Claim for the free slots, queue by queue; outcomes waiting to be written ride along
        with the first claim, in the same commit."""
        store = self._store()
        pending = self.completer.take()
        claimed: list[JobRecord] = []
        for name in self._order.next():
            if pending:
                try:
                    accepted, got = store.job_finish_and_claim(
                        pending, self.worker_id, name, free - len(claimed))
                except StoreUnavailable:
                    self.completer.put_back(pending)  # kept until the store is back
                    raise
                except StoreError as e:  # the store refused one of them: sort it out alone
                    self.completer.record_each(pending, e)
                    pending = []
                    continue
                self.completer.written(pending, accepted)
                pending = []
            else:
                got = store.job_claim(self.worker_id, name, free - len(claimed))
            self.hand.hold(got)
            claimed += got
            if len(claimed) >= free:
                break
        if pending:  # every queue was skipped: the completer writes them
            self.completer.put_back(pending)
        return claimed

    def claim_suspect(self, now: float) -> None:
        """Now and then, with a slot free, take one job lost with its process twice in a row,
        to run it alone (see sandbox)."""
        if now < self._suspects_at or self.hand.busy >= self.hand.concurrency:
            return
        self._suspects_at = now + SUSPECTS_EVERY
        store = self._store()
        for name in self.queues.names:
            got = store.job_claim(self.worker_id, name, 1, suspects=True)
            if got:
                self.hand.hold(got)
                self._launch(got[0])
                return

    def return_overdue(self, now: float) -> None:
        """Jobs claimed ahead wait about one claim's round trip, unless the jobs in the slots
        turn out long (the moving average learns it only as they finish). Past WAITING_MAX they
        go back to the queue unstarted, nothing recorded, for a worker with a free slot."""
        overdue = self.hand.take_overdue(now - WAITING_MAX)
        if not overdue:
            return
        self.pace.stalled(WAITING_MAX)  # or the next claim would take as many ahead again
        pairs = [(j.id, j.lease or "") for j in overdue]
        try:
            self._store().job_release(pairs, started=False)
        except StoreError:
            self.hand.put_back(overdue, now)  # still ours: run them here, or try next turn
            return
        self.hand.let_go(pairs)
        log.info("returned jobs claimed ahead: the slots stayed busy",
                 extra={"worker": self.worker_id, "jobs": len(overdue)})

"""``Heartbeat``: keeps a worker process visibly alive, relays cancellation requests to its
running jobs, and returns jobs the store records under it that it never heard it claimed."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import StoreError
from ..store import Store
from .hand import Hand, Pair
from .pacing import Outage

log = logging.getLogger("conveyor.worker")
UNHEARD_REASON = (
    "the claim committed but its reply never reached the worker (connection lost);"
    " returned to the queue, attempt not counted"
)


class Heartbeat:
    def __init__(self, store: Callable[[], Store], worker_id: str, hand: Hand) -> None:
        self._store = store
        self.worker_id = worker_id
        self._hand = hand
        self._outage = Outage("heartbeats")
        self._suspects: set[Pair] = set()  # unheard of at the last beat

    def beat(self) -> bool:
        """One heartbeat (False: the store did not answer; try again soon). A job unheard of in
        two beats running (not a claim whose reply is still on its way) was claimed by a reply
        that got lost, and goes back uncounted."""
        try:
            recorded = self._store().process_heartbeat(self.worker_id)
            self._outage.ok()
        except StoreError as e:
            self._outage.failed(e)
            return False
        unheard = self._hand.compare(recorded)
        twice = [pair for pair in unheard if pair in self._suspects]
        self._suspects = set(unheard)
        if twice:
            self._return(twice)
        return True

    def _return(self, pairs: list[Pair]) -> None:
        try:
            n = self._store().job_release(pairs, reason=UNHEARD_REASON, started=False)
        except StoreError:
            return  # the next heartbeat tries again
        if n:
            log.warning("returned jobs whose claim never reached this worker",
                        extra={"worker": self.worker_id, "jobs": n,
                               "job_ids": ",".join(str(i) for i, _ in pairs)})

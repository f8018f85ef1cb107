"""``Completer``: writes outcomes back to the store.

A busy claim loop takes the outcomes waiting here and writes them with its next claim, in the
same commit. The completer thread writes what the claim loop left, in batches: at once when the
claim loop is idle, else after ``GRACE``. Through a store outage it keeps them and retries; a
batch the store refuses (it answered, and said no) is written one by one, so one bad outcome
never holds the others, or its slot, forever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from .. import executor
from ..errors import StoreError, StoreUnavailable
from ..models import JobOutcome
from ..store import Store
from .hand import Hand, Pair
from .pacing import Outage

log = logging.getLogger("conveyor.worker")
GRACE = 0.02  # seconds an outcome waits to ride along with a claim before its own write
BATCH = 1000
_FLUSH = object()


class Completer:
    def __init__(
        self, store: Callable[[], Store], hand: Hand, *,
        accepted: Callable[[JobOutcome], None],
        give_back: Callable[[list[Pair], str], None],
    ) -> None:
        self._store = store
        self._hand = hand
        self._accepted = accepted  # called for each outcome the store took (events fire there)
        self._give_back = give_back  # returns jobs whose outcome cannot be recorded at all
        self._outcomes: queue.SimpleQueue[JobOutcome | object] = queue.SimpleQueue()
        self.idle = threading.Event()  # set while the claim loop waits: no claim is coming
        self.force = threading.Event()  # stop even with outcomes unwritten

    def put(self, outcome: JobOutcome) -> None:
        self._outcomes.put(outcome)

    def flush(self) -> None:
        """Write what is left, then stop the thread."""
        self._outcomes.put(_FLUSH)

    def take(self) -> list[JobOutcome]:
        """The outcomes waiting now (for the claim loop to write with its claim)."""
        taken: list[JobOutcome] = []
        while len(taken) < BATCH:
            try:
                item = self._outcomes.get_nowait()
            except queue.Empty:
                break
            if item is _FLUSH:  # not ours to consume: the completer stops on it
                self._outcomes.put(item)
                break
            taken.append(item)  # type: ignore[arg-type]
        return taken

    def put_back(self, outcomes: list[JobOutcome]) -> None:
        for outcome in outcomes:
            self._outcomes.put(outcome)

    def written(self, outcomes: list[JobOutcome], accepted: list[bool]) -> None:
        """In the store (or refused there as stale): their jobs are no longer held."""
        self._hand.let_go((o.job_id, o.lease) for o in outcomes)
        for outcome, ok in zip(outcomes, accepted, strict=True):
            if ok:
                self._accepted(outcome)
            else:
                log.warning("result discarded: the job was taken back from this worker",
                            extra={"job_id": outcome.job_id, "attempt": outcome.attempt})

    def record_each(self, outcomes: list[JobOutcome], error: StoreError) -> None:
        """The store refused a batch (not unavailable: it answered no). Write them one by one;
        one it still refuses becomes a dead attempt that says why; if not even that fits, the
        job goes back, attempt not counted."""
        log.warning("the store refused a batch of outcomes; recording them one by one",
                    extra={"error": str(error)})
        store = self._store()
        for outcome in outcomes:
            try:
                self.written([outcome], store.job_finish_many([outcome]))
                continue
            except StoreUnavailable:
                self.put(outcome)  # kept until the store is back
                continue
            except StoreError as e:
                refused = executor.unrecordable(outcome, e)
            try:
                self.written([refused], store.job_finish_many([refused]))
            except StoreUnavailable:
                self.put(refused)
            except StoreError as e:
                log.error("could not record a job's outcome; returning it",
                          extra={"job_id": outcome.job_id, "error": str(e)})
                self._give_back([(outcome.job_id, outcome.lease)],
                                f"its outcome could not be recorded: {e}")
                self._hand.let_go([(outcome.job_id, outcome.lease)])

    def run(self) -> None:
        """The completer thread: until flushed, write what the claim loop did not carry."""
        outage = Outage("recording results")
        pending: list[JobOutcome] = []
        stopping = False
        while not (stopping and not pending):
            if not pending:
                item = self._outcomes.get()
                if item is _FLUSH:
                    stopping = True
                    continue
                # a busy claim loop writes outcomes with its next claim, in the same commit;
                # give it that chance, and write here only what it left (an idle worker's, at
                # once: no claim is coming to carry them)
                self._outcomes.put(item)
                self.idle.wait(GRACE)
            while len(pending) < BATCH:
                try:
                    item = self._outcomes.get_nowait()
                except queue.Empty:
                    break
                if item is _FLUSH:
                    stopping = True
                else:
                    pending.append(item)  # type: ignore[arg-type]
            if not pending:
                continue
            try:
                accepted = self._store().job_finish_many(pending)
                outage.ok()
            except StoreUnavailable as e:
                if self.force.is_set():
                    return
                time.sleep(outage.failed(e))
                continue
            except StoreError as e:
                self.record_each(pending, e)
                pending = []
                continue
            self.written(pending, accepted)
            pending = []

"""One worker process: claims jobs into ``concurrency`` slots and runs them.

Sync jobs run on slot threads, async jobs on one event loop in its own thread. The main thread
claims (for the free slots, in one store call per queue); a completer thread writes outcomes back
in batches; a heartbeat thread keeps the process visibly alive and relays cancellation requests.
No SQL here: every store access is one Store method.

Prefetch: when recent jobs are much shorter than a claim's round trip, each claim also takes the
jobs the slots will get through during the next round trip (``Pace``), so that one commit serves
many short jobs. They wait in the worker, already claimed, for no longer than about one round trip;
for jobs that take longer than a round trip nothing is taken ahead of a free slot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import executor, sandbox
from .clock import utcnow
from .errors import StoreError, StoreUnavailable
from .ledger import Ledger
from .models import SUSPECT_AT, Held, JobOutcome, JobRecord, ProcessRecord
from .queues import QueueSpec

if TYPE_CHECKING:
    from .app import Conveyor

log = logging.getLogger("conveyor.worker")
_FLUSH = object()
BATCH_WAIT = 0.002  # seconds a busy worker may wait to claim a bigger batch
COMPLETER_GRACE = 0.02  # seconds an outcome waits to ride along with a claim before its own write
PREFETCH_MAX = 3  # at most this many times ``concurrency`` jobs claimed beyond the slots
WAITING_MAX = 1.0  # seconds a job claimed ahead may wait for a slot before it is returned
SUSPECTS_EVERY = 1.0  # seconds between looks for suspects (jobs to run alone) while a slot is free


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


class Slots:
    """``size`` threads running sync jobs handed over through one queue. Lighter than a
    ThreadPoolExecutor (no Future, no idle semaphore per call): a hand-over is one put()."""

    def __init__(self, size: int, run: Callable[[executor.Call], None]) -> None:
        self._calls: queue.SimpleQueue[executor.Call | None] = queue.SimpleQueue()
        self._run = run
        self._threads = [
            threading.Thread(target=self._loop, name=f"conveyor-job-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, call: executor.Call) -> None:
        self._calls.put(call)

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                self._run(call)
            except BaseException:  # never lose the slot: the run already recorded what it could
                log.exception("slot thread: unexpected error after a job", extra={
                    "job_id": call.job.id})

    def shutdown(self) -> None:
        """Threads still in a job finish it and then stop; idle ones stop at once."""
        for _ in self._threads:
            self._calls.put(None)


class Worker:
    def __init__(
        self, app: Conveyor, *, worker_id: str, queues: QueueSpec | None = None,
        concurrency: int = 10, supervisor_id: str | None = None, ledger: Ledger | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.app = app
        self.id = worker_id
        self.queues = queues or QueueSpec()
        self._order = self.queues.selector()
        self.concurrency = concurrency
        self._pace = Pace(concurrency)
        self.supervisor_id = supervisor_id
        self.parent_pid = os.getppid()
        self._running: dict[int, executor.Call] = {}
        # claimed ahead, waiting for a free slot: (job, time.monotonic() when claimed)
        self._waiting: deque[tuple[JobRecord, float]] = deque()
        # (job id, lease) claimed and not yet written back or returned; one claim's jobs share
        # a lease, so the lease alone does not say which of them are still held
        self._held: set[tuple[int, str]] = set()
        # what this process holds, readable by its supervisor after a crash (see ledger)
        self._ledger = ledger or Ledger.for_worker(concurrency)
        self._suspects_at = 0.0  # time.monotonic() of the next look for suspects
        self._lock = threading.Lock()
        self._outcomes: queue.SimpleQueue[JobOutcome | object] = queue.SimpleQueue()
        self._slot_freed = threading.Event()
        self._idle = threading.Event()  # the claim loop waits for jobs: no claim is coming soon
        self._stop = threading.Event()
        self._force = threading.Event()
        self._slots = Slots(concurrency, self._run_sync)
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- control ------------------------------------------------------------------------
    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming; running jobs finish up to ``shutdown_timeout`` (``force``: not at all)."""
        if force:
            self._force.set()
        self._stop.set()
        self._slot_freed.set()

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    # --- main ---------------------------------------------------------------------------
    def run(self) -> int:
        store_outage = Outage("worker start")
        while not self._stop.is_set():
            try:
                self._register()
                store_outage.ok()
                break
            except StoreError as e:
                self._stop.wait(store_outage.failed(e))
        completer = threading.Thread(target=self._complete_loop, name="conveyor-completer")
        beat = threading.Thread(target=self._heartbeat_loop, name="conveyor-heartbeat", daemon=True)
        self._slots.start()
        completer.start()
        beat.start()
        log.info("worker started", extra={"worker": self.id, "queues": str(self.queues),
                                          "concurrency": self.concurrency})
        try:
            self._claim_loop()
        finally:
            self._idle.set()
            self._shutdown(completer)
        return 0

    def _register(self) -> None:
        now = utcnow()
        self.app.store.process_register(ProcessRecord(
            id=self.id, kind="worker", host=self.app.settings.host, pid=os.getpid(),
            started_at=now, heartbeat_at=now, supervisor_id=self.supervisor_id,
            queues=self.queues.names, concurrency=self.concurrency,
            job_names=tuple(self.app.registry.names()),
        ))

    def _claim_loop(self) -> None:
        outage = Outage("claiming")
        poll = self.app.settings.poll_interval
        while not self._stop.is_set():
            if self._orphaned():
                break
            self._slot_freed.clear()
            self._return_overdue_waiting()
            wanted = self._wanted()
            if wanted <= 0:
                self._slot_freed.wait(min(poll, WAITING_MAX))
                continue
            try:
                self._claim_suspect()
                began = time.perf_counter()
                jobs = self._claim(wanted)
                self._pace.claimed(time.perf_counter() - began)
                if not jobs:
                    self._idle.set()
                    self.app.store.wait_for_jobs(poll)
                    self._idle.clear()
                outage.ok()
            except StoreError as e:
                self._stop.wait(outage.failed(e))
                continue
            for job in jobs:
                self._start(job)

    def _claim_suspect(self) -> None:
        """Now and then, with a slot free, take one job that was lost with its process twice
        in a row, to run it alone (see sandbox)."""
        now = time.monotonic()
        if now < self._suspects_at or self.busy >= self.concurrency:
            return
        self._suspects_at = now + SUSPECTS_EVERY
        for name in self.queues.names:
            got = self.app.store.job_claim(self.id, name, 1, suspects=True)
            if got:
                self._hold(got)
                self._launch(got[0])
                return

    def _hold(self, jobs: list[JobRecord]) -> None:
        with self._lock:
            self._held.update((job.id, job.lease or "") for job in jobs)
        for job in jobs:
            self._ledger.hold(job.id, Held.WAITING)

    def _let_go(self, pairs: list[tuple[int, str]]) -> None:
        """These jobs are written back or returned: no longer held."""
        with self._lock:
            self._held.difference_update(pairs)
        for job_id, _ in pairs:
            self._ledger.drop(job_id)

    def _return_overdue_waiting(self) -> None:
        """Jobs claimed ahead wait about one claim's round trip, unless the jobs in the slots
        turn out long (the moving average learns it only as they finish). Past WAITING_MAX they
        go back to the queue, attempt not counted, for a worker with a free slot."""
        limit = time.monotonic() - WAITING_MAX
        with self._lock:
            if not self._waiting or self._waiting[0][1] > limit:
                return
            overdue = [job for job, _ in self._waiting]
            self._waiting.clear()
        self._pace.stalled(WAITING_MAX)  # or the next claim would take as many ahead again
        pairs = [(j.id, j.lease or "") for j in overdue]
        try:
            self.app.store.job_release(pairs, reason=OVERDUE_WAITING_REASON, started=False)
        except StoreError:
            with self._lock:  # still ours: run them here, or try again on the next turn
                self._waiting.extendleft((job, time.monotonic()) for job in reversed(overdue))
            return
        self._let_go(pairs)
        log.info("returned jobs claimed ahead: the slots stayed busy",
                 extra={"worker": self.id, "jobs": len(overdue)})

    def _in_hand(self) -> int:
        with self._lock:
            return len(self._running) + len(self._waiting)

    def _wanted(self) -> int:
        """How many jobs to claim now: free slots plus what to claim ahead (Pace). While jobs are
        in hand, wait a moment (BATCH_WAIT) for half of that room to come free: a claim is a
        commit, and one commit for many jobs is what lets short jobs drain fast. An idle worker
        claims at once."""
        room = self.concurrency + self._pace.ahead()
        wanted = room - self._in_hand()
        deadline = time.monotonic() + BATCH_WAIT
        while 0 < wanted < max(1, room // 2) and wanted < room:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._slot_freed.wait(left)
            self._slot_freed.clear()
            wanted = room - self._in_hand()
        return wanted

    def _claim(self, free: int) -> list[JobRecord]:
        """Claim for the free slots, queue by queue; outcomes waiting to be written ride along
        with the first claim, in the same commit."""
        pending = self._take_outcomes()
        claimed: list[JobRecord] = []
        for name in self._order.next():
            if pending:
                try:
                    accepted, got = self.app.store.job_finish_and_claim(
                        pending, self.id, name, free - len(claimed))
                except StoreUnavailable:
                    for outcome in pending:  # the completer keeps them until the store is back
                        self._outcomes.put(outcome)
                    raise
                except StoreError as e:  # the store refused one of them: sort it out alone
                    self._record_each(pending, e)
                    pending = []
                    continue
                self._written(pending, accepted)
                pending = []
            else:
                got = self.app.store.job_claim(self.id, name, free - len(claimed))
            self._hold(got)
            claimed += got
            if len(claimed) >= free:
                break
        return claimed

    def _take_outcomes(self) -> list[JobOutcome]:
        taken: list[JobOutcome] = []
        while len(taken) < 1000:
            try:
                item = self._outcomes.get_nowait()
            except queue.Empty:
                break
            if item is _FLUSH:  # not ours to consume: the completer stops on it
                self._outcomes.put(item)
                break
            taken.append(item)  # type: ignore[arg-type]
        return taken

    def _written(self, outcomes: list[JobOutcome], accepted: list[bool]) -> None:
        """Outcomes are in the store (or were refused there): their leases are done with."""
        self._let_go([(o.job_id, o.lease) for o in outcomes])
        _log_rejected(outcomes, accepted)

    def _record_each(self, outcomes: list[JobOutcome], error: StoreError) -> None:
        """A batch of outcomes the store refused (not unavailable: it answered no). Write them
        one by one; one it still refuses (a result the database cannot hold) becomes a failed
        attempt that says why, so the job ends and its slot is never held forever."""
        log.warning("the store refused a batch of outcomes; recording them one by one",
                    extra={"worker": self.id, "error": str(error)})
        for outcome in outcomes:
            try:
                self._written([outcome], self.app.store.job_finish_many([outcome]))
                continue
            except StoreUnavailable:
                self._outcomes.put(outcome)  # the completer keeps it until the store is back
                continue
            except StoreError as e:
                refused = executor.unrecordable(outcome, e)
            try:
                self._written([outcome], self.app.store.job_finish_many([refused]))
            except StoreUnavailable:
                self._outcomes.put(refused)
            except StoreError as e:  # not even the error fits: give the job back, uncounted
                log.error("could not record a job's outcome; returning it",
                          extra={"job_id": outcome.job_id, "error": str(e)})
                self._release([(outcome.job_id, outcome.lease)],
                              f"its outcome could not be recorded: {e}")
                self._let_go([(outcome.job_id, outcome.lease)])

    def _start(self, job: JobRecord) -> None:
        """Run a claimed job in a free slot, or keep it until one frees up (claimed ahead)."""
        with self._lock:
            if len(self._running) >= self.concurrency or self._waiting:
                self._waiting.append((job, time.monotonic()))
                return
        self._launch(job)

    def _launch(self, job: JobRecord) -> None:
        call = executor.prepare(self.app, job, self.id)
        if isinstance(call, JobOutcome):
            self._ledger.hold(job.id, Held.FINISHED)
            self._outcomes.put(call)
            self._slot_freed.set()
            return
        assert call.definition is not None
        with self._lock:
            self._running[job.id] = call
        self._ledger.hold(job.id, Held.RUNNING)
        if call.definition.is_async and job.lost_count < SUSPECT_AT:
            asyncio.run_coroutine_threadsafe(self._run_async(call), self._event_loop())
        else:
            self._slots.submit(call)

    def _run_sync(self, call: executor.Call) -> None:
        if call.job.lost_count >= SUSPECT_AT:
            self._run_alone(call)
            return
        try:
            outcome = executor.run_sync(self.app, call)
        except BaseException as e:  # after the job's body: encoding, a hook, the log
            outcome = executor.unrecordable(executor.bare_outcome(call), e)
        self._done(call, outcome)

    async def _run_async(self, call: executor.Call) -> None:
        try:
            outcome = await executor.run_async(self.app, call)
        except BaseException as e:
            outcome = executor.unrecordable(executor.bare_outcome(call), e)
        self._done(call, outcome)

    def _run_alone(self, call: executor.Call) -> None:
        """A suspect runs alone in a fresh process; if that process dies, the job killed it."""
        job = call.job
        log.warning("running a job alone: it was lost with its process twice in a row",
                    extra={"job_id": job.id, "job_name": job.name, "worker": self.id})
        ended = sandbox.run_alone(self.app, call)
        if isinstance(ended, JobOutcome):
            self._done(call, ended)
            return
        reason = f"the process running it alone {ended}"
        outage = Outage("recording a poison pill")
        state = None
        while not self._force.is_set():
            try:
                state = self.app.store.job_lost(job.id, job.lease or "", reason)
                break
            except StoreError as e:
                time.sleep(outage.failed(e))
        log.error("a job killed the process running it alone", extra={
            "job_id": job.id, "job_name": job.name, "exit": ended, "state": str(state)})
        with self._lock:
            self._running.pop(job.id, None)
        self._let_go([(job.id, job.lease or "")])
        self._slot_freed.set()

    def _done(self, call: executor.Call, outcome: JobOutcome) -> None:
        self._pace.ran(time.perf_counter() - call.started)
        self._ledger.hold(call.job.id, Held.FINISHED)
        following = None
        with self._lock:
            self._running.pop(call.job.id, None)
            if self._waiting and not self._stop.is_set():
                following = self._waiting.popleft()[0]
        self._outcomes.put(outcome)
        self._slot_freed.set()
        while following is not None:
            self._launch(following)
            with self._lock:  # the next one, if that job could not even start
                following = (self._waiting.popleft()[0] if self._waiting and not self._stop.is_set()
                             and len(self._running) < self.concurrency else None)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The one loop for async jobs, made on first use (from the claim loop or a slot
        thread starting a job that waited: under the lock, or two loops could exist)."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="conveyor-async",
                                 daemon=True).start()
            return self._loop

    def _orphaned(self) -> bool:
        """A worker whose supervisor died stops, instead of running on unsupervised."""
        if self.supervisor_id is None or os.getppid() == self.parent_pid:
            return False
        log.error("supervisor is gone; stopping", extra={"worker": self.id})
        self.request_stop()
        return True

    # --- background threads ---------------------------------------------------------------
    def _complete_loop(self) -> None:
        """Write outcomes the claim loop did not carry with a claim, in batches; during a store
        outage keep them and retry."""
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
                self._idle.wait(COMPLETER_GRACE)
            while len(pending) < 1000:
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
                accepted = self.app.store.job_finish_many(pending)
                outage.ok()
            except StoreUnavailable as e:
                if self._force.is_set():
                    return
                time.sleep(outage.failed(e))
                continue
            except StoreError as e:
                self._record_each(pending, e)
                pending = []
                continue
            self._written(pending, accepted)
            pending = []

    def _heartbeat_loop(self) -> None:
        outage = Outage("heartbeats")
        every = self.app.settings.heartbeat_every
        suspects: set[str] = set()
        while not self._stop.wait(every):
            if self._orphaned():
                return
            try:
                held = self.app.store.process_heartbeat(self.id)
                outage.ok()
            except StoreError as e:
                outage.failed(e)
                continue
            unheard: dict[str, int] = {}
            with self._lock:
                for job in held:
                    call = self._running.get(job.id)
                    if call is not None and job.cancel_requested:
                        call.context.request_cancel()
                    elif (job.id, job.lease) not in self._held:
                        unheard[job.lease] = job.id
            # unheard of in two heartbeats running: not a claim whose reply is on its way
            twice = [(job_id, lease) for lease, job_id in unheard.items() if lease in suspects]
            suspects = set(unheard)
            if twice:
                self._return_unheard(twice)

    def _return_unheard(self, leases: list[tuple[int, str]]) -> None:
        """Jobs the store records as claimed by this worker that it never heard of: a claim
        that committed but whose reply was lost (the connection broke on the way back). Left
        alone they would stay 'running' under a live worker forever; return them, uncounted."""
        try:
            n = self.app.store.job_release(leases, reason=UNHEARD_REASON, started=False)
        except StoreError:
            return  # the next heartbeat tries again
        if n:
            log.warning("returned jobs whose claim never reached this worker",
                        extra={"worker": self.id, "jobs": n,
                               "job_ids": ",".join(str(i) for i, _ in leases)})

    # --- shutdown -------------------------------------------------------------------------
    def _shutdown(self, completer: threading.Thread) -> None:
        deadline = time.monotonic() + self.app.settings.shutdown_timeout
        with self._lock:  # claimed ahead and never started: back to the queue at once
            unstarted = [(job.id, job.lease or "") for job, _ in self._waiting]
            self._waiting.clear()
        if unstarted:
            self._release(unstarted, UNSTARTED_REASON, level=logging.INFO, started=False,
                          said="returned jobs claimed ahead and not started")
            self._let_go(unstarted)
        if self.busy:
            log.info("stopping: waiting for running jobs", extra={
                "worker": self.id, "running": self.busy,
                "timeout_s": self.app.settings.shutdown_timeout})
        while self.busy and not self._force.is_set() and time.monotonic() < deadline:
            self._slot_freed.clear()
            self._slot_freed.wait(0.05)
        with self._lock:
            leftover = [(c.job.id, c.job.lease or "") for c in self._running.values()]
        self._outcomes.put(_FLUSH)
        completer.join(timeout=None if not self._force.is_set() else 5)
        if leftover:
            self._release(leftover)
        returned = len(unstarted) + len(leftover)
        try:
            self.app.store.process_deregister(self.id)
        except StoreError as e:
            log.warning("could not deregister worker", extra={"error": str(e)})
        self._slots.shutdown()
        log.info("worker stopped", extra={"worker": self.id, "returned": returned})

    def _release(
        self, leases: list[tuple[int, str]], reason: str | None = None, *,
        said: str = "returned unfinished jobs to ready, attempt not counted",
        level: int = logging.WARNING, started: bool = True,
    ) -> None:
        outage = Outage("returning unfinished jobs")
        deadline = time.monotonic() + 30
        while True:
            try:
                n = self.app.store.job_release(leases, reason=reason, started=started)
                log.log(level, said, extra={"worker": self.id, "jobs": n})
                return
            except StoreError as e:
                if time.monotonic() > deadline:
                    log.error("could not return jobs; they will be rescued",
                              extra={"worker": self.id, "error": str(e)})
                    return
                time.sleep(outage.failed(e))


UNSTARTED_REASON = (
    "claimed ahead of a free slot and not started before the worker stopped;"
    " returned to the queue, attempt not counted"
)
OVERDUE_WAITING_REASON = (
    "claimed ahead of a free slot, but the slots stayed busy; returned to the queue unstarted,"
    " attempt not counted"
)
UNHEARD_REASON = (
    "the claim committed but its reply never reached the worker (connection lost);"
    " returned to the queue, attempt not counted"
)


def _log_rejected(outcomes: list[JobOutcome], accepted: list[bool]) -> None:
    for outcome, ok in zip(outcomes, accepted, strict=True):
        if not ok:
            log.warning("result discarded: the job was taken back from this worker",
                        extra={"job_id": outcome.job_id, "attempt": outcome.attempt})

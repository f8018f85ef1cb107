"""``Worker``: one worker process. Claims jobs into ``concurrency`` slots and runs them.

Sync jobs run on slot threads, async jobs on one event loop in its own thread, suspects alone
in a forked process. The main thread runs the claim loop (``Claimer.step``); the completer
thread writes outcomes the claim loop did not carry; the heartbeat thread keeps the process
visibly alive. No SQL here: every store access is one Store method.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from .. import executor, logs
from ..clock import utcnow
from ..errors import MemoryExceeded, StoreError
from ..models import SUSPECT_AT, JobOutcome, JobRecord, JobState, ProcessRecord
from ..queues import QueueSpec
from ..store import Store
from . import sandbox
from .claimer import IDLE, Claimer
from .completer import Completer
from .hand import EVERY_FINISH, Hand, Pair
from .heartbeat import Heartbeat
from .ledger import Ledger
from .memory import EXIT_REPLACE, MemoryWatch, job_limit, mb
from .pacing import Outage
from .slots import AsyncLoop, Slots

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.worker")


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
        self.concurrency = concurrency
        self.supervisor_id = supervisor_id
        self.parent_pid = os.getppid()
        self._settings = app.settings
        self._runtime = executor.Runtime(app.registry, app.clock, self._store)
        self.hand = Hand(concurrency, ledger)
        self.completer = Completer(self._store, self.hand, accepted=self._accepted,
                                   give_back=self._release)
        self.claimer = Claimer(self._store, worker_id, self.queues, self.hand, self.completer,
                               self._launch, poll=app.settings.poll_interval)
        self.heartbeat = Heartbeat(self._store, worker_id, self.hand)
        self._stop = threading.Event()  # stop claiming
        self._gone = threading.Event()  # shut down: nothing held any more, stop heartbeating
        self._slots = Slots(concurrency, self._run_sync)
        self._async = AsyncLoop()
        self._exit_code = 0  # EXIT_REPLACE: over its memory limit, to be replaced
        self._memory = MemoryWatch(app.settings.max_memory, self.hand.running_calls,
                                   over_worker=self._over_memory, over_job=self._job_over_memory)

    def _store(self) -> Store:
        return self.app.store  # reopened after fork, on first use in the new process

    # --- control ------------------------------------------------------------------------
    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming; running jobs finish up to ``shutdown_timeout`` (``force``: not at all)."""
        if force:
            self.completer.force.set()
        self._stop.set()
        self.hand.freed.set()

    @property
    def busy(self) -> int:
        return self.hand.busy

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
        completer = threading.Thread(target=self.completer.run, name="conveyor-completer")
        beat = threading.Thread(target=self._heartbeat_loop, name="conveyor-heartbeat", daemon=True)
        self._slots.start()
        completer.start()
        beat.start()
        threading.Thread(target=self._memory.run, name="conveyor-memory", daemon=True).start()
        log.info("worker started", extra={"worker": self.id, "queues": str(self.queues),
                                          "concurrency": self.concurrency})
        try:
            self._claim_loop()
        finally:
            self.completer.idle.set()
            try:
                self._shutdown(completer)
            finally:
                self._gone.set()
                logs.flush()  # a worker process leaves through os._exit, past atexit
        return self._exit_code

    def _register(self) -> None:
        now = utcnow()
        self._store().process_register(ProcessRecord(
            id=self.id, kind="worker", host=self._settings.host, pid=os.getpid(),
            started_at=now, heartbeat_at=now, supervisor_id=self.supervisor_id,
            queues=self.queues.names, concurrency=self.concurrency,
            job_names=tuple(self.app.registry.names()),
        ))

    def _claim_loop(self) -> None:
        outage = Outage("claiming")
        while not self._stop.is_set():
            if self._orphaned():
                break
            self.hand.freed.clear()
            try:
                wait = self.claimer.step(time.monotonic())
                outage.ok()
            except StoreError as e:
                self._stop.wait(outage.failed(e))
                continue
            if wait == IDLE:
                self.completer.idle.set()
                self._store().wait_for_jobs(self._settings.poll_interval)
                self.completer.idle.clear()
            elif wait > 0:
                self.hand.freed.wait(wait)

    # --- running jobs -----------------------------------------------------------------------
    def _launch(self, job: JobRecord, *, here: bool = False) -> executor.Call | None:
        """Start ``job``: async ones on the event loop, sync ones on a slot thread; with
        ``here`` (called from a slot thread that just came free), a sync job is returned for
        that thread to run itself: no hand-over to another thread, no wake-up."""
        call = executor.prepare(self._runtime, job, self.id)
        if isinstance(call, JobOutcome):  # unknown name, unreadable arguments
            self.hand.finished(job)
            self.completer.put(call)
            return None
        assert call.definition is not None
        self.hand.started(call)
        self.app.fire("started", job)
        if call.definition.is_async and job.lost_count < SUSPECT_AT:
            self._async.submit(self._run_async(call))
        elif here:
            return call
        else:
            self._slots.submit(call)
        return None

    def _run_sync(self, first: executor.Call) -> None:
        """A slot thread's turn: ``first``, then each job claimed ahead that waits for a slot."""
        call: executor.Call | None = first
        while call is not None:
            if call.job.lost_count >= SUSPECT_AT:
                self._run_alone(call)
                return
            try:
                outcome = executor.run_sync(self._runtime, call)
            except BaseException as e:  # after the job's body: encoding, the log
                outcome = executor.unrecordable(executor.bare_outcome(call), e)
            call = self._done(call, outcome, here=True)

    async def _run_async(self, call: executor.Call) -> None:
        try:
            outcome = await executor.run_async(self._runtime, call)
        except BaseException as e:
            outcome = executor.unrecordable(executor.bare_outcome(call), e)
        self._done(call, outcome)

    def _run_alone(self, call: executor.Call) -> None:
        """A suspect runs alone in a fresh process; if that process dies, the job killed it."""
        job = call.job
        log.warning("running a job alone: it was lost with its process twice in a row",
                    extra={"job_id": job.id, "job_name": job.name, "worker": self.id})
        ended = sandbox.run_alone(self._runtime, self.app.url, call)
        if isinstance(ended, JobOutcome):
            ended.job = job
            self._done(call, ended)
            return
        reason = f"the process running it alone {ended}"
        outage = Outage("recording a poison pill")
        state = None
        while not self.completer.force.is_set():
            try:
                state = self._store().job_lost(job.id, job.lease or "", reason)
                break
            except StoreError as e:
                time.sleep(outage.failed(e))
        log.error("a job killed the process running it alone", extra={
            "job_id": job.id, "job_name": job.name, "exit": ended, "state": str(state)})
        if state is JobState.DEAD:
            self.app.fire("dead", job, None)
        self.hand.lost(job)

    def _done(self, call: executor.Call, outcome: JobOutcome, *,
              here: bool = False) -> executor.Call | None:
        """Hand the outcome to the completer and start what waits for the freed slot; with
        ``here``, the first sync job among those is returned for the calling thread to run."""
        self.claimer.pace.ran(time.perf_counter() - call.started)
        self.hand.finished(call.job)
        self.completer.put(outcome)
        while not self._stop.is_set() and (following := self.hand.next_waiting()) is not None:
            mine = self._launch(following, here=here)
            if mine is not None:
                return mine
        return None

    def _accepted(self, outcome: JobOutcome) -> None:
        """The store took this outcome: now its event fires (hooks, metrics)."""
        if outcome.job is not None:
            self.app.fire(executor.EVENT_OF[outcome.state], outcome.job, outcome.error)

    def _orphaned(self) -> bool:
        """A worker whose supervisor died stops, instead of running on unsupervised."""
        if self.supervisor_id is None or os.getppid() == self.parent_pid:
            return False
        log.error("supervisor is gone; stopping", extra={"worker": self.id})
        self.request_stop()
        return True

    def _heartbeat_loop(self) -> None:
        """Beat every ``heartbeat_every`` until the worker has shut down (jobs still finishing
        after SIGTERM must not look abandoned, or another worker would run them too); after a
        failed beat, try again within half a second, so that the worker looks alive again as
        soon as the store is back."""
        every = self._settings.heartbeat_every
        wait = every
        while not self._gone.wait(wait):
            if not self._stop.is_set():
                self._orphaned()  # stops claiming; the jobs in hand still finish, beating
            wait = every if self.heartbeat.beat() else min(every, 0.5)

    # --- memory limits ------------------------------------------------------------------------
    def _over_memory(self, rss: int) -> None:
        """Over the worker's limit: finish what runs, then make way for a fresh process."""
        log.warning("worker process over its memory limit; replacing it after its running jobs",
                    extra={"worker": self.id, "rss": mb(rss),
                           "max_memory": mb(self._settings.max_memory or 0)})
        self._exit_code = EXIT_REPLACE
        self.request_stop()

    def _job_over_memory(self, call: executor.Call, rss: int) -> None:
        """A job over its own limit cannot be stopped from another thread: record its attempt
        as MemoryExceeded, return the jobs beside it, write what is pending, and exit."""
        job, limit = call.job, job_limit(call) or 0
        log.error("job over its memory limit; stopping it with its worker process", extra={
            "job_id": job.id, "job_name": job.name, "rss": mb(rss), "max_memory": mb(limit)})
        error = MemoryExceeded(f"its worker process reached {mb(rss)} while it ran, over the"
                               f" job's max_memory of {mb(limit)}; the process was replaced")
        stopped = executor.failure(self._runtime, call, error)
        others = [pair for pair in self.hand.running_pairs() if pair[0] != job.id]
        try:
            store = self._store()
            self.completer.written([stopped], store.job_finish_many([stopped]))
            if others:
                store.job_release(others, reason=f"worker process replaced: job {job.id} went"
                                  " over its memory limit; attempt not counted")
            waiting = self.hand.take_waiting()
            if waiting:
                store.job_release(waiting, started=False)
            pending = self.completer.take()
            if pending:
                self.completer.written(pending, store.job_finish_many(pending))
            store.process_deregister(self.id)
        except StoreError as e:  # the supervisor's rescue deals with what is left
            log.error("could not record everything before replacing the worker",
                      extra={"error": str(e)})
        logs.flush()
        os._exit(EXIT_REPLACE)

    # --- shutdown -------------------------------------------------------------------------
    def _shutdown(self, completer: threading.Thread) -> None:
        timeout = self._settings.shutdown_timeout
        deadline = time.monotonic() + timeout
        self.hand.wake_at = EVERY_FINISH
        unstarted = self.hand.take_waiting()  # claimed ahead, never started: back at once
        if unstarted:
            self._release(unstarted, started=False, level=logging.INFO,
                          said="returned jobs claimed ahead and not started")
            self.hand.let_go(unstarted)
        if self.busy:
            log.info("stopping: waiting for running jobs", extra={
                "worker": self.id, "running": self.busy, "timeout_s": timeout})
        while self.busy and not self.completer.force.is_set() and time.monotonic() < deadline:
            self.hand.freed.clear()
            self.hand.freed.wait(0.05)
        leftover = self.hand.running_pairs()
        self.completer.flush()
        completer.join(timeout=None if not self.completer.force.is_set() else 5)
        if leftover:
            self._release(leftover)
        try:
            self._store().process_deregister(self.id)
        except StoreError as e:
            log.warning("could not deregister worker", extra={"error": str(e)})
        self._slots.shutdown()
        log.info("worker stopped", extra={"worker": self.id,
                                          "returned": len(unstarted) + len(leftover)})

    def _release(
        self, pairs: list[Pair], reason: str | None = None, *, started: bool = True,
        said: str = "returned unfinished jobs to ready, attempt not counted",
        level: int = logging.WARNING,
    ) -> None:
        outage = Outage("returning unfinished jobs")
        deadline = time.monotonic() + 30
        while True:
            try:
                n = self._store().job_release(pairs, reason=reason, started=started)
                log.log(level, said, extra={"worker": self.id, "jobs": n})
                return
            except StoreError as e:
                if time.monotonic() > deadline:
                    log.error("could not return jobs; they will be rescued",
                              extra={"worker": self.id, "error": str(e)})
                    return
                time.sleep(outage.failed(e))

"""``Client``: everything done to jobs and queues from outside a worker.

Enqueue, read, retry, discard, cancel, pause and resume, plus the reads the CLI, the
dashboard and an HTTP API show (queue stats, attempts, logs, worker processes). Each is one
store call; the ``enqueued`` event fires once the insert has committed.

The store is reached through a ``LazyStore``: opened on first use, once per process (a forked
worker opens its own connections).
"""

from __future__ import annotations

import builtins
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import serialization
from .clock import Clock
from .errors import InvalidState, JobFailed, JobNotFound, WaitTimeout
from .events import Event, Events
from .models import (
    AttemptRecord,
    Inserted,
    JobFilter,
    JobRecord,
    JobState,
    LimitUsage,
    LogRecord,
    NewJob,
    ProcessRecord,
    QueueStats,
    RateBacklog,
)
from .queues import check_queue_name
from .store import Store, open_store, store_missing

if TYPE_CHECKING:
    from .jobs import PreparedJob


class LazyStore:
    """The store at ``url()``, opened on first call in each process."""

    def __init__(self, url: Callable[[], str]) -> None:
        self._url = url
        self._store: Store | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __call__(self) -> Store:
        store = self._store
        if store is None or self._pid != os.getpid():
            with self._lock:
                if self._store is None or self._pid != os.getpid():
                    # after fork the parent's connections are not ours to use or close
                    self._store = open_store(self._url())
                    self._pid = os.getpid()
                store = self._store
        return store

    @property
    def current(self) -> Store | None:
        """The store in use, without opening one (it may be a parent process's)."""
        return self._store

    def use(self, store: Store | None) -> Store | None:
        """Use ``store`` from now on (None: reopen from the URL on next use); returns the one
        used before, which may belong to the parent process after a fork: keep it, never
        close it there."""
        with self._lock:
            previous, self._store, self._pid = self._store, store, os.getpid()
        return previous

    def close(self) -> None:
        with self._lock:
            if self._store is not None and self._pid == os.getpid():
                self._store.close()
            self._store = None

    def missing(self) -> str | None:
        """Why the store cannot be read without creating it — the URL names a SQLite file
        that does not exist, in a directory that does — or None."""
        return store_missing(self._url())


class Client:
    """Jobs and queues, acted on and read. ``app.client`` is the one an app uses."""

    def __init__(self, store: LazyStore, clock: Clock, events: Events) -> None:
        self.store = store
        self.clock = clock
        self.events = events

    # --- writing jobs --------------------------------------------------------------------
    def enqueue_many(
        self, prepared: Iterable[PreparedJob], *, connection: Any = None
    ) -> list[JobHandle]:
        """Write prepared jobs in one transaction; their handles, in the same order.

        ``enqueued`` fires for each job created (not for one that found its unique key taken).
        With ``connection=`` the jobs are written inside the caller's open transaction and
        become real only if the caller commits, which conveyor cannot see: ``enqueued`` is
        not fired for them (fire your own after the commit if you need it).
        """
        inserted = self._insert([p.new_job for p in prepared], connection)
        if connection is None and self.events.wanted(Event.ENQUEUED):
            self._announce([i.id for i in inserted if i.created])
        return [JobHandle(self, i.id) for i in inserted]

    def enqueue(self, prepared: PreparedJob, *, connection: Any = None) -> JobHandle:
        return self.enqueue_many([prepared], connection=connection)[0]

    def _insert(self, new_jobs: list[NewJob], connection: Any) -> list[Inserted]:
        """The one place jobs are written: per job, its id and whether it was created (or an
        unfinished job with the same unique key was there already, and that id came back)."""
        return self.store().job_insert_many(new_jobs, connection=connection, now=self.now())

    def _announce(self, ids: Sequence[int]) -> None:
        """Fire ``enqueued`` for jobs just committed, read back as the store holds them."""
        if not ids:
            return
        wanted = tuple(dict.fromkeys(ids))
        found = self.store().job_list(JobFilter(ids=wanted, limit=len(wanted)))
        for job in sorted(found, key=lambda j: j.id):
            self.events.fire(Event.ENQUEUED, job)

    def now(self) -> Any:
        """The time to pass to the store: None (the store's clock) unless the clock is frozen."""
        return self.clock.now() if self.clock.frozen else None

    def store_missing(self) -> str | None:
        """Why the store cannot be used without creating it (a SQLite file that does not
        exist yet), or None: a command that only looks must not leave an empty file behind."""
        return self.store.missing()

    # --- reading jobs --------------------------------------------------------------------
    def get(self, job_id: int) -> JobRecord:
        """The job; JobNotFound if there is none with that id."""
        job = self.store().job_get(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        return job

    def list(
        self, *, state: JobState | str | None = None, queue: str | None = None,
        name: str | None = None, limit: int = 50, before_id: int | None = None,
    ) -> builtins.list[JobRecord]:
        """Jobs, newest first; page with ``before_id`` (the last id seen)."""
        states = (JobState(state),) if state else ()
        return self.store().job_list(
            JobFilter(states=states, queue=queue, name=name, limit=limit, before_id=before_id)
        )

    def attempts(self, job_id: int) -> builtins.list[AttemptRecord]:
        return self.store().job_attempts(job_id)

    def logs(self, job_id: int) -> builtins.list[LogRecord]:
        return self.store().job_logs(job_id)

    # --- acting on jobs ------------------------------------------------------------------
    def retry(self, job_ids: Sequence[int]) -> int:
        """Dead, cancelled or failed jobs become ready now; how many did."""
        return self.store().job_retry(builtins.list(job_ids))

    def discard(self, job_ids: Sequence[int]) -> int:
        """Delete jobs that are not running; how many were."""
        return self.store().job_discard(builtins.list(job_ids))

    def retry_all(self, state: JobState = JobState.DEAD, queue: str | None = None) -> int:
        return self.retry(self.store().job_ids_by_state(state, queue=queue))

    def discard_all(self, state: JobState = JobState.DEAD, queue: str | None = None) -> int:
        return self.discard(self.store().job_ids_by_state(state, queue=queue))

    def cancel(self, job_id: int) -> JobState:
        """Cancel now if waiting; ask a running job to stop (it sees ``cancel_requested``).
        Returns the state after; JobNotFound if there is no such job."""
        state = self.store().job_cancel(job_id)
        if state is None:
            raise JobNotFound(f"no job with id {job_id}")
        return state

    # --- queues and processes --------------------------------------------------------------
    def pause(self, queue: str) -> None:
        """Start no more jobs from ``queue`` (it still accepts them). A queue that has no jobs
        yet can be paused too. ValueError for a name no queue can have."""
        name = check_queue_name(queue)  # before the store is opened
        self.store().queue_pause(name)

    def resume(self, queue: str) -> None:
        name = check_queue_name(queue)
        self.store().queue_resume(name)

    def queues(self) -> builtins.list[QueueStats]:
        """Every queue with jobs or a pause record: counts by state and the oldest ready job."""
        return self.store().queue_stats()

    def limits(self) -> builtins.list[LimitUsage]:
        """Concurrency keys in use: jobs holding a slot, jobs blocked, the key's max."""
        return self.store().limit_usage()

    def rates(self) -> builtins.list[RateBacklog]:
        """Rate keys with jobs waiting for their rate's window to have room."""
        return self.store().rate_backlog(now=self.now())

    def workers(self) -> builtins.list[ProcessRecord]:
        """Registered supervisor and worker processes."""
        return self.store().process_list()


class JobHandle:
    """A reference to a stored job. Cheap to create; every method reads the store."""

    __slots__ = ("client", "id")

    def __init__(self, client: Client, job_id: int) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id and other.client is self.client

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> JobRecord:
        return self.client.get(self.id)

    def status(self) -> JobState:
        return self.record().state

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job has finished (succeeded, dead or cancelled); returns that state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            state = self.status()
            if state.finished:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {self.id} is still {state} after {timeout}s")
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 1.5, 0.1)

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value. Waits up to ``timeout`` if given; raises JobFailed if the job
        ended dead or cancelled, InvalidState if it has not finished."""
        if timeout is not None:
            self.wait(timeout)
        job = self.record()
        if job.state is JobState.SUCCEEDED:
            return serialization.loads(job.result)
        if job.state.finished:
            raise JobFailed(f"job {self.id} ({job.name}) ended {job.state}: {job.error or ''}".strip())
        raise InvalidState(f"job {self.id} is {job.state}, not finished; use wait() or result(timeout=)")

    def cancel(self) -> JobState:
        """Cancel now if waiting; ask a running job to stop (it sees ``cancel_requested``)."""
        return self.client.cancel(self.id)

    def attempts(self) -> list[AttemptRecord]:
        return self.client.attempts(self.id)

    def logs(self) -> list[LogRecord]:
        return self.client.logs(self.id)

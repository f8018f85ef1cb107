"""Acting on jobs from outside a worker: handles, inspection, retry, discard, cancel."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import serialization
from .errors import InvalidState, JobFailed, JobNotFound, WaitTimeout
from .models import AttemptRecord, JobFilter, JobRecord, JobState, LogRecord

if TYPE_CHECKING:
    from .app import Conveyor


class JobHandle:
    """A reference to a stored job. Cheap to create; every method reads the store."""

    __slots__ = ("app", "id")

    def __init__(self, app: Conveyor, job_id: int) -> None:
        self.app = app
        self.id = job_id

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> JobRecord:
        job = self.app.store.job_get(self.id)
        if job is None:
            raise JobNotFound(f"no job with id {self.id}")
        return job

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
        state = self.app.store.job_cancel(self.id)
        if state is None:
            raise JobNotFound(f"no job with id {self.id}")
        return state

    def attempts(self) -> list[AttemptRecord]:
        return self.app.store.job_attempts(self.id)

    def logs(self) -> list[LogRecord]:
        return self.app.store.job_logs(self.id)


class Jobs:
    """Inspection and bulk actions (what the CLI and dashboard call)."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def get(self, job_id: int) -> JobRecord:
        return JobHandle(self.app, job_id).record()

    def list(
        self, *, state: JobState | str | None = None, queue: str | None = None,
        name: str | None = None, limit: int = 50, before_id: int | None = None,
    ) -> list[JobRecord]:
        states = (JobState(state),) if state else ()
        return self.app.store.job_list(
            JobFilter(states=states, queue=queue, name=name, limit=limit, before_id=before_id)
        )

    def retry(self, job_ids: Sequence[int]) -> int:
        """Dead, cancelled or failed jobs become ready now."""
        return self.app.store.job_retry(list(job_ids))

    def discard(self, job_ids: Sequence[int]) -> int:
        """Delete jobs that are not running."""
        return self.app.store.job_discard(list(job_ids))

    def retry_all(self, state: JobState = JobState.DEAD, queue: str | None = None) -> int:
        return self.retry(self.app.store.job_ids_by_state(state, queue=queue))

    def discard_all(self, state: JobState = JobState.DEAD, queue: str | None = None) -> int:
        return self.discard(self.app.store.job_ids_by_state(state, queue=queue))

    def cancel(self, job_id: int) -> JobState:
        return JobHandle(self.app, job_id).cancel()

    def args(self, job: JobRecord) -> tuple[builtins.list[Any], dict[str, Any]]:
        return serialization.loads(job.args), serialization.loads(job.kwargs)

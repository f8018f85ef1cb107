"""Records and states shared by every layer. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class JobState(StrEnum):
    SCHEDULED = "scheduled"  # waiting for run_at
    READY = "ready"  # may start now
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an attempt failed; waits for run_at, then runs again
    DEAD = "dead"  # attempts exhausted or discarded by policy
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # waiting on a dependency or a concurrency limit

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
WAITING_STATES = frozenset({JobState.SCHEDULED, JobState.READY, JobState.FAILED, JobState.BLOCKED})
# a job in one of these holds its unique_key: no second job with that key can be enqueued
UNFINISHED_STATES = WAITING_STATES | {JobState.RUNNING}
# states a job that runs and succeeds never passes through: the stores index them (migration 0002)
QUIET_STATES = frozenset({
    JobState.SCHEDULED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED, JobState.BLOCKED,
})
RETRYABLE_STATES = frozenset({JobState.DEAD, JobState.CANCELLED, JobState.FAILED})


# A job lost with its worker process this many times in a row is a poison pill: dead. The deaths
# that count are those while it was running; from SUSPECT_AT on, it runs only alone in a fresh
# process, whose death alone proves the job killed it (see worker.sandbox).
POISON_AFTER = 3
SUSPECT_AT = POISON_AFTER - 1


class Held(StrEnum):
    """How far a worker process had got with a job it held, as its supervisor saw it die."""

    WAITING = "waiting"  # claimed, not started: goes back with no attempt recorded
    RUNNING = "running"  # the job's code was running: a worker_lost attempt, one more strike
    FINISHED = "finished"  # ran to the end, outcome not yet written: worker_lost, no strike


class AttemptOutcome(StrEnum):
    """Why an attempt ended."""

    SUCCEEDED = "succeeded"
    ERROR = "error"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    MEMORY_EXCEEDED = "memory_exceeded"
    CANCELLED = "cancelled"  # cancellation reached the worker; the job then returned or raised
    CANCEL_FORCED = "cancel_forced"  # it did not stop within cancel_grace: its process was replaced
    FINISHED_ANYWAY = "finished_anyway"  # it ended before the cancellation reached its worker
    SHUTDOWN = "shutdown"


# NewJob and JobOutcome are made once per job on the hot paths (enqueue, finish) and only
# handed to the store: not frozen, whose __init__ costs three times as much per field.
@dataclass(slots=True)
class NewJob:
    """A job about to be written. Payloads are already encoded."""

    name: str
    args: str = "[]"
    kwargs: str = "{}"
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    run_at: datetime | None = None  # None: ready now
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_max: int | None = None  # jobs of concurrency_key admitted (ready or running) at once
    unique_started: bool = False  # the unique key is given up when the job first starts
    unique_for: float | None = None  # seconds the key also blocks after enqueue, whatever the state
    raise_if_held: bool = False  # a held unique key raises DuplicateJob (the batch is not written)
    rate_key: str | None = None  # at most rate_count starts of this key in any rate_period seconds
    rate_count: int | None = None
    rate_period: float | None = None
    sensitive: tuple[str, ...] = ()  # argument keys whose values are never shown

@dataclass(frozen=True, slots=True)
class Inserted:
    """What became of one job handed to the store: ``created``, or not, because an unfinished
    job with the same unique key exists; ``id`` is then that job's."""

    id: int
    created: bool


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    name: str
    queue: str
    priority: int
    state: JobState
    args: str
    kwargs: str
    attempt: int
    max_attempts: int
    timeout: float | None
    run_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker_id: str | None = None
    lease: str | None = None
    result: str | None = None
    error: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    cancel_requested: bool = False
    lost_count: int = 0
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_max: int | None = None
    rate_key: str | None = None
    rate_count: int | None = None
    rate_period: float | None = None
    sensitive: tuple[str, ...] = ()  # argument keys whose values views redact


@dataclass(slots=True)
class JobOutcome:
    """How one claimed attempt ended, written back in one fenced store call."""

    job_id: int
    lease: str
    attempt: int
    worker_id: str
    started_at: datetime
    state: JobState  # SUCCEEDED, FAILED (retry at retry_at), DEAD or CANCELLED
    outcome: AttemptOutcome
    result: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    retry_at: datetime | None = None
    finished_at: datetime | None = None
    # for the events fired once the store accepted it; never written
    job: JobRecord | None = None
    error: BaseException | None = None

    @property
    def error_summary(self) -> str | None:
        if self.error_class is None:
            return None
        return f"{self.error_class}: {self.error_message}" if self.error_message else self.error_class


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    job_id: int
    attempt: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome
    error_class: str | None = None
    error_message: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class LogRecord:
    job_id: int
    attempt: int
    at: datetime
    message: str


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A supervisor or worker process, as registered in the store."""

    id: str
    kind: str  # "supervisor" | "worker"
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    supervisor_id: str | None = None
    queues: tuple[str, ...] = ()
    concurrency: int = 0
    job_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeldJob:
    """A job the store records as running under a worker, as its heartbeat reports it."""

    id: int
    lease: str
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    paused: bool = False
    counts: dict[JobState, int] = field(default_factory=dict)
    oldest_ready_at: datetime | None = None

    def count(self, state: JobState) -> int:
        return self.counts.get(state, 0)


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A concurrency key in use: jobs holding a slot (ready or running), jobs blocked waiting
    for one, and the key's max (its jobs' largest)."""

    key: str
    admitted: int
    blocked: int
    max: int


@dataclass(frozen=True, slots=True)
class RateBacklog:
    """A rate key with jobs waiting (ready or scheduled): its rate, how many wait, and how many
    of those were enqueued within the last ``RATE_RECENT`` seconds."""

    key: str
    count: int
    period: float
    waiting: int
    recent: int

    @property
    def per_minute(self) -> float:
        return self.count * 60.0 / self.period


RATE_RECENT = 60.0


@dataclass(frozen=True, slots=True)
class JobFilter:
    states: tuple[JobState, ...] = ()
    queue: str | None = None
    name: str | None = None
    ids: tuple[int, ...] = ()
    worker_id: str | None = None
    limit: int = 100
    before_id: int | None = None  # newest first; page with the last id seen


# --- what the dashboard reads beside the jobs --------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action taken by someone (a dashboard user, an API token): who, what, on what."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """One queue's activity in one sample (about a minute): jobs enqueued, jobs that succeeded
    or went dead, attempts that failed, and, at sample time, the ready jobs and the age in
    seconds of the oldest one (None: none ready). Durations are of the attempts counted."""

    minute: datetime
    queue: str
    enqueued: int
    succeeded: int
    failed: int
    dead: int
    ready: int
    latency: float | None
    duration_sum: float
    duration_count: int


@dataclass(frozen=True, slots=True)
class MetricTotal:
    """A cumulative value per queue and job name since the store was created: a counter
    ("enqueued", "succeeded", "failed", "dead") or a histogram part ("duration_le:<bound>",
    "duration_sum", "duration_count", and the same for "wait"; see ``bucket_metric``)."""

    queue: str
    job: str
    metric: str
    value: float


# upper bounds (seconds) of the duration and wait histograms; each bucket counts every
# observation up to its bound, so the last one counts them all
HISTOGRAM_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    float("inf"),
)
COUNTER_METRICS = ("enqueued", "succeeded", "failed", "dead")
HISTOGRAMS = ("duration", "wait")


def bucket_metric(histogram: str, bound: float) -> str:
    """The metric name of one histogram bucket: ``duration_le:0.25``, ``wait_le:inf``."""
    return f"{histogram}_le:{bound:g}"

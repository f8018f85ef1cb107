"""The Store protocol: the only door to the database.

Every state change is one atomic method, fenced by the claim (``lease``) it belongs to. Methods
that depend on time take ``now``; ``None`` means "the store's own clock" (the database's ``now()``
on PostgreSQL), which is what production passes. Tests pass a frozen time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..cron import ScheduleDef, ScheduleState, TickPlan, TickRecord
from ..models import (
    POISON_AFTER,
    AttemptRecord,
    AuditEntry,
    Held,
    HeldJob,
    Inserted,
    JobFilter,
    JobOutcome,
    JobRecord,
    JobState,
    LimitUsage,
    LogRecord,
    MetricTotal,
    MinuteStats,
    NewJob,
    ProcessRecord,
    QueueStats,
    RateBacklog,
)

SCHEMA_VERSION = 7


@runtime_checkable
class Store(Protocol):
    url: str

    def close(self) -> None: ...

    # --- schema -------------------------------------------------------------------------
    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in place."""

    def schema_version(self) -> int | None:
        """The recorded schema version, or None for an empty store."""

    # --- jobs ---------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], *, connection: Any = None, now: datetime | None = None
    ) -> list[Inserted]:
        """Insert jobs in one transaction (the caller's, if ``connection`` is given); what became
        of each, in order: created, or not because an unfinished job holds its unique key (that
        job's id is then given; a job earlier in the same batch counts). Never raises for a
        held key."""

    def job_get(self, job_id: int) -> JobRecord | None: ...

    def job_list(self, filter: JobFilter) -> list[JobRecord]:
        """Newest first."""

    def job_claim(
        self, worker_id: str, queue: str, limit: int, *, suspects: bool = False,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        """Move up to ``limit`` ready jobs of an unpaused queue to running, highest priority first,
        each with a fresh lease and its attempt counted. Jobs lost with their process
        ``SUSPECT_AT`` times in a row are claimed only with ``suspects=True`` (to run alone)."""

    def job_finish_many(
        self, outcomes: Sequence[JobOutcome], *, now: datetime | None = None
    ) -> list[bool]:
        """Record how attempts ended. A stale lease is rejected (False) and changes nothing."""

    def job_finish_and_claim(
        self, outcomes: Sequence[JobOutcome], worker_id: str, queue: str, limit: int,
        *, now: datetime | None = None,
    ) -> tuple[list[bool], list[JobRecord]]:
        """``job_finish_many`` then ``job_claim`` in one transaction: one commit where a busy
        worker would otherwise spend two."""

    def job_release(
        self, leases: Sequence[tuple[int, str]], *, reason: str | None = None,
        started: bool = True, now: datetime | None = None,
    ) -> int:
        """Return running jobs to ready without spending their attempt (graceful shutdown, or a
        worker replaced because of another job); the attempt row says ``shutdown`` and why.
        ``started=False``: the jobs never started (claimed ahead), so no attempt is recorded."""

    def job_progress(
        self, job_id: int, lease: str, percent: float | None, message: str | None,
        *, now: datetime | None = None,
    ) -> bool:
        """Record progress (``percent`` None: heartbeat only); False if the lease is stale."""

    def job_log(self, job_id: int, attempt: int, message: str, *, now: datetime | None = None) -> None: ...

    def job_logs(self, job_id: int) -> list[LogRecord]: ...

    def job_attempts(self, job_id: int) -> list[AttemptRecord]: ...

    def job_cancel(self, job_id: int, *, now: datetime | None = None) -> JobState | None:
        """Cancel a waiting job at once; flag a running one. Returns the state after, None if unknown."""

    def job_retry(self, job_ids: Sequence[int], *, now: datetime | None = None) -> int:
        """Make dead, cancelled or failed jobs ready now (with one more attempt if exhausted)."""

    def job_discard(self, job_ids: Sequence[int]) -> int:
        """Delete jobs that are not running, with their attempts and logs."""

    def job_ids_by_state(self, state: JobState, *, queue: str | None = None) -> list[int]: ...

    def job_search(
        self, filter: JobFilter, text: str, *, budget: int = 20_000
    ) -> tuple[list[JobRecord], int | None]:
        """Jobs whose args, kwargs or error contain ``text`` (case-insensitive; ``%`` and ``_``
        are plain characters), newest first, at most ``filter.limit``, the other filter fields
        applied too. Only the ``budget`` newest jobs below ``filter.before_id`` are looked at,
        found through the primary key, so a call costs the same whatever the table's size.
        Returns the matches and the ``before_id`` to search on from, or None when the oldest
        job was looked at."""

    def limit_usage(self) -> list[LimitUsage]:
        """Every concurrency key with jobs holding a slot (ready or running) or blocked."""

    def rate_backlog(self, *, now: datetime | None = None) -> list[RateBacklog]:
        """Every rate key with jobs waiting, and how many of them arrived in the last minute."""

    # --- time-driven duties -----------------------------------------------------------
    def jobs_promote(
        self, *, now: datetime | None = None, include_retries: bool = False, limit: int = 10_000
    ) -> int:
        """Scheduled and failed jobs whose time has come become ready; ``include_retries`` makes
        failed jobs ready regardless of their time (used by ``testing.drain``)."""

    def jobs_prune(self, *, succeeded_before: datetime, dead_before: datetime) -> int: ...

    def jobs_overdue(
        self, worker_ids: Sequence[str], *, grace: float, cancel_grace: float,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        """Running jobs of these workers past ``timeout + grace`` seconds, or whose cancellation
        was requested more than ``cancel_grace`` seconds ago — compared on the store's clock."""

    def jobs_rescue(
        self, process_ids: Sequence[str], reason: str, *,
        held: Mapping[int, Held] | None = None, now: datetime | None = None,
    ) -> list[int]:
        """Running jobs of dead processes go back to ready (cancelled if that was asked), their
        attempt not counted: a lost attempt never spends the retry budget, so a rescue never
        makes a job dead. ``held`` is what the process's supervisor saw it hold (None: unknown,
        as when a whole host is lost, and every job counts as running). A job not in ``held``
        or waiting gets no attempt row; a finished one gets a worker_lost row; a running one a
        worker_lost row and one more strike (``lost_count``). Returns the rescued ids."""

    def job_lost(
        self, job_id: int, lease: str, reason: str, *, poison_after: int = POISON_AFTER,
        now: datetime | None = None,
    ) -> JobState | None:
        """The job killed the process it ran in alone: a worker_lost attempt and one more strike;
        dead (a poison pill) at ``poison_after`` strikes, else ready again, attempt not counted.
        Fenced by the lease; returns the state after, None if the lease is stale."""

    # --- queues -------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None: ...

    def queue_resume(self, name: str) -> None: ...

    def queue_stats(self) -> list[QueueStats]: ...

    # --- processes ----------------------------------------------------------------------
    def process_register(self, process: ProcessRecord) -> None: ...

    def process_heartbeat(self, process_id: str, *, now: datetime | None = None) -> list[HeldJob]:
        """Mark the process alive; returns the jobs recorded as running under it (the worker
        relays cancellations, and returns jobs it never heard it had claimed)."""

    def process_deregister(self, process_id: str) -> None: ...

    def process_list(self) -> list[ProcessRecord]: ...

    def processes_stale(self, older_than_seconds: float, *, now: datetime | None = None) -> list[str]:
        """Ids of processes whose last heartbeat is older than the given age, and of unregistered
        workers still holding running jobs with no sign of life for that long."""

    # --- leadership and wake-ups ---------------------------------------------------------
    def leader_acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Become (or stay) leader for ``ttl`` seconds; False if someone else holds it."""

    def leader_release(self, name: str, holder: str) -> None: ...

    def wait_for_jobs(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when new jobs may be ready."""

    def wait_for_changes(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True as soon as jobs, queues or processes may have
        changed since the previous call on this store object (the first call: since it began),
        False if nothing did. It may say True when nothing visible changed, never False when
        something did; it never raises."""

    # --- audit and history (the dashboard) ---------------------------------------------------
    def audit_add(
        self, actor: str, action: str, target: str, detail: str = "", *,
        now: datetime | None = None,
    ) -> None: ...

    def audit_list(self, *, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first; ``before_id``: older than that entry."""

    def history_sample(self, now: datetime) -> bool:
        """Record what happened since the previous sample: one MinuteStats row per queue (of
        the minute ``now`` falls in) and the same counts added to the metric totals, in one
        transaction. Once per minute: False, writing nothing, if that minute has a sample."""

    def history_list(self, since: datetime, *, queue: str | None = None) -> list[MinuteStats]:
        """Samples of the minutes at or after ``since``, oldest first (then by queue)."""

    def metric_totals(self) -> list[MetricTotal]:
        """Every cumulative metric, by queue, job name and metric."""

    def history_prune(self, before: datetime) -> int:
        """Delete samples of minutes before ``before``; how many rows went."""

    # --- health ---------------------------------------------------------------------------
    def health_facts(
        self, *, stale_after: float, timeout_grace: float = 0.0, overdue_after: float = 60.0,
        recent: float = 3600.0, limit: int = 50, now: datetime | None = None,
    ) -> HealthFacts:
        """What ``conveyor doctor`` needs beyond queue_stats() and process_list(), in one call,
        measured at ``now`` (None: the store's clock). See :class:`HealthFacts`."""

    # --- recurring schedules (cron) ---------------------------------------------------------
    def cron_register(self, schedules: Sequence[ScheduleDef], *, now: datetime | None = None) -> None:
        """Write what the code says of these schedules; a schedule new to the store is first
        seen ``now`` (its ticks count from then), a known one keeps that moment."""

    def cron_states(self, *, now: datetime | None = None) -> tuple[datetime, list[ScheduleState]]:
        """``now`` (None: the store's clock) and every stored schedule, as a scheduler needs it."""

    def cron_list(self) -> list[ScheduleState]:
        """Every stored schedule with its latest run and that job's state."""

    def cron_record(
        self, name: str, base: datetime | None, ticks: Sequence[TickPlan], job: NewJob, *,
        recorded_by: str, now: datetime | None = None,
    ) -> list[int] | None:
        """Record ``ticks`` (oldest first) in one transaction, enqueueing ``job`` for each fired
        one, if the schedule's latest recorded tick is still ``base``; the ids enqueued, or
        None if another scheduler moved it first (nothing is written then). A tick is
        written once per (schedule, fire_at) whatever happens."""

    def cron_set_paused(self, name: str, paused: bool, *, now: datetime | None = None) -> bool:
        """Pause or resume; False if no such schedule is stored."""

    def cron_run_now(
        self, name: str, job: NewJob | None, *, recorded_by: str = "run now",
        now: datetime | None = None,
    ) -> int | None:
        """Enqueue ``job`` (None: the one the store keeps for the schedule) now, outside the
        schedule, paused or not, with a manual tick; its id, or None for an unknown schedule."""

    def cron_history(
        self, name: str, *, limit: int = 100, before: datetime | None = None
    ) -> list[TickRecord]:
        """A schedule's ticks, newest first (``before``: older than that fire time)."""

@dataclass(frozen=True)
class HealthFacts:
    """Aggregates for diagnosis; every age is measured at ``now``."""

    now: datetime  # the caller's ``now``, else the store's clock
    store_clock: datetime  # the database's own clock reading, whatever ``now`` was
    waiting_by_name: dict[str, int]  # scheduled, ready and failed jobs per job name
    running_by_worker: dict[str, int]  # running jobs per worker id
    # running jobs (oldest first, at most ``limit``) past ``timeout + timeout_grace``, or whose
    # worker has no registered process that heartbeated within ``stale_after`` seconds
    stuck: tuple[JobRecord, ...]
    overdue: int  # scheduled and failed jobs whose run_at is over ``overdue_after`` s past
    oldest_overdue_at: datetime | None
    dead_recent: dict[tuple[str, str], int]  # (name, error class) -> jobs dead within ``recent``
    # job name -> jobs whose last attempt failed with UnknownJob (waiting, or dead within ``recent``)
    unknown_recent: dict[str, int]

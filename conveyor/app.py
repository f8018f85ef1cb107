"""``Conveyor``: a facade over settings, the job registry, a ``Client`` and ``Events``.

What a user touches: ``@app.job``, ``@app.cron``, ``app.enqueue_many`` and ``@app.on(event)``. Reading and
acting on jobs is ``app.client``'s work (``app.jobs`` is the same object); the store behind
it is opened on first use, once per process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

from .client import Client, JobHandle, LazyStore
from .clock import Clock, SystemClock
from .cron import CronSchedule, Timing
from .errors import SchemaError
from .events import Event, Events, Hook
from .flow import KeySource, Limit, RateLimit
from .jobs import JobDefinition, PreparedJob, Registry
from .models import JobRecord
from .retry import Retry
from .schedules import Schedules
from .settings import Settings, load_settings
from .store import SCHEMA_VERSION, Store, check_schema_version
from .urls import redact_url

P = ParamSpec("P")
R = TypeVar("R")


class Conveyor:
    """The entry point: ``app = Conveyor("sqlite:///conveyor.db")``.

    Defining jobs opens nothing; the store is opened on first use, once per process (a forked
    worker gets its own connections).
    """

    def __init__(self, url: str | None = None, *, clock: Clock | None = None, **settings: Any):
        self.settings: Settings = load_settings(url, settings)
        self.registry = Registry()
        self.events = Events()
        self._stores = LazyStore(lambda: self.settings.database_url)
        self.client = Client(self._stores, clock or SystemClock(), self.events)
        # recurring schedules: defined by @app.cron, read and acted on here (list, pause, run)
        self.schedules = Schedules(self._stores, lambda: self.client.clock, self.handle)

    def __repr__(self) -> str:
        return f"<Conveyor {self.url}>"

    @property
    def url(self) -> str:
        return self.settings.database_url

    @property
    def clock(self) -> Clock:
        return self.client.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.client.clock = clock

    @property
    def jobs(self) -> Client:
        """Inspection and actions on jobs: the app's client under its older name."""
        return self.client

    # --- store ------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self._stores()

    @property
    def store_is_open(self) -> bool:
        """Whether this process has opened the store yet (defining jobs and checking their
        options open nothing)."""
        return self._stores.current is not None

    def store_missing(self) -> str | None:
        """Why the store cannot be read without creating it — the URL names a SQLite file
        that does not exist, in a directory that does — or None. Opening the store would
        create that file."""
        return self._stores.missing()

    def use_store(self, store: Store | None) -> Store | None:
        """Point the app at another store (tests); None reopens from the URL on next use.
        Returns the store used before (after a fork, the parent's: keep it, never close it)."""
        return self._stores.use(store)

    def close(self) -> None:
        self._stores.close()

    def migrate(self) -> int:
        return self.store.migrate()

    def check_schema(self, *, create: bool = False) -> int:
        """The schema version, creating the schema if the store is empty and ``create``."""
        version = self.store.schema_version()
        if version is None:
            if not create:
                raise SchemaError(f"{redact_url(self.url)} has no conveyor schema; run: conveyor migrate")
            return self.store.migrate()
        check_schema_version(redact_url(self.url), version)
        if version < SCHEMA_VERSION:
            return self.store.migrate()
        return version

    # --- defining jobs -------------------------------------------------------------------
    @overload
    def job(self, func: Callable[P, R], /) -> JobDefinition[P, R]: ...

    @overload
    def job(
        self, *, name: str | None = ..., queue: str = ..., priority: int = ...,
        timeout: float | timedelta | None = ..., retry: Retry | int | None = ...,
        max_memory: int | str | None = ..., unique: bool | KeySource | None = ...,
        unique_until: str | None = ..., unique_for: timedelta | float | None = ...,
        on_conflict: str | None = ..., concurrency: Limit | str | None = ...,
        rate_limit: RateLimit | str | None = ..., sensitive: Iterable[str] | None = ...,
    ) -> Callable[[Callable[P, R]], JobDefinition[P, R]]: ...

    def job(self, func: Any = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Register a function as a job: ``@app.job`` or ``@app.job(queue=..., retry=...)``."""

        def register(f: Callable[P, R]) -> JobDefinition[P, R]:
            definition = JobDefinition(self.client, f, **options)
            self.registry.add(definition)
            return definition

        return register(func) if func is not None else register

    def cron(
        self, expression: str | None = None, job: Any = None, /, *,
        every: timedelta | float | None = None, timezone: str = "UTC", name: str | None = None,
        args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None,
        priority: int | None = None, misfire: str = "run_once",
        misfire_grace: float | timedelta = 60.0, max_catch_up: int = 10,
    ) -> Any:
        """A recurring schedule: ``@app.cron("0 9 * * MON", timezone="Europe/Berlin")`` over a
        plain function (it becomes a job) or over ``@app.job(...)``; or
        ``app.cron(expr, existing_job, args=...)``, which returns the schedule. A 5-field cron
        expression (a 6th, last, for seconds), an ``@hourly``-style alias, or ``every=``
        (ticks on multiples of it since the Unix epoch). ``name`` (default: the job's) names
        the schedule; ``misfire`` ("skip" | "run_once" | "catch_up") says what becomes of
        ticks later than ``misfire_grace``. A malformed expression fails here, at import."""
        timing = Timing.of(expression, every, timezone)
        grace = misfire_grace.total_seconds() if isinstance(misfire_grace, timedelta) else misfire_grace

        def schedule_of(definition: JobDefinition[Any, Any]) -> CronSchedule:
            schedule = CronSchedule(
                name or definition.name, timing, definition, tuple(args), dict(kwargs or {}),
                queue, priority, misfire, float(grace), max_catch_up,
            )
            self.schedules.registry.add(schedule)
            return schedule

        if job is not None:
            if not isinstance(job, JobDefinition):
                raise TypeError("app.cron(expr, job): job must be defined with @app.job")
            return schedule_of(job)

        def register(target: Any) -> Any:
            definition = target if isinstance(target, JobDefinition) else self.job(target)
            schedule_of(definition)
            return definition

        return register

    def on(self, event: Event | str) -> Callable[[Hook], Hook]:
        """Call ``hook(job_record, error_or_None)`` after the store accepted a job's change:
        ``enqueued``, ``started``, ``succeeded``, ``failed`` (will retry), ``dead`` or
        ``cancelled``. A hook that raises is logged; the job goes on."""
        return self.events.on(event)

    def fire(self, event: Event | str, job: JobRecord, error: BaseException | None = None) -> None:
        """Call the hooks of ``event``: only once the store has accepted the change."""
        self.events.fire(event, job, error)

    # --- enqueueing ---------------------------------------------------------------------
    def enqueue_many(
        self, prepared: Iterable[PreparedJob], *, connection: Any = None
    ) -> list[JobHandle]:
        """Write many prepared jobs in one transaction; handles in the same order."""
        return self.client.enqueue_many(prepared, connection=connection)

    def handle(self, job_id: int) -> JobHandle:
        return JobHandle(self.client, job_id)

    def pause_queue(self, name: str) -> None:
        """Start no more jobs from queue ``name`` (it still accepts them). A queue that has no
        jobs yet can be paused too, before the code that uses it is deployed. ValueError for
        a name no queue can have."""
        self.client.pause(name)

    def resume_queue(self, name: str) -> None:
        self.client.resume(name)

"""``Conveyor``: settings, job registry, hooks, and the store, opened lazily."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Literal, ParamSpec, TypeVar, overload

from .client import JobHandle, Jobs
from .clock import Clock, SystemClock
from .errors import SchemaError
from .jobs import JobDefinition, PreparedJob, Registry
from .models import JobRecord
from .queues import check_queue_name
from .retry import Retry
from .settings import Settings, load_settings
from .store import SCHEMA_VERSION, Store, open_store

P = ParamSpec("P")
R = TypeVar("R")
Event = Literal["started", "succeeded", "failed", "dead"]
EVENTS = ("started", "succeeded", "failed", "dead")
Hook = Callable[[JobRecord, BaseException | None], Any]
log = logging.getLogger("conveyor")


class Conveyor:
    """The entry point: ``app = Conveyor("sqlite:///conveyor.db")``.

    Defining jobs opens nothing; the store is opened on first use, once per process (a forked
    worker gets its own connections).
    """

    def __init__(self, url: str | None = None, *, clock: Clock | None = None, **settings: Any):
        self.settings: Settings = load_settings(url, settings)
        self.clock: Clock = clock or SystemClock()
        self.registry = Registry()
        self.jobs = Jobs(self)
        self.hooks: dict[str, list[Hook]] = {e: [] for e in EVENTS}
        self.inline_runner: Callable[[], None] | None = None  # set by conveyor.testing
        self._store: Store | None = None
        self._store_pid = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Conveyor {self.url}>"

    @property
    def url(self) -> str:
        return self.settings.database_url

    # --- store ------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None or self._store_pid != os.getpid():
            with self._lock:
                if self._store is None or self._store_pid != os.getpid():
                    # after fork the parent's connections are not ours to use or close
                    self._store = open_store(self.url)
                    self._store_pid = os.getpid()
        return self._store

    def store_missing(self) -> str | None:
        """Why the store cannot be read without creating it — the URL names a SQLite file
        that does not exist, in a directory that does — or None. Opening the store would
        create that file."""
        from urllib.parse import urlsplit

        if urlsplit(self.url).scheme.lower() != "sqlite":
            return None
        from .store.sqlite import sqlite_path

        path = sqlite_path(self.url)
        if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
            return None
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            return None  # nothing could be created there: opening it says why
        return (f"SQLite database {os.path.abspath(path)} does not exist: check the database"
                " URL (CONVEYOR_DATABASE_URL or the app's), or create it with: conveyor migrate")

    def use_store(self, store: Store | None) -> None:
        """Point the app at another store (tests); None reopens from the URL on next use."""
        with self._lock:
            self._store = store
            self._store_pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            if self._store is not None and self._store_pid == os.getpid():
                self._store.close()
            self._store = None

    def migrate(self) -> int:
        return self.store.migrate()

    def check_schema(self, *, create: bool = False) -> int:
        """The schema version, creating the schema if the store is empty and ``create``."""
        version = self.store.schema_version()
        if version is None:
            if not create:
                raise SchemaError(f"{self.url} has no conveyor schema; run: conveyor migrate")
            return self.store.migrate()
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.url} has schema version {version}, newer than this conveyor understands "
                f"({SCHEMA_VERSION}); upgrade conveyor"
            )
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
    ) -> Callable[[Callable[P, R]], JobDefinition[P, R]]: ...

    def job(self, func: Any = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Register a function as a job: ``@app.job`` or ``@app.job(queue=..., retry=...)``."""

        def register(f: Callable[P, R]) -> JobDefinition[P, R]:
            definition = JobDefinition(self, f, **options)
            self.registry.add(definition)
            return definition

        return register(func) if func is not None else register

    def on(self, event: Event) -> Callable[[Hook], Hook]:
        """Call ``hook(job_record, error_or_None)`` when a job starts, succeeds, fails or dies."""
        if event not in self.hooks:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")

        def register(hook: Hook) -> Hook:
            self.hooks[event].append(hook)
            return hook

        return register

    def fire(self, event: str, job: JobRecord, error: BaseException | None = None) -> None:
        for hook in self.hooks[event]:
            try:
                hook(job, error)
            except Exception:  # a broken error tracker must not break the job
                log.exception("hook %s for %s raised", getattr(hook, "__name__", hook), event)

    # --- enqueueing ---------------------------------------------------------------------
    def enqueue_many(
        self, prepared: Iterable[PreparedJob], *, connection: Any = None
    ) -> list[JobHandle]:
        """Write many prepared jobs in one transaction; handles in the same order."""
        new_jobs = [p.new_job for p in prepared]
        ids = self.store.job_insert_many(new_jobs, connection=connection, now=self._now())
        if self.inline_runner is not None and connection is None:
            self.inline_runner()
        return [JobHandle(self, i) for i in ids]

    def handle(self, job_id: int) -> JobHandle:
        return JobHandle(self, job_id)

    def pause_queue(self, name: str) -> None:
        """Start no more jobs from queue ``name`` (it still accepts them). A queue that has no
        jobs yet can be paused too, before the code that uses it is deployed. ValueError for
        a name no queue can have."""
        name = check_queue_name(name)
        self.store.queue_pause(name)

    def resume_queue(self, name: str) -> None:
        name = check_queue_name(name)
        self.store.queue_resume(name)

    def _now(self) -> Any:
        """The time to pass to the store: None (the store's clock) unless the clock is frozen."""
        return self.clock.now() if self.clock.frozen else None

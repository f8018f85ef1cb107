"""Test helpers: a throw-away store, assertions on enqueued jobs, ``drain()``, frozen time.

::

    from conveyor.testing import isolated, assert_enqueued, drain

    @pytest.fixture(autouse=True)
    def jobs():
        with isolated(app) as t:      # a fresh SQLite store in a temp dir, time frozen
            yield t

    def test_signup():
        signup("ada@example.com")
        assert_enqueued(send_welcome_email, args=[42])
        drain()                        # runs every ready job, following retries
        t.advance(timedelta(days=1))   # scheduled jobs come due; cron ticks on the way fire
        drain()                        # ...and run

Cron schedules are first seen when ``isolated()`` starts; ``advance()`` and ``travel()`` stop at
each tick on the way (so each fires on time, as under a running scheduler) and ``drain()``
fires those due at the current time before it runs jobs.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import executor, serialization
from .app import Conveyor
from .client import Client
from .clock import FrozenClock
from .events import Event
from .jobs import JobDefinition
from .maintenance.cron import CronScheduler
from .models import JobFilter, JobOutcome, JobRecord, JobState
from .store import Store, open_store
from .views import redacted

__all__ = [
    "DrainResult", "TestContext", "assert_enqueued", "assert_not_enqueued", "drain", "isolated",
]

WAITING = (JobState.READY, JobState.SCHEDULED, JobState.FAILED, JobState.BLOCKED)
_active: ContextVar[tuple[TestContext, ...]] = ContextVar("conveyor_testing", default=())


@dataclass
class DrainResult:
    succeeded: int = 0
    failed: int = 0  # attempts that failed and were retried
    dead: int = 0
    cancelled: int = 0
    outcomes: list[JobOutcome] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return len(self.outcomes)


@dataclass
class TestContext:
    __test__ = False  # not a pytest test class

    app: Conveyor
    store: Store
    clock: FrozenClock | None
    _draining: threading.Lock = field(default_factory=threading.Lock)
    _cron: CronScheduler | None = None

    def drain(self, *, max_jobs: int = 10_000) -> DrainResult:
        return drain(self.app, max_jobs=max_jobs)

    def advance(self, delta: timedelta | float) -> datetime:
        """Move frozen time forward; scheduled jobs now due run on the next ``drain()``, and
        cron ticks on the way fire each at its time (their jobs run on ``drain()``)."""
        clock = self._frozen()
        seconds = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        self._move_to(clock.now() + seconds)
        return clock.now()

    def travel(self, when: datetime) -> None:
        """Set frozen time; going forward, cron ticks on the way fire as with ``advance``."""
        self._move_to(when)

    def _frozen(self) -> FrozenClock:
        if self.clock is None:
            raise RuntimeError("time is not frozen in this context; use isolated(app, freeze=True)")
        return self.clock

    def _move_to(self, target: datetime, *, steps: int = 100_000) -> None:
        clock = self._frozen()
        if self._cron is None and len(self.app.schedules):  # defined after the context began
            self._cron = CronScheduler(self.store, self.app.schedules.registry, "testing")
            self._cron.register(now=clock.now())
        if self._cron is None or target <= clock.now():
            clock.set(target)
            return
        self._cron.run_once(now=clock.now())
        for _ in range(steps):  # stop at each tick on the way, so it fires on time
            upcoming = _next_tick(self.app, self.store, clock.now())
            if upcoming is None or upcoming > target:
                break
            clock.set(upcoming)
            self._cron.run_once(now=upcoming)
        clock.set(target)
        self._cron.run_once(now=target)

    def enqueued(self, job: JobDefinition[Any, Any] | str | None = None) -> list[JobRecord]:
        """Jobs waiting to run (ready, scheduled, failed awaiting retry, blocked), oldest first."""
        name = job if isinstance(job, str) or job is None else job.name
        found = self.store.job_list(JobFilter(states=WAITING, name=name, limit=100_000))
        return sorted(found, key=lambda j: j.id)


@contextmanager
def isolated(
    app: Conveyor, *, inline: bool = False, freeze: bool = True, url: str | None = None,
    start: datetime | None = None,
) -> Iterator[TestContext]:
    """Give ``app`` a fresh store for the duration (a temp SQLite file unless ``url``), with time
    frozen (``freeze``, at ``start`` if given, an aware datetime) and, with ``inline=True``,
    every enqueue running the job at once (it subscribes to the app's ``enqueued`` event until
    the context ends; an enqueue inside your own transaction fires nothing, so call
    ``drain()`` after your commit)."""
    tmp = None
    if url is None:
        tmp = tempfile.mkdtemp(prefix="conveyor-test-")
        url = f"sqlite:///{tmp}/conveyor.db"
    store = open_store(url)
    store.migrate()
    saved_clock, clock = app.clock, FrozenClock(start) if freeze else None
    saved_store = app.use_store(store)
    if clock is not None:
        app.clock = clock
    ctx = TestContext(app, store, clock)
    if len(app.schedules):  # first seen now: their ticks count from here
        ctx._cron = CronScheduler(store, app.schedules.registry, "testing")
        ctx._cron.register(now=app.clock.now())

    def run_now(job: JobRecord, error: BaseException | None) -> None:
        _drain_if_idle(ctx)

    if inline:  # every committed enqueue runs at once
        app.events.add(Event.ENQUEUED, run_now)
    token = _active.set((*_active.get(), ctx))
    try:
        yield ctx
    finally:
        _active.reset(token)
        app.events.remove(Event.ENQUEUED, run_now)
        app.use_store(saved_store)
        app.clock = saved_clock
        store.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _context(app: Conveyor | None = None, client: Client | None = None) -> TestContext:
    for ctx in reversed(_active.get()):
        if (app is None or ctx.app is app) and (client is None or ctx.app.client is client):
            return ctx
    raise RuntimeError("no conveyor.testing.isolated(app) context is active")


def _drain_if_idle(ctx: TestContext) -> None:
    if ctx._draining.acquire(blocking=False):  # an enqueue from inside a drained job waits its turn
        try:
            _drain(ctx.app, max_jobs=10_000, result=DrainResult())
        finally:
            ctx._draining.release()


def drain(app: Conveyor | None = None, *, max_jobs: int = 10_000) -> DrainResult:
    """Run every ready job — and scheduled ones due by the app's clock — synchronously, in this
    process, following retries (their backoff is skipped) until nothing is left to run."""
    target = app if app is not None else _context().app
    if len(target.schedules):  # ticks due at this moment fire first
        CronScheduler(target.store, target.schedules.registry, "testing").run_once(
            now=target.clock.now())
    return _drain(target, max_jobs=max_jobs, result=DrainResult())


def _next_tick(app: Conveyor, store: Store, now: datetime) -> datetime | None:
    """The earliest tick after ``now`` of the app's schedules, from what the store recorded."""
    _, states = store.cron_states(now=now)
    found = []
    for state in states:
        schedule = app.schedules.get(state.name)
        if schedule is not None:
            found.append(schedule.timing.next_after(max(now, state.last_tick_at or state.first_seen_at)))
    return min(found, default=None)


def _drain(app: Conveyor, *, max_jobs: int, result: DrainResult) -> DrainResult:
    store = app.store
    while result.ran < max_jobs:
        now = app.client.now()
        store.jobs_promote(now=now, include_retries=True)
        queues = [s.queue for s in store.queue_stats() if s.count(JobState.READY) and not s.paused]
        claimed = [j for q in queues for j in store.job_claim("testing", q, 100, now=now)]
        if not claimed:
            break
        for job in claimed:
            outcome = _run_one(app, job)
            if store.job_finish_many([outcome], now=app.client.now()) == [True]:
                app.fire(executor.EVENT_OF[outcome.state], job, outcome.error)  # accepted only
            result.outcomes.append(outcome)
            attr = "failed" if outcome.state is JobState.FAILED else str(outcome.state)
            setattr(result, attr, getattr(result, attr) + 1)
    return result


def _run_one(app: Conveyor, job: JobRecord) -> JobOutcome:
    rt = executor.Runtime(app.registry, app.clock, lambda: app.store)
    call = executor.prepare(rt, job, "testing")
    if isinstance(call, JobOutcome):
        return call
    app.fire(Event.STARTED, job)
    assert call.definition is not None
    if not call.definition.is_async:
        return executor.run_sync(rt, call)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(executor.run_async(rt, call))
    box: list[JobOutcome] = []  # called from inside an event loop: run on a fresh one aside
    t = threading.Thread(target=lambda: box.append(asyncio.run(executor.run_async(rt, call))))
    t.start()
    t.join()
    return box[0]


def _matching(
    job: JobDefinition[Any, Any] | str, args: Sequence[Any] | None, kwargs: dict[str, Any] | None,
    queue: str | None, app: Conveyor | None,
) -> tuple[list[JobRecord], list[JobRecord]]:
    client = job.client if app is None and isinstance(job, JobDefinition) else None
    ctx = _context(app, client)
    waiting = ctx.enqueued(job)
    found = [
        j for j in waiting
        if (args is None or serialization.loads(j.args) == serialization.loads(
            serialization.encode_args(list(args))))
        and (kwargs is None or serialization.loads(j.kwargs) == kwargs)
        and (queue is None or j.queue == queue)
    ]
    return found, waiting


def _describe(jobs: list[JobRecord]) -> str:
    if not jobs:
        return "nothing of that name is enqueued"
    shown = [redacted(j) for j in jobs[:10]]
    return "enqueued: " + "; ".join(
        f"{j.name}(args={j.args}, kwargs={j.kwargs}, queue={j.queue})" for j in shown
    )


def assert_enqueued(
    job: JobDefinition[Any, Any] | str, args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None, queue: str | None = None, *,
    count: int | None = None, app: Conveyor | None = None,
) -> list[JobRecord]:
    """Raise AssertionError unless a waiting job matches (``count``: exactly that many)."""
    found, waiting = _matching(job, args, kwargs, queue, app)
    name = job if isinstance(job, str) else job.name
    if not found or (count is not None and len(found) != count):
        want = f"{count} job(s)" if count is not None else "a job"
        raise AssertionError(
            f"expected {want} {name} with args={args} kwargs={kwargs} queue={queue}, "
            f"found {len(found)}; {_describe(waiting)}"
        )
    return found


def assert_not_enqueued(
    job: JobDefinition[Any, Any] | str, args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None, queue: str | None = None, *, app: Conveyor | None = None,
) -> None:
    found, _ = _matching(job, args, kwargs, queue, app)
    if found:
        name = job if isinstance(job, str) else job.name
        raise AssertionError(f"expected no {name} with args={args}, found {_describe(found)}")

"""A dashboard over a fresh store of each backend, and Starlette test clients for it.

``web_app`` is a Conveyor on the ``store_url`` of tests/conftest.py (SQLite and PostgreSQL)
with a few jobs defined; ``connect(app, **dashboard_options)`` gives a TestClient that looks
like a loopback browser or script (client 127.0.0.1, Host 127.0.0.1:8000).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from conveyor import Conveyor
from conveyor.models import AttemptOutcome, JobFilter, JobOutcome, JobState, NewJob
from conveyor.web import dashboard
from tests.invariants import check_invariants

LOOPBACK = ("127.0.0.1", 5555)
BASE = "http://127.0.0.1:8000"
TOKEN = "s3cret-token-for-tests"


def define_jobs(app: Conveyor) -> None:
    @app.job(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.job(name="echo", queue="mail")
    def echo(*args: Any, **kwargs: Any) -> Any:
        return [args, kwargs]


@pytest.fixture
def web_app(store_url: str) -> Iterator[Conveyor]:
    """The app; whatever the dashboard did to its store must keep the store's invariants."""
    app = Conveyor(store_url)
    define_jobs(app)
    yield app
    app.close()
    check_invariants(store_url, workers_stopped=False)


def connect(app: Conveyor, client: tuple[str, int] = LOOPBACK, base_url: str = BASE,
            **options: Any) -> TestClient:
    return TestClient(dashboard(app, **options), client=client, base_url=base_url,
                      follow_redirects=False)


@pytest.fixture
def connect_to(web_app: Conveyor) -> Callable[..., TestClient]:
    """``connect_to(auth=..., read_only=...)``: a client of a dashboard over ``web_app``."""
    return lambda **options: connect(web_app, **options)


def insert(app: Conveyor, count: int = 1, **fields: Any) -> list[int]:
    """Ready jobs written straight into the store (any name, any queue): their ids."""
    fields.setdefault("name", "add")
    fields.setdefault("args", "[1, 2]")
    ids: list[int] = []
    for start in range(0, count, 5000):
        batch = [NewJob(**fields) for _ in range(min(5000, count - start))]
        ids += [i.id for i in app.store.job_insert_many(batch)]
    return ids


def make_dead(app: Conveyor, count: int = 1, *, error_class: str = "ValueError",
              message: str = "boom", traceback: str | None = None, **fields: Any) -> list[int]:
    """Jobs that ran once and failed for good, as a worker would leave them: their ids."""
    fields.setdefault("queue", "dead-q")
    queue = fields["queue"]
    insert(app, count, **fields)
    store, ids = app.store, []
    while True:
        claimed = store.job_claim("w-test", queue, 5000)
        if not claimed:
            return ids
        store.job_finish_many([
            JobOutcome(job_id=j.id, lease=j.lease or "", attempt=j.attempt, worker_id="w-test",
                       started_at=j.started_at or j.created_at, state=JobState.DEAD,
                       outcome=AttemptOutcome.ERROR, error_class=error_class,
                       error_message=message, traceback=traceback)
            for j in claimed
        ])
        ids += [j.id for j in claimed]


def job_ids(app: Conveyor, **filters: Any) -> list[int]:
    return [j.id for j in app.store.job_list(JobFilter(limit=1_000_000, **filters))]

"""Events fire only after the store accepted the change; the inline test mode rides on them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobRecord, JobState
from conveyor.testing import TestContext, drain, isolated

app = Conveyor("sqlite:///unused-by-tests.db")
fired: list[tuple[str, int, str]] = []


@app.job
def add(a: int, b: int) -> int:
    return a + b


@app.job(retry=3)
def loses_its_claim() -> str:
    """The first attempt finds its claim taken back (a rescue, as after a missed heartbeat)
    and fails: the store refuses that outcome, so no ``failed`` event may fire for it."""
    if sum(event == "started" for event, _, _ in fired) == 1:
        app.store.jobs_rescue(["testing"], "the test took the job back")
        raise RuntimeError("too late: this outcome is stale")
    return "second run"


def record(event: str) -> None:
    app.on(event)(lambda job, err: fired.append((event, job.id, type(err).__name__ if err else "")))


for _event in ("enqueued", "started", "succeeded", "failed", "dead", "cancelled"):
    record(_event)


@pytest.fixture
def t(store_url: str) -> Iterator[TestContext]:
    with isolated(app, url=store_url) as ctx:
        fired.clear()
        yield ctx


def test_enqueued_fires_after_the_insert_with_the_stored_job(t: TestContext) -> None:
    seen: list[JobRecord] = []
    hook = app.on("enqueued")(lambda job, err: seen.append(job))
    try:
        handles = app.enqueue_many([add.prepare(1, 2), add.prepare(3, 4)])
    finally:
        app.events.remove("enqueued", hook)
    assert [j.id for j in seen] == [h.id for h in handles]
    assert [(j.state, j.args) for j in seen] == [(JobState.READY, "[1,2]"), (JobState.READY, "[3,4]")]
    drain()
    assert [e for e, _, _ in fired] == ["enqueued", "enqueued", "started", "succeeded",
                                        "started", "succeeded"]


def test_a_hook_that_raises_never_breaks_the_enqueue(t: TestContext) -> None:
    def broken(job: JobRecord, err: BaseException | None) -> None:
        raise ConnectionError("error tracker down")

    app.on("enqueued")(broken)
    try:
        handle = add.enqueue(1, 1)
    finally:
        app.events.remove("enqueued", broken)
    drain()
    assert handle.result() == 2


def test_an_outcome_the_store_refused_fires_nothing(t: TestContext) -> None:
    handle = loses_its_claim.enqueue()
    drain()
    assert handle.result() == "second run"
    assert [e for e, _, _ in fired] == ["enqueued", "started", "started", "succeeded"]
    assert handle.record().attempt == 1, "the refused attempt was not counted"


def test_no_enqueued_event_inside_the_callers_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    with isolated(app, url=url, inline=True) as ctx:
        fired.clear()
        conn = sqlite3.connect(f"{tmp_path}/shared.db", isolation_level=None)
        conn.execute("BEGIN")
        handle = add.enqueue(2, 2, connection=conn)
        conn.execute("COMMIT")
        conn.close()
        assert fired == [], "conveyor cannot see the commit: nothing fires, nothing runs inline"
        assert handle.status() is JobState.READY
        assert ctx.drain().succeeded == 1


def test_inline_mode_runs_each_enqueue_at_once_and_ends_with_its_context(store_url: str) -> None:
    with isolated(app, url=store_url, inline=True):
        handle = add.enqueue(20, 22)
        assert handle.status() is JobState.SUCCEEDED and handle.result() == 42
        many = app.enqueue_many([add.prepare(i, i) for i in range(3)])
        assert [h.result() for h in many] == [0, 2, 4]
    with isolated(app, url=store_url):
        assert add.enqueue(1, 1).status() is JobState.READY, "inline mode ended with its context"


def test_enqueued_fires_only_for_a_job_created_not_for_one_that_found_its_key_taken(
    t: TestContext,
) -> None:
    first, again = add.prepare(1, 1), add.prepare(1, 1)
    first.new_job.unique_key = again.new_job.unique_key = "add:1:1"
    [kept] = app.enqueue_many([first])
    [same] = app.enqueue_many([again])
    assert same.id == kept.id
    assert fired == [("enqueued", kept.id, "")]

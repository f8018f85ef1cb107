"""Concurrency limits through the Python API on both stores: jobs over a key's limit wait
``blocked`` and run as slots free, in priority-then-age order, burning no attempt; drain()
honours the limit the way a worker does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor import Conveyor, JobState, Limit
from conveyor.testing import TestContext, isolated

app = Conveyor("sqlite:///unused-by-tests.db")
running: list[int] = []
overlap: list[int] = []
ran: list[int] = []


@app.job(concurrency=Limit(key=lambda account_id, n: f"acct:{account_id}", max=1))
def charge(account_id: int, n: int) -> int:
    running.append(account_id)
    overlap.append(running.count(account_id))
    running.remove(account_id)
    return n


@app.job(concurrency="reports")
def report(n: int) -> int:
    ran.append(n)
    return n


@app.job
def plain(n: int) -> int:
    return n


@pytest.fixture
def t(store_url: str) -> Iterator[TestContext]:
    overlap.clear()
    ran.clear()
    with isolated(app, url=store_url) as ctx:
        yield ctx


def test_jobs_over_the_limit_wait_blocked(t: TestContext) -> None:
    a1, a2, b1 = charge.enqueue(1, 1), charge.enqueue(1, 2), charge.enqueue(2, 3)
    assert [h.status() for h in (a1, a2, b1)] == [JobState.READY, JobState.BLOCKED, JobState.READY]
    record = a2.record()
    assert (record.concurrency_key, record.concurrency_max) == ("acct:1", 1)
    result = t.drain()
    assert result.succeeded == 3 and max(overlap) == 1
    assert a2.record().attempt == 1  # its wait burned no attempt


def test_a_string_key_and_per_enqueue_limits(t: TestContext) -> None:
    first, second = report.enqueue(1), report.enqueue(2)
    assert second.status() is JobState.BLOCKED
    wide = plain.options(concurrency=Limit("reports", max=3))
    assert [wide.enqueue(i).status() for i in range(3)] == [JobState.BLOCKED] * 3
    t.drain()
    assert {h.status() for h in (first, second)} == {JobState.SUCCEEDED}


def test_released_in_priority_then_age_order(t: TestContext) -> None:
    report.enqueue(-1)  # holds the slot while the others arrive
    for n, priority in ((10, 0), (11, 5), (12, 1), (13, 5)):
        report.options(priority=priority).enqueue(n)
    t.drain()
    assert ran == [-1, 11, 13, 12, 10]


def test_a_bad_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Limit("k", max=0)
    with pytest.raises(TypeError, match="Limit or a string"):
        plain.options(concurrency=3)  # type: ignore[arg-type]

"""Rate limits through the Python API on both stores, with frozen time: at most N starts in any
window of the period, the rest wait ``scheduled`` with no attempt spent, other jobs unaffected."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from conveyor import Conveyor, JobState, RateLimit
from conveyor.testing import TestContext, isolated
from conveyor.views import waiting_for

app = Conveyor("sqlite:///unused-by-tests.db")


@app.job(rate_limit="2/s")
def call_api(n: int) -> int:
    return n


@app.job(rate_limit=RateLimit("1/m", key=lambda tenant, n: f"tenant:{tenant}"))
def per_tenant(tenant: str, n: int) -> int:
    return n


@app.job
def plain(n: int) -> int:
    return n


@pytest.fixture
def t(store_url: str) -> Iterator[TestContext]:
    with isolated(app, url=store_url) as ctx:
        yield ctx


def test_at_most_n_starts_per_period_and_the_rest_wait(t: TestContext) -> None:
    handles = [call_api.enqueue(i) for i in range(5)]
    other = plain.enqueue(0)
    assert t.drain().succeeded == 3
    assert other.status() is JobState.SUCCEEDED
    waiting = handles[2].record()
    assert (waiting.state, waiting.attempt) == (JobState.SCHEDULED, 0)
    assert (waiting_for(waiting, []) or "").startswith(f"rate {call_api.name} (2 per 1s)")
    t.advance(timedelta(seconds=1))
    assert t.drain().succeeded == 2
    t.advance(timedelta(seconds=1))
    assert t.drain().succeeded == 1
    assert {h.status() for h in handles} == {JobState.SUCCEEDED}


def test_a_keyed_rate_is_per_key(t: TestContext) -> None:
    a1, a2, b1 = per_tenant.enqueue("a", 1), per_tenant.enqueue("a", 2), per_tenant.enqueue("b", 3)
    t.drain()
    assert [h.status() for h in (a1, a2, b1)] == [
        JobState.SUCCEEDED, JobState.SCHEDULED, JobState.SUCCEEDED]


def test_bad_rates_are_refused() -> None:
    for bad in ("20", "0/s", "x/s", "5/d", "-1/m"):
        with pytest.raises(ValueError, match="a rate is starts per period"):
            plain.options(rate_limit=bad)

"""Flow control in the store, on both backends: unique keys (held, released at start, kept for
``unique_for``, refused with DuplicateJob) and concurrency keys (admission, blocked jobs, slots
given back on every way a job ends)."""

from __future__ import annotations

import pytest

from conveyor.errors import DuplicateJob
from conveyor.models import AttemptOutcome, Held, JobState, LimitUsage, NewJob, RateBacklog
from conveyor.store import Store

from .test_contract import T0, at, claim_one, get, outcome


def add(store: Store, *jobs: NewJob, now=T0) -> list[tuple[int, bool]]:  # type: ignore[no-untyped-def]
    return [(i.id, i.created) for i in store.job_insert_many(list(jobs), now=now)]


def limited(key: str = "k", max: int = 1, **kw: object) -> NewJob:
    return NewJob("job", concurrency_key=key, concurrency_max=max, **kw)  # type: ignore[arg-type]


def states(store: Store, ids: list[int]) -> list[JobState]:
    return [get(store, i).state for i in ids]


# --- unique ----------------------------------------------------------------------------------
def test_a_key_held_by_a_failed_job_waiting_to_retry_is_still_held(store: Store) -> None:
    [(first, _)] = add(store, NewJob("job", unique_key="u", max_attempts=3))
    job = claim_one(store)
    store.job_finish_many([outcome(job, JobState.FAILED, AttemptOutcome.ERROR,
                                   retry_at=at(60), error_class="E")], now=at(1))
    assert add(store, NewJob("job", unique_key="u"), now=at(2)) == [(first, False)]


def test_unique_started_gives_the_key_up_at_the_first_claim(store: Store) -> None:
    [(first, _)] = add(store, NewJob("job", unique_key="u", unique_started=True))
    assert add(store, NewJob("job", unique_key="u", unique_started=True)) == [(first, False)]
    claim_one(store)
    [(second, created)] = add(store, NewJob("job", unique_key="u", unique_started=True))
    assert created and second != first


def test_unique_for_keeps_the_key_after_the_job_finished(store: Store) -> None:
    [(first, _)] = add(store, NewJob("job", unique_key="u", unique_for=60.0))
    job = claim_one(store)
    store.job_finish_many([outcome(job, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)], now=at(1))
    assert add(store, NewJob("job", unique_key="u", unique_for=60.0), now=at(30)) == [(first, False)]
    [(second, created)] = add(store, NewJob("job", unique_key="u", unique_for=60.0), now=at(61))
    assert created and second != first


def test_duplicates_inside_one_batch_create_each_key_once(store: Store) -> None:
    got = add(store, *[NewJob("job", unique_key=f"u{i % 3}", unique_for=5.0 if i % 2 else None)
                       for i in range(9)])
    assert [c for _, c in got] == [True] * 3 + [False] * 6
    assert [i for i, _ in got[3:]] == [got[i % 3][0] for i in range(3, 9)]


def test_a_held_key_that_should_raise_rolls_the_batch_back(store: Store) -> None:
    [(first, _)] = add(store, NewJob("job", unique_key="u"))
    with pytest.raises(DuplicateJob) as caught:
        add(store, NewJob("other"), NewJob("job", unique_key="u", raise_if_held=True))
    assert caught.value.existing_id == first
    assert store.job_ids_by_state(JobState.READY) == [first]


# --- concurrency -----------------------------------------------------------------------------
def test_jobs_over_the_limit_wait_blocked_and_are_admitted_by_priority_then_age(store: Store) -> None:
    ids = [i for i, _ in add(store, limited())]
    ids += [i for i, _ in add(store, limited(), limited(priority=5), limited())]
    assert states(store, ids) == [JobState.READY] + [JobState.BLOCKED] * 3
    assert store.limit_usage() == [LimitUsage("k", admitted=1, blocked=3, max=1)]
    job = claim_one(store)
    assert job.id == ids[0] and claim_one_or_none(store) is None
    store.job_finish_many([outcome(job, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)], now=at(1))
    assert states(store, ids)[1:] == [JobState.BLOCKED, JobState.READY, JobState.BLOCKED]
    assert get(store, ids[2]).attempt == 0  # waiting burned no attempt


def claim_one_or_none(store: Store):  # type: ignore[no-untyped-def]
    got = store.job_claim("w1", "default", 10, now=T0)
    assert len(got) <= 1
    return got[0] if got else None


def test_max_two_admits_two_and_keys_are_independent(store: Store) -> None:
    ids = [i for i, _ in add(store, *[limited("a", 2) for _ in range(3)], limited("b", 2))]
    assert states(store, ids) == [JobState.READY, JobState.READY, JobState.BLOCKED, JobState.READY]


@pytest.mark.parametrize("ending", ["failed", "dead", "cancelled", "released", "rescued",
                                    "lost", "cancel_waiting"])
def test_every_way_a_holder_ends_gives_its_slot_back(store: Store, ending: str) -> None:
    holder, waiter = [i for i, _ in add(store, limited(max_attempts=3), limited())]
    if ending == "cancel_waiting":
        store.job_cancel(holder, now=at(1))
        assert states(store, [holder, waiter]) == [JobState.CANCELLED, JobState.READY]
        return
    job = claim_one(store)
    if ending in ("failed", "dead", "cancelled"):
        state = {"failed": JobState.FAILED, "dead": JobState.DEAD,
                 "cancelled": JobState.CANCELLED}[ending]
        store.job_finish_many([outcome(job, state, AttemptOutcome.ERROR, error_class="E",
                                       retry_at=at(60) if ending == "failed" else None)], now=at(1))
    elif ending == "released":  # back to ready: it keeps its slot; a cancelled one frees it
        store.job_cancel(holder, now=at(1))
        store.job_release([(job.id, job.lease or "")], now=at(2))
    elif ending == "rescued":
        store.job_cancel(holder, now=at(1))
        store.jobs_rescue(["w1"], "worker died", held={job.id: Held.RUNNING}, now=at(2))
    else:
        store.job_lost(job.id, job.lease or "", "killed it", poison_after=1, now=at(1))
    assert get(store, waiter).state is JobState.READY


def test_a_rescued_holder_keeps_its_slot_and_its_late_finish_frees_nothing(store: Store) -> None:
    holder, waiter = [i for i, _ in add(store, limited(), limited())]
    job = claim_one(store)
    store.jobs_rescue(["w1"], "worker died", held={job.id: Held.RUNNING}, now=at(1))
    assert states(store, [holder, waiter]) == [JobState.READY, JobState.BLOCKED]
    late = store.job_finish_many(
        [outcome(job, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)], now=at(2))
    assert late == [False]
    assert states(store, [holder, waiter]) == [JobState.READY, JobState.BLOCKED]


def test_a_failed_job_promoted_for_its_retry_waits_for_a_slot(store: Store) -> None:
    first, second = [i for i, _ in add(store, limited(max_attempts=3), limited())]
    job = claim_one(store)
    store.job_finish_many([outcome(job, JobState.FAILED, AttemptOutcome.ERROR, error_class="E",
                                   retry_at=at(5))], now=at(1))
    assert states(store, [first, second]) == [JobState.FAILED, JobState.READY]
    store.jobs_promote(now=at(10))
    assert states(store, [first, second]) == [JobState.BLOCKED, JobState.READY]


def test_scheduled_jobs_of_a_key_are_blocked_when_due_and_admitted(store: Store) -> None:
    [(later, _)] = add(store, limited(run_at=at(30)))
    assert get(store, later).state is JobState.SCHEDULED
    store.jobs_promote(now=at(31))
    assert get(store, later).state is JobState.READY


def test_a_retried_dead_job_waits_for_a_slot(store: Store) -> None:
    first, second = [i for i, _ in add(store, limited(), limited())]
    job = claim_one(store)
    store.job_finish_many([outcome(job, JobState.DEAD, AttemptOutcome.ERROR, error_class="E")],
                          now=at(1))
    assert store.job_retry([first], now=at(2)) == 1
    assert states(store, [first, second]) == [JobState.BLOCKED, JobState.READY]


def test_discarding_a_holder_admits_the_next(store: Store) -> None:
    ids = [i for i, _ in add(store, limited(), limited())]
    store.job_discard([ids[0]])
    assert get(store, ids[1]).state is JobState.READY


# --- rate limits -----------------------------------------------------------------------------
def rated(key: str = "r", count: int = 2, period: float = 1.0, **kw: object) -> NewJob:
    return NewJob("job", rate_key=key, rate_count=count, rate_period=period, **kw)  # type: ignore[arg-type]


def test_claims_over_the_rate_go_back_scheduled_until_the_window_has_room(store: Store) -> None:
    ids = [i for i, _ in add(store, *[rated() for _ in range(5)], NewJob("other"))]
    got = store.job_claim("w1", "default", 10, now=T0)
    assert sorted(j.id for j in got) == [ids[0], ids[1], ids[5]]  # other names never wait
    for job_id in ids[2:5]:
        job = get(store, job_id)
        assert (job.state, job.run_at, job.attempt, job.lease) == (JobState.SCHEDULED, at(1), 0, None)
    assert store.job_claim("w1", "default", 10, now=at(0.5)) == []
    store.jobs_promote(now=at(1))
    assert len(store.job_claim("w1", "default", 10, now=at(1))) == 2


def test_the_window_slides_rather_than_resetting(store: Store) -> None:
    ids = [i for i, _ in add(store, *[rated() for _ in range(4)])]
    assert [j.id for j in store.job_claim("w1", "default", 1, now=T0)] == [ids[0]]
    assert [j.id for j in store.job_claim("w1", "default", 1, now=at(0.6))] == [ids[1]]
    assert store.job_claim("w1", "default", 1, now=at(0.9)) == []
    assert get(store, ids[2]).run_at == at(1)  # the start at 0 ages out at 1.0, not at 2.0
    store.jobs_promote(now=at(1))
    assert len(store.job_claim("w1", "default", 5, now=at(1))) == 1
    assert get(store, ids[3]).run_at == at(1.6)


def test_rate_keys_are_independent(store: Store) -> None:
    add(store, rated("a", 1), rated("a", 1), rated("b", 1))
    assert len(store.job_claim("w1", "default", 10, now=T0)) == 2


def test_rate_backlog_counts_waiting_jobs_and_recent_arrivals(store: Store) -> None:
    add(store, *[rated("r", 2) for _ in range(3)], now=T0)
    add(store, *[rated("r", 2) for _ in range(2)], NewJob("plain"), now=at(100))
    assert store.rate_backlog(now=at(120)) == [RateBacklog("r", 2, 1.0, waiting=5, recent=2)]


# --- cancellation outcomes -------------------------------------------------------------------
@pytest.mark.parametrize("ended", [JobState.SUCCEEDED, JobState.DEAD, JobState.FAILED])
def test_a_job_that_ended_before_its_cancellation_reached_it_finished_anyway(
    store: Store, ended: JobState
) -> None:
    [(job_id, _)] = add(store, NewJob("job", max_attempts=3))
    job = claim_one(store)
    assert store.job_cancel(job_id, now=at(1)) is JobState.RUNNING
    how = AttemptOutcome.SUCCEEDED if ended is JobState.SUCCEEDED else AttemptOutcome.ERROR
    store.job_finish_many([outcome(job, ended, how, retry_at=at(60) if ended is JobState.FAILED
                                   else None, error_class=None if ended is JobState.SUCCEEDED
                                   else "E")], now=at(2))
    # a success or a death stays; a failure waiting to retry is a waiting job: cancelled at once
    after = JobState.CANCELLED if ended is JobState.FAILED else ended
    assert get(store, job_id).state is after
    assert [a.outcome for a in store.job_attempts(job_id)] == [AttemptOutcome.FINISHED_ANYWAY]


def test_a_job_stopped_by_its_cancellation_keeps_its_outcome(store: Store) -> None:
    [(job_id, _), _] = add(store, limited(), limited())
    job = claim_one(store)
    store.job_cancel(job_id, now=at(1))
    store.job_finish_many([outcome(job, JobState.CANCELLED, AttemptOutcome.CANCEL_FORCED,
                                   error_class="JobCancelled")], now=at(2))
    assert [a.outcome for a in store.job_attempts(job_id)] == [AttemptOutcome.CANCEL_FORCED]
    assert get(store, job_id + 1).state is JobState.READY  # its slot was given back

"""Claiming ahead of free slots (Pace): the claim turn driven with explicit times, and a worker
in this process, on both stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.context import JobContext
from conveyor.executor import Call
from conveyor.models import JobRecord
from conveyor.worker import PREFETCH_MAX, Pace, Worker
from conveyor.worker.claimer import IDLE, Claimer
from conveyor.worker.completer import Completer
from conveyor.worker.hand import Hand
from conveyor.worker.pacing import WAITING_MAX


def wait_until(predicate: Callable[[], Any], timeout: float = 20, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.01)


def test_pace_claims_ahead_only_for_jobs_shorter_than_a_claim() -> None:
    pace = Pace(concurrency=4)
    assert pace.ahead() == 0, "nothing is known yet: claim for free slots only"
    pace.claimed(0.002)
    pace.ran(0.004)
    assert pace.ahead() == 2, "4 slots get through 2 jobs of 4 ms during a 2 ms claim"
    pace = Pace(concurrency=4)
    pace.claimed(0.002)
    pace.ran(1.0)
    assert pace.ahead() == 0, "a job as long as a second: nothing waits behind a busy slot"
    pace = Pace(concurrency=4)
    pace.claimed(0.002)
    pace.ran(0.00001)
    assert pace.ahead() == PREFETCH_MAX * 4, "capped however short the jobs"
    for _ in range(100):  # the jobs turn long: the average follows, claiming ahead stops
        pace.ran(0.5)
    assert pace.ahead() == 0


@pytest.fixture
def held(store_url: str) -> Iterator[tuple[Conveyor, Any, threading.Event, list[int]]]:
    app = Conveyor(store_url, poll_interval=0.1, shutdown_timeout=30)
    release = threading.Event()
    started: list[int] = []

    @app.job
    def hold(i: int) -> int:
        started.append(i)
        assert release.wait(30)
        return i

    yield app, hold, release, started
    release.set()
    app.close()


def _worker_claiming_ahead(app: Conveyor) -> tuple[Worker, threading.Thread]:
    worker = Worker(app, worker_id="w-ahead", concurrency=1)
    # as if its jobs had taken 1 ms and its claims 10 ms: one slot, PREFETCH_MAX claimed ahead
    worker.claimer.pace.ran(0.001)
    worker.claimer.pace.claimed(0.010)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def _all_run_in_order_then_stop(handles: list[Any], started: list[int], worker: Worker,
                                thread: threading.Thread) -> None:
    for h in handles:
        assert h.wait(timeout=20) is JobState.SUCCEEDED
    assert started == list(range(len(handles)))
    worker.request_stop()
    thread.join(20)
    assert not thread.is_alive()


def test_jobs_claimed_ahead_wait_for_the_slot_then_run_in_order(held) -> None:  # type: ignore[no-untyped-def]
    app, hold, release, started = held
    handles = [hold.enqueue(i) for i in range(PREFETCH_MAX + 1)]
    worker, thread = _worker_claiming_ahead(app)
    wait_until(lambda: all(h.status() is JobState.RUNNING for h in handles), message="all claimed")
    assert started == [0], "one slot: one job runs, the ones claimed ahead wait"
    release.set()
    _all_run_in_order_then_stop(handles, started, worker, thread)


def test_jobs_claimed_ahead_go_back_unstarted_at_once_on_shutdown(held) -> None:  # type: ignore[no-untyped-def]
    app, hold, release, started = held
    handles = [hold.enqueue(i) for i in range(PREFETCH_MAX + 1)]
    worker, thread = _worker_claiming_ahead(app)
    wait_until(lambda: all(h.status() is JobState.RUNNING for h in handles), message="all claimed")
    worker.request_stop()
    # returned while the running job still runs, not after shutdown_timeout
    wait_until(lambda: all(h.status() is JobState.READY for h in handles[1:]),
               message="unstarted jobs returned")
    assert handles[0].status() is JobState.RUNNING
    release.set()
    thread.join(20)
    assert not thread.is_alive()
    assert handles[0].status() is JobState.SUCCEEDED
    assert started == [0]
    for h in handles[1:]:
        assert h.record().attempt == 0, "an attempt that never started is not counted"
        assert h.attempts() == [], "nor recorded"


def _claimer(app: Conveyor) -> tuple[Claimer, list[JobRecord]]:
    """A claim turn with one slot that has seen 1 ms jobs and 10 ms claims; launched jobs are
    only noted (they never finish unless the test says so)."""
    hand = Hand(concurrency=1)
    completer = Completer(lambda: app.store, hand, accepted=lambda o: None,
                          give_back=lambda pairs, why: None)
    launched: list[JobRecord] = []

    def launch(job: JobRecord) -> None:
        launched.append(job)
        hand.started(Call(job, "w-ahead", JobContext()))

    claimer = Claimer(lambda: app.store, "w-ahead", Worker(app, worker_id="x").queues, hand,
                      completer, launch, poll=0.1)
    claimer.pace.ran(0.001)
    claimer.pace.claimed(0.010)
    return claimer, launched


def test_jobs_claimed_ahead_go_back_when_the_slots_stay_busy(held) -> None:  # type: ignore[no-untyped-def]
    app, hold, _release, _started = held
    handles = [hold.enqueue(i) for i in range(PREFETCH_MAX + 1)]
    claimer, launched = _claimer(app)
    assert claimer.step(now=100.0) == 0.0, "claimed: go on at once"
    assert [j.id for j in launched] == [handles[0].id], "one slot: the rest wait in the worker"
    assert all(h.status() is JobState.RUNNING for h in handles)
    claimer.step(now=100.0 + WAITING_MAX / 2)
    assert all(h.status() is JobState.RUNNING for h in handles), "waiting less than WAITING_MAX"
    wait = claimer.step(now=100.0 + WAITING_MAX + 0.01)
    assert all(h.status() is JobState.READY for h in handles[1:]), "handed back for other workers"
    assert handles[0].status() is JobState.RUNNING
    assert claimer.pace.ahead() == 0, "having seen the slot stay busy, it claims nothing ahead"
    assert wait > 0 and wait != IDLE, "the slot is busy: wait for it, claim nothing"
    for h in handles[1:]:
        assert h.record().attempt == 0
        assert h.attempts() == [], "a job that never started has no attempt recorded"
    claimer.step(now=100.0 + WAITING_MAX + 0.5)
    assert all(h.status() is JobState.READY for h in handles[1:]), "not claimed back meanwhile"


def test_a_claim_turn_waits_a_moment_for_a_bigger_batch(held) -> None:  # type: ignore[no-untyped-def]
    app, hold, _release, _started = held
    [hold.enqueue(i) for i in range(8)]
    claimer, launched = _claimer(app)
    claimer.hand.concurrency = 4
    claimer.pace = Pace(concurrency=4)  # nothing learnt: claim for the free slots only
    assert claimer.step(now=0.0) == 0.0 and len(launched) == 4
    claimer.hand.finished(launched[0])  # one of four slots free: worth waiting for more
    wait = claimer.step(now=1.0)
    assert 0 < wait <= 0.002 and len(launched) == 4
    assert claimer.step(now=1.0025) == 0.0 and len(launched) == 5, "waited long enough: claim"

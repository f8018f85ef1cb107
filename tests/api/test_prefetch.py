"""Claiming ahead of free slots (worker.Pace): a worker in this process, on both stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.worker import PREFETCH_MAX, Pace, Worker


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
    worker._pace.ran(0.001)
    worker._pace.claimed(0.010)
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


def test_jobs_claimed_ahead_go_back_when_the_slots_stay_busy(held, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from conveyor import worker as worker_module

    monkeypatch.setattr(worker_module, "WAITING_MAX", 0.3)
    app, hold, release, started = held
    handles = [hold.enqueue(i) for i in range(PREFETCH_MAX + 1)]
    worker, thread = _worker_claiming_ahead(app)
    wait_until(lambda: all(h.status() is JobState.RUNNING for h in handles), message="all claimed")
    # the first job holds the only slot; the ones claimed behind it are handed back for others
    wait_until(lambda: all(h.status() is JobState.READY for h in handles[1:]),
               message="jobs claimed ahead returned while the slot stays busy")
    assert handles[0].status() is JobState.RUNNING
    assert worker._pace.ahead() == 0, "having seen a long job, it claims nothing ahead"
    for h in handles[1:]:
        assert h.record().attempt == 0
        assert h.attempts() == [], "a job that never started has no attempt recorded"
    time.sleep(0.5)  # not a synchronisation: the returned jobs must stay returned meanwhile
    assert all(h.status() is JobState.READY for h in handles[1:]), "claimed and returned again"
    release.set()
    _all_run_in_order_then_stop(handles, started, worker, thread)

"""Jobs that hang, ignore cancellation, or lose their worker: stopped, explained, rescued."""

from __future__ import annotations

import os
import signal
import time

from conftest import Env, wait_until
from test_worker import _children

from conveyor import JobState

FAST = {"heartbeat_interval": "0.2", "cancel_grace": "1"}


def test_a_job_blocked_in_a_socket_read_is_stopped_at_its_timeout(env: Env, app) -> None:
    hung = app.hangs_on_a_socket.enqueue()
    after = app.square.enqueue(6)
    worker = env.worker("--concurrency", "1", settings=FAST)
    wait_until(lambda: hung.status() is JobState.RUNNING, 30, "hung job started")
    started = time.monotonic()
    wait_until(lambda: hung.attempts(), 10, "first attempt stopped")
    assert time.monotonic() - started < 5, "stopped within 5 s of starting (timeout 2 s)"
    first = hung.attempts()[0]
    assert (first.outcome, first.error_class) == ("timeout", "JobTimeout")
    assert after.wait(timeout=30) is JobState.SUCCEEDED, "the single slot came back"
    assert hung.wait(timeout=30) is JobState.DEAD, "retried once per its policy, then dead"
    assert [a.outcome for a in hung.attempts()] == ["timeout", "timeout"]
    assert env.stop(worker)[0] == 0


def test_an_async_job_is_cancelled_at_its_timeout_in_process(env: Env, app) -> None:
    job = app.async_hangs.enqueue()
    worker = env.worker("--concurrency", "2", settings=FAST)
    assert job.wait(timeout=30) is JobState.DEAD
    [attempt] = job.attempts()
    assert (attempt.outcome, attempt.error_class) == ("timeout", "JobTimeout")
    code, out = env.stop(worker)
    assert code == 0
    assert "replaced a worker" not in out, "the event loop cancelled it; no process was killed"


def test_an_ignored_cancellation_is_enforced_after_the_grace_period(env: Env, app) -> None:
    job = app.ignores_cancel.enqueue(60)
    worker = env.worker("--concurrency", "2", settings=FAST)
    wait_until(lambda: job.status() is JobState.RUNNING, 30, "running")
    assert job.cancel() is JobState.RUNNING, "a running job is only asked"
    assert job.wait(timeout=10) is JobState.CANCELLED
    [attempt] = job.attempts()
    assert attempt.outcome == "cancel_forced" and "not honoured" in (attempt.error_message or "")
    env.stop(worker)


def test_a_cooperative_job_sees_cancel_requested_and_stops(env: Env, app) -> None:
    job = app.honours_cancel.enqueue()
    worker = env.worker("--concurrency", "1", settings={**FAST, "cancel_grace": "30"})
    wait_until(lambda: job.status() is JobState.RUNNING, 30, "running")
    job.cancel()
    assert job.wait(timeout=10) is JobState.CANCELLED
    assert job.attempts()[0].error_message == "stopped on request"
    env.stop(worker)


def test_a_job_whose_worker_child_is_killed_runs_again_and_succeeds(env: Env, app) -> None:
    job = app.long_then_quick.enqueue()
    worker = env.worker("--concurrency", "1", settings={"rescue_after": "3"})
    wait_until(lambda: job.status() is JobState.RUNNING, 30, "running")
    os.kill(wait_until(lambda: _children(worker.pid), 10, "child")[0], signal.SIGKILL)
    assert job.wait(timeout=30) is JobState.SUCCEEDED
    assert job.result() == "done on attempt 1", "the lost run did not use up an attempt"
    assert [(a.attempt, a.outcome) for a in job.attempts()] == [
        (1, "worker_lost"), (1, "succeeded")]
    env.stop(worker)


def test_a_lost_host_is_noticed_by_heartbeat_and_its_job_rescued(env: Env, app) -> None:
    settings = {"rescue_after": "3", "heartbeat_interval": "0.5"}
    job = app.long_then_quick.enqueue()
    doomed = env.worker("--concurrency", "1", settings={**settings, "host_id": "doomed"})
    wait_until(lambda: job.status() is JobState.RUNNING, 30, "running on the first host")
    survivor = env.worker("--concurrency", "1", settings={**settings, "host_id": "survivor"})
    os.killpg(doomed.pid, signal.SIGKILL)  # the whole host: supervisor and children at once
    doomed.wait()
    killed = time.monotonic()
    assert job.wait(timeout=60) is JobState.SUCCEEDED
    print(f"\nrescued and finished {time.monotonic() - killed:.1f}s after the host died")
    lost = job.attempts()[0]
    assert lost.outcome == "worker_lost" and "heartbeat" in (lost.error_message or "")
    env.stop(survivor)


def test_a_claim_whose_reply_was_lost_is_returned_by_the_worker(env: Env, app) -> None:
    """A claim can commit while its reply is lost with the connection: the store says the job
    runs under a live worker that never heard of it. The worker's heartbeat notices (twice,
    so a claim still on its way is not mistaken) and returns it, attempt not counted."""
    worker = env.worker("--concurrency", "1", "--queues", "default", settings=FAST)
    worker_id = wait_until(
        lambda: next((p.id for p in app.app.store.process_list() if p.kind == "worker"), None),
        30, "worker registered")
    job = app.square.options(queue="side").enqueue(3)
    [claimed] = app.app.store.job_claim(worker_id, "side", 1)  # as if its reply never came
    assert claimed.id == job.id and job.status() is JobState.RUNNING
    wait_until(lambda: job.status() is JobState.READY, 10, "returned to the queue")
    record = job.record()
    assert record.attempt == 0 and record.lease is None
    assert job.attempts() == [], "it never started here: nothing is recorded against it"
    code, out = env.stop(worker)
    assert code == 0 and "returned jobs whose claim never reached this worker" in out

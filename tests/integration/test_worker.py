"""Workers as users run them: real processes, real signals, both stores."""

from __future__ import annotations

import signal
from collections import Counter

from conftest import Env, wait_until

from conveyor import JobState


def test_two_processes_run_a_thousand_mixed_jobs(env: Env, app) -> None:
    handles = app.app.enqueue_many(
        [app.square.prepare(i) for i in range(500)] + [app.async_square.prepare(i) for i in range(500)]
    )
    worker = env.worker("--processes", "2", "--concurrency", "4")
    for h in handles:
        assert h.wait(timeout=120) is JobState.SUCCEEDED
    assert [h.result() for h in handles] == [i * i for i in range(500)] * 2
    code, out = env.stop(worker)
    assert code == 0, out
    ran = Counter(line[0] for line in env.lines())
    assert len(ran) == 1000 and set(ran.values()) == {1}, "every job ran exactly once"


def test_failures_retry_then_succeed_or_die(env: Env, app) -> None:
    flaky = app.flaky.enqueue(2)
    doomed = app.always_fails.enqueue()
    rejected = app.rejects_input.enqueue("nope")
    worker = env.worker("--concurrency", "3")
    assert flaky.wait(timeout=60) is JobState.SUCCEEDED
    assert flaky.result() == 3 and flaky.record().attempt == 3
    assert [a.outcome for a in flaky.attempts()] == ["error", "error", "succeeded"]

    assert doomed.wait(timeout=60) is JobState.DEAD
    attempts = doomed.attempts()
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert all(a.error_class == "RuntimeError" and "never works" in a.traceback for a in attempts)

    assert rejected.wait(timeout=60) is JobState.DEAD
    assert len(rejected.attempts()) == 1, "discard_on ends the job after one attempt"
    assert env.stop(worker)[0] == 0


def test_sigterm_lets_a_running_job_finish(env: Env, app) -> None:
    job = app.sleepy.enqueue(3)
    worker = env.worker("--concurrency", "1")
    wait_until(lambda: any(line[1] == "sleepy-start" for line in env.lines()), 30, "job started")
    code, out = env.stop(worker, signal.SIGTERM)
    assert code == 0, out
    assert job.status() is JobState.SUCCEEDED
    assert job.result() == "rested"


def test_shutdown_timeout_returns_unfinished_job_without_spending_its_attempt(env: Env, app) -> None:
    job = app.sleepy.enqueue(30)
    worker = env.worker("--concurrency", "1", settings={"shutdown_timeout": "0.5"})
    wait_until(lambda: job.status() is JobState.RUNNING, 30, "job running")
    code, out = env.stop(worker, signal.SIGTERM, timeout=20)
    assert code == 0, out
    record = job.record()
    assert record.state is JobState.READY
    assert record.attempt == 0, "the interrupted attempt is not counted"
    assert [a.outcome for a in job.attempts()] == ["shutdown"]


def test_higher_priority_runs_first_with_one_slot(env: Env, app) -> None:
    for i in range(5):
        app.tag.enqueue(f"low{i}")
    app.tag.options(priority=10).enqueue("urgent")
    worker = env.worker("--concurrency", "1")
    wait_until(lambda: len(env.lines()) == 6, 60, "all six ran")
    env.stop(worker)
    assert [line[3] for line in env.lines()] == ["urgent", "low0", "low1", "low2", "low3", "low4"]


def test_weighted_queues_share_slots_in_proportion(env: Env, app) -> None:
    weights = {"critical": 3, "default": 2, "low": 1}
    app.app.enqueue_many(
        [app.tag.options(queue=q).prepare(f"{q}{i}") for q in weights for i in range(200)]
    )
    worker = env.worker("--concurrency", "1", "--queues", "critical:3,default:2,low:1")
    wait_until(lambda: len(env.lines()) >= 300, 120, "300 jobs ran")
    env.stop(worker)
    share = Counter(line[2] for line in env.lines()[:300])
    for queue, weight in weights.items():
        expected = 300 * weight / 6
        assert abs(share[queue] - expected) <= 0.15 * expected, (queue, share)


def test_strict_queues_drain_in_order(env: Env, app) -> None:
    app.app.enqueue_many(
        [app.tag.options(queue=q).prepare(f"{q}{i}")
         for q in ("low", "default", "critical") for i in range(10)]
    )
    worker = env.worker("--concurrency", "1", "--queues", "critical,default,low", "--strict")
    wait_until(lambda: len(env.lines()) == 30, 60, "all ran")
    env.stop(worker)
    order = [line[2] for line in env.lines()]
    assert order == ["critical"] * 10 + ["default"] * 10 + ["low"] * 10


def test_paused_queue_accepts_but_starts_nothing(env: Env, app) -> None:
    app.app.pause_queue("default")
    job = app.square.enqueue(7)
    other = app.tag.options(queue="other").enqueue("x")
    worker = env.worker("--queues", "default,other")
    assert other.wait(timeout=30) is JobState.SUCCEEDED
    assert job.status() is JobState.READY, "paused queue must not start jobs"
    app.app.resume_queue("default")
    assert job.wait(timeout=30) is JobState.SUCCEEDED
    env.stop(worker)


def test_scheduled_jobs_are_promoted_and_run(env: Env, app) -> None:
    from datetime import timedelta

    job = app.square.enqueue_in(timedelta(seconds=1), 9)
    assert job.status() is JobState.SCHEDULED
    worker = env.worker()
    assert job.wait(timeout=30) is JobState.SUCCEEDED
    assert job.record().started_at >= job.record().run_at
    env.stop(worker)


def test_a_killed_worker_process_is_replaced_and_its_job_rescued(env: Env, app) -> None:
    import os

    job = app.flaky.enqueue(0)  # succeeds first time it runs to completion
    blocker = app.long_then_quick.options(priority=5).enqueue()  # long only the first time
    worker = env.worker("--concurrency", "1")
    wait_until(lambda: blocker.status() is JobState.RUNNING, 30, "blocker running")
    pid = next(p.pid for p in env.procs if p is worker)
    children = wait_until(lambda: _children(pid), 10, "worker child")
    os.kill(children[0], signal.SIGKILL)
    assert job.wait(timeout=60) is JobState.SUCCEEDED, "a new child took over"
    lost = blocker.attempts()[0]
    assert lost.outcome == "worker_lost" and "SIGKILL" in (lost.error_message or "")
    env.stop(worker)


def _children(pid: int) -> list[int]:
    import subprocess

    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_worker_children_killed_again_and_again_are_replaced_promptly(env: Env, app) -> None:
    """Children that had been working when killed are no crash loop: no restart backoff."""
    import os
    import time

    worker = env.worker("--processes", "2", "--concurrency", "2")
    victims: list[int] = []

    def fresh_pair() -> list[int]:
        pids = _children(worker.pid)
        return pids if len(pids) == 2 and not set(pids) & set(victims) else []

    for _ in range(4):  # like an OOM killer striking every second or so
        victims = wait_until(fresh_pair, 10, "two new worker children")
        time.sleep(1.2)
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(fresh_pair, 10, "both children back")
    assert time.monotonic() - killed < 2, "replacements were held back by crash-loop backoff"
    handles = app.app.enqueue_many([app.square.prepare(i) for i in range(20)])
    assert all(h.wait(timeout=10) is JobState.SUCCEEDED for h in handles)
    env.stop(worker)

"""Who pays for a crash: the job that was running, never the jobs beside it or waiting behind it.

Each test combines ordinary ingredients the way users do: long jobs beside short ones, default
retry settings, and workers killed while they hold jobs.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from conftest import Env, wait_until
from test_worker import _children

from conveyor import JobState

QUICK_RESCUE = {"rescue_after": "3"}  # heartbeats every 0.75 s: a wrong return would show at once


def test_a_long_job_beside_short_ones_runs_exactly_once(env: Env, app) -> None:
    """One claim takes the long job and the short ones together; the short ones finishing must
    not make the worker forget it still runs the long one."""
    long = app.sleepy.enqueue(4)
    quick = [app.square.enqueue(i) for i in range(3)]
    worker = env.worker("--processes", "1", "--concurrency", "4", settings=QUICK_RESCUE)
    assert long.wait(timeout=30) is JobState.SUCCEEDED
    assert all(q.wait(timeout=10) is JobState.SUCCEEDED for q in quick)
    code, out = env.stop(worker)
    assert code == 0
    starts = [line for line in env.lines() if line[1] == "sleepy-start"]
    assert len(starts) == 1, f"the long job ran {len(starts)} times"
    assert [a.outcome for a in long.attempts()] == ["succeeded"]
    assert "never reached this worker" not in out and "result discarded" not in out


def test_bystanders_of_a_crash_run_again_and_the_culprit_alone_ends_dead(env: Env, app) -> None:
    """On the default retry policy: the jobs running beside a job that kills its process are
    run again (one worker_lost attempt each, never dead); the killer is dead after 3 deaths."""
    killer = app.kills_its_process.enqueue()
    beside = [app.sleepy.enqueue(1) for _ in range(3)]
    worker = env.worker("--processes", "1", "--concurrency", "4", settings=QUICK_RESCUE)
    assert all(b.wait(timeout=60) is JobState.SUCCEEDED for b in beside)
    assert killer.wait(timeout=60) is JobState.DEAD
    env.stop(worker)
    deaths = [line for line in env.lines() if line[1] == "kills_its_process"]
    assert len(deaths) == 3, f"the poison pill ran {len(deaths)} times, not 3"
    attempts = killer.attempts()
    assert [a.outcome for a in attempts] == ["worker_lost"] * 3
    assert "poison pill" in (attempts[-1].error_message or "")
    for b in beside:
        outcomes = [a.outcome for a in b.attempts()]
        assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) <= {"worker_lost"}


def test_a_crash_and_a_whole_worker_kill_lose_nothing_on_default_retry(env: Env, app) -> None:
    """SIGKILL one child, then the whole worker, then start again: every job succeeds, and no
    job that never started has an attempt charged to it."""
    handles = app.app.enqueue_many([app.square.prepare(i) for i in range(1000)])
    worker = env.worker("--processes", "2", "--concurrency", "10", settings=QUICK_RESCUE)
    wait_until(lambda: len(env.lines()) >= 100, 30, "the workers got going")
    children = _children(worker.pid)
    os.kill(children[0], signal.SIGKILL)
    wait_until(lambda: len(env.lines()) >= 300, 30, "the child was replaced")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    again = env.worker("--processes", "2", "--concurrency", "10", settings=QUICK_RESCUE)
    wait_until(lambda: all(h.status() is JobState.SUCCEEDED for h in handles[::50]), 60,
               "sampled jobs succeeded")
    assert all(h.wait(timeout=60) is JobState.SUCCEEDED for h in handles)
    env.stop(again)
    runs = Counter(int(line[0]) for line in env.lines() if line[1] == "square")
    never_ran = [h.id for h in handles if runs[h.id] == 0]
    assert never_ran == []
    for h in handles:
        lost = [a for a in h.attempts() if a.outcome == "worker_lost"]
        assert len(lost) <= runs[h.id], f"job {h.id} charged for a run it never had"


def test_a_result_that_cannot_be_encoded_fails_its_attempt_and_frees_the_slot(
    env: Env, app
) -> None:
    bad = app.nested_result.enqueue(5000)
    after = app.square.enqueue(7)
    worker = env.worker("--processes", "1", "--concurrency", "1", settings=QUICK_RESCUE)
    assert bad.wait(timeout=30) is JobState.DEAD
    [attempt] = bad.attempts()
    assert attempt.outcome == "error" and "500 levels" in (attempt.error_message or "")
    assert after.wait(timeout=30) is JobState.SUCCEEDED, "the only slot came back"
    assert env.stop(worker)[0] == 0


def test_an_error_message_the_database_cannot_hold_is_recorded_escaped(env: Env, app) -> None:
    odd = app.raises_odd_text.enqueue()
    after = app.square.enqueue(3)
    worker = env.worker("--processes", "1", "--concurrency", "1", settings=QUICK_RESCUE)
    assert odd.wait(timeout=30) is JobState.DEAD
    [attempt] = odd.attempts()
    assert attempt.error_class == "ValueError"
    assert attempt.error_message == "before\\x00after \\ud800 end"
    assert after.wait(timeout=30) is JobState.SUCCEEDED, "the only slot came back"
    assert env.stop(worker)[0] == 0


def test_a_job_finishing_after_sigterm_is_not_taken_for_abandoned(env: Env, app) -> None:
    """After SIGTERM a worker lets its running job finish (shutdown_timeout); it must keep
    heartbeating meanwhile, or another worker rescues the job and runs it a second time."""
    # the leader, which rescues: started first, listening elsewhere so the job is not its own
    leader = env.worker("--queues", "elsewhere", settings=QUICK_RESCUE)
    wait_until(lambda: app.app.client.workers(), 30, "the leader is up")
    long = app.sleepy.enqueue(6)
    first = env.worker("--concurrency", "1", settings=QUICK_RESCUE)
    wait_until(lambda: long.status() is JobState.RUNNING, 30, "running")
    first.send_signal(signal.SIGTERM)
    assert long.wait(timeout=30) is JobState.SUCCEEDED
    assert first.wait(timeout=30) == 0
    starts = [line for line in env.lines() if line[1] == "sleepy-start"]
    assert len(starts) == 1, "run once: its worker was alive all along"
    assert [a.outcome for a in long.attempts()] == ["succeeded"]
    env.stop(leader)


def test_a_stopping_leader_hands_over_its_duties_at_once(env: Env, app) -> None:
    """A leader told to stop may wait shutdown_timeout for its jobs; meanwhile another host
    must be able to promote scheduled jobs (and rescue lost ones)."""
    from datetime import timedelta

    long = app.sleepy.enqueue(10)
    leader = env.worker("--concurrency", "1", settings=QUICK_RESCUE)
    wait_until(lambda: long.status() is JobState.RUNNING, 30, "the leader runs the long job")
    other = env.worker("--queues", "other", settings=QUICK_RESCUE)
    wait_until(lambda: len(app.app.client.workers()) >= 2, 30, "both up")
    leader.send_signal(signal.SIGTERM)
    due = app.tag.options(queue="other").enqueue_in(timedelta(seconds=1), "due")
    assert due.wait(timeout=4) is JobState.SUCCEEDED, "promoted while the old leader finishes"
    assert long.status() is JobState.RUNNING, "the old leader was still finishing its job"
    assert long.wait(timeout=30) is JobState.SUCCEEDED
    assert leader.wait(timeout=30) == 0
    env.stop(other)

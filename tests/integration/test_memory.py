"""``max_memory``: a job over its own limit is stopped and fails with MemoryExceeded; a worker
process over the worker's limit finishes its job and is replaced."""

from __future__ import annotations

from conftest import Env, wait_until

from conveyor import JobState


def test_a_job_over_its_own_memory_limit_is_stopped_and_the_jobs_beside_it_return(
    env: Env, app
) -> None:
    beside = app.sleepy.enqueue(2)
    hog = app.hog.enqueue(300)
    worker = env.worker("--concurrency", "2", settings={"rescue_after": "3"})
    assert hog.wait(timeout=60) is JobState.DEAD, "its only attempt failed"
    [attempt] = hog.attempts()
    assert (attempt.outcome, attempt.error_class) == ("memory_exceeded", "MemoryExceeded")
    assert "max_memory of 150 MB" in (attempt.error_message or "")
    assert beside.wait(timeout=60) is JobState.SUCCEEDED, "returned, then run by a new process"
    assert [a.outcome for a in beside.attempts()][-1] == "succeeded"
    code, out = env.stop(worker)
    assert code == 0 and "worker process replaced (memory limit)" in out


def test_a_worker_over_its_memory_limit_finishes_its_job_and_is_replaced(env: Env, app) -> None:
    first = app.leaky.enqueue(200)
    worker = env.worker("--concurrency", "1", settings={"max_memory": "150MB"})
    assert first.wait(timeout=60) is JobState.SUCCEEDED, "the job itself was within its rights"
    output = env.outputs[worker.pid]
    wait_until(lambda: "worker process replaced (memory limit)" in output.read_text(), 30,
               "the grown process made way for a fresh one")
    second = app.leaky.enqueue(1)
    assert second.wait(timeout=60) is JobState.SUCCEEDED
    assert second.result() != first.result(), "the next job ran in a fresh process"
    code, out = env.stop(worker)
    assert code == 0 and "over its memory limit; replacing it after its running jobs" in out

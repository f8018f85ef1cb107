"""Concurrency limits with real worker supervisors on both stores: jobs of one key never run
beside each other beyond the key's max, the run stays close to the ideal time, and a holder
killed with its worker gives its slot on once it is rescued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

from conftest import Env, wait_until
from test_worker import _children

from conveyor import JobState
from conveyor.doctor import STARVED_AFTER, diagnose

JOBS, KEYS, SECONDS = 300, 10, 0.2


def intervals(env: Env) -> dict[str, list[tuple[float, float]]]:
    """Per key, every run's (start, end) from the jobs' own records."""
    starts, ends, keys = {}, {}, {}
    for job_id, what, key, at in (line for line in env.lines() if line[1].startswith("keyed")):
        (starts if what == "keyed-start" else ends)[job_id] = float(at)
        keys[job_id] = key
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for job_id, start in starts.items():
        runs[keys[job_id]].append((start, ends.get(job_id, float("inf"))))
    return runs


def most_at_once(runs: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in runs] + [(e, -1) for _, e in runs])
    now = peak = 0
    for _, step in events:  # an end at the same instant as a start is counted first
        now += step
        peak = max(peak, now)
    return peak


def run_all(env: Env, job, per_key_max: int) -> tuple[dict[str, list[tuple[float, float]]], float]:  # type: ignore[no-untyped-def]
    handles = job.client.enqueue_many([job.prepare(i % KEYS, SECONDS) for i in range(JOBS)])
    assert {h.status() for h in handles[:KEYS * per_key_max]} == {JobState.READY}
    assert {h.status() for h in handles[KEYS * per_key_max:]} == {JobState.BLOCKED}
    workers = [env.worker("--concurrency", "8") for _ in range(3)]
    # with max=2 a key's last two jobs run side by side and may end in either order
    wait_until(lambda: all(h.status() is JobState.SUCCEEDED for h in handles), 120,
               "every job done")
    runs = intervals(env)
    first = min(s for r in runs.values() for s, _ in r)
    last = max(e for r in runs.values() for _, e in r)
    for w in workers:
        env.stop(w)
    return runs, last - first


def test_one_per_key_never_overlaps_and_runs_near_the_ideal_time(env: Env, app) -> None:
    runs, took = run_all(env, app.one_per_key, 1)
    assert sum(len(r) for r in runs.values()) == JOBS
    assert {key: most_at_once(r) for key, r in runs.items()} == {str(k): 1 for k in range(KEYS)}
    ideal = JOBS / KEYS * SECONDS
    print(f"\nmax=1: {JOBS} jobs over {KEYS} keys in {took:.2f}s; ideal {ideal:.2f}s"
          f" ({took / ideal:.2f}x)")
    assert took <= 1.5 * ideal


def test_two_per_key_runs_at_most_two_at_once(env: Env, app) -> None:
    runs, took = run_all(env, app.two_per_key, 2)
    peaks = {key: most_at_once(r) for key, r in runs.items()}
    ideal = JOBS / KEYS / 2 * SECONDS
    print(f"\nmax=2: peaks {sorted(set(peaks.values()))}, {took:.2f}s; ideal {ideal:.2f}s")
    assert set(peaks.values()) == {2}
    assert took <= 1.5 * ideal


def test_a_killed_holder_gives_its_slot_on_once_rescued(env: Env, app) -> None:
    holder = app.one_per_key.enqueue(0, 3)
    waiting = [app.one_per_key.enqueue(0, 0.01) for _ in range(3)]
    doomed = env.worker("--concurrency", "2", settings={"rescue_after": "3"})
    wait_until(lambda: holder.status() is JobState.RUNNING, 30, "holder running")
    assert {h.status() for h in waiting} == {JobState.BLOCKED}
    survivor = env.worker("--concurrency", "2", settings={"rescue_after": "3"})
    os.kill(wait_until(lambda: _children(doomed.pid), 10, "child")[0], signal.SIGKILL)
    killed = time.monotonic()
    # rescued, the holder is ready again and keeps its slot: it runs again first, then the others
    for h in waiting:
        assert h.wait(timeout=90) is JobState.SUCCEEDED
    print(f"\nwaiters done {time.monotonic() - killed:.1f}s after the holder's worker was killed")
    done = holder.record()
    assert done.state is JobState.SUCCEEDED and done.attempt == 1
    assert [a.outcome for a in holder.attempts()] == ["worker_lost", "succeeded"]
    assert done.finished_at is not None
    waiter_starts = [s for s, _ in intervals(env)["0"]][1:]
    assert min(waiter_starts) >= done.finished_at.timestamp()
    env.stop(survivor)
    env.stop(doomed)


def cli(env: Env, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "conveyor", "-A", "jobsapp:app", *args],
                          env=env.vars, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_cli_shows_why_a_job_is_blocked(env: Env, app) -> None:
    app.one_per_key.enqueue(42, 0.01)
    blocked = app.one_per_key.enqueue(42, 0.01)
    shown = cli(env, "jobs", "show", str(blocked.id))
    assert "limit k:42 (1/1)" in shown and "blocked" in shown
    assert json.loads(cli(env, "jobs", "show", str(blocked.id), "--json"))["waiting_for"] == (
        "limit k:42 (1/1)")
    listed = json.loads(cli(env, "jobs", "list", "--state", "blocked", "--json"))
    assert [j["id"] for j in listed] == [blocked.id]
    status = json.loads(cli(env, "status", "--json"))
    assert status["limits"] == [{"key": "k:42", "running_or_ready": 1, "blocked": 1, "max": 1}]
    assert [q["blocked"] for q in status["queues"]] == [1]
    assert status["rates"] == []
    assert "k:42" in cli(env, "status")


def test_a_rate_holds_across_two_hosts_and_other_jobs_are_not_slowed(env: Env, app) -> None:
    handles = app.rated_call.client.enqueue_many([app.rated_call.prepare(i) for i in range(300)])
    workers = [env.worker("--concurrency", "10", settings={"host_id": f"h{i}"}) for i in range(2)]
    time.sleep(3)  # in the middle of the drain
    enqueued_at = time.time()
    other = app.stamp.enqueue()
    assert other.wait(timeout=30) is JobState.SUCCEEDED
    waited = float(next(line[2] for line in env.lines() if line[1] == "stamp")) - enqueued_at
    rates = json.loads(cli(env, "status", "--json"))["rates"]
    assert [(r["key"], r["rate"]) for r in rates] == [(app.rated_call.name, "20/1s")]
    assert rates[0]["waiting"] > 100
    # jobs over the rate go back to wait, so they need not finish in id order: wait for all
    wait_until(lambda: all(h.status() is JobState.SUCCEEDED for h in handles), 60, "drained")
    starts = sorted(h.record().started_at.timestamp() for h in handles)  # type: ignore[union-attr]
    busiest = max(sum(1 for s in starts[i:] if s < start + 1.0) for i, start in enumerate(starts))
    took = starts[-1] - starts[0]
    print(f"\n300 jobs at 20/s on 2 hosts: {took:.1f}s, busiest 1-s window {busiest} starts;"
          f" another job started {waited * 1000:.0f} ms after its enqueue")
    assert busiest <= 20 and took >= 14
    assert all(h.record().attempt == 1 for h in handles)
    assert waited < 0.1
    for w in workers:
        env.stop(w)


def test_doctor_names_a_queue_starved_by_strict_order(env: Env, app) -> None:
    worker = env.worker("--queues", "low,critical", "--strict", "--concurrency", "2",
                        settings={"heartbeat_interval": "0.5"})  # cancellations arrive with it
    long = [app.honours_cancel.options(queue="low").enqueue() for _ in range(2)]  # 30 s unless cancelled
    wait_until(lambda: all(h.status() is JobState.RUNNING for h in long), 30, "low jobs running")
    urgent = app.square.options(queue="critical").enqueue(2)
    wait_until(lambda: "queue_starved" in {f.code for f in diagnose(app.app).findings}, 30,
               f"the doctor to call 'critical' starved (after {STARVED_AFTER:g} s)")
    proc = subprocess.run([sys.executable, "-m", "conveyor", "-A", "jobsapp:app", "doctor",
                           "--json"], env=env.vars, capture_output=True, text=True, timeout=60)
    report = json.loads(proc.stdout)
    [found] = [f for f in report["findings"] if f["code"] == "queue_starved"]
    print(f"\n{found['title']}; {found['evidence'][0]}")
    assert "'critical'" in found["title"] and "'low'" in found["title"]
    assert "--queues critical" in found["fix"]
    assert urgent.status() is JobState.READY
    for h in long:
        h.cancel()
    assert urgent.wait(timeout=60) is JobState.SUCCEEDED
    env.stop(worker)


def test_a_job_returning_after_its_cancellation_reached_it_ends_cancelled(env: Env, app) -> None:
    job = app.returns_when_cancelled.enqueue()
    worker = env.worker("--concurrency", "1", settings={"cancel_grace": "30",
                                                        "heartbeat_interval": "0.2"})
    wait_until(lambda: job.status() is JobState.RUNNING, 30, "running")
    job.cancel()
    assert job.wait(timeout=15) is JobState.CANCELLED
    [attempt] = job.attempts()
    assert attempt.outcome == "cancelled" and job.record().attempt == 1  # never retried
    env.stop(worker)

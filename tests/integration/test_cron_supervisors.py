"""Cron with real supervisors (``conveyor -A cronapp:app worker``) on both stores: exactly one
job per tick while supervisors are SIGKILLed and restarted, the misfire policies after a
stop of 10 s, and ``conveyor cron ...`` end to end. Each test ends with the invariant check.

The kill test runs 20 s with a kill every 5 s to keep the suite fast; the acceptance run is
CRON_KILL_TEST_SECONDS=120 CRON_KILL_EVERY=20.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from conveyor.cron import TickRecord, TickStatus
from conveyor.models import JobFilter, JobRecord
from conveyor.store import open_store
from tests.integration.conftest import Env, wait_until

KILL_TEST_SECONDS = float(os.environ.get("CRON_KILL_TEST_SECONDS", "20"))
KILL_EVERY = float(os.environ.get("CRON_KILL_EVERY", "5"))
SETTINGS = {"CONVEYOR_RESCUE_AFTER": "3"}


def cron_worker(env: Env, **extra: str) -> subprocess.Popen[str]:
    variables = {**env.vars, **SETTINGS, **extra}
    output = env.tmp / f"worker-{len(env.procs)}.out"
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "-A", "cronapp:app", "worker", "-p", "1", "-c", "4"],
            env=variables, stdout=sink, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
    env.procs.append(proc)
    env.outputs[proc.pid] = output
    return proc


def cron_cli(env: Env, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "-A", "cronapp:app", "cron", *args],
        env={**env.vars, **extra}, capture_output=True, text=True, timeout=60,
    )


def ticks(url: str, name: str) -> list[TickRecord]:
    store = open_store(url)
    try:
        return sorted(store.cron_history(name, limit=1_000_000), key=lambda t: t.fire_at)
    finally:
        store.close()


def jobs_of(url: str, args: str) -> list[JobRecord]:
    store = open_store(url)
    try:
        found = store.job_list(JobFilter(name="cronapp:beat", limit=1_000_000))
    finally:
        store.close()
    return [j for j in found if j.args == args]


def contiguous(recorded: list[TickRecord]) -> list[str]:
    """Every second between the first and the last tick is recorded once: the gaps found."""
    gaps = []
    for a, b in itertools.pairwise(recorded):
        if b.fire_at - a.fire_at != timedelta(seconds=1):
            gaps.append(f"{a.fire_at.isoformat()} -> {b.fire_at.isoformat()}")
    return gaps


@pytest.mark.slow
def test_one_job_per_tick_while_supervisors_are_killed(env: Env, store_url: str) -> None:
    count = 3 if store_url.startswith("postgres") else 2
    procs = [cron_worker(env) for _ in range(count)]
    wait_until(lambda: ticks(env.url, "beat"), 30, "no tick fired")
    started, kills = time.monotonic(), 0
    while time.monotonic() - started < KILL_TEST_SECONDS - KILL_EVERY:
        time.sleep(KILL_EVERY)
        slot = kills % count
        os.killpg(procs[slot].pid, signal.SIGKILL)  # the supervisor and its workers, at once
        procs[slot].wait()
        procs[slot] = cron_worker(env)
        kills += 1
    time.sleep(KILL_EVERY)  # the last victim's jobs are rescued (rescue_after=3) meanwhile
    assert env.stop_all() == []

    recorded = [t for t in ticks(env.url, "beat") if not t.manual]
    fire_times = [t.fire_at for t in recorded]
    duplicates = len(fire_times) - len(set(fire_times))
    missed = [t for t in recorded if t.status is not TickStatus.FIRED]
    jobs = jobs_of(env.url, "[]")
    tick_jobs = [t.job_id for t in recorded]
    runs = Counter(line[0] for line in env.lines() if line[1:] == ["beat"])
    print(f"\ncron kill test ({store_url.split(':')[0]}): {count} supervisors,"
          f" {KILL_TEST_SECONDS:g}s, {kills} SIGKILLs; {len(recorded)} ticks, {len(jobs)} jobs,"
          f" {duplicates} duplicate ticks, {len(missed)} missed, {len(contiguous(recorded))} gaps,"
          f" {sum(n > 1 for n in runs.values())} jobs run twice (rescued after a kill)")
    assert kills >= 3 and len(recorded) >= KILL_TEST_SECONDS - 4
    assert duplicates == 0 and missed == [] and contiguous(recorded) == []
    assert None not in tick_jobs and len(set(tick_jobs)) == len(tick_jobs)
    # the jobs' own records: one per tick, each created at its tick
    assert sorted(j.id for j in jobs) == sorted(tick_jobs)  # type: ignore[type-var]
    created = {j.id: j.created_at for j in jobs}
    for t in recorded:
        lag = (created[t.job_id] - t.fire_at).total_seconds()  # type: ignore[index]
        assert 0 <= lag < 5, f"tick {t.fire_at} enqueued {lag:.1f}s late"
    assert set(runs) >= {str(j.id) for j in jobs if j.state == "succeeded"}


@pytest.mark.slow
def test_misfire_policies_after_a_stop_of_ten_seconds(env: Env, store_url: str) -> None:
    policies = {"CRON_TEST_POLICIES": "1"}
    first = cron_worker(env, **policies)
    wait_until(lambda: all(len(ticks(env.url, p)) >= 2 for p in ("skip", "run_once", "catch_up")),
               30, "the schedules did not fire")
    code, _ = env.stop(first)
    assert code == 0
    time.sleep(10)
    cron_worker(env, **policies)
    wait_until(lambda: all(any(t.reason is None for t in ticks(env.url, p)[-2:])
                           for p in ("skip", "run_once", "catch_up")),
               30, "no tick on time after the restart")
    time.sleep(1)
    assert env.stop_all() == []

    figures = {}
    for policy in ("skip", "run_once", "catch_up"):
        recorded = ticks(env.url, policy)
        assert contiguous(recorded) == []  # every tick of the outage is in the history
        late = [t for t in recorded if t.reason and t.reason.startswith(f"misfire={policy}")]
        fired = [t for t in late if t.status is TickStatus.FIRED]
        missed = [t for t in late if t.status is TickStatus.MISSED]
        assert len(late) >= 6, f"{policy}: only {len(late)} ticks were late"
        expected = {"skip": 0, "run_once": 1, "catch_up": 3}[policy]
        assert len(fired) == expected and len(missed) == len(late) - expected
        if fired:  # the latest of the missed ticks are the ones that ran
            assert [t.fire_at for t in fired] == [t.fire_at for t in late[-expected:]]
        on_time = [t for t in recorded if t.reason is None]
        assert all(t.status is TickStatus.FIRED for t in on_time)
        jobs = jobs_of(env.url, json.dumps([policy]))
        assert len(jobs) == len(on_time) + expected  # the jobs agree with the history
        figures[policy] = (len(late), len(fired), len(on_time))
    print(f"\ncron misfire ({store_url.split(':')[0]}), (late ticks, late runs, runs on time):"
          f" {figures}")


def test_cron_commands_end_to_end(env: Env, store_url: str) -> None:
    cron_worker(env)
    wait_until(lambda: ticks(env.url, "beat"), 30, "no tick fired")

    listed = json.loads(cron_cli(env, "list", "--json").stdout)
    beat = next(s for s in listed if s["name"] == "beat")
    assert beat["state"] == "active" and beat["schedule"] == "every 1s"
    wait_until(lambda: _beat(env)["last_outcome"] == "succeeded", 15, "no run succeeded")

    assert cron_cli(env, "pause", "beat").returncode == 0
    paused_at = ticks(env.url, "beat")[-1].fire_at
    wait_until(lambda: [t.status for t in ticks(env.url, "beat") if t.fire_at > paused_at][-3:]
               == [TickStatus.SKIPPED] * 3, 15, "paused ticks were not recorded as skipped")
    assert _beat(env)["state"] == "paused" and _beat(env)["next_run_at"] is None

    ran = cron_cli(env, "run", "beat", "--json")  # paused or not
    assert ran.returncode == 0, ran.stderr
    job_id = json.loads(ran.stdout)["job_id"]
    wait_until(lambda: _history(env, 5)[0]["outcome"] == "succeeded" or any(
        h["job_id"] == job_id and h["outcome"] == "succeeded" for h in _history(env, 10)),
        15, "the run-now job did not succeed")
    manual = [h for h in _history(env, 20) if h["manual"]]
    assert [h["job_id"] for h in manual] == [job_id]

    assert cron_cli(env, "resume", "beat").returncode == 0
    resumed = time.monotonic()
    wait_until(lambda: _history(env, 1)[0]["status"] == "fired" and time.monotonic() - resumed > 1.5,
               15, "no tick fired after resume")
    table = cron_cli(env, "history", "beat", "--limit", "30").stdout
    assert "fired" in table and "skipped" in table and "paused" in table

    orphaned = json.loads(cron_cli(env, "list", "--json", CRON_TEST_ORPHAN="1").stdout)
    assert {s["name"]: s["state"] for s in orphaned}["gone-tomorrow"] == "orphaned"
    refused = cron_cli(env, "run", "gone-tomorrow", CRON_TEST_ORPHAN="1")
    assert refused.returncode == 1 and "orphaned" in refused.stderr
    unknown = cron_cli(env, "pause", "no-such-schedule")
    assert unknown.returncode == 1 and "no schedule named" in unknown.stderr


def _beat(env: Env) -> dict[str, Any]:
    listed = json.loads(cron_cli(env, "list", "--json").stdout)
    return next(s for s in listed if s["name"] == "beat")


def _history(env: Env, limit: int) -> list[dict[str, Any]]:
    done = cron_cli(env, "history", "beat", "--json", "--limit", str(limit))
    return json.loads(done.stdout)  # type: ignore[no-any-return]

"""Many hosts on one PostgreSQL, and PostgreSQL going away under load.

The outage is taken on a private cluster the suite starts itself (tests/pgcluster.py); the
server at CONVEYOR_TEST_DATABASE_URL is never stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from conftest import Env, env_on, wait_until

from bench.pgcluster import PrivateCluster
from conveyor import Conveyor, JobState
from tests import pgcluster

# the shared server at CONVEYOR_TEST_DATABASE_URL, for tests that leave it running
on_postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
# the private cluster, for tests that take the server down (fixtures found by name)
private_cluster = pgcluster.private_cluster
private_pg_url = pgcluster.private_pg_url


def leader_of(env: Env, workers: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    def leader() -> subprocess.Popen[str] | None:
        for proc in workers:
            if proc.poll() is None and "leadership acquired" in env.outputs[proc.pid].read_text():
                return proc
        return None

    return wait_until(leader, 30, "a leader")


@on_postgres
def test_three_hosts_run_twenty_thousand_jobs_exactly_once(env: Env, app) -> None:
    n = 20_000
    for first in range(0, n, 2000):
        app.app.enqueue_many([app.square.prepare(i) for i in range(first, first + 2000)])
    later = [app.tag.enqueue_in(timedelta(seconds=2), f"later{i}") for i in range(200)]
    workers = [
        env.worker("--processes", "1", "--concurrency", "8", settings={"host_id": f"host-{k}",
                                                                       "log_level": "WARNING"})
        for k in range(3)
    ]
    store = Conveyor(env.url).store
    wait_until(lambda: all(h.status() is JobState.SUCCEEDED for h in later[-5:]), 120, "scheduled")
    wait_until(lambda: not any(s.count("ready") or s.count("running") or s.count("scheduled")
                               for s in store.queue_stats()), 300, "all jobs done")
    hosts = {p.host for p in store.process_list() if p.kind == "supervisor"}
    assert hosts == {"host-0", "host-1", "host-2"}
    for w in workers:
        assert env.stop(w)[0] == 0
    runs = Counter(line[0] for line in env.lines())
    assert len(runs) == n + len(later)
    assert max(runs.values()) == 1, "no job ran twice"


@on_postgres
def test_leadership_moves_when_the_leader_dies(env: Env, app) -> None:
    workers = [env.worker(settings={"host_id": f"host-{k}"}) for k in range(3)]
    leader = leader_of(env, workers)
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()
    killed_at = time.monotonic()
    survivors = [w for w in workers if w is not leader]
    new_leader = leader_of(env, survivors)
    assert new_leader is not leader
    handover = time.monotonic() - killed_at
    assert handover < 10, f"leadership took {handover:.1f}s to move"
    job = app.square.enqueue_in(timedelta(seconds=1), 4)
    assert job.wait(timeout=30) is JobState.SUCCEEDED, "the new leader promotes scheduled jobs"
    for w in survivors:
        env.stop(w)


@pytest.fixture
def outage_env(private_pg_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """``env`` (conftest) on a database of the private cluster, the one server a test may stop;
    the same teardown: every worker stopped, then the invariants checked."""
    with env_on(private_pg_url, tmp_path, monkeypatch) as e:
        yield e


@pytest.mark.parametrize(("mode", "rescue_after"), [
    pytest.param("fast", "60", id="shut-down"),
    # the server crashes, and stays away longer than rescue_after: still no job runs twice
    pytest.param("immediate", "3", id="crashed-longer-than-rescue_after"),
])
def test_workers_survive_a_ten_second_outage(
    outage_env: Env, private_cluster: PrivateCluster, mode: str, rescue_after: str
) -> None:
    import jobsapp as app

    env = outage_env
    handles = app.app.enqueue_many([app.sleepy.prepare(0.05) for _ in range(400)])
    worker = env.worker("--processes", "2", "--concurrency", "4",
                        settings={"rescue_after": rescue_after})
    wait_until(lambda: len(env.lines()) > 40, 60, "load running")
    private_cluster.stop(mode)
    stopped_at = time.monotonic()
    try:
        time.sleep(10)  # the outage itself: the point of the test is its length
    finally:
        private_cluster.start()
    recovered = wait_until(
        lambda: (time.monotonic() - stopped_at) if all(
            h.status() is JobState.SUCCEEDED for h in handles) else None, 180, "all jobs done")
    print(f"\nrecovered: all 400 jobs succeeded {recovered - 10:.1f}s after PostgreSQL returned")
    code, out = env.stop(worker)
    assert code == 0
    outage_lines = [line for line in out.splitlines() if "store unavailable" in line]
    assert outage_lines, "the outage was logged"
    assert len(outage_lines) <= 20, "one line per state change, not a flood"
    assert re.search("store back", out)
    ends = Counter(line[0] for line in env.lines() if line[1] == "sleepy-end")
    assert len(ends) == 400
    starts = Counter(line[0] for line in env.lines() if line[1] == "sleepy-start")
    reruns = {job: n for job, n in starts.items() if n > 1}
    assert not reruns, f"no job runs twice because of an outage (SPEC 4); started again: {reruns}"


@on_postgres
def test_worker_started_while_the_database_is_down_waits(env: Env, app, tmp_path) -> None:
    env.vars["CONVEYOR_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    worker = env.worker()
    out = env.outputs[worker.pid]
    wait_until(lambda: "store unavailable" in out.read_text(), 30, "outage logged")
    assert worker.poll() is None, "still waiting, not crashed"
    code, text = env.stop(worker)
    assert code == 0
    assert text.count("store unavailable") == 1

"""The doctor's diagnoses as pure functions: snapshots built by hand, no store, no clock.

Each test builds the state one diagnosis looks for and checks the finding it returns (and that
a healthy variant of the same state returns none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import doctor
from conveyor.doctor import Finding, Report, Snapshot
from conveyor.errors import SchemaError, StoreUnavailable
from conveyor.models import (
    JobRecord,
    JobState,
    LimitUsage,
    ProcessRecord,
    QueueStats,
    RateBacklog,
)
from conveyor.settings import Settings
from conveyor.store.base import HealthFacts

T0 = datetime(2030, 1, 1, tzinfo=UTC)
APP = "tasks:app"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def facts(**changes: Any) -> HealthFacts:
    empty = HealthFacts(now=T0, store_clock=T0, waiting_by_name={}, running_by_worker={},
                        stuck=(), overdue=0, oldest_overdue_at=None, dead_recent={},
                        unknown_recent={})
    return replace(empty, **changes)


def worker(worker_id: str = "w1", *, heartbeat: float = -5, queues: tuple[str, ...] = ("default",),
           concurrency: int = 2, names: tuple[str, ...] = ("tasks:a",), kind: str = "worker",
           supervisor: str | None = None, started: float = -600) -> ProcessRecord:
    return ProcessRecord(id=worker_id, kind=kind, host="web-1", pid=4242, started_at=at(started),
                         heartbeat_at=at(heartbeat), supervisor_id=supervisor, queues=queues,
                         concurrency=concurrency, job_names=names)


def queue(name: str = "default", *, ready: int = 0, oldest: float | None = None,
          paused: bool = False, **counts: int) -> QueueStats:
    by_state = {JobState(s): n for s, n in counts.items()}
    if ready:
        by_state[JobState.READY] = ready
    return QueueStats(name, paused, by_state, None if oldest is None else at(oldest))


def running(job_id: int, *, worker_id: str = "w1", started: float = -30,
            timeout: float | None = None) -> JobRecord:
    return JobRecord(id=job_id, name="tasks:a", queue="default", priority=0,
                     state=JobState.RUNNING, args="[]", kwargs="{}", attempt=1, max_attempts=3,
                     timeout=timeout, run_at=at(started), created_at=at(started),
                     started_at=at(started), worker_id=worker_id)


def snapshot(queues: Sequence[QueueStats] = (), processes: Sequence[ProcessRecord] = (),
             app_path: str | None = APP, host_now: datetime = T0, **fact_changes: Any) -> Snapshot:
    return Snapshot(Settings(rescue_after=60, poll_interval=1), app_path, host_now, list(queues),
                    list(processes), facts(**fact_changes), frozenset({"tasks:a"}))


def only(found: list[Finding]) -> Finding:
    assert len(found) == 1, found
    return found[0]


# --- the whole set -------------------------------------------------------------------------------
def test_a_quiet_store_has_no_findings_and_a_summary() -> None:
    s = snapshot([queue(ready=1, oldest=-2, running=1)],
                 [worker(supervisor="s1"), worker("s1", kind="supervisor")],
                 running_by_worker={"w1": 1})
    assert doctor.findings(s) == []
    assert doctor.summary(s) == (
        "1 live worker(s) (2 slots, queues default); 1 ready, 1 running, 0 scheduled")


def test_the_report_exit_code_follows_the_worst_finding() -> None:
    warning = Finding("w", "warning", "t", [], "f")
    problem = Finding("p", "problem", "t", [], "f")
    assert [Report(f).exit_code for f in ([], [warning], [warning, problem])] == [0, 1, 2]
    assert [Report(f).status for f in ([], [warning], [problem])] == [
        "healthy", "warnings", "problems"]
    assert Report([problem]).key() == (("p", "t"),)


# --- one test per diagnosis ----------------------------------------------------------------------
def test_no_workers() -> None:
    s = snapshot([queue(ready=2, oldest=-30), queue("mail", ready=1, oldest=-30)],
                 [worker("w-old", heartbeat=-120)])
    finding = only(doctor.no_workers(s))
    assert (finding.code, finding.severity) == ("no_workers", "problem")
    assert finding.evidence[0] == ("3 ready job(s): queue 'default': 2 ready, oldest waiting"
                                   " 30s, queue 'mail': 1 ready, oldest waiting 30s")
    assert finding.evidence[1].startswith("worker w-old on web-1 (pid 4242): last heartbeat 2m 00s")
    assert finding.fix == "start a worker: conveyor worker -A tasks:app --queues default,mail"
    assert doctor.no_workers(snapshot([queue(ready=2)], [worker()])) == []
    assert doctor.no_workers(snapshot([], [])) == [], "nothing ready: nothing to say"


def test_no_workers_registered_and_no_app_path() -> None:
    finding = only(doctor.no_workers(snapshot([queue(ready=1)], [], app_path=None)))
    assert "no worker process is registered in the store" in finding.evidence
    assert finding.fix == "start a worker: conveyor worker -A MODULE:APP"


def test_queue_not_served() -> None:
    s = snapshot([queue(ready=1), queue("mail", ready=4, oldest=-10)], [worker()])
    finding = only(doctor.queue_not_served(s))
    assert finding.title == "Queue 'mail' has ready jobs but no live worker listens to it"
    assert finding.evidence == ["queue 'mail': 4 ready, oldest waiting 10s",
                                "live workers listen to: default"]
    assert "conveyor worker -A tasks:app --queues mail" in finding.fix


def test_paused_queue_waiting() -> None:
    finding = only(doctor.paused_queue_waiting(snapshot([queue(ready=3, paused=True)])))
    assert (finding.code, finding.severity) == ("paused_queue_waiting", "warning")
    assert finding.fix == "resume it: conveyor queues resume -A tasks:app default"
    assert doctor.paused_queue_waiting(snapshot([queue(paused=True)])) == [], "nothing waits"


def test_stuck_running_on_a_vanished_worker_and_past_its_timeout() -> None:
    s = snapshot([], [worker()], stuck=(running(7, worker_id="w-gone", started=-300),
                                         running(8, started=-100, timeout=10)))
    finding = only(doctor.stuck_running(s))
    assert (finding.code, finding.severity) == ("stuck_running", "problem")
    assert finding.evidence == [
        "job 7 tasks:a (queue 'default') running for 5m 00s: its worker w-gone is not registered",
        "job 8 tasks:a (queue 'default') running for 1m 40s: past its timeout of 10s, on live"
        " worker w1 on web-1 (pid 4242)"]
    assert "are rescued 60s after its last sign of life" in finding.fix
    assert "check that worker's host and logs" in finding.fix
    assert finding.fix.endswith("conveyor jobs cancel -A tasks:app 7")
    assert doctor.stuck_running(snapshot()) == []


def test_workers_not_claiming() -> None:
    s = snapshot([queue(ready=5, oldest=-120)], [worker(supervisor="s1"),
                                                  worker("s1", kind="supervisor")])
    finding = only(doctor.workers_not_claiming(s))
    assert finding.title == "Workers listening to 'default' are alive but not claiming its jobs"
    assert finding.evidence[1] == "worker w1 on web-1 (pid 4242): 0/2 slots busy, last heartbeat 5.0s ago"
    assert "kill -TERM 4242 on web-1" in finding.fix
    busy = snapshot([queue(ready=5, oldest=-120)], [worker()], running_by_worker={"w1": 2})
    assert doctor.workers_not_claiming(busy) == [], "every slot is busy: the jobs just wait"
    fresh = snapshot([queue(ready=5, oldest=-10)], [worker()])
    assert doctor.workers_not_claiming(fresh) == [], "ten seconds is not yet a problem"


def test_unknown_job_names() -> None:
    s = snapshot([], [worker(names=("tasks:a",))], waiting_by_name={"tasks:gone": 2, "tasks:a": 1},
                 unknown_recent={"tasks:gone": 1})
    finding = only(doctor.unknown_job_names(s))
    assert finding.evidence[0] == (
        "tasks:gone: 2 waiting, registered by no live worker; 1 failed with UnknownJob")
    assert finding.evidence[1] == "live workers register 1 job name(s): tasks:a"
    assert "conveyor jobs list -A tasks:app --name tasks:gone" in finding.fix


def test_dead_growing() -> None:
    s = snapshot(dead_recent={("tasks:a", "ValueError"): 3, ("tasks:b", ""): 1})
    finding = only(doctor.dead_growing(s))
    assert (finding.code, finding.severity) == ("dead_growing", "warning")
    assert finding.evidence == ["4 job(s) went dead in the last hour; most often:",
                                "3 x tasks:a: ValueError", "1 x tasks:b: no error recorded"]
    assert "conveyor jobs retry -A tasks:app --all-dead" in finding.fix
    assert doctor.dead_growing(snapshot()) == []


def test_scheduled_overdue_and_clock_skew() -> None:
    s = snapshot(overdue=2, oldest_overdue_at=at(-300), host_now=at(600))
    finding = only(doctor.scheduled_overdue(s))
    assert finding.evidence == [
        "2 scheduled or retrying job(s) more than 60s past their run time; the oldest was due"
        " 5m 00s ago",
        "no live `conveyor worker` supervisor: nothing runs the scheduler",
        "clock skew: the store's clock is 10m 00s behind this host's"]
    assert "NTP" in finding.fix
    assert doctor.scheduled_overdue(snapshot()) == []


@pytest.mark.parametrize("url", ["postgresql://alice:pa/ss@db/x", "postgresql://alice:p@ss@db/x"])
def test_store_unreachable_never_shows_the_password(url: str) -> None:
    finding = doctor.store_unreachable(StoreUnavailable("connection refused\nmore"), APP, url)
    assert finding.evidence == ["connection refused", "store: postgresql://alice:***@db/x"]
    assert "CONVEYOR_DATABASE_URL" in finding.fix and "conveyor migrate -A tasks:app" in finding.fix
    schema = doctor.store_unreachable(SchemaError("x has no conveyor schema"), None, url)
    assert (schema.title, schema.fix) == ("The store cannot be used",
                                          "create or upgrade the schema: conveyor migrate")


# --- flow control ------------------------------------------------------------------------------
def test_a_queue_starved_by_another_holding_every_slot_is_named() -> None:
    busy = [replace(running(i, started=-15), queue="low") for i in (1, 2)]
    s = replace(snapshot([queue("critical", ready=1, oldest=-12), queue("low", running=2)],
                         [worker(queues=("low", "critical"))], running_by_worker={"w1": 2}),
                running=tuple(busy))
    found = only(doctor.findings(s))
    assert found.code == "queue_starved" and "'critical'" in found.title and "'low'" in found.title
    assert any("12s" in line for line in found.evidence)
    assert "conveyor worker -A tasks:app --queues critical" in found.fix
    assert "critical:3,low:1" in found.fix
    waited_less = replace(s, queues=[queue("critical", ready=1, oldest=-5), queue("low", running=2)])
    assert doctor.queue_starved(waited_less) == []
    own_jobs = replace(s, running=tuple(replace(j, queue="critical") for j in busy))
    assert doctor.queue_starved(own_jobs) == []


def test_jobs_blocked_behind_a_stuck_holder_are_named() -> None:
    holder = replace(running(7, worker_id="gone"), concurrency_key="acct:42", concurrency_max=1)
    s = replace(snapshot(stuck=(holder,)), limits=(LimitUsage("acct:42", 1, 3, 1),))
    found = only(doctor.blocked_behind_stuck(s))
    assert "key 'acct:42': 3 job(s) blocked behind job 7" in found.evidence[0]
    assert "conveyor jobs cancel -A tasks:app 7" in found.fix
    assert doctor.blocked_behind_stuck(replace(s, limits=(LimitUsage("acct:42", 1, 0, 1),))) == []


def test_a_rate_backlog_growing_faster_than_its_rate_is_named() -> None:
    growing = RateBacklog("tasks:call_api", count=20, period=1.0, waiting=5000, recent=1500)
    s = replace(snapshot(), rates=(growing,))
    found = only(doctor.rate_backlog_growing(s))
    assert found.severity == "warning"
    assert "rate 'tasks:call_api' (20 per 1s = 1200/min): 5000 waiting, 1500 enqueued" in (
        found.evidence[0])
    draining = replace(growing, recent=600)  # fewer arrive than start: it shrinks
    assert doctor.rate_backlog_growing(replace(s, rates=(draining,))) == []

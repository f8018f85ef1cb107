"""``conveyor doctor``: each diagnosis from a real store state, on SQLite and PostgreSQL.

Most states are built with the Store API at explicit times around ``T0`` and read back with
``diagnose(now=T0)``; the last tests run real worker processes (``env.worker``).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Env, wait_until
from rich.console import Console

from conveyor import Conveyor
from conveyor.cli.doctor import main_command, render_text, watch
from conveyor.clock import FrozenClock, utcnow
from conveyor.doctor import Finding, Report, diagnose
from conveyor.models import AttemptOutcome, JobOutcome, JobRecord, JobState, NewJob, ProcessRecord
from conveyor.store import Store

T0 = datetime(2030, 1, 1, tzinfo=UTC)
APP = "tasks:app"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def doctor_app(store_url: str) -> Iterator[Conveyor]:
    """The app under diagnosis; tests build its store's state through ``store``."""
    conveyor = Conveyor(store_url, rescue_after=60, poll_interval=1)
    yield conveyor
    conveyor.close()


def register(store: Store, worker_id: str = "w1", *, heartbeat: datetime = T0,
             queues: tuple[str, ...] = ("default",), concurrency: int = 2,
             names: tuple[str, ...] = ("tasks:a",), kind: str = "worker",
             supervisor: str | None = None) -> None:
    store.process_register(ProcessRecord(
        id=worker_id, kind=kind, host="web-1", pid=4242, started_at=at(-600),
        heartbeat_at=heartbeat, supervisor_id=supervisor, queues=queues,
        concurrency=concurrency, job_names=names))


def claim(store: Store, worker: str, queue: str = "default", when: float = 0) -> JobRecord:
    (job,) = store.job_claim(worker, queue, 1, now=at(when))
    return job


def finish(store: Store, job: JobRecord, state: JobState, error_class: str, when: float,
           retry_at: datetime | None = None) -> None:
    assert job.lease and job.started_at
    store.job_finish_many([JobOutcome(
        job_id=job.id, lease=job.lease, attempt=job.attempt, worker_id=job.worker_id or "",
        started_at=job.started_at, state=state, outcome=AttemptOutcome.ERROR,
        error_class=error_class, error_message="it broke", retry_at=retry_at)], now=at(when))


def only(report: Report, code: str) -> Finding:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, render_text(report)
    return found[0]


def codes(report: Report) -> list[str]:
    return [f.code for f in report.findings]


# --- healthy ---------------------------------------------------------------------------------
def test_an_empty_store_is_healthy(doctor_app: Conveyor) -> None:
    report = diagnose(doctor_app, now=T0, app_path=APP)
    assert (report.findings, report.exit_code, report.status) == ([], 0, "healthy")
    assert "healthy" in render_text(report)


def test_a_busy_but_working_system_is_healthy(doctor_app: Conveyor, store: Store) -> None:
    register(store, "s1", kind="supervisor")
    register(store, "w1", heartbeat=at(-5), supervisor="s1")
    store.job_insert_many([NewJob("tasks:a", timeout=60), NewJob("tasks:a"),
                           NewJob("tasks:a", run_at=at(3600))], now=at(-20))
    claim(store, "w1", when=-10)
    report = diagnose(doctor_app, now=T0, app_path=APP)
    assert report.exit_code == 0, render_text(report)
    assert "1 live worker(s)" in report.summary and "1 ready, 1 running, 1 scheduled" in report.summary


# --- one test per diagnosis -------------------------------------------------------------------
def test_ready_jobs_without_a_live_worker(doctor_app: Conveyor, store: Store) -> None:
    register(store, "w-old", heartbeat=at(-120))
    store.job_insert_many([NewJob("tasks:a"), NewJob("tasks:a"), NewJob("tasks:b", queue="mail")],
                          now=at(-30))
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "no_workers")
    assert (finding.severity, report.exit_code) == ("problem", 2)
    assert finding.evidence[0] == (
        "3 ready job(s): queue 'default': 2 ready, oldest waiting 30s,"
        " queue 'mail': 1 ready, oldest waiting 30s")
    assert "worker w-old on web-1 (pid 4242): last heartbeat 2m 00s ago" in finding.evidence[1]
    assert finding.fix == "start a worker: conveyor worker -A tasks:app --queues default,mail"
    assert codes(report) == ["no_workers"], "nothing else is blamed on a missing worker"


def test_no_worker_at_all_and_no_app_path(doctor_app: Conveyor, store: Store) -> None:
    store.job_insert_many([NewJob("tasks:a")], now=T0)
    finding = only(diagnose(doctor_app, now=T0), "no_workers")
    assert "no worker process is registered in the store" in finding.evidence
    assert finding.fix == "start a worker: conveyor worker -A MODULE:APP"


def test_a_queue_no_live_worker_listens_to(doctor_app: Conveyor, store: Store) -> None:
    register(store, "w1", queues=("default", "low"))
    store.job_insert_many([NewJob("tasks:a", queue="mailers")] * 3, now=at(-5))
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "queue_not_served")
    assert finding.title == "Queue 'mailers' has ready jobs but no live worker listens to it"
    assert finding.evidence == ["queue 'mailers': 3 ready, oldest waiting 5.0s",
                                "live workers listen to: default, low"]
    assert finding.fix.startswith("start a worker for it: conveyor worker -A tasks:app --queues mailers")
    assert (codes(report), report.exit_code) == (["queue_not_served"], 2)


def test_a_paused_queue_with_waiting_jobs(doctor_app: Conveyor, store: Store) -> None:
    register(store, "w1")
    store.job_insert_many([NewJob("tasks:a"), NewJob("tasks:a")], now=at(-600))
    store.queue_pause("default")
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "paused_queue_waiting")
    assert (finding.severity, report.exit_code) == ("warning", 1)
    assert "queue 'default': 2 ready, oldest waiting 10m 00s" in finding.evidence[0]
    assert finding.fix == "resume it: conveyor queues resume -A tasks:app default"
    assert codes(report) == ["paused_queue_waiting"], "a paused queue is not an idle worker"
    store.queue_resume("default")
    assert "paused_queue_waiting" not in codes(diagnose(doctor_app, now=T0))


def test_running_jobs_stuck_past_timeout_or_on_lost_workers(doctor_app: Conveyor, store: Store) -> None:
    register(store, "w-live", queues=("a",))
    register(store, "w-silent", heartbeat=at(-300), queues=("b",))
    store.job_insert_many([NewJob("tasks:slow", queue="a", timeout=30), NewJob("tasks:ok", queue="a"),
                           NewJob("tasks:lost", queue="b"), NewJob("tasks:orphan", queue="c")],
                          now=at(-1000))
    slow = claim(store, "w-live", "a", when=-900)
    claim(store, "w-live", "a", when=-900)  # no timeout, live worker: fine
    lost = claim(store, "w-silent", "b", when=-800)
    orphan = claim(store, "w-gone", "c", when=-700)
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "stuck_running")
    assert (finding.severity, report.exit_code, codes(report)) == ("problem", 2, ["stuck_running"])
    assert finding.evidence == [
        f"job {slow.id} tasks:slow (queue 'a') running for 15m 00s: past its timeout of 30s,"
        " on live worker w-live on web-1 (pid 4242)",
        f"job {lost.id} tasks:lost (queue 'b') running for 13m 20s: its worker w-silent on web-1"
        " (pid 4242) has not heartbeated for 5m 00s",
        f"job {orphan.id} tasks:orphan (queue 'c') running for 11m 40s: its worker w-gone is not"
        " registered",
    ]
    assert "rescued 60s after its last sign of life" in finding.fix
    assert f"conveyor jobs cancel -A tasks:app {slow.id}" in finding.fix


def test_live_workers_with_free_slots_that_do_not_claim(doctor_app: Conveyor, store: Store) -> None:
    register(store, "s1", kind="supervisor")
    register(store, "w1", heartbeat=at(-2), concurrency=4, supervisor="s1")
    store.job_insert_many([NewJob("tasks:a")] * 2, now=at(-10))
    assert diagnose(doctor_app, now=T0).findings == [], "ten seconds is not yet a problem"
    store.job_insert_many([NewJob("tasks:a")], now=at(-95))
    claim(store, "w1")
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "workers_not_claiming")
    assert finding.evidence == [
        "queue 'default': 2 ready, oldest waiting 1m 35s (over 30s)",
        "worker w1 on web-1 (pid 4242): 1/4 slots busy, last heartbeat 2.0s ago"]
    assert finding.fix.endswith(
        "restart them: kill -TERM 4242 on web-1, then conveyor worker -A tasks:app --queues default")
    assert report.exit_code == 2


def test_a_full_worker_is_busy_not_stuck(doctor_app: Conveyor, store: Store) -> None:
    register(store, "w1", concurrency=1)
    store.job_insert_many([NewJob("tasks:a")] * 2, now=at(-300))
    claim(store, "w1", when=-200)
    assert diagnose(doctor_app, now=T0).findings == []


def test_jobs_whose_name_no_live_worker_knows(doctor_app: Conveyor, store: Store) -> None:
    doctor_app.job(name="tasks:new")(lambda: None)
    register(store, "w1", names=("tasks:a", "tasks:b"))
    store.job_insert_many([NewJob("tasks:a"), NewJob("tasks:new"), NewJob("tasks:new"),
                           NewJob("tasks:typo", queue="t", max_attempts=3)], now=at(-5))
    typo = claim(store, "w1", "t", when=-4)
    finish(store, typo, JobState.FAILED, "UnknownJob", when=-3, retry_at=at(30))
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "unknown_job_names")
    assert finding.evidence == [
        "tasks:new: 2 waiting, registered by no live worker; tasks:app defines it: the workers"
        " run older code?",
        "tasks:typo: 1 waiting, registered by no live worker; 1 failed with UnknownJob",
        "live workers register 2 job name(s): tasks:a, tasks:b",
    ]
    assert "conveyor jobs list -A tasks:app --name tasks:new" in finding.fix
    assert "conveyor jobs discard -A tasks:app ID" in finding.fix
    assert (codes(report), report.exit_code) == (["unknown_job_names"], 2)


def test_recent_unknown_job_failures_count_even_without_live_workers(
    doctor_app: Conveyor, store: Store
) -> None:
    store.job_insert_many([NewJob("tasks:ghost")], now=at(-50))
    finish(store, claim(store, "w1", when=-40), JobState.DEAD, "UnknownJob", when=-30)
    report = diagnose(doctor_app, now=T0)
    assert only(report, "unknown_job_names").evidence == ["tasks:ghost: 1 failed with UnknownJob"]
    assert codes(report) == ["unknown_job_names", "dead_growing"]


def test_jobs_that_went_dead_in_the_last_hour(doctor_app: Conveyor, store: Store) -> None:
    store.job_insert_many([NewJob("tasks:a")] * 3 + [NewJob("tasks:b")] * 2, now=at(-9000))
    jobs = store.job_claim("w1", "default", 10, now=at(-8000))
    for job, error, when in zip(jobs, ["KeyError", "KeyError", "OSError", "KeyError", "KeyError"],
                                [-60, -50, -40, -30, -8000], strict=True):
        finish(store, job, JobState.DEAD, error, when=when)
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "dead_growing")
    assert (finding.severity, report.exit_code, codes(report)) == ("warning", 1, ["dead_growing"])
    assert finding.evidence == ["4 job(s) went dead in the last hour; most often:",
                                "2 x tasks:a: KeyError", "1 x tasks:a: OSError",
                                "1 x tasks:b: KeyError"]
    assert finding.fix == ("see them: conveyor jobs list -A tasks:app --state dead; after fixing"
                           " the cause, run them again: conveyor jobs retry -A tasks:app --all-dead")


def test_scheduled_jobs_overdue_with_no_scheduler(doctor_app: Conveyor, store: Store) -> None:
    store.job_insert_many([NewJob("tasks:a", run_at=at(-300)), NewJob("tasks:a", run_at=at(-30)),
                           NewJob("tasks:a", run_at=at(600))], now=at(-900))
    report = diagnose(doctor_app, now=T0, app_path=APP)
    finding = only(report, "scheduled_overdue")
    assert finding.evidence == [
        "1 scheduled or retrying job(s) more than 60s past their run time; the oldest was due"
        " 5m 00s ago",
        "no live `conveyor worker` supervisor: nothing runs the scheduler"]
    assert finding.fix == "start a worker (it runs the scheduler): conveyor worker -A tasks:app"
    assert (codes(report), report.exit_code) == (["scheduled_overdue"], 2)


def test_overdue_evidence_names_the_clock_skew(store_url: str) -> None:
    ahead = utcnow() + timedelta(minutes=10)
    app = Conveyor(store_url, clock=FrozenClock(ahead))  # this host's clock runs 10 min fast
    try:
        app.store.job_insert_many([NewJob("tasks:a", run_at=ahead - timedelta(minutes=2))],
                                  now=ahead - timedelta(minutes=3))
        finding = only(diagnose(app), "scheduled_overdue")
        skew = finding.evidence[-1]
        assert re.fullmatch(r"clock skew: the store's clock is (9m 5\ds|10m 00s) behind this"
                            r" host's", skew), skew
        assert "NTP" in finding.fix
    finally:
        app.close()


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/x",
                                 "sqlite:////no/such/directory/conveyor.db"])
def test_an_unreachable_store_is_one_problem(url: str) -> None:
    report = diagnose(Conveyor(url), app_path=APP)
    (finding,) = report.findings
    assert (finding.code, finding.severity, report.exit_code) == ("store_unreachable", "problem", 2)
    assert "\n" not in finding.evidence[0]
    assert ("Connection refused" in finding.evidence[0]) or ("does not exist" in finding.evidence[0])
    assert "CONVEYOR_DATABASE_URL" in finding.fix


def test_a_store_without_schema_says_to_migrate(tmp_path: Path) -> None:
    report = diagnose(Conveyor(f"sqlite:///{tmp_path / 'empty.db'}"), app_path=APP)
    assert codes(report) == ["store_unreachable"]
    assert report.findings[0].fix == "create or upgrade the schema: conveyor migrate -A tasks:app"


# --- output ----------------------------------------------------------------------------------
def test_json_round_trip_and_main_command(doctor_app: Conveyor, store: Store,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    store.job_insert_many([NewJob("tasks:a")], now=T0)
    store.queue_pause("default")
    report = diagnose(doctor_app, app_path=APP)
    data = json.loads(json.dumps(report.to_dict()))
    assert Report.from_dict(data) == report
    assert (data["status"], data["exit_code"]) == ("warnings", 1)
    assert [f["code"] for f in data["findings"]] == ["paused_queue_waiting"]
    assert main_command(doctor_app, APP, as_json=True) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["findings"] == data["findings"]
    assert main_command(doctor_app, APP) == 1
    text = capsys.readouterr().out
    assert "WARNING" in text and "fix: resume it: conveyor queues resume -A tasks:app default" in text


def test_watch_prints_only_when_findings_change(doctor_app: Conveyor, store: Store) -> None:
    store.job_insert_many([NewJob("tasks:a")], now=T0)
    store.queue_pause("default")
    out = io.StringIO()
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 2:
            store.queue_resume("default")  # the warning goes; no_workers appears

    console = Console(file=out, width=200, color_system=None)
    code = watch(doctor_app, app_path=APP, interval=0.5, as_json=True, console=console, rounds=4,
                 sleep=sleep)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [[f["code"] for f in line["findings"]] for line in lines] == [
        ["paused_queue_waiting"], ["no_workers"]]
    assert (code, ticks) == (2, [0.5, 0.5, 0.5])


# --- with real worker processes ----------------------------------------------------------------
WORKER_APP = "jobsapp:app"


def worker_registered(app: Conveyor) -> bool:
    return any(p.kind == "worker" for p in app.store.process_list())


def test_a_worker_on_another_queue_leaves_default_unserved(env: Env, app) -> None:
    handles = app.app.enqueue_many([app.square.prepare(i) for i in range(3)])
    worker = env.worker("--queues", "other")
    wait_until(lambda: worker_registered(app.app), 30, "worker registered")
    report = diagnose(app.app, app_path=WORKER_APP)
    assert (codes(report), report.exit_code) == (["queue_not_served"], 2), render_text(report)
    (finding,) = report.findings
    assert finding.evidence[0].startswith("queue 'default': 3 ready, oldest waiting")
    assert finding.evidence[1] == "live workers listen to: other"
    assert "conveyor worker -A jobsapp:app --queues default" in finding.fix
    assert {h.status() for h in handles} == {JobState.READY}
    assert env.stop(worker)[0] == 0


def test_a_working_system_is_healthy(env: Env, app) -> None:
    worker = env.worker("--concurrency", "2")
    handles = app.app.enqueue_many([app.square.prepare(i) for i in range(20)])
    for h in handles:
        assert h.wait(timeout=60) is JobState.SUCCEEDED
    wait_until(lambda: worker_registered(app.app), 30, "worker registered")
    report = diagnose(app.app, app_path=WORKER_APP)
    assert (report.findings, report.exit_code) == ([], 0), render_text(report)
    assert "1 live worker(s) (2 slots, queues default)" in report.summary
    assert env.stop(worker)[0] == 0


def test_a_killed_worker_leaves_its_job_stuck(env: Env, app) -> None:
    job = app.sleepy.enqueue(60)
    # a short leadership lease (rescue_after / 2, at least 5 s) that the next worker takes over
    worker = env.worker("--concurrency", "1", settings={"rescue_after": "4"})
    wait_until(lambda: job.status() is JobState.RUNNING, 30, "job running")
    os.killpg(worker.pid, signal.SIGKILL)  # supervisor and worker: nobody is left to rescue
    worker.wait()
    doctor = Conveyor(env.url, rescue_after=1)  # read the store as if rescue_after were 1s
    try:
        def stuck() -> Report | None:
            report = diagnose(doctor, app_path=WORKER_APP)
            return report if "stuck_running" in codes(report) else None

        report = wait_until(stuck, 30, "the job is reported stuck")
        finding = next(f for f in report.findings if f.code == "stuck_running")
        (line,) = finding.evidence
        assert line.startswith(f"job {job.id} jobsapp:sleepy (queue 'default') running for ")
        assert "has not heartbeated for" in line
        assert "start one: conveyor worker -A jobsapp:app" in finding.fix
        assert job.status() is JobState.RUNNING
    finally:
        doctor.close()
    # following the advice rescues it (a worker of another queue, so it is not run again)
    env.worker("--queues", "elsewhere", settings={"rescue_after": "1"})
    wait_until(lambda: job.status() is JobState.READY, 30, "the stuck job was rescued")
    assert job.cancel() is JobState.CANCELLED

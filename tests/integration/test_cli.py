"""The ``conveyor`` command, run as users run it: a subprocess in their project directory.

Each test writes a small app module (``cliapp.py``) into a temporary project directory and runs
``python -m conveyor -A cliapp:app ...`` there, on both stores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from conveyor.models import JobFilter, JobRecord, JobState
from conveyor.store import Store, open_store
from conveyor.testing import drain

APP_SOURCE = '''
from conveyor import Conveyor, Retry, current_job

app = Conveyor({url!r}, poll_interval=0.1)


@app.job
def add(x: int, y: int) -> int:
    return x + y


@app.job(queue="reports")
def report(data, label, ratio=None, missing="x", *, flag=False):
    return [data, label, ratio, missing, flag]


@app.job(retry=Retry(attempts=2, backoff="fixed", base=0, jitter=0))
def explode(reason: str) -> None:
    current_job().log(f"about to explode because {{reason}}")
    raise RuntimeError(f"explode: {{reason}}")
'''


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Project:
    """A user's project directory holding ``cliapp.py``, and the CLI run from inside it."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        root.mkdir(parents=True, exist_ok=True)
        (root / "cliapp.py").write_text(APP_SOURCE.format(url=url))
        self.store: Store = open_store(url)

    def run(self, *args: str, app: bool = True, env: dict[str, str] | None = None,
            timeout: float = 60) -> Result:
        return run_cli(*(("-A", "cliapp:app") if app else ()), *args, cwd=self.root, env=env,
                       timeout=timeout)

    def enqueue(self, *args: str) -> int:
        r = self.run("enqueue", *args)
        assert r.code == 0, r
        return int(r.out)

    def jobs(self) -> list[JobRecord]:
        return self.store.job_list(JobFilter(limit=1000))

    def job(self, job_id: int) -> JobRecord:
        found = self.store.job_get(job_id)
        assert found is not None
        return found

    def drain(self) -> None:
        """Run the waiting jobs in this process with ``conveyor.testing.drain``."""
        spec = importlib.util.spec_from_file_location("cliapp", self.root / "cliapp.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            drain(module.app)
        finally:
            module.app.close()


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", *args], cwd=cwd, env=clean_env(env),
        capture_output=True, text=True, timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(r: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one ``error: ...`` line on stderr, nothing on stdout."""
    assert r.code == code, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: "), r.err
    assert r.out == "", r.out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]




@pytest.fixture
def project(store_url: str, tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path / "proj", store_url)
    yield p
    p.store.close()


def dead_job(project: Project) -> int:
    job_id = project.enqueue("cliapp:explode", '"kaboom"')
    project.drain()
    assert project.job(job_id).state is JobState.DEAD
    return job_id


# --- schema ---------------------------------------------------------------------------------
def test_migrate_prints_the_schema_version(project: Project) -> None:
    r = project.run("migrate")
    assert r.code == 0, r
    assert re.fullmatch(r"schema version \d+ at \S+\n", r.out)
    assert project.store.schema_version() == int(r.out.split()[2])


def test_an_empty_store_asks_for_migrate_then_works(tmp_path: Path) -> None:
    env = {"CONVEYOR_DATABASE_URL": "sqlite:///fresh.db"}
    assert_one_line_error(run_cli("status", cwd=tmp_path, env=env), 2, "conveyor migrate")
    assert run_cli("migrate", cwd=tmp_path, env=env).code == 0
    assert (tmp_path / "fresh.db").exists()
    assert run_cli("status", "--json", cwd=tmp_path, env=env).code == 0


# --- enqueue --------------------------------------------------------------------------------
def test_enqueue_parses_each_argument_as_json(project: Project) -> None:
    r = project.run(
        "enqueue", "cliapp:report", '{"rows": [1, 2]}', '"weekly"', "0.5", "null",
        "--kwargs", '{"flag": true}', "--priority", "5", "--json",
    )
    assert r.code == 0, r
    created = r.json()
    assert created["state"] == "ready"

    shown = project.run("jobs", "show", str(created["id"]), "--json").json()
    assert shown["args"] == [{"rows": [1, 2]}, "weekly", 0.5, None]
    assert shown["kwargs"] == {"flag": True}
    assert (shown["name"], shown["queue"], shown["priority"]) == ("cliapp:report", "reports", 5)


def test_enqueue_prints_only_the_id_and_honours_queue(project: Project) -> None:
    r = project.run("enqueue", "cliapp:add", "1", "2", "--queue", "urgent")
    assert r.code == 0 and re.fullmatch(r"\d+\n", r.out), r
    assert project.job(int(r.out)).queue == "urgent"


def test_enqueue_takes_negative_numbers_as_arguments(project: Project) -> None:
    job_id = project.enqueue("cliapp:add", "-1", "-2.5", "--priority", "-3")
    job = project.job(job_id)
    assert (json.loads(job.args), job.priority) == ([-1, -2.5], -3)


def test_enqueue_in_and_at_schedule_the_job(project: Project) -> None:
    before = datetime.now(UTC)
    later = project.enqueue("cliapp:add", "1", "2", "--in", "10m")
    at = project.enqueue("cliapp:add", "3", "4", "--at", "2031-05-06T07:08:09+00:00")
    job = project.job(later)
    assert job.state is JobState.SCHEDULED
    assert timedelta(minutes=9) < job.run_at - before < timedelta(minutes=11)
    assert project.job(at).run_at == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["cliapp:add", "1", "hello"], ["argument 2", "'hello'", "JSON"]),
        (["cliapp:add", "1", "2", "--kwargs", "[1]"], ["--kwargs", "JSON object"]),
        (["cliapp:add", "1"], ["missing a required argument", "'y'"]),
        (["cliapp:add", "1", "2", "3"], ["too many"]),
        (["cliapp:add", "1", "2", "--in", "soon"], ["--in", "'soon'"]),
        (["cliapp:add", "1", "2", "--at", "tomorrow"], ["--at", "'tomorrow'"]),
        (["cliapp:add", "1", "2", "--in", "5s", "--at", "2031-01-01"], ["--in", "--at"]),
        (["cliapp:add", "1", "2", "--queue", "a:b"], ["queue"]),
        (["cliapp:report", "1", "2", "--kwargs", '{"connection": 1}'], ["connection"]),
        (["cliapp:add", "1", "2", "--prioity", "5"], ["no such option", "--prioity"]),
    ],
)
def test_bad_enqueue_input_is_one_line_and_stores_nothing(
    project: Project, args: list[str], fragments: list[str]
) -> None:
    assert_one_line_error(project.run("enqueue", *args), 2, *fragments)
    assert project.jobs() == []


def test_unknown_job_name_lists_the_known_ones(project: Project) -> None:
    line = assert_one_line_error(project.run("enqueue", "cliapp:nope", "1"), 2, "cliapp:nope")
    assert "cliapp:add" in line and "cliapp:explode" in line
    assert project.jobs() == []


def test_without_app_the_job_is_found_through_its_module(project: Project) -> None:
    r = project.run("enqueue", "cliapp:add", "1", "2", app=False)
    assert r.code == 0, r
    assert project.job(int(r.out)).name == "cliapp:add"


# --- configuration mistakes ------------------------------------------------------------------
BROKEN_MODULES = {
    "raises.py": "raise RuntimeError('half-configured settings')\n",
    "notapp.py": "app = 42\n",
    "syntax.py": "def broken(:\n",
    "importsmissing.py": "import does_not_exist_anywhere\n",
}


@pytest.mark.parametrize(
    ("app_path", "fragments"),
    [
        ("nosuchmodule:app", ["nosuchmodule", "no module"]),
        ("cliapp:nothing", ["cliapp", "nothing"]),
        ("cliapp:add", ["JobDefinition", "not a Conveyor"]),
        ("notapp:app", ["int", "not a Conveyor"]),
        ("raises:app", ["RuntimeError", "half-configured settings"]),
        ("syntax:app", ["SyntaxError"]),
        ("importsmissing:app", ["does_not_exist_anywhere"]),
        (":app", ["MODULE:ATTRIBUTE"]),
    ],
)
def test_a_bad_app_path_is_one_line(tmp_path: Path, app_path: str, fragments: list[str]) -> None:
    project = Project(tmp_path, f"sqlite:///{tmp_path / 'c.db'}")
    for name, source in BROKEN_MODULES.items():
        (tmp_path / name).write_text(source)
    assert_one_line_error(project.run("-A", app_path, "status", app=False), 2, *fragments)
    env = {"CONVEYOR_APP": app_path}
    assert_one_line_error(project.run("status", app=False, env=env), 2, *fragments)
    project.store.close()


@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("mysql://localhost/x", ["unsupported database URL", "mysql://"]),
        ("sqlite:/relative.db", ["SQLite URL"]),
        ("sqlite:////no/such/dir/x.db", ["/no/such/dir"]),
        ("postgresql://postgres@127.0.0.1:1/conveyor", []),
    ],
)
def test_a_bad_or_unreachable_store_is_one_line(
    tmp_path: Path, url: str, fragments: list[str]
) -> None:
    env = {"CONVEYOR_DATABASE_URL": url}
    (tmp_path / "envapp.py").write_text(
        "from conveyor import Conveyor\napp = Conveyor()\n\n@app.job\ndef ping() -> None: ...\n"
    )
    for command in (["status"], ["jobs", "list", "--json"], ["migrate"], ["enqueue", "envapp:ping"],
                    ["-A", "envapp:app", "jobs", "show", "1"]):
        assert_one_line_error(run_cli(*command, cwd=tmp_path, env=env), 2, *fragments)


def test_a_bad_queues_spec_or_setting_is_one_line(project: Project) -> None:
    assert_one_line_error(project.run("worker", "--queues", "a:x"), 2, "--queues", "whole number")
    assert_one_line_error(project.run("worker", "--queues", "a:2", "--strict"), 2, "--strict")
    r = project.run("status", env={"CONVEYOR_RESCUE_AFTER": "often"})
    assert_one_line_error(r, 2, "rescue_after", "'often'")


def test_usage_errors_are_one_line_too(project: Project) -> None:
    assert_one_line_error(project.run("jobs", "show", "abc"), 2, "abc")
    assert_one_line_error(project.run("frobnicate"), 2, "frobnicate")
    assert_one_line_error(project.run("jobs", "retry"), 2, "--all-dead")


# --- inspecting -----------------------------------------------------------------------------
def test_status_json_counts_each_queue(project: Project) -> None:
    project.enqueue("cliapp:add", "1", "2")
    project.enqueue("cliapp:add", "3", "4")
    project.enqueue("cliapp:add", "5", "6", "--in", "1h")
    project.enqueue("cliapp:report", "1", '"x"')
    dead_job(project)  # drain also runs the ready ones: enqueue more afterwards
    project.enqueue("cliapp:add", "7", "8")
    project.enqueue("cliapp:report", "2", '"y"')

    r = project.run("status", "--json")
    assert r.code == 0, r
    status = r.json()
    queues = {q["queue"]: q for q in status["queues"]}
    assert set(queues) == {"default", "reports"}
    assert (queues["default"]["ready"], queues["default"]["scheduled"],
            queues["default"]["dead"], queues["default"]["running"]) == (1, 1, 1, 0)
    assert (queues["reports"]["ready"], queues["reports"]["dead"]) == (1, 0)
    assert queues["default"]["latency_seconds"] >= 0
    assert queues["default"]["paused"] is False
    assert status["workers"] == []
    listed = project.run("queues", "list", "--json").json()
    assert [{**q, "latency_seconds": 0} for q in listed] == [
        {**q, "latency_seconds": 0} for q in status["queues"]
    ]

    text = project.run("status")
    assert text.code == 0 and "reports" in text.out and "No workers are running" in text.out


def test_pause_and_resume_show_in_status(project: Project) -> None:
    project.enqueue("cliapp:add", "1", "2")

    def paused() -> dict[str, bool]:
        return {q["queue"]: q["paused"] for q in project.run("status", "--json").json()["queues"]}

    r = project.run("queues", "pause", "default")
    assert r.code == 0 and "paused" in r.out
    assert paused() == {"default": True}
    assert "paused" in project.run("queues", "list").out
    assert project.run("queues", "resume", "default").code == 0
    assert paused() == {"default": False}


def test_global_options_work_after_the_subcommand_and_from_the_environment(
    project: Project,
) -> None:
    job_id = project.enqueue("cliapp:add", "1", "2")
    after = project.run("jobs", "show", str(job_id), "-A", "cliapp:app", "--json", app=False)
    assert after.code == 0 and after.json()["id"] == job_id
    by_env = project.run("jobs", "show", str(job_id), app=False, env={"CONVEYOR_APP": "cliapp:app"})
    assert by_env.code == 0 and "cliapp:add" in by_env.out


def test_jobs_list_filters(project: Project) -> None:
    a = project.enqueue("cliapp:add", "1", "2")
    r = project.enqueue("cliapp:report", "1", '"x"')
    dead = dead_job(project)
    ids = lambda *args: [j["id"] for j in project.run("jobs", "list", "--json", *args).json()]  # noqa: E731
    assert ids() == [dead, r, a]
    assert ids("--state", "dead") == [dead]
    assert ids("--queue", "reports") == [r]
    assert ids("--name", "cliapp:add") == [a]
    assert ids("--limit", "1") == [dead]
    text = project.run("jobs", "list", "--state", "dead")
    assert "cliapp:explode" in text.out and "RuntimeError: explode: kaboom" in text.out


def test_jobs_show_prints_every_attempt_with_its_traceback(project: Project) -> None:
    job_id = dead_job(project)
    r = project.run("jobs", "show", str(job_id))
    assert r.code == 0, r
    assert "dead" in r.out.splitlines()[0]
    assert "attempts (2)" in r.out
    assert "#1  error" in r.out and "#2  error" in r.out
    assert r.out.count("Traceback (most recent call last):") == 2
    assert r.out.count('raise RuntimeError(f"explode: {reason}")') == 2
    assert "about to explode because kaboom" in r.out  # the job's own log lines

    detail = project.run("jobs", "show", str(job_id), "--json").json()
    assert [a["outcome"] for a in detail["attempts"]] == ["error", "error"]
    assert all(a["error_class"] == "RuntimeError" for a in detail["attempts"])
    assert all("explode: kaboom" in a["traceback"] for a in detail["attempts"])
    assert detail["state"] == "dead" and detail["args"] == ["kaboom"]


def test_jobs_show_has_the_result(project: Project) -> None:
    job_id = project.enqueue("cliapp:add", "20", "22")
    project.drain()
    detail = project.run("jobs", "show", str(job_id), "--json").json()
    assert (detail["state"], detail["result"]) == ("succeeded", 42)
    assert "result    42" in project.run("jobs", "show", str(job_id)).out


def test_doctor_exit_code_and_json_follow_the_findings(project: Project) -> None:
    healthy = project.run("doctor", "--json")
    assert (healthy.code, healthy.json()["status"]) == (0, "healthy"), healthy
    project.enqueue("cliapp:add", "1", "2")
    sick = project.run("doctor", "--json")
    assert sick.code == 2, sick
    finding = next(f for f in sick.json()["findings"] if f["code"] == "no_workers")
    assert "cliapp:app" in finding["fix"]  # the fix names the -A the user gave
    text = project.run("doctor")
    assert text.code == 2 and "no worker" in text.out.lower()


def test_doctor_on_an_unreachable_store_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    r = run_cli("doctor", "--json", cwd=tmp_path, env={"CONVEYOR_DATABASE_URL": "mysql://x/y"})
    assert r.code == 2 and r.err == "", r
    assert [f["code"] for f in r.json()["findings"]] == ["store_unreachable"]


@pytest.mark.parametrize("command", [["show"], ["retry"], ["discard"], ["cancel"]])
def test_an_unknown_id_is_one_line_and_exit_1(project: Project, command: list[str]) -> None:
    assert_one_line_error(project.run("jobs", *command, "4242"), 1, "no job with id 4242")


# --- acting ---------------------------------------------------------------------------------
def test_retry_makes_a_dead_job_ready_again(project: Project) -> None:
    job_id = dead_job(project)
    r = project.run("jobs", "retry", str(job_id))
    assert r.code == 0 and "retried 1" in r.out, r
    assert project.job(job_id).state is JobState.READY
    # a ready job cannot be retried: said so, exit 1
    assert_one_line_error(project.run("jobs", "retry", str(job_id)), 1, str(job_id), "ready")


def test_retry_all_dead_of_one_queue(project: Project) -> None:
    first = dead_job(project)
    second = dead_job(project)
    assert project.run("jobs", "retry", "--all-dead", "--queue", "reports").out == \
        "retried 0 dead job(s)\n"
    r = project.run("jobs", "retry", "--all-dead", "--queue", "default")
    assert r.code == 0 and r.out == "retried 2 dead job(s)\n", r
    assert {project.job(first).state, project.job(second).state} == {JobState.READY}


def test_discard_deletes_the_job(project: Project) -> None:
    job_id = dead_job(project)
    kept = dead_job(project)
    r = project.run("jobs", "discard", str(job_id))
    assert r.code == 0 and "discarded 1" in r.out, r
    assert project.store.job_get(job_id) is None
    assert project.store.job_get(kept) is not None
    assert_one_line_error(project.run("jobs", "show", str(job_id)), 1, "no job")
    assert project.run("jobs", "discard", "--all-dead").out == "discarded 1 dead job(s)\n"
    assert project.jobs() == []


def test_cancel_a_waiting_job_and_not_a_finished_one(project: Project) -> None:
    waiting = project.enqueue("cliapp:add", "1", "2", "--in", "1h")
    r = project.run("jobs", "cancel", str(waiting))
    assert r.code == 0 and "cancelled" in r.out, r
    assert project.job(waiting).state is JobState.CANCELLED

    done = project.enqueue("cliapp:add", "1", "2")
    project.drain()
    assert_one_line_error(project.run("jobs", "cancel", str(done)), 1, "succeeded")
    assert project.job(done).state is JobState.SUCCEEDED


# --- with a worker --------------------------------------------------------------------------
def test_worker_runs_jobs_and_shows_in_status(project: Project) -> None:
    job_id = project.enqueue("cliapp:add", "2", "3")
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "-A", "cliapp:app", "--log-format", "json", "worker",
         "--concurrency", "2", "--queues", "default:2,reports:1"],
        cwd=project.root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        wait_until(lambda: project.job(job_id).state is JobState.SUCCEEDED, 30, "the job to run")
        workers = wait_until(lambda: [w for w in project.run("status", "--json").json()["workers"]
                                      if w["kind"] == "worker"], 10, "the worker in status")
        assert workers[0]["concurrency"] == 2
        assert set(workers[0]["queues"]) == {"default", "reports"}
        assert workers[0]["stale"] is False
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert out == ""
    first = err.strip().splitlines()[0]
    assert json.loads(first)["event"]  # --log-format json: every log line is a JSON object


def test_worker_health_port_answers_livez(project: Project) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "-A", "cliapp:app", "worker", "--health-port",
         str(port), "--health-host", "127.0.0.1"],
        cwd=project.root, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )

    def livez() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as answer:
                return dict(json.load(answer))
        except OSError:
            return None

    try:
        assert wait_until(livez, 30, "/livez")["ok"] is True
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err


def test_demo_runs_the_examples_and_stops_its_worker(tmp_path: Path) -> None:
    """Once, on the embedded SQLite default the demo is for."""
    r = run_cli("demo", "--duration", "40", cwd=tmp_path, timeout=90)
    assert r.code == 0, r.out + r.err
    assert (tmp_path / "conveyor-demo.db").exists()
    assert re.search(r"succeeded -> 5\b", r.out), r.out
    assert "failed (attempt 1/4: ConnectionError" in r.out and "will retry" in r.out
    assert "charge_card" in r.out and "(retried 2x)" in r.out
    assert "failed (attempt 3/3: ValueError" in r.out and "no attempts left" in r.out
    assert re.search(r"dead after 3 attempt", r.out)
    assert re.search(r"resize_images\s+running \d+% image \d+/10", r.out), r.out
    assert re.search(r"\d+ succeeded \(1 after retries\), 1 dead, 0 unfinished", r.out), r.out
    pid = int(re.search(r"worker pid (\d+)", r.out).group(1))  # type: ignore[union-attr]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_demo_stopped_by_sigterm_stops_its_worker_and_dashboard(tmp_path: Path) -> None:
    """make demo keeps running until stopped; SIGTERM (or a closed terminal) must not leave the
    worker and the dashboard behind, serving a file the next demo deletes."""
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "demo", "--keep-running"], cwd=tmp_path,
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until(lambda: "keeps running" in out.read_text(), 60, "the demo's summary")
        text = out.read_text()
        children = [int(re.search(r"worker pid (\d+)", text).group(1))]  # type: ignore[union-attr]
        port = int(re.search(r"dashboard: http://127.0.0.1:(\d+)/", text).group(1))  # type: ignore[union-attr]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/api/queues", timeout=5).status == 200
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/queues", timeout=2)

"""Bad input on the command line: one ``error: ...`` line on stderr, exit code 2, nothing lost,
no traceback, and no file created by a command that only looks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_cli import assert_one_line_error

from conveyor.models import JobFilter
from conveyor.store import Store, open_store

APP_SOURCE = '''
from conveyor import Conveyor

app = Conveyor({url!r}, poll_interval=0.1)


@app.job
def add(*numbers):
    return sum(numbers)
'''


@dataclass
class Result:
    code: int
    out: str
    err: str


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30,
            user: int | None = None) -> Result:
    """``python -m conveyor ...``; a worker that does not stop by itself in ``timeout`` is
    killed with its children, and the test fails."""
    prefix = [] if user is None else [
        "setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "conveyor", *args], cwd=cwd, env=clean_env(env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout}s; stderr so far: {err[-2000:]}") from None
    return Result(proc.returncode, out, err)


def one_line_error(r: Result, *fragments: str) -> str:
    """Exit 2, exactly one ``error: ...`` line on stderr, nothing on stdout, no traceback."""
    return assert_one_line_error(r, 2, *fragments)  # type: ignore[arg-type]


class Project:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        root.mkdir(parents=True, exist_ok=True)
        (root / "cliapp.py").write_text(APP_SOURCE.format(url=url))
        self.store: Store = open_store(url)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> Result:
        return run_cli("-A", "cliapp:app", *args, cwd=self.root, env=env, timeout=timeout)

    def job_count(self) -> int:
        return len(self.store.job_list(JobFilter(limit=1000)))


@pytest.fixture
def project(store_url: str, tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path / "proj", store_url)
    yield p
    p.store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 2. enqueue and jobs show ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--in", "99999999999d"], "--in"),
        (["--priority", "99999999999999999999999"], "priority"),
        (["--priority", "2147483648"], "out of range"),
        (["--at", "9999-12-31T23:59:59-05:00"], "9999"),
        (["--queue", " mail"], "invalid queue name"),
        (["--queue", "mail,low"], "invalid queue name"),
        (["--queue", ""], "invalid queue name"),
        (["--queue", "tab\there"], "invalid queue name"),
        (['{"n": [1, 99999999999999999999]}'], "args[0].n[1]"),
        (['"\\ud800"'], "lone surrogate"),
    ],
    ids=["in-huge", "priority-huge", "priority-32bit", "at-after-9999", "queue-space",
         "queue-comma", "queue-empty", "queue-control", "big-int", "surrogate"],
)
def test_enqueue_refuses_bad_input_in_one_line(
    project: Project, args: list[str], fragment: str
) -> None:
    one_line_error(project.run("enqueue", "cliapp:add", *args), fragment)
    assert project.job_count() == 0


def test_enqueue_refuses_json_nested_900_deep(project: Project) -> None:
    deep = "[" * 900 + "]" * 900
    one_line_error(project.run("enqueue", "cliapp:add", deep), "nested deeper than 500 levels")
    deeper = "[" * 5000 + "]" * 5000
    one_line_error(project.run("enqueue", "cliapp:add", deeper), "nested too deeply")
    assert project.job_count() == 0


@pytest.mark.parametrize("words", [["jobs", "show", "9223372036854775808"],
                                   ["jobs", "cancel", "99999999999999999999999"],
                                   ["jobs", "retry", "1", "18446744073709551616"]])
def test_a_job_id_beyond_64_bits_is_one_line(project: Project, words: list[str]) -> None:
    one_line_error(project.run(*words), "not a job id")


def test_the_largest_job_id_is_just_not_found(project: Project) -> None:
    r = project.run("jobs", "show", "9223372036854775807")
    assert r.code == 1 and r.err.startswith("error: ") and len(r.err.splitlines()) == 1, r


# --- 4. pausing queues ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "a,b", " lead", "trail ", "bell\x07"])
def test_pausing_a_queue_no_worker_can_serve_is_refused(project: Project, name: str) -> None:
    one_line_error(project.run("queues", "pause", name), "invalid queue name")
    one_line_error(project.run("queues", "resume", name), "invalid queue name")
    assert project.store.queue_stats() == []


def test_pausing_a_queue_before_it_is_used_works_with_a_note(project: Project) -> None:
    r = project.run("queues", "pause", "later")
    assert r.code == 0, r
    assert "paused" in r.out
    notes = r.err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: ") and "later" in notes[0], r.err
    assert [(q.queue, q.paused) for q in project.store.queue_stats()] == [("later", True)]

    project.run("enqueue", "cliapp:add", "1")
    again = project.run("queues", "pause", "default")
    assert again.code == 0 and again.err == "", again


# --- 1 and 2. worker start-up -----------------------------------------------------------------------
def test_worker_with_rescue_after_zero_exits_2(project: Project) -> None:
    one_line_error(project.run("worker", env={"CONVEYOR_RESCUE_AFTER": "0"}), "rescue_after")


def test_worker_with_a_heartbeat_as_long_as_rescue_after_exits_2(project: Project) -> None:
    r = project.run("worker", env={"CONVEYOR_RESCUE_AFTER": "5", "CONVEYOR_HEARTBEAT_INTERVAL": "5"})
    one_line_error(r, "heartbeat_interval")


def test_worker_on_a_health_port_in_use_exits_2(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = project.run("worker", "--health-port", port, "--health-host", "127.0.0.1")
    one_line_error(r, port, "pick another --health-port")


def test_worker_on_a_health_host_that_is_not_a_host_exits_2(project: Project) -> None:
    r = project.run("worker", "--health-port", str(_free_port()), "--health-host", "not a host")
    one_line_error(r, "--health-host 'not a host'")


def test_worker_on_a_schema_newer_than_the_code_exits_2(project: Project) -> None:
    future = 9999
    if project.url.startswith("sqlite"):
        conn = sqlite3.connect(project.url[len("sqlite:///"):])
        conn.execute("INSERT INTO conveyor_schema (version, applied_at) VALUES (?, 0)", (future,))
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(project.url, autocommit=True) as conn:
            conn.execute("INSERT INTO conveyor_schema (version) VALUES (%s)", (future,))
    try:
        one_line_error(project.run("worker"), "newer than this conveyor understands")
    finally:
        if not project.url.startswith("sqlite"):
            import psycopg

            with psycopg.connect(project.url, autocommit=True) as conn:
                conn.execute("DELETE FROM conveyor_schema WHERE version = %s", (future,))


# --- 5. SQLite files a worker cannot use: exit 2 instead of waiting forever -----------------------
def _sqlite_env(path: Path) -> dict[str, str]:
    return {"CONVEYOR_DATABASE_URL": f"sqlite:///{path}"}


def test_worker_on_a_file_that_is_not_sqlite_exits_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("my shopping list, not a database\n" * 40)
    before = notes.read_bytes()
    one_line_error(run_cli("worker", cwd=tmp_path, env=_sqlite_env(notes)),
                   "is not a SQLite database")
    assert notes.read_bytes() == before, "the file was left as it was"


def test_worker_on_a_corrupt_database_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    assert run_cli("migrate", cwd=tmp_path, env=_sqlite_env(broken)).code == 0
    with broken.open("r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 3000)
    one_line_error(run_cli("worker", cwd=tmp_path, env=_sqlite_env(broken)), "corrupt")


def test_worker_in_a_directory_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir.db"
    one_line_error(run_cli("worker", cwd=tmp_path, env=_sqlite_env(path)), "does not exist")


def _unprivileged() -> int | None:
    """A user id to run as that cannot write a directory we make read-only, or None."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a directory read-only")
    return 65534  # nobody


def test_worker_in_a_read_only_directory_exits_2(tmp_path: Path) -> None:
    user = _unprivileged()
    shared = Path("/tmp") / f"conveyor-ro-{os.getpid()}-{tmp_path.name}"
    shared.mkdir()
    try:
        ro = shared / "ro"
        ro.mkdir()
        shared.chmod(0o755)
        ro.chmod(0o555)
        r = run_cli("worker", cwd=shared, env=_sqlite_env(ro / "jobs.db"), user=user)
        one_line_error(r, "cannot write SQLite database", "permission")
        assert not (ro / "jobs.db").exists()
    finally:
        ro.chmod(0o755)
        shutil.rmtree(shared)


# --- 6. commands that only look create nothing --------------------------------------------------------
@pytest.mark.parametrize("words", [["status"], ["jobs", "list"], ["queues", "list"],
                                   ["jobs", "show", "1"], ["enqueue", "cliapp:add", "1"]])
def test_looking_at_a_missing_sqlite_file_does_not_create_it(
    tmp_path: Path, words: list[str]
) -> None:
    path = tmp_path / "typo.db"
    (tmp_path / "cliapp.py").write_text(APP_SOURCE.format(url=f"sqlite:///{path}"))
    one_line_error(run_cli("-A", "cliapp:app", *words, cwd=tmp_path), "typo.db does not exist")
    assert not path.exists()


def test_doctor_reports_a_missing_sqlite_file_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    r = run_cli("doctor", "--json", cwd=tmp_path, env=_sqlite_env(path))
    assert r.code == 2, r
    report = json.loads(r.out)
    assert [f["code"] for f in report["findings"]] == ["store_unreachable"]
    assert "typo.db does not exist" in report["findings"][0]["evidence"][0]
    assert "conveyor migrate" in report["findings"][0]["fix"]
    assert not path.exists()


def test_an_empty_app_option_is_refused(tmp_path: Path) -> None:
    one_line_error(run_cli("-A", "", "status", cwd=tmp_path), "--app")
    one_line_error(run_cli("status", "-A", "", cwd=tmp_path), "--app")
    assert not (tmp_path / "conveyor.db").exists()


# --- 8. a run time long past does not make the latency absurd ---------------------------------------
def test_a_job_at_year_one_has_the_latency_of_its_age(project: Project) -> None:
    r = project.run("enqueue", "cliapp:add", "1", "--at", "0001-01-01T00:00:00+00:00", "--json")
    assert r.code == 0, r
    assert json.loads(r.out)["state"] == "ready"
    status = json.loads(project.run("status", "--json").out)
    [queue] = status["queues"]
    assert queue["ready"] == 1
    assert 0 <= queue["latency_seconds"] < 60, queue

    doctor = project.run("doctor", "--json")
    report: dict[str, Any] = json.loads(doctor.out)
    evidence = " ".join(line for f in report["findings"] for line in f["evidence"])
    assert "oldest waiting" in evidence
    assert "d " not in evidence.split("oldest waiting", 1)[1][:12], evidence


# --- 9. a password never reaches the screen ------------------------------------------------------
@pytest.mark.parametrize("password", ["pa/ss", "p@ss", "pa:ss%2Fw"])
@pytest.mark.parametrize("words", [("status",), ("status", "--json"), ("doctor",),
                                   ("doctor", "--json"), ("jobs", "list"), ("migrate",)])
def test_a_password_in_the_database_url_is_never_shown(
    tmp_path: Path, password: str, words: tuple[str, ...]
) -> None:
    url = f"postgresql://alice:{password}@127.0.0.1:1/x"  # nothing listens on port 1
    r = run_cli(*words, cwd=tmp_path, env={"CONVEYOR_DATABASE_URL": url})
    assert r.code == 2, r
    shown = r.out + r.err
    assert "127.0.0.1" in shown or "alice" in shown, "the store is named"
    assert password not in shown and f"alice:{password}" not in shown, shown
    assert "'pa'" not in shown and "ss@" not in shown, "not even a piece of it"
    assert "Traceback" not in shown

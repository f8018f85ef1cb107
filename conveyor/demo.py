"""``conveyor demo``: example jobs, a real worker, and a running account of every job.

The jobs below are ordinary conveyor jobs, written the way you would write yours; the worker the
demo starts is ``conveyor -A conveyor.demo:app worker``. Defining them opens nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from . import Conveyor, Retry, current_job
from .cli.output import STATE_STYLE, age, console
from .jobs import PreparedJob
from .models import AttemptOutcome, JobRecord, JobState
from .urls import redact_url
from .views import redacted

DEMO_URL = "sqlite:///conveyor-demo.db"
QUEUE = "demo"  # the demo worker listens only here, so it never touches other jobs in a store
CONCURRENCY = 4
POLL = 0.5

app = Conveyor(
    os.environ.get("CONVEYOR_DATABASE_URL", DEMO_URL),
    poll_interval=0.2, shutdown_timeout=5, rescue_after=10,
)


@app.job(queue=QUEUE)
def add(x: int, y: int) -> int:
    """A fast job."""
    return x + y


@app.job(queue=QUEUE)
def greet(name: str) -> str:
    """Another fast one."""
    return f"hello, {name}!"


@app.job(queue=QUEUE, timeout=60)
def resize_images(count: int) -> str:
    """A slow job that reports its progress as it goes."""
    job = current_job()
    for i in range(1, count + 1):
        time.sleep(0.4)
        job.progress(100 * i / count, f"image {i}/{count}")
    return f"{count} images resized"


@app.job(queue=QUEUE, retry=Retry(attempts=4, backoff="fixed", base=1, jitter=0))
def charge_card(order_id: int) -> str:
    """Flaky: the payment gateway times out twice, then answers."""
    attempt = current_job().attempt
    if attempt < 3:
        raise ConnectionError(f"payment gateway timed out (attempt {attempt})")
    return f"order {order_id} charged"


@app.job(queue=QUEUE, retry=Retry(attempts=3, backoff="fixed", base=0.5, jitter=0))
def import_feed(url: str) -> None:
    """Always fails, so it ends dead: every attempt and traceback stays for `jobs show`."""
    raise ValueError(f"{url} is not a valid RSS feed")


@app.job(queue=QUEUE)
async def fetch_title(url: str) -> str:
    """An async job: runs on the worker's event loop."""
    await asyncio.sleep(0.5)
    return f"Example Domain ({url})"


@app.job(queue=QUEUE)
def send_reminder(user_id: int) -> str:
    """Enqueued to run a few seconds from now."""
    return f"reminder sent to user {user_id}"


@app.cron(every=timedelta(seconds=5), name="demo-tick")
@app.job(queue=QUEUE)
def tick() -> str:
    """A recurring job: the worker's scheduler enqueues it every 5 seconds (conveyor cron list)."""
    return f"tick at {datetime.now(UTC):%H:%M:%S}"


def examples(now: datetime) -> list[PreparedJob]:
    """The jobs the demo enqueues, arguments checked and encoded by their definitions."""

    def later(seconds: float, prepared: PreparedJob) -> PreparedJob:
        when = now + timedelta(seconds=seconds)
        return PreparedJob(prepared.definition, replace(prepared.new_job, run_at=when))

    return [
        add.prepare(2, 3),
        greet.prepare("Ada"),
        add.options(priority=10).prepare(40, 2),
        resize_images.prepare(10),
        charge_card.prepare(1001),
        import_feed.prepare("https://example.com/feed.xml"),
        fetch_title.prepare("https://example.com"),
        later(3, send_reminder.prepare(7)),
        later(6, send_reminder.prepare(8)),
    ]


# --- running the demo -----------------------------------------------------------------------
def run(url: str | None, *, duration: float, keep_running: bool) -> int:
    """Start a worker, enqueue the examples, narrate, summarize, stop. Returns the exit code."""
    url = url or DEMO_URL
    fresh = _clean(url)
    store_app = Conveyor(url)
    store_app.migrate()
    log = Path(tempfile.mkstemp(prefix="conveyor-demo-", suffix=".log")[1])
    worker = _start_worker(url, log)
    board, board_url = _start_dashboard(url, log)
    inspect = _inspect_prefix(url)
    click.echo(f"conveyor demo: store {redact_url(url)}{' (fresh file)' if fresh else ''}")
    click.echo(f"worker pid {worker.pid} (1 process, {CONCURRENCY} at a time, queue {QUEUE!r});"
               f" its logs: {log}")
    click.echo(f"dashboard: {board_url}" if board is not None else board_url)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        handles = store_app.enqueue_many(examples(datetime.now(UTC)))
        watch = Watcher(store_app, min(h.id for h in handles), inspect)
        code = _follow(watch, worker, duration, log)
        if code == 0:
            watch.summary()
            click.echo(f"\nInspect any job:  {inspect} jobs show {watch.dead_id() or handles[0].id}")
            click.echo(f"Queues, workers:  {inspect} status")
            click.echo(f"Recurring jobs:   {inspect} cron history demo-tick")
        if code == 0 and keep_running:
            click.echo(f"\nThe worker keeps running{' and the dashboard at ' + board_url if board else ''}."
                       f" Enqueue more:  {inspect} enqueue conveyor.demo:add 1 2   (Ctrl-C stops)")
            while worker.poll() is None:
                watch.poll()
                time.sleep(POLL)
    except KeyboardInterrupt:
        code = 130 if not keep_running else 0
    finally:
        # however the demo was stopped (Ctrl-C, twice; SIGTERM; the terminal closing), its
        # worker and dashboard run in sessions of their own and must be stopped here
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _stop(worker)
        if board is not None:
            _stop(board, "dashboard")
        store_app.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _follow(watch: Watcher, worker: subprocess.Popen[bytes], duration: float, log: Path) -> int:
    deadline = time.monotonic() + duration
    while True:
        watch.poll()
        if watch.settled():
            return 0
        if worker.poll() is not None:
            click.echo(f"\nThe worker exited with code {worker.returncode}. Its last log lines:",
                       err=True)
            for line in log.read_text(errors="replace").splitlines()[-20:]:
                click.echo(f"  {line}", err=True)
            return 1
        if time.monotonic() > deadline:
            click.echo(f"\n--duration {duration:g}s reached; {watch.unfinished()} job(s) unfinished")
            return 0
        time.sleep(POLL)


def _clean(url: str) -> bool:
    """Remove a previous demo file (only ever one named conveyor-demo.db)."""
    if not url.startswith("sqlite:///"):
        return False
    path = Path(url[len("sqlite:///"):].split("?", 1)[0])
    if path.name != "conveyor-demo.db":
        return False
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True


def _inspect_prefix(url: str) -> str:
    """How to run conveyor against the demo store from this shell."""
    command = f"{_program()} -A conveyor.demo:app"
    if url == DEMO_URL:
        return command
    credentials = url.partition("://")[2].rpartition("@")[0]
    shown = "'<your URL>'" if ":" in credentials else url  # never echo a password
    return f"CONVEYOR_DATABASE_URL={shown} {command}"


def _program() -> str:
    """``conveyor`` if that is on PATH, else the script next to this Python (e.g. from make)."""
    script = Path(sys.executable).parent / "conveyor"
    found = shutil.which("conveyor")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "conveyor"
    if not script.exists():
        return f"{sys.executable} -m conveyor"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVEYOR_DATABASE_URL": url}
    env.pop("CONVEYOR_APP", None)
    command = [
        sys.executable, "-m", "conveyor", "-A", "conveyor.demo:app", "worker",
        "--processes", "1", "--concurrency", str(CONCURRENCY), "--queues", QUEUE,
    ]
    with log.open("wb") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _start_dashboard(url: str, log: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    """The dashboard on loopback (port 8000, or any free one), or None and why not."""
    from .web import missing_extra

    problem = missing_extra()
    if problem is not None:
        return None, f"no dashboard: {problem}"
    port = _free_port(8000)
    env = {**os.environ, "CONVEYOR_DATABASE_URL": url}
    env.pop("CONVEYOR_APP", None)
    env.pop("CONVEYOR_DASHBOARD_TOKEN", None)  # loopback only, no sign-in
    command = [sys.executable, "-m", "conveyor", "-A", "conveyor.demo:app", "dashboard",
               "--host", "127.0.0.1", "--port", str(port)]
    with log.with_suffix(".dashboard.log").open("wb") as sink:
        board = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
    return board, f"http://127.0.0.1:{port}/"


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def _stop(process: subprocess.Popen[bytes], what: str = "worker") -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        click.echo(f"the {what} did not stop within 15s of SIGTERM and was killed", err=True)


# --- narrating -------------------------------------------------------------------------------
@dataclass
class _Seen:
    state: JobState
    attempt: int
    progress: float | None
    attempts_told: int = 0


class Watcher:
    """Polls the store and prints one line per thing that happened to a demo job."""

    def __init__(self, target: Conveyor, first_id: int, inspect: str,
                 echo: Callable[[str], None] = click.echo) -> None:
        self.app = target
        self.first_id = first_id
        self.inspect = inspect
        self.echo = echo
        self.started = time.monotonic()
        self.jobs: dict[int, JobRecord] = {}
        self.seen: dict[int, _Seen] = {}

    def poll(self) -> None:
        found = self.app.client.list(queue=QUEUE, limit=1000)
        for job in sorted((j for j in found if j.id >= self.first_id), key=lambda j: j.id):
            self.jobs[job.id] = job
            before = self.seen.get(job.id)
            if before is None:
                self.seen[job.id] = _Seen(job.state, job.attempt, job.progress)
                self._say(job, self._first_words(job))
                continue
            if (before.state, before.attempt, before.progress) != (
                job.state, job.attempt, job.progress
            ):
                self._changed(job, before)

    def settled(self) -> bool:
        return bool(self.jobs) and all(j.state.finished for j in self.jobs.values())

    def unfinished(self) -> int:
        return sum(not j.state.finished for j in self.jobs.values())

    def dead_id(self) -> int | None:
        return next((j.id for j in self.jobs.values() if j.state is JobState.DEAD), None)

    def _first_words(self, job: JobRecord) -> str:
        words = f"enqueued {_call(job)}"
        if job.state is JobState.SCHEDULED:
            seconds = (job.run_at - datetime.now(UTC)).total_seconds()
            words += f", scheduled to run in {age(seconds)}"
        return words

    def _changed(self, job: JobRecord, before: _Seen) -> None:
        if (job.state, job.attempt) != (before.state, before.attempt):
            self._tell_attempts(job, before)
        if job.state is JobState.RUNNING and (before.state, before.attempt) != (
            job.state, job.attempt
        ):
            self._say(job, f"running (attempt {job.attempt}/{job.max_attempts})")
        elif job.state is JobState.RUNNING and job.progress is not None:
            self._say(job, f"running {job.progress:.0f}% {job.progress_message or ''}".rstrip())
        elif job.state is JobState.READY and before.state is JobState.SCHEDULED:
            self._say(job, "ready: its scheduled time has come")
        elif job.state is JobState.SUCCEEDED:
            self._say(job, f"succeeded -> {_short(job.result or 'null')}")
        elif job.state is JobState.DEAD:
            self._say(job, f"dead after {job.attempt} attempt(s); see: {self.inspect} jobs show "
                      f"{job.id}")
        elif job.state is JobState.CANCELLED:
            self._say(job, "cancelled")
        before.state, before.attempt, before.progress = job.state, job.attempt, job.progress

    def _tell_attempts(self, job: JobRecord, before: _Seen) -> None:
        """Every attempt that ended in error since last time, even if a poll missed its state."""
        attempts = self.app.client.attempts(job.id)
        for a in attempts[before.attempts_told:]:
            if a.finished_at is None:
                break
            before.attempts_told += 1
            if a.outcome is AttemptOutcome.SUCCEEDED:
                continue
            final = job.state is JobState.DEAD and a.attempt == job.attempt
            if final:
                then = "no attempts left"
            elif job.state is JobState.FAILED and a.attempt == job.attempt:
                then = f"will retry in {age((job.run_at - datetime.now(UTC)).total_seconds())}"
            else:
                then = "will retry"
            error = f"{a.error_class}: {a.error_message}" if a.error_message else a.error_class
            self._say(job, f"failed (attempt {a.attempt}/{job.max_attempts}: {error}) — {then}",
                      "red" if final else "yellow")

    def _say(self, job: JobRecord, words: str, color: str | None = None) -> None:
        elapsed = f"+{time.monotonic() - self.started:.1f}s".rjust(6)
        name = job.name.removeprefix("conveyor.")
        line = f"{elapsed}  job {job.id:<3} {name:<20} {words}"
        self.echo(click.style(line, fg=color or _COLORS.get(job.state)))

    def summary(self) -> None:
        click.echo("")
        table = Table(title="What happened", title_justify="left")
        for column in ("id", "job", "state", "attempts", "result / last error"):
            table.add_column(column, justify="right" if column == "id" else "left")
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            attempts = f"{job.attempt}/{job.max_attempts}"
            if job.state is JobState.SUCCEEDED and job.attempt > 1:
                attempts += f" (retried {job.attempt - 1}x)"
            outcome = _short(job.result or "") if job.state is JobState.SUCCEEDED else (
                job.error or "")
            table.add_row(str(job.id), Text(job.name), Text(str(job.state),
                          style=STATE_STYLE.get(str(job.state), "")), attempts, Text(outcome))
        console().print(table)
        counts = {s: sum(j.state is s for j in self.jobs.values()) for s in JobState}
        retried = sum(j.attempt > 1 and j.state is JobState.SUCCEEDED for j in self.jobs.values())
        click.echo(f"{counts[JobState.SUCCEEDED]} succeeded ({retried} after retries), "
                   f"{counts[JobState.DEAD]} dead, {self.unfinished()} unfinished")


_COLORS = {JobState.SUCCEEDED: "green", JobState.DEAD: "red", JobState.RUNNING: "cyan"}


def _call(job: JobRecord) -> str:
    job = redacted(job)
    args = job.args[1:-1]
    return f"({args})" if job.kwargs == "{}" else f"({args}, **{job.kwargs})"


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"

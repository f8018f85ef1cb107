"""Real worker processes for integration tests: ``python -m conveyor -A jobsapp:app worker``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.invariants import find_violations

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def wait_until(predicate: Callable[[], Any], timeout: float, message: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.02)


class Env:
    """Environment and helpers shared by one test's processes."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.log = tmp_path / "executions.log"
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen[str]] = []
        self.outputs: dict[int, Path] = {}
        self.vars = {
            **os.environ,
            "CONVEYOR_DATABASE_URL": url,
            "CONVEYOR_TEST_LOG": str(self.log),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines() if line]

    def worker(self, *args: str, settings: dict[str, str] | None = None) -> subprocess.Popen[str]:
        env = dict(self.vars)
        for key, value in (settings or {}).items():
            env[f"CONVEYOR_{key.upper()}"] = value
        output = self.tmp / f"worker-{len(self.procs)}.out"
        with output.open("w") as sink:  # a file, not a pipe: a chatty worker must never block
            proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "-A", "jobsapp:app", "worker", *args],
                env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.outputs[proc.pid] = output
        return proc

    def stop(
        self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60
    ) -> tuple[int, str]:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
        return proc.returncode, self.outputs[proc.pid].read_text()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self, timeout: float = 60) -> list[str]:
        """SIGTERM every worker still running (and whatever is left of a group whose leader was
        killed), wait for each to exit; returns what would not stop (then SIGKILLed)."""
        stubborn = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the supervisor stops its children itself
            else:  # its leader gone: whatever is left of the group gets the signal
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stubborn.append(f"worker pid {proc.pid} still running {timeout:g}s after SIGTERM")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            while _group_alive(proc.pid):  # children outliving a killed supervisor
                if time.monotonic() > deadline:
                    stubborn.append(f"processes of group {proc.pid} outlived SIGTERM")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        return stubborn


def _group_alive(pgid: int) -> bool:
    """A process of this group still runs (zombies nobody reaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def env(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """Worker processes for one test; at teardown every one is stopped (SIGTERM, then waited
    for) and the store must satisfy the invariants of tests/invariants.py."""
    with env_on(store_url, tmp_path, monkeypatch) as e:
        yield e


@contextmanager
def env_on(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """What ``env`` does, for any store URL (the outage tests use a private server's)."""
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", store_url)
    monkeypatch.setenv("CONVEYOR_TEST_LOG", str(tmp_path / "executions.log"))
    import jobsapp

    jobsapp.app.settings = replace(jobsapp.app.settings, database_url=store_url)
    jobsapp.app.close()
    e = Env(store_url, tmp_path)
    yield e
    try:
        stubborn = e.stop_all()
        jobsapp.app.close()
        problems = stubborn + find_violations(store_url, workers_stopped=True)
        if problems:
            shown = "\n".join(f"  - {p}" for p in problems[:50])
            raise AssertionError(f"after the test, {len(problems)} invariant violation(s):\n{shown}")
    finally:
        e.cleanup()
        jobsapp.app.close()


@pytest.fixture
def app(env: Env) -> Any:
    import jobsapp

    return jobsapp

"""Sensitive arguments, end to end on both stores: a job defined with ``sensitive=[...]`` runs
with its real arguments in a real worker, and the secret is found nowhere conveyor shows or
hands on: ``conveyor jobs show`` / ``jobs list --json``, the worker's logs (debug, JSON), and
the records event hooks get (in the enqueuing process and in the worker)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import wait_until

from conveyor.models import JobState
from conveyor.store import open_store
from tests.invariants import find_violations

SECRET = "hunter2-s3cr3t"
CARD = "4111-1111-1111-1111"
APP_SOURCE = '''
import json, os

from conveyor import Conveyor, Retry

app = Conveyor({url!r}, poll_interval=0.1)


@app.job(sensitive=["password"])
def login(user, options):
    with open(os.environ["RECEIVED"], "a") as f:
        f.write(options["auth"]["password"] + "\\n")
    return "welcome " + user


@app.job(sensitive=["card"], retry=Retry(attempts=1))
def charge(order):
    with open(os.environ["RECEIVED"], "a") as f:
        f.write(order["payment"]["card"] + "\\n")
    raise ValueError("declined")


def keep(event):
    def hook(job, error):
        with open(os.environ["HOOKS"], "a") as f:
            f.write(json.dumps([event, job.args, job.kwargs, repr(job)]) + "\\n")
    return hook


for event in ("enqueued", "started", "succeeded", "dead"):
    app.on(event)(keep(event))
'''


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("sensapp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(root: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "conveyor", "-A", "sensapp:app", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_sensitive_values_reach_the_job_and_nothing_else(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "sensapp.py").write_text(APP_SOURCE.format(url=store_url))
    received, hooks = tmp_path / "received.txt", tmp_path / "hooks.jsonl"
    monkeypatch.setenv("RECEIVED", str(received))
    monkeypatch.setenv("HOOKS", str(hooks))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(PYTHONUNBUFFERED="1", CONVEYOR_LOG_LEVEL="DEBUG")
    app = load(tmp_path / "sensapp.py").app
    store = open_store(store_url)
    worker_log = tmp_path / "worker.out"
    try:
        ok = app.registry.get("sensapp:login").enqueue(
            "ann", options={"auth": {"password": SECRET, "otp": 123}}).id
        bad = app.registry.get("sensapp:charge").enqueue({"payment": {"card": CARD}}).id
        with worker_log.open("w") as sink:
            worker = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "-A", "sensapp:app", "--log-format", "json",
                 "worker", "-c", "2"],
                cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
                start_new_session=True,
            )
        try:
            wait_until(lambda: all((j := store.job_get(i)) and j.state.finished for i in (ok, bad)),
                       30, "both jobs finish")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        assert store.job_get(ok).state is JobState.SUCCEEDED  # type: ignore[union-attr]
        assert store.job_get(bad).state is JobState.DEAD  # type: ignore[union-attr]
        assert sorted(received.read_text().split()) == sorted([SECRET, CARD])  # the real values

        shown = {
            "jobs show": cli(tmp_path, env, "jobs", "show", str(ok))
            + cli(tmp_path, env, "jobs", "show", str(bad)),
            "jobs show --json": cli(tmp_path, env, "jobs", "show", str(ok), "--json")
            + cli(tmp_path, env, "jobs", "show", str(bad), "--json"),
            "jobs list --json": cli(tmp_path, env, "jobs", "list", "--json"),
            "worker log": worker_log.read_text(),
            "hook payloads": hooks.read_text(),
        }
        for where, text in shown.items():
            assert SECRET not in text and CARD not in text, f"a secret in the {where}"
        detail = json.loads(cli(tmp_path, env, "jobs", "show", str(ok), "--json"))
        assert detail["kwargs"] == {"options": {"auth": {"password": "[redacted]", "otp": 123}}}
        assert detail["sensitive"] == ["password"]
        assert "[redacted]" in shown["jobs show"]
        events = [json.loads(line)[0] for line in hooks.read_text().splitlines()]
        assert sorted(events) == sorted(["enqueued", "enqueued", "started", "started",
                                         "succeeded", "dead"])
        assert "job succeeded" in shown["worker log"]  # the log was written, at debug level
        assert find_violations(store_url, workers_stopped=True) == []
    finally:
        app.close()
        store.close()

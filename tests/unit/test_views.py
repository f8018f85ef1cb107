"""The JSON-ready views: plain values only, the keys the CLI prints, arguments shown once."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from conveyor import views
from conveyor.models import (
    AttemptOutcome,
    AttemptRecord,
    JobRecord,
    JobState,
    LogRecord,
    ProcessRecord,
    QueueStats,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
JOB = JobRecord(id=3, name="tasks:add", queue="default", priority=0, state=JobState.SUCCEEDED,
                args='[1,{"__conveyor__":"date","v":"2030-01-01"}]', kwargs='{"x":true}',
                attempt=1, max_attempts=3, timeout=None, run_at=T0, created_at=T0,
                finished_at=T0 + timedelta(seconds=2), result="3")


def plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_a_job_view_is_plain_json_with_its_payloads_decoded() -> None:
    attempt = AttemptRecord(job_id=3, attempt=1, worker_id="w1", started_at=T0,
                            finished_at=T0 + timedelta(seconds=1.5),
                            outcome=AttemptOutcome.SUCCEEDED)
    detail = views.job_detail_view(JOB, [attempt], [LogRecord(3, 1, T0, "hello")])
    assert plain(detail) and json.loads(json.dumps(detail)) == detail
    assert (detail["state"], detail["args"], detail["kwargs"], detail["result"]) == (
        "succeeded", [1, {"__conveyor__": "date", "v": "2030-01-01"}], {"x": True}, 3)
    assert detail["finished_at"] == "2030-01-01T00:00:02+00:00"
    assert detail["attempts"][0]["outcome"] == "succeeded"
    assert detail["attempts"][0]["duration_seconds"] == 1.5
    assert detail["logs"] == [{"attempt": 1, "at": T0.isoformat(), "message": "hello"}]
    assert list(detail)[:5] == ["id", "name", "queue", "priority", "state"]


def test_arguments_are_shown_through_one_function() -> None:
    assert views.shown_args(JOB) == ([1, {"__conveyor__": "date", "v": "2030-01-01"}], {"x": True})


def test_queue_and_worker_views() -> None:
    stats = QueueStats("mail", True, {JobState.READY: 2, JobState.DEAD: 1}, T0)
    row = views.queue_view(stats, T0 + timedelta(seconds=90))
    assert row == {"queue": "mail", "paused": True, "ready": 2, "scheduled": 0, "running": 0,
                   "failed": 0, "dead": 1, "blocked": 0, "latency_seconds": 90.0}
    p = ProcessRecord(id="w1", kind="worker", host="h", pid=1, started_at=T0, heartbeat_at=T0,
                      queues=("mail",), concurrency=4)
    late = views.worker_view(p, T0 + timedelta(seconds=61), stale_after=60)
    assert (late["stale"], late["heartbeat_age_seconds"], late["queues"]) == (True, 61.0, ["mail"])
    assert plain(row) and plain(late)


def test_sensitive_keys_are_redacted_at_any_depth_in_args_and_kwargs() -> None:
    job = replace(JOB, sensitive=("password", "card"),
                  args='[{"user": "ann", "password": "p1"}, [[{"card": {"no": 4111}}]], "password"]',
                  kwargs='{"password": "p2", "opts": {"auth": [{"password": "p3", "otp": 1}]}}')
    args, kwargs = views.shown_args(job)
    assert args == [{"user": "ann", "password": "[redacted]"}, [[{"card": "[redacted]"}]],
                    "password"]  # a value that merely equals a key name stays
    assert kwargs == {"password": "[redacted]",
                      "opts": {"auth": [{"password": "[redacted]", "otp": 1}]}}
    assert views.job_view(job)["kwargs"] == kwargs
    assert "p1" not in json.dumps(views.job_detail_view(job, [], []))


def test_a_redacted_record_keeps_everything_but_the_secrets() -> None:
    job = replace(JOB, sensitive=("password",), kwargs='{"password": "p", "x": 1}')
    shown = views.redacted(job)
    assert json.loads(shown.kwargs) == {"password": "[redacted]", "x": 1}
    assert replace(shown, kwargs=job.kwargs, args=job.args) == job
    assert views.redacted(JOB) is JOB  # nothing sensitive: the same record

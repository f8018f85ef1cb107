"""``/metrics`` from the dashboard and from a worker supervisor's port: Prometheus text that
prometheus_client's own parser reads, every value taken from the store."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conveyor import Conveyor
from conveyor.models import AttemptOutcome, JobOutcome, JobState, ProcessRecord
from conveyor.store.historyrows import SETTLE
from conveyor.web.metrics import MetricsServer
from tests.web.conftest import TOKEN, connect, insert, make_dead

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    kinds, samples = {}, {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return kinds, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def run_once_each(app: Conveyor, queue: str, count: int) -> None:
    insert(app, count, queue=queue, name="echo")
    claimed = app.store.job_claim("w-metrics", queue, count)
    app.store.job_finish_many([
        JobOutcome(job_id=j.id, lease=j.lease or "", attempt=j.attempt, worker_id="w-metrics",
                   started_at=j.started_at or j.created_at, state=JobState.SUCCEEDED,
                   outcome=AttemptOutcome.SUCCEEDED, result="null")
        for j in claimed
    ])


def populate(app: Conveyor) -> None:
    now = datetime.now(UTC)
    insert(app, 3, queue="mail", name="echo")
    make_dead(app, 2)
    run_once_each(app, "fast", 4)
    for host, age in (("box-1", 0), ("box-1", 1), ("box-2", 3600)):
        seen = now - timedelta(seconds=age)
        app.store.process_register(ProcessRecord(
            id=f"w-{host}-{age}", kind="worker", host=host, pid=age + 1, started_at=seen,
            heartbeat_at=seen, queues=("default",), concurrency=2))
    app.store.history_sample(datetime.now(UTC) + SETTLE)  # finishes count once settled


def check(text: str) -> None:
    kinds, samples = parse(text)
    assert kinds["conveyor_jobs"] == "gauge" and kinds["conveyor_jobs_enqueued"] == "counter"
    assert kinds["conveyor_job_duration_seconds"] == "histogram"
    assert kinds["conveyor_job_wait_seconds"] == "histogram"
    assert value(samples, "conveyor_jobs", queue="mail", state="ready") == 3
    assert value(samples, "conveyor_jobs", queue="dead-q", state="dead") == 2
    assert value(samples, "conveyor_queue_latency_seconds", queue="mail") >= 0
    assert not [k for k in samples if k[0] == "conveyor_jobs" and ("state", "succeeded") in k[1]]
    assert value(samples, "conveyor_jobs_enqueued_total", queue="mail", job="echo") == 3
    assert value(samples, "conveyor_jobs_finished_total", queue="fast", job="echo",
                 outcome="succeeded") == 4
    assert value(samples, "conveyor_jobs_finished_total", queue="dead-q", job="add", outcome="dead") == 2
    for histogram in ("conveyor_job_duration_seconds", "conveyor_job_wait_seconds"):
        count = value(samples, f"{histogram}_count", queue="fast", job="echo")
        assert count == 4
        assert value(samples, f"{histogram}_bucket", queue="fast", job="echo", le="+Inf") == count
        buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                         if name == f"{histogram}_bucket" and dict(labels)["queue"] == "fast")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert value(samples, "conveyor_workers", host="box-1") == 2
    assert value(samples, "conveyor_workers", host="box-2") == 0


def test_dashboard_metrics_parse_and_match_the_store(web_app: Conveyor) -> None:
    populate(web_app)
    response = connect(web_app).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    check(response.text)


def test_metrics_need_auth(web_app: Conveyor) -> None:
    client = connect(web_app, auth=TOKEN)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_an_empty_store_has_metrics_too(web_app: Conveyor) -> None:
    kinds, samples = parse(connect(web_app).get("/metrics").text)
    assert "conveyor_jobs" in kinds and not any(name == "conveyor_jobs" for name, _ in samples)


def test_the_supervisors_metrics_server_answers_from_poll(web_app: Conveyor) -> None:
    populate(web_app)
    server = MetricsServer(web_app, "127.0.0.1", 0)
    stop = threading.Event()

    def loop() -> None:  # what the supervisor's loop does between ticks
        while not stop.is_set():
            server.poll()
            stop.wait(0.01)

    poller = threading.Thread(target=loop)
    poller.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        answer: Any = httpx.get(f"{base}/metrics", timeout=10)
        assert answer.status_code == 200
        check(answer.text)
        assert httpx.get(f"{base}/elsewhere", timeout=10).status_code == 404
    finally:
        stop.set()
        poller.join()
        server.close()

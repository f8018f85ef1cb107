"""``/metrics`` in the Prometheus text format, read from the store, so every process serving it
(``conveyor dashboard``, the mounted ASGI app, ``conveyor worker --metrics-port``) reports
every host's jobs and workers alike:

- ``conveyor_jobs{queue,state}`` jobs by queue and state; ``conveyor_queue_latency_seconds
  {queue}`` the age of the oldest ready job; ``conveyor_workers{host}`` live worker processes;
- ``conveyor_jobs_enqueued_total{queue,job}``, ``conveyor_jobs_finished_total{queue,job,outcome}``
  and the ``conveyor_job_duration_seconds`` / ``conveyor_job_wait_seconds{queue,job}``
  histograms, from the store's cumulative totals (``metric_totals``, kept by the leader's
  per-minute sampling).

``prometheus_client`` builds the text; it comes with ``pip install 'conveyor[dashboard]'``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, StoreError
from ..health import PolledServer
from ..views import QUEUE_STATES

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from ..app import Conveyor

EXTRA_HINT = "metrics need prometheus_client: pip install 'conveyor[dashboard]'"
FINISHED = ("succeeded", "failed", "dead", "retried")  # totals that are outcomes of an attempt
HISTOGRAMS = {"duration": "conveyor_job_duration_seconds", "wait": "conveyor_job_wait_seconds"}


def missing() -> str | None:
    """One line saying what to install, or None when prometheus_client is there."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return EXTRA_HINT
    return None


class StoreCollector:
    """A prometheus_client collector whose every scrape reads the store once."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []  # nothing read at registration

    def collect(self) -> Iterator[Any]:
        yield from families(self.app)


def families(app: Conveyor) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    store = app.store
    stats, totals, processes = store.queue_stats(), store.metric_totals(), store.process_list()
    now = datetime.now(UTC)
    jobs = GaugeMetricFamily("conveyor_jobs", "Jobs by queue and state.", labels=["queue", "state"])
    latency = GaugeMetricFamily("conveyor_queue_latency_seconds",
                                "Age of the oldest ready job of the queue.", labels=["queue"])
    for q in stats:
        for state in QUEUE_STATES:  # finished jobs are counted by the *_total counters
            jobs.add_metric([q.queue, state.value], q.count(state))
        age = 0.0 if q.oldest_ready_at is None else (now - q.oldest_ready_at).total_seconds()
        latency.add_metric([q.queue], max(0.0, age))
    yield jobs
    yield latency
    enqueued = CounterMetricFamily("conveyor_jobs_enqueued", "Jobs enqueued.", labels=["queue", "job"])
    finished = CounterMetricFamily("conveyor_jobs_finished", "Attempts ended, by outcome.",
                                   labels=["queue", "job", "outcome"])
    series: dict[str, dict[tuple[str, str], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for t in totals:
        kind, _, rest = t.metric.partition("_")
        if t.metric == "enqueued":
            enqueued.add_metric([t.queue, t.job], t.value)
        elif t.metric in FINISHED:
            finished.add_metric([t.queue, t.job, t.metric], t.value)
        elif kind in HISTOGRAMS:
            series[kind][(t.queue, t.job)][rest] = t.value
    yield enqueued
    yield finished
    for kind, name in HISTOGRAMS.items():
        yield histogram(name, f"Job {kind} in seconds.", series.get(kind, {}))
    yield workers(app, processes, now)


def histogram(name: str, help_text: str, series: dict[tuple[str, str], dict[str, float]]) -> Any:
    """Totals ``le:<bound>`` (cumulative, as Prometheus wants them), ``sum`` and ``count``
    per (queue, job) as a histogram."""
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, help_text, labels=["queue", "job"])
    for (queue, job), values in sorted(series.items()):
        bounds = sorted((float(k[3:]), v) for k, v in values.items() if k.startswith("le:"))
        if not bounds or not math.isinf(bounds[-1][0]):
            bounds.append((math.inf, values.get("count", 0.0)))
        buckets = [("+Inf" if math.isinf(b) else repr(b), v) for b, v in bounds]
        family.add_metric([queue, job], buckets, values.get("sum", 0.0))
    return family


def workers(app: Conveyor, processes: list[Any], now: datetime) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily("conveyor_workers", "Live worker processes by host.", labels=["host"])
    alive: dict[str, int] = {}
    for p in processes:
        if p.kind != "worker":
            continue
        fresh = (now - p.heartbeat_at).total_seconds() <= app.settings.rescue_after
        alive[p.host] = alive.get(p.host, 0) + int(fresh)
    for host, n in sorted(alive.items()):
        family.add_metric([host], n)
    return family


def metrics_text(app: Conveyor) -> tuple[bytes, str]:
    """The exposition and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(app))
    return generate_latest(registry), CONTENT_TYPE_LATEST


# --- served by the dashboard --------------------------------------------------------------------
async def metrics_endpoint(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response

    from .routes import web_of

    problem = missing()
    if problem is not None:
        return JSONResponse({"error": problem}, 501)
    try:
        body, kind = await run_in_threadpool(metrics_text, web_of(request).app)
    except StoreError as e:
        return JSONResponse({"error": f"the store did not answer: {e}"}, 503)
    return Response(body, 200, media_type=kind)


def routes() -> list[BaseRoute]:
    from starlette.routing import Route

    return [Route("/metrics", metrics_endpoint, methods=["GET"])]


# --- served by a worker supervisor -------------------------------------------------------------
class MetricsServer(PolledServer):
    """``GET /metrics`` on its own port, answered from the supervisor's loop by ``poll()``
    (no thread: the supervisor forks, and a fork while another thread holds a lock can
    deadlock the child)."""

    def __init__(self, app: Conveyor, host: str, port: int) -> None:
        problem = missing()
        if problem is not None:
            raise ConfigurationError(problem)

        def page(path: str) -> tuple[int, bytes, str]:
            if path != "/metrics":
                return 404, b"not found: try /metrics\n", "text/plain"
            try:
                body, kind = metrics_text(app)
            except StoreError as e:
                return 503, f"the store did not answer: {e}\n".encode(), "text/plain"
            return 200, body, kind

        super().__init__(host, port, page, option="metrics", what="metrics")

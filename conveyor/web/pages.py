"""The dashboard's HTML pages, rendered on the server with Jinja2 (autoescaped).

Every page is a plain ``def`` handler (Starlette runs it in its thread pool, so store reads
never block the event loop that carries the live streams). Pages read through ``Client``,
``app.schedules``, ``views`` and ``doctor`` only; their buttons are forms posting to the
``/api`` routes with the CSRF token and a ``next`` path to come back to. The job pages are in
``pages_jobs``; the charts in ``pages_charts``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import doctor, views
from ..models import JobFilter, JobState
from .routes import render, web_of
from .security import local_path

HISTORY_MINUTES = 60
AUDIT_PAGE = 100


# --- what every template may use -------------------------------------------------------------
def when(value: datetime | str | None) -> str:
    """A time as ``2024-05-01 12:34:56`` (UTC), '' for none."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    """A duration as ``850 ms``, ``12.5 s``, ``3m 20s`` or ``2h 5m``; '' for none."""
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)}m {int(value % 60)}s"
    return f"{int(value // 3600)}h {int(value % 3600 // 60)}m"


def pretty(value: Any) -> str:
    """A JSON value for a <pre> block (escaped by the template like everything else)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def brief(value: Any, width: int = 80) -> str:
    """A JSON value on one line, cut at ``width`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def num(value: float | None) -> str:
    """A number as short as it reads: 50, 12.5."""
    return "" if value is None else f"{round(float(value), 1):g}"


def segment(value: Any) -> str:
    """One URL path segment (a queue, a schedule's name), every reserved character encoded."""
    return quote(str(value), safe="")


FILTERS = {"when": when, "seconds": seconds, "pretty": pretty, "brief": brief, "segment": segment,
           "num": num}


def install_filters(env: jinja2.Environment) -> None:
    for name, function in FILTERS.items():
        env.filters.setdefault(name, function)


def here(request: Request) -> str:
    """This page's path and query inside the dashboard: where a form's ``next`` comes back to."""
    query = request.url.query
    return local_path(request.scope) + (f"?{query}" if query else "")


def link(path: str, **params: Any) -> str:
    """``path?a=1&b=x`` with the empty parameters left out (no root: templates prefix it)."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def page(request: Request, template: str, *, live: str = "list", **context: Any) -> Response:
    """Render ``template`` with what every page shows: this page's path (``here``) for the
    forms, the ``live`` mode app.js uses (``list``: refresh on changes; ``job``; ``none``)."""
    install_filters(web_of(request).templates)
    return render(request, template, here=here(request), live=live, link=link, **context)


def now() -> datetime:
    return datetime.now(UTC)


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    return int(raw) if raw.isdigit() else None


# --- overview, queues, workers, schedules, doctor, audit ------------------------------------
def overview(request: Request) -> Response:
    from .pages_charts import charts

    app = web_of(request).app
    at = now()
    queues = [views.queue_view(q, at) for q in app.client.queues()]
    history = app.store.history_list(at - timedelta(minutes=HISTORY_MINUTES))
    return page(request, "overview.html", queues=queues, states=views.QUEUE_STATES,
                charts=charts(history, at, HISTORY_MINUTES), minutes=HISTORY_MINUTES)


def queues_page(request: Request) -> Response:
    at = now()
    queues = [views.queue_view(q, at) for q in web_of(request).app.client.queues()]
    return page(request, "queues.html", queues=queues, states=views.QUEUE_STATES)


def workers_page(request: Request) -> Response:
    app = web_of(request).app
    at = now()
    processes = app.client.workers()
    running = app.store.job_list(JobFilter(states=(JobState.RUNNING,), limit=1000))
    jobs_of: dict[str, list[Any]] = {}
    for job in running:
        jobs_of.setdefault(job.worker_id or "", []).append(job)
    workers = [
        {**views.worker_view(p, at, app.settings.rescue_after), "jobs": jobs_of.get(p.id, [])}
        for p in sorted(processes, key=lambda p: (p.host, p.kind != "supervisor", p.pid))
    ]
    return page(request, "workers.html", workers=workers)


def schedules_page(request: Request) -> Response:
    schedules = [views.schedule_view(s) for s in web_of(request).app.schedules.list()]
    return page(request, "schedules.html", schedules=schedules)


def doctor_page(request: Request) -> Response:
    report = doctor.diagnose(web_of(request).app).to_dict()
    return page(request, "doctor.html", report=report, live="none")  # a diagnosis reads much


def audit_page(request: Request) -> Response:
    before = query_int(request, "before")
    entries = web_of(request).app.store.audit_list(limit=AUDIT_PAGE + 1, before_id=before)
    older = entries[AUDIT_PAGE - 1].id if len(entries) > AUDIT_PAGE else None
    return page(request, "audit.html", entries=entries[:AUDIT_PAGE], older=older, before=before)


def routes() -> list[BaseRoute]:
    from . import pages_jobs

    return [
        Route("/", overview, methods=["GET"]),
        Route("/queues", queues_page, methods=["GET"]),
        Route("/workers", workers_page, methods=["GET"]),
        Route("/schedules", schedules_page, methods=["GET"]),
        Route("/doctor", doctor_page, methods=["GET"]),
        Route("/audit", audit_page, methods=["GET"]),
        *pages_jobs.routes(),
    ]

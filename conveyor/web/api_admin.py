"""The JSON API's recurring schedules, doctor, per-minute history and audit log (``api`` has
the jobs, queues and workers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import views
from ..doctor import diagnose
from .api import JSON, MAX_LIMIT, acting, answer, api, as_int, audit, call, text_of
from .routes import web_of
from .security import body_of

HISTORY_MINUTES = 7 * 24 * 60


@api
async def schedules_list(request: Request) -> Response:
    schedules = web_of(request).app.schedules
    return JSON({"schedules": [views.schedule_view(s) for s in await call(schedules.list)]})


async def _schedule_action(request: Request, verb: str) -> Response:
    schedules = web_of(request).app.schedules
    name = request.path_params["name"]
    body = await body_of(request)
    payload: dict[str, Any] = {"schedule": name}
    if verb == "run":
        handle = await call(schedules.run, name)
        payload["id"] = handle.id
    else:
        await call(schedules.pause if verb == "pause" else schedules.resume, name)
    await audit(request, f"schedule {verb}", f"schedule {name}",
                f"job {payload['id']}" if "id" in payload else "")
    return answer(request, body, payload)


# --- doctor, history, audit ----------------------------------------------------------------------
@api
async def doctor_report(request: Request) -> Response:
    app = web_of(request).app
    report = await call(diagnose, app)
    return JSON(report.to_dict())


def minute_view(m: Any) -> dict[str, Any]:
    return {
        "minute": views.iso(m.minute), "queue": m.queue, "enqueued": m.enqueued,
        "succeeded": m.succeeded, "failed": m.failed, "dead": m.dead, "ready": m.ready,
        "latency_seconds": m.latency,
        "duration_avg_seconds": (round(m.duration_sum / m.duration_count, 4)
                                 if m.duration_count else None),
    }


@api
async def history(request: Request) -> Response:
    """Per-minute samples per queue, oldest first (kept 7 days)."""
    params = request.query_params
    minutes = as_int(params.get("minutes") or 60, "minutes", 1, HISTORY_MINUTES)
    queue = text_of(params.get("queue"), "queue")
    store = web_of(request).app.store
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    rows = await call(store.history_list, since, queue=queue)
    return JSON({"minutes": minutes, "history": [minute_view(m) for m in rows]})


def audit_view(e: Any) -> dict[str, Any]:
    return {"id": e.id, "at": views.iso(e.at), "actor": e.actor, "action": e.action,
            "target": e.target, "detail": e.detail}


@api
async def audit_list(request: Request) -> Response:
    params = request.query_params
    limit = as_int(params.get("limit") or 100, "limit", 1, MAX_LIMIT)
    before = params.get("before")
    before_id = None if not before else as_int(before, "before")
    store = web_of(request).app.store
    entries = await call(store.audit_list, limit=limit, before_id=before_id)
    more = entries[-1].id if len(entries) == limit else None
    return JSON({"entries": [audit_view(e) for e in entries], "next": more})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/schedules", schedules_list, methods=["GET"]),
        Route("/api/schedules/{name}/run", acting("run", _schedule_action), methods=["POST"]),
        Route("/api/schedules/{name}/pause", acting("pause", _schedule_action), methods=["POST"]),
        Route("/api/schedules/{name}/resume", acting("resume", _schedule_action), methods=["POST"]),
        Route("/api/doctor", doctor_report, methods=["GET"]),
        Route("/api/history", history, methods=["GET"]),
        Route("/api/audit", audit_list, methods=["GET"]),
    ]

"""The JSON API under ``/api``: what scripts and other languages use, and what the pages'
own buttons call. Every route here is listed in the OpenAPI document (``openapi.py``).

Reads answer JSON; a state change is a POST through ``security.action`` that records an audit
entry and answers JSON, or 303 to the form's ``next`` when a page's form posted it. Every
error is one line, ``{"error": "..."}``: 400 bad input (nothing is stored), 403 refused, 404 no
such job / schedule, 409 the action does not apply to the job in its state, 503 store down.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import views
from ..errors import ConveyorError
from ..jobs import RESERVED
from ..models import JobFilter, JobRecord, JobState
from ..store import Store
from .routes import local_next, root, status_of, web_of
from .security import Handler, action, body_of, identity

T = TypeVar("T")
MAX_LIMIT = 500
RUNNING_SHOWN = 1000  # running jobs read to show what each worker holds


class JSON(JSONResponse):
    """JSON with ``<``, ``>`` and ``&`` escaped, so no stored text can read as markup even to a
    client that ignores the content type."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


class BadInput(ValueError):
    """The request is wrong; answered 400 with this message."""


def fail(status: int, message: str) -> JSONResponse:
    return JSON({"error": " ".join(message.split())}, status)


def api(handler: Handler) -> Handler:
    """Turn what a handler raises into a one-line JSON error."""

    @functools.wraps(handler)
    async def answered(request: Request) -> Response:
        try:
            return await handler(request)
        except (ConveyorError, ValueError, TypeError) as e:
            return fail(*status_of(e))

    return answered


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking store read or write off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data"))


def answer(request: Request, body: dict[str, Any], payload: Any, status: int = 200) -> Response:
    """JSON for API clients; back to the page (``next``) for a form a page posted."""
    if is_form(request):
        return RedirectResponse(f"{root(request)}{local_next(str(body.get('next') or ''))}", 303)
    return JSON(payload, status)


async def audit(request: Request, action_name: str, target: str, detail: str = "") -> None:
    web = web_of(request)
    await call(web.app.store.audit_add, identity(request).actor, action_name, target, detail)


# --- parsing -------------------------------------------------------------------------------
def as_int(value: Any, what: str, low: int = -(2**63), high: int = 2**63 - 1) -> int:
    if isinstance(value, bool):
        raise BadInput(f"{what} must be a whole number")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise BadInput(f"{what} must be a whole number, not {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise BadInput(f"{what} must be between {low} and {high}")
    return number


def job_id_of(request: Request) -> int:
    return as_int(request.path_params["id"], "the job id")


def state_of(value: Any) -> JobState | None:
    if value in (None, ""):
        return None
    try:
        return JobState(str(value))
    except ValueError:
        known = ", ".join(s.value for s in JobState)
        raise BadInput(f"state must be one of {known}, not {str(value)[:40]!r}") from None


def text_of(value: Any, what: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadInput(f"{what} must be a string")
    return value


def job_filter(params: Any, *, limit: int) -> JobFilter:
    """The filter in a list request's query (or a bulk request's body)."""
    state = state_of(params.get("state"))
    before = params.get("before")
    return JobFilter(
        states=(state,) if state else (), queue=text_of(params.get("queue"), "queue"),
        name=text_of(params.get("name"), "name"), limit=limit,
        before_id=None if before in (None, "") else as_int(before, "before"),
    )


def shows(job: JobRecord, text: str) -> bool:
    """Whether ``text`` is in what the job shows: no search may find a job by a redacted value
    (the store matches the stored arguments)."""
    if not job.sensitive:
        return True
    needle = text.lower()
    shown = json.dumps(views.shown_args(job), ensure_ascii=False).lower()
    return needle in shown or needle in (job.error or "").lower()


def windowed(filter: JobFilter) -> bool:
    """A queue or name among succeeded (or all) jobs: no index serves it, so matches may be
    rare among millions of finished rows."""
    finished = not filter.states or JobState.SUCCEEDED in filter.states
    return finished and (filter.queue is not None or filter.name is not None)


def find_jobs(store: Store, filter: JobFilter, q: str) -> tuple[list[JobRecord], int | None]:
    """A page of jobs, newest first, and the ``before`` of the next page (None: no more).
    A search, or a filter no index serves, looks at a bounded window of the newest rows
    (``job_search``), so a page may be short while more remain: never a scan of the table."""
    for value in (q, filter.queue, filter.name):
        if value and "\x00" in value:
            raise BadInput("a search or filter may not contain a NUL character")
    if q or windowed(filter):
        found, more = store.job_search(filter, q)
        return [j for j in found if not q or shows(j, q)], more
    page = store.job_list(replace(filter, limit=filter.limit + 1))
    return page[: filter.limit], (page[filter.limit - 1].id if len(page) > filter.limit else None)


# --- jobs ------------------------------------------------------------------------------------
@api
async def jobs_list(request: Request) -> Response:
    """Newest first, a page at a time: ``next`` is the ``before`` of the next page (null at the
    end). ``q`` searches arguments and errors within a bounded scan, so a page may hold fewer
    jobs than ``limit`` while ``next`` is not null yet."""
    params = request.query_params
    limit = as_int(params.get("limit") or 50, "limit", 1, MAX_LIMIT)
    store = web_of(request).app.store
    q = params.get("q", "").strip()
    found, more = await call(find_jobs, store, job_filter(params, limit=limit), q)
    return JSON({"jobs": [views.job_view(j) for j in found], "next": more})


@api
async def job_get(request: Request) -> Response:
    client = web_of(request).app.client
    job_id = job_id_of(request)

    def read() -> dict[str, Any]:
        job = client.get(job_id)
        attempts = client.attempts(job_id)
        detail = views.job_detail_view(job, attempts, client.logs(job_id))
        detail["errors"] = [
            {"attempt": a.attempt, "outcome": str(a.outcome), "error_class": a.error_class,
             "message": a.error_message, "traceback": a.traceback, "at": views.iso(a.finished_at)}
            for a in attempts if a.error_class is not None or a.outcome != "succeeded"
        ]
        detail["waiting_for"] = views.waiting_for(job, client.limits() if job.concurrency_key else [])
        return detail

    return JSON(await call(read))


def _json_field(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """A field of a JSON body, or JSON text in a form field."""
    value = body.get(key, default)
    if isinstance(value, str) and kind is not str:
        try:
            value = json.loads(value) if value.strip() else default
        except ValueError:
            raise BadInput(f"{key} is not valid JSON") from None
    if not isinstance(value, kind):
        raise BadInput(f"{key} must be a JSON {'list' if kind is list else 'object'}")
    return value


ENQUEUE_FIELDS = frozenset({"name", "args", "kwargs", "queue", "priority", "delay", "next"})


@action
@api
async def job_enqueue(request: Request) -> Response:
    """Enqueue a job this app defines, by name: {name, args, kwargs, queue, priority, delay}."""
    web = web_of(request)
    if not web.enqueue:
        return fail(403, "enqueueing through the dashboard is turned off (dashboard(app, enqueue=False))")
    body = await body_of(request)
    unknown = sorted(set(body) - ENQUEUE_FIELDS)
    if unknown:
        expected = ", ".join(sorted(ENQUEUE_FIELDS))
        raise BadInput(f"unknown field {unknown[0][:100]!r}; expected some of {expected}")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise BadInput("name (the job's name, module:function) is required")
    definition = web.app.registry.get(name)  # never imported on a request's say-so
    if definition is None:
        known = ", ".join(web.app.registry.names()[:20]) or "none"
        raise BadInput(f"no job named {name[:200]!r} is defined in this app; known: {known}")
    args = _json_field(body, "args", list, [])
    kwargs = _json_field(body, "kwargs", dict, {})
    if set(kwargs) & set(RESERVED):
        raise BadInput(f"kwargs: {', '.join(RESERVED)} is reserved by conveyor")
    queue = text_of(body.get("queue"), "queue")
    priority = None if body.get("priority") in (None, "") else as_int(body["priority"], "priority")
    delay = body.get("delay")
    bound = definition.options(queue=queue, priority=priority)
    if delay in (None, "", 0):
        handle = await call(bound.enqueue, *args, **kwargs)
    else:
        try:
            seconds = float(delay)
        except (TypeError, ValueError):
            raise BadInput("delay must be a number of seconds") from None
        if not 0 <= seconds < 10 * 365 * 86400:
            raise BadInput("delay must be between 0 seconds and 10 years")
        handle = await call(bound.enqueue_in, seconds, *args, **kwargs)
    await audit(request, "enqueue", f"job {handle.id}", name)
    return answer(request, body, {"id": handle.id}, 201)


def acting(verb: str, handler: Callable[[Request, str], Awaitable[Response]]) -> Handler:
    """The action route of one verb of ``handler``, which serves several (retry, discard...)."""

    async def act(request: Request) -> Response:
        return await handler(request, verb)

    act.__name__ = f"{handler.__name__.strip('_')}_{verb}"
    return action(api(act))


async def _job_action(request: Request, verb: str) -> Response:
    web = web_of(request)
    client = web.app.client
    job_id = job_id_of(request)
    body = await body_of(request)

    def act() -> tuple[JobRecord | None, Any]:
        if verb == "cancel":
            return None, client.cancel(job_id)
        done = client.retry([job_id]) if verb == "retry" else client.discard([job_id])
        if done:
            return None, None
        return client.get(job_id), None  # JobNotFound: 404

    refused, state = await call(act)
    if state in (JobState.SUCCEEDED, JobState.DEAD):
        return fail(409, f"job {job_id} has already ended {state}; there is nothing to cancel")
    if refused is not None:
        if verb == "retry":
            message = (f"job {job_id} is {refused.state}; only dead, cancelled or failed jobs"
                       " can be retried")
        else:
            message = f"job {job_id} is running; cancel it first, then discard it"
        return fail(409, message)
    await audit(request, verb, f"job {job_id}")
    payload: dict[str, Any] = {"id": job_id, verb: "done"}
    if state is not None:
        payload["state"] = str(state)
        if verb == "cancel" and state is JobState.RUNNING:
            payload["cancel"] = "asked"  # the job stops at its next check, or is stopped for it
    return answer(request, body, payload)


# --- queues and workers -----------------------------------------------------------------------
@api
async def queues_list(request: Request) -> Response:
    client = web_of(request).app.client
    now = datetime.now(UTC)
    return JSON({"queues": [views.queue_view(q, now) for q in await call(client.queues)]})


async def _queue_action(request: Request, verb: str) -> Response:
    client = web_of(request).app.client
    name = request.path_params["name"]
    body = await body_of(request)
    await call(client.pause if verb == "pause" else client.resume, name)
    await audit(request, verb, f"queue {name}")
    return answer(request, body, {"queue": name, "paused": verb == "pause"})


@api
async def workers_list(request: Request) -> Response:
    """Registered processes, each worker with the ids of the jobs it is running."""
    web = web_of(request)
    client, stale_after = web.app.client, web.app.settings.rescue_after

    def read() -> list[dict[str, Any]]:
        processes = client.workers()
        running = client.store().job_list(JobFilter(states=(JobState.RUNNING,), limit=RUNNING_SHOWN))
        now = datetime.now(UTC)
        shown = []
        for p in processes:
            view = views.worker_view(p, now, stale_after)
            view["jobs"] = [j.id for j in running if j.worker_id == p.id]
            shown.append(view)
        return shown

    return JSON({"workers": await call(read)})


def routes() -> list[BaseRoute]:
    from . import api_admin, bulk, metrics, openapi

    return [
        *bulk.routes(),
        Route("/api/jobs", jobs_list, methods=["GET"]),
        Route("/api/jobs", job_enqueue, methods=["POST"]),
        Route("/api/jobs/{id}", job_get, methods=["GET"]),
        Route("/api/jobs/{id}/retry", acting("retry", _job_action), methods=["POST"]),
        Route("/api/jobs/{id}/discard", acting("discard", _job_action), methods=["POST"]),
        Route("/api/jobs/{id}/cancel", acting("cancel", _job_action), methods=["POST"]),
        Route("/api/queues", queues_list, methods=["GET"]),
        Route("/api/queues/{name}/pause", acting("pause", _queue_action), methods=["POST"]),
        Route("/api/queues/{name}/resume", acting("resume", _queue_action), methods=["POST"]),
        Route("/api/workers", workers_list, methods=["GET"]),
        *api_admin.routes(),
        *openapi.routes(),
        *metrics.routes(),
    ]

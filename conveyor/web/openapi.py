"""The OpenAPI 3.1 document at ``/api/openapi.json``, built from the dashboard's own route
table: every route under ``/api`` (and ``/metrics``) is in it, with its full path
(``/api/jobs/{id}``), its methods and its parameters; what a table cannot say (query
parameters, bodies, the event streams) comes from ``DETAILS``. It sits behind the same auth as
everything else.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import __version__

Op = dict[str, Any]
ERROR = {"$ref": "#/components/schemas/Error"}
JOB_QUERY = ("state", "queue", "name", "q", "before", "limit")
OBJECT: dict[str, Any] = {"type": "object"}
# routes another module may add; listed whether or not this process has them yet
STREAMS = {
    "/api/jobs/{id}/events": "A job's changes as Server-Sent Events: event `job` (the job view)"
                             " whenever it changes; the stream ends after a final state.",
    "/api/events": "Server-Sent Events: `changed` at most once a second while anything changes.",
}
DETAILS: dict[tuple[str, str], Op] = {
    ("GET", "/api/jobs"): {"summary": "List jobs, newest first (keyset pages: `before` = `next`)",
                           "query": JOB_QUERY},
    ("POST", "/api/jobs"): {"summary": "Enqueue a job this app defines, by name (operator)",
                            "body": {"name": "string", "args": "array", "kwargs": "object",
                                     "queue": "string", "priority": "integer", "delay": "number"},
                            "required": ["name"], "status": "201"},
    ("GET", "/api/jobs/{id}"): {"summary": "A job with its attempts and logs (404 if unknown)"},
    ("POST", "/api/jobs/{id}/retry"): {"summary": "Retry a dead, cancelled or failed job"},
    ("POST", "/api/jobs/{id}/discard"): {"summary": "Delete a job that is not running"},
    ("POST", "/api/jobs/{id}/cancel"): {"summary": "Cancel a waiting job or ask a running one to stop"},
    ("POST", "/api/jobs/bulk"): {"summary": "Retry or discard up to 100,000 jobs in the background",
                                 "body": {"action": "string", "ids": "array", "state": "string",
                                          "queue": "string", "name": "string", "q": "string"},
                                 "required": ["action"], "status": "202"},
    ("GET", "/api/operations"): {"summary": "Bulk operations, newest first"},
    ("GET", "/api/operations/{id}"): {"summary": "A bulk operation's progress: done of total"},
    ("GET", "/api/queues"): {"summary": "Queues: counts by state, paused, latency"},
    ("GET", "/api/workers"): {"summary": "Worker and supervisor processes, with their running jobs"},
    ("GET", "/api/schedules"): {"summary": "Recurring schedules: last and next run"},
    ("POST", "/api/schedules/{name}/run"): {"summary": "Enqueue a schedule's job now"},
    ("GET", "/api/doctor"): {"summary": "The doctor's findings"},
    ("GET", "/api/history"): {"summary": "Per-minute history per queue (7 days kept)",
                              "query": ("minutes", "queue")},
    ("GET", "/api/audit"): {"summary": "The audit log, newest first", "query": ("before", "limit")},
    ("GET", "/api/openapi.json"): {"summary": "This document"},
    ("GET", "/metrics"): {"summary": "Prometheus metrics", "media": "text/plain"},
}
INTEGER_PARAMS = {"before", "limit", "minutes"}


def listed(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"


def document(routes: list[BaseRoute], root: str = "") -> dict[str, Any]:
    paths: dict[str, dict[str, Op]] = {}
    for route in routes:
        if isinstance(route, Route) and listed(route.path):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                paths.setdefault(route.path, {})[method.lower()] = operation(
                    method, route.path, getattr(route.endpoint, "is_action", False))
    for path, text in STREAMS.items():
        paths.setdefault(path, {})["get"] = stream(path, text)
    return {
        "openapi": "3.1.0",
        "info": {"title": "conveyor", "version": __version__,
                 "description": "Jobs, queues, schedules and workers of a conveyor store."},
        "servers": [{"url": root or "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": "conveyor_session"},
            },
        },
        "security": [{"bearer": []}, {"basic": []}, {"session": []}],
    }


def path_parameters(path: str) -> list[Op]:
    return [{"name": name, "in": "path", "required": True,
             "schema": {"type": "integer" if name == "id" else "string"}}
            for name in re.findall(r"{(\w+)", path)]


def operation(method: str, path: str, is_action: bool) -> Op:
    details = DETAILS.get((method, path), {})
    default = f"{method.title()} {path}"
    op: Op = {"summary": details.get("summary", default),
              "operationId": re.sub(r"\W+", "_", f"{method} {path}").strip("_").lower()}
    params = path_parameters(path) + [
        {"name": q, "in": "query", "required": False,
         "schema": {"type": "integer" if q in INTEGER_PARAMS else "string"}}
        for q in details.get("query", ())]
    if params:
        op["parameters"] = params
    media = details.get("media", "application/json")
    status = details.get("status", "200")
    op["responses"] = {status: {"description": "OK", "content": {media: {"schema": OBJECT}}},
                       "401": error("not signed in")}
    if params:
        op["responses"]["400"] = error("bad input: nothing was done")
    if "{" in path:
        op["responses"]["404"] = error("no such thing")
    if is_action:
        body = details.get("body", {})
        schema: Op = {"type": "object", "properties": {k: {"type": v} for k, v in body.items()}}
        if details.get("required"):
            schema["required"] = details["required"]
        op["requestBody"] = {"required": bool(body), "content": {"application/json": {"schema": schema}}}
        op["responses"]["403"] = error("refused: read-only, cross-site or missing CSRF token")
        op["responses"]["409"] = error("the action does not apply in the job's state")
    return op


def error(description: str) -> Op:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def stream(path: str, text: str) -> Op:
    return {"summary": text, "operationId": re.sub(r"\W+", "_", f"get {path}").strip("_"),
            "parameters": path_parameters(path),
            "responses": {"200": {"description": "an event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          "401": error("not signed in")}}


async def openapi_json(request: Request) -> Response:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return JSONResponse(document(list(request.app.routes), root))


def routes() -> list[BaseRoute]:
    return [Route("/api/openapi.json", openapi_json, methods=["GET"])]
